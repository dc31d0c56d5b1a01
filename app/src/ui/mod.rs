//! The page's components.

mod condition;
mod gpu_status;
mod probe;
mod scribble;

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::gpu::{GpuSupport, detect};
use condition::ConditionPanel;
use gpu_status::{GpuStatus, NoWebGpu};
use probe::ProbePanel;

/// The page: what the GPU offers, the condition image, then what the GPU computes.
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
                Some(GpuSupport::Available(info)) => {
                    let f16 = info.shader_f16;
                    view! {
                        <GpuStatus info />
                        <ConditionPanel />
                        <ProbePanel f16 />
                    }
                        .into_any()
                }
                Some(other) => view! { <NoWebGpu support=other /> }.into_any(),
            }}
        </main>
    }
}
