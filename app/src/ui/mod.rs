//! The page's components.

mod condition;
mod gallery;
mod generate;
mod gpu_status;
mod import;
mod learn;
mod models;
mod probe;
mod scribble;
mod train;
mod units;
mod widgets;

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::gpu::{AdapterInfo, GpuSupport, detect};
use crate::pwa::{AppBar, Pwa};
use crate::session::GpuSession;
use gallery::{GalleryPanel, GalleryState};
use generate::{GenSettings, GeneratePanel};
use gpu_status::{GpuStatus, NoWebGpu};
use learn::Learn;
use models::ModelsPanel;
use probe::ProbePanel;
use units::{UnitList, UnitsPanel};
use web::protocol::vocabulary::shapes;

/// The page: what the GPU offers (or why there is no WebGPU), then the models, the control
/// units, the prompt and settings, the result and the gallery; the device check last. At
/// `#learn`, the Learn view instead (the generator stays loaded, hidden, for the way back).
#[component]
pub fn App() -> impl IntoView {
    let (support, set_support) = signal(None::<GpuSupport>);
    spawn_local(async move { set_support.set(Some(detect().await)) });
    let pwa = Pwa::start();
    let learning = hash_route(learn::HASH);
    // The generator's GPU session, for the Learn view's training (set once the studio starts).
    let (session, set_session) = signal(None::<GpuSession>);
    let visited = RwSignal::new(false);
    Effect::new(move || {
        if learning.get() {
            visited.set(true);
        }
    });

    view! {
        <header>
            <h1>"ControlNet in the browser"</h1>
            <p class="tagline">
                "Stable Diffusion 1.5 with ControlNet, on your own GPU through WebGPU."
            </p>
            <AppBar pwa />
            <nav class="views">
                {move || if learning.get() {
                    view! { <a href="#" data-testid="nav-generate">"← Back to making images"</a> }.into_any()
                } else {
                    view! {
                        <a href=learn::HASH data-testid="nav-learn">
                            "Learn: watch a ControlNet learn, zero convolutions growing →"
                        </a>
                    }
                    .into_any()
                }}
            </nav>
        </header>
        // Mounted on the first visit, then kept (hidden) for the way back: a run trained there
        // stays, paused, with its charts.
        <Show when=move || visited.get()>
            <div style:display=move || if learning.get() { "" } else { "none" }>
                <Learn session learning />
            </div>
        </Show>
        <main style:display=move || if learning.get() { "none" } else { "" }>
            {move || match support.get() {
                None => view! { <p data-testid="gpu-checking">"Looking for a WebGPU adapter…"</p> }.into_any(),
                Some(GpuSupport::Available(info)) => view! { <Studio info set_session /> }.into_any(),
                // No WebGPU: say why, and compute on the CPU.
                Some(other) => view! {
                    <NoWebGpu support=other />
                    <Studio info=AdapterInfo::cpu() set_session />
                }
                .into_any(),
            }}
        </main>
    }
}

/// The models, the control units, the result. The GPU session (the worker that loads the models
/// and generates) starts here, once, on the WebGPU adapter or, where there is none, the CPU.
#[component]
fn Studio(info: AdapterInfo, set_session: WriteSignal<Option<GpuSession>>) -> impl IntoView {
    let backend = info.backend;
    let session = GpuSession::provide(backend);
    set_session.set(Some(session));
    let f16 = info.shader_f16;
    let settings = GenSettings::load();
    follow_native_size(session, settings);
    let units = UnitList::load();
    let gallery = GalleryState::new();
    view! {
        <GpuStatus info=info.clone() />
        <ModelsPanel f16 />
        // On a wide screen side by side: the result stays in view while the visitor draws.
        <div class="workbench">
            <UnitsPanel units settings />
            <GeneratePanel settings units gallery info />
        </div>
        <GalleryPanel gallery settings units />
        <details class="panel device-check" data-testid="device-check">
            <summary>"Device check"</summary>
            <ProbePanel f16 backend />
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

/// The address the site serves its own models (and their training logs) from:
/// [`shapes::SITE_HUB`] beside the page.
pub(crate) fn site_hub() -> Result<String, String> {
    let page =
        web_sys::window().and_then(|w| w.location().href().ok()).ok_or("the page's address is unknown")?;
    let url = web_sys::Url::new_with_base(shapes::SITE_HUB, &page)
        .map_err(|_| format!("no {}/ beside {page}", shapes::SITE_HUB))?;
    Ok(url.href().trim_end_matches('/').to_owned())
}

/// Whether the address's fragment is `hash` now, following `hashchange`.
fn hash_route(hash: &'static str) -> ReadSignal<bool> {
    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::Closure;
    let current = move || web_sys::window().and_then(|w| w.location().hash().ok()).is_some_and(|h| h == hash);
    let (route, set_route) = signal(current());
    let on_change = Closure::<dyn FnMut()>::new(move || set_route.set(current()));
    if let Some(window) = web_sys::window() {
        let _ = window.add_event_listener_with_callback("hashchange", on_change.as_ref().unchecked_ref());
    }
    // The page's one listener, for its lifetime.
    on_change.forget();
    route
}
