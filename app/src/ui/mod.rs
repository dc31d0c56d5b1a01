//! The page's components.

mod condition;
mod gallery;
mod generate;
mod gpu_status;
mod import;
mod models;
mod probe;
mod scribble;
mod units;
mod widgets;

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::gpu::{AdapterInfo, GpuSupport, detect};
use crate::session::GpuSession;
use gallery::{GalleryPanel, GalleryState};
use generate::{GenSettings, GeneratePanel};
use gpu_status::{GpuStatus, NoWebGpu};
use models::ModelsPanel;
use probe::ProbePanel;
use units::{UnitList, UnitsPanel};
use web::protocol::vocabulary::shapes;

/// The page: what the GPU offers, then (with WebGPU) the models, the control units, the prompt
/// and settings, the result and the gallery; the device check last.
#[component]
pub fn App() -> impl IntoView {
    let (support, set_support) = signal(None::<GpuSupport>);
    spawn_local(async move { set_support.set(Some(detect().await)) });

    view! {
        <header>
            <h1>"ControlNet in the browser"</h1>
            <p class="tagline">
                "Stable Diffusion 1.5 with ControlNet, on your own GPU through WebGPU."
            </p>
        </header>
        <main>
            {move || match support.get() {
                None => view! { <p data-testid="gpu-checking">"Looking for a WebGPU adapter…"</p> }.into_any(),
                Some(GpuSupport::Available(info)) => view! { <Studio info /> }.into_any(),
                Some(other) => view! { <NoWebGpu support=other /> }.into_any(),
            }}
        </main>
    }
}

/// Everything that needs WebGPU. The GPU session (the worker that loads the models and
/// generates) starts here, once, and only where there is an adapter to use.
#[component]
fn Studio(info: AdapterInfo) -> impl IntoView {
    let session = GpuSession::provide();
    let f16 = info.shader_f16;
    let settings = GenSettings::load();
    follow_native_size(session, settings);
    let units = UnitList::load();
    let gallery = GalleryState::new();
    view! {
        <GpuStatus info=info.clone() />
        <ModelsPanel f16 />
        <UnitsPanel units settings />
        <GeneratePanel settings units gallery info />
        <GalleryPanel gallery settings units />
        <details class="panel device-check" data-testid="device-check">
            <summary>"Device check"</summary>
            <ProbePanel f16 />
        </details>
    }
}

/// The shapes models make 64² images of their world: when they load, the size follows (and an
/// empty prompt gets one of the world's captions); when other models replace them, the size goes
/// back to Stable Diffusion's 512² if it was still theirs. Reloading the same models (after a
/// worker restart) changes nothing.
fn follow_native_size(session: GpuSession, settings: GenSettings) {
    let last = StoredValue::new(None::<String>);
    Effect::watch(
        move || session.models.with(|models| models.as_ref().map(|m| m.pipeline.clone())),
        move |pipeline, _, _| {
            let Some(pipeline) = pipeline else { return };
            let side = |side: u32| {
                settings.width.set(side);
                settings.height.set(side);
            };
            let was_shapes = last.with_value(|last| last.as_deref() == Some(shapes::REPO));
            if pipeline == shapes::REPO {
                side(shapes::SIDE);
                if settings.prompt.with_untracked(|p| p.trim().is_empty()) {
                    settings.prompt.set(shapes::PROMPT.to_owned());
                }
            } else if was_shapes
                && settings.width.get_untracked() == shapes::SIDE
                && settings.height.get_untracked() == shapes::SIDE
            {
                side(512);
            }
            last.set_value(Some(pipeline.clone()));
        },
        false,
    );
}
