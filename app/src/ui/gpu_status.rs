//! The adapter panel, and the explanation shown when there is no WebGPU (the page then computes
//! on the CPU).

use leptos::prelude::*;

use web::protocol::Backend;

use crate::gpu::{AdapterInfo, GpuSupport};

/// Bytes as MiB or GiB.
fn bytes(n: f64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= 1024.0 * MIB { format!("{:.1} GiB", n / (1024.0 * MIB)) } else { format!("{:.0} MiB", n / MIB) }
}

#[component]
pub fn GpuStatus(info: AdapterInfo) -> impl IntoView {
    let name = info.name();
    if info.backend == Backend::Cpu {
        return view! {
            <section class="panel" data-testid="gpu-status">
                <h2>"Device"</h2>
                <dl>
                    <dt>"Computing on"</dt>
                    <dd data-testid="adapter-name">{name}</dd>
                </dl>
                <p class="warning" data-testid="cpu-backend">
                    "No GPU: the built-in shapes models run on the CPU (an image takes seconds to \
                     minutes). Stable Diffusion 1.5 needs WebGPU."
                </p>
            </section>
        }
        .into_any();
    }
    view! {
        <section class="panel" data-testid="gpu-status">
            <h2>"GPU"</h2>
            <dl>
                <dt>"Adapter"</dt>
                <dd data-testid="adapter-name">{name}</dd>
                <dt>"Largest buffer"</dt>
                <dd data-testid="max-buffer-size">{bytes(info.max_buffer_size)}</dd>
                <dt>"Largest storage binding"</dt>
                <dd data-testid="max-storage-binding">{bytes(info.max_storage_buffer_binding_size)}</dd>
                <dt>"16-bit floats (shader-f16)"</dt>
                <dd data-testid="shader-f16">
                    {if info.shader_f16 { "offered" } else { "not offered: computing in f32, which needs twice the memory" }}
                </dd>
            </dl>
            {info.is_fallback.then(|| view! {
                <p class="warning" data-testid="fallback-adapter">
                    "This is a software fallback adapter: it works, but image generation will be very slow."
                </p>
            })}
        </section>
    }
    .into_any()
}

/// Why there is no WebGPU here, and what the visitor can do about it (the page goes on, on the
/// CPU).
#[component]
pub fn NoWebGpu(support: GpuSupport) -> impl IntoView {
    let (headline, detail) = match support {
        GpuSupport::NoApi => (
            "This browser does not offer WebGPU.",
            "navigator.gpu is missing: the browser is too old, has WebGPU switched off, or the page \
             is not served over HTTPS (or from localhost)."
                .to_owned(),
        ),
        GpuSupport::NoAdapter => (
            "WebGPU is here, but no GPU adapter was offered.",
            "The browser may have blocklisted this GPU or its driver, or there is no usable GPU.".to_owned(),
        ),
        GpuSupport::Failed(message) => ("Asking for a WebGPU adapter failed.", message),
        GpuSupport::Available(_) => ("", String::new()),
    };
    view! {
        <section class="panel error" data-testid="no-webgpu" role="status">
            <h2>{headline}</h2>
            <p data-testid="no-webgpu-detail">{detail}</p>
            <h3>"What to do"</h3>
            <ul>
                <li>
                    <strong>"Browser: "</strong>
                    "use a current Chrome or Edge (version 113 or later) on Windows, macOS or ChromeOS, \
                     Chrome on Android 12+, Safari 26, or Firefox 141+ on Windows."
                </li>
                <li>
                    <strong>"Flags: "</strong>
                    "on Linux, Chrome still needs WebGPU switched on: open chrome://flags, enable \
                     “Unsafe WebGPU Support” (#enable-unsafe-webgpu) and, if offered, “Vulkan”, then restart. \
                     chrome://gpu shows what the browser sees."
                </li>
                <li>
                    <strong>"Hardware: "</strong>
                    "a GPU with Direct3D 12, Metal or Vulkan drivers, up to date, and hardware \
                     acceleration enabled in the browser's settings. Stable Diffusion needs about \
                     4 GB of GPU memory."
                </li>
            </ul>
        </section>
    }
}
