//! The worker's global scope and its clock, for both workers (the GPU worker and the
//! preprocessing worker run in a `DedicatedWorkerGlobalScope`).

use wasm_bindgen::JsCast;
use web_sys::DedicatedWorkerGlobalScope;

/// The global scope of the worker this code runs in.
pub fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// `performance.now()`: milliseconds since the worker started (0 where there is no clock).
pub fn now_ms() -> f64 {
    scope().performance().map_or(0.0, |performance| performance.now())
}
