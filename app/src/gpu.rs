//! WebGPU detection on the UI thread: is there an adapter, what is it, what can it do.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web::protocol::Backend;

/// What this browser offers.
#[derive(Clone, Debug, PartialEq)]
pub enum GpuSupport {
    /// `navigator.gpu` is missing: the browser has no WebGPU, has it switched off, or the page
    /// is not a secure context.
    NoApi,
    /// WebGPU exists but offered no adapter (blocklisted GPU, old driver, no GPU at all).
    NoAdapter,
    /// Asking for an adapter threw.
    Failed(String),
    Available(AdapterInfo),
}

/// The adapter's identity and the limits that matter for Stable Diffusion.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterInfo {
    /// WebGPU, or the CPU where the browser offers no adapter.
    pub backend: Backend,
    pub vendor: String,
    pub architecture: String,
    pub device: String,
    pub description: String,
    /// A software or otherwise slow adapter the browser falls back to.
    pub is_fallback: bool,
    /// `limits.maxBufferSize`, bytes.
    pub max_buffer_size: f64,
    /// `limits.maxStorageBufferBindingSize`, bytes.
    pub max_storage_buffer_binding_size: f64,
    /// Whether the `shader-f16` feature is offered (f16 compute).
    pub shader_f16: bool,
}

impl AdapterInfo {
    /// burn's CPU backend in the GPU worker's WebAssembly: f32 only, and one allocation can be
    /// at most 2 GiB (wasm32's `isize::MAX`).
    pub fn cpu() -> Self {
        const WASM_MAX_ALLOCATION: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0;
        Self {
            backend: Backend::Cpu,
            vendor: String::new(),
            architecture: String::new(),
            device: String::new(),
            description: "this device's CPU, one thread, through WebAssembly".to_owned(),
            is_fallback: false,
            max_buffer_size: WASM_MAX_ALLOCATION,
            max_storage_buffer_binding_size: WASM_MAX_ALLOCATION,
            shader_f16: false,
        }
    }

    /// A one-line name for the adapter, from whichever fields the browser fills in.
    pub fn name(&self) -> String {
        let parts: Vec<&str> = [&self.description, &self.vendor, &self.architecture, &self.device]
            .into_iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        if parts.is_empty() { "unnamed adapter".to_owned() } else { parts.join(" · ") }
    }
}

/// Asks the browser for a high-performance adapter and describes it.
pub async fn detect() -> GpuSupport {
    match try_detect().await {
        Ok(support) => support,
        Err(e) => GpuSupport::Failed(describe_js_error(&e)),
    }
}

async fn try_detect() -> Result<GpuSupport, JsValue> {
    let navigator = web_sys::window().ok_or("no window")?.navigator();
    let gpu = get(&navigator, "gpu")?;
    if gpu.is_undefined() || gpu.is_null() {
        return Ok(GpuSupport::NoApi);
    }
    let options = Object::new();
    Reflect::set(&options, &"powerPreference".into(), &"high-performance".into())?;
    let request: Function = get(&gpu, "requestAdapter")?.dyn_into()?;
    let promise: Promise = request.call1(&gpu, &options)?.dyn_into()?;
    let adapter = JsFuture::from(promise).await?;
    if adapter.is_null() || adapter.is_undefined() {
        return Ok(GpuSupport::NoAdapter);
    }
    let info = get(&adapter, "info")?;
    let limits = get(&adapter, "limits")?;
    let features = get(&adapter, "features")?;
    let has: Function = get(&features, "has")?.dyn_into()?;
    Ok(GpuSupport::Available(AdapterInfo {
        backend: Backend::WebGpu,
        vendor: string(&info, "vendor"),
        architecture: string(&info, "architecture"),
        device: string(&info, "device"),
        description: string(&info, "description"),
        is_fallback: get(&info, "isFallbackAdapter")?.is_truthy()
            || get(&adapter, "isFallbackAdapter")?.is_truthy(),
        max_buffer_size: get(&limits, "maxBufferSize")?.as_f64().unwrap_or(0.0),
        max_storage_buffer_binding_size: get(&limits, "maxStorageBufferBindingSize")?.as_f64().unwrap_or(0.0),
        shader_f16: has.call1(&features, &"shader-f16".into())?.is_truthy(),
    }))
}

fn get(target: &JsValue, key: &str) -> Result<JsValue, JsValue> {
    if target.is_undefined() || target.is_null() {
        return Ok(JsValue::UNDEFINED);
    }
    Reflect::get(target, &key.into())
}

fn string(target: &JsValue, key: &str) -> String {
    get(target, key).ok().and_then(|v| v.as_string()).unwrap_or_default()
}

/// A readable message from a thrown JS value.
pub fn describe_js_error(error: &JsValue) -> String {
    if let Some(error) = error.dyn_ref::<js_sys::Error>() {
        return format!("{}: {}", String::from(error.name()), String::from(error.message()));
    }
    error.as_string().unwrap_or_else(|| format!("{error:?}"))
}
