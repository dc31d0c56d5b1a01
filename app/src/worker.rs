//! The GPU worker as a Leptos hook: spawned with the component that uses it, terminated with it.

use leptos::prelude::*;
use send_wrapper::SendWrapper;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web::protocol::{Request, Response};
use web_sys::{ErrorEvent, MessageEvent, Worker};

use crate::gpu::describe_js_error;

/// The worker script Trunk generates for the `worker` binary (`data-loader-shim`).
const WORKER_SCRIPT: &str = "./worker_loader.js";

/// A handle to send requests to the worker. Cheap to copy.
#[derive(Clone, Copy)]
pub struct GpuWorker {
    state: StoredValue<State>,
    on_failure: Callback<String>,
}

struct State {
    worker: Option<SendWrapper<Worker>>,
    /// Requests held back until the worker says `WorkerReady`.
    pending: Option<Vec<Request>>,
}

impl GpuWorker {
    /// Sends `request` now, or as soon as the worker is ready.
    pub fn send(&self, request: Request) {
        let held = self.state.try_update_value(|state| match state.pending.as_mut() {
            Some(pending) => {
                pending.push(request.clone());
                true
            }
            None => false,
        });
        if held == Some(false) {
            self.post(&request);
        }
    }

    fn post(&self, request: &Request) {
        let sent = self.state.with_value(|state| {
            let worker = state.worker.as_ref().ok_or_else(|| "the GPU worker is not running".to_owned())?;
            let message = serde_wasm_bindgen::to_value(request).map_err(|e| e.to_string())?;
            worker.post_message(&message).map_err(|e| describe_js_error(&e))
        });
        if let Err(message) = sent {
            self.on_failure.run(message);
        }
    }

    /// The worker is listening: send what was held back.
    fn ready(&self) {
        let pending = self.state.try_update_value(|state| state.pending.take()).flatten();
        for request in pending.unwrap_or_default() {
            self.post(&request);
        }
    }
}

/// Spawns the GPU worker. `on_response` sees every message it sends; `on_failure` hears of a
/// worker that could not start or crashed.
pub fn use_gpu_worker(
    on_response: impl Fn(Response) + 'static,
    on_failure: impl Fn(String) + Send + Sync + 'static,
) -> GpuWorker {
    let on_failure = Callback::new(on_failure);
    let worker = match Worker::new(WORKER_SCRIPT) {
        Ok(worker) => worker,
        Err(e) => {
            on_failure.run(format!("could not start the GPU worker: {}", describe_js_error(&e)));
            return GpuWorker { state: StoredValue::new(State { worker: None, pending: None }), on_failure };
        }
    };
    let handle = GpuWorker {
        state: StoredValue::new(State {
            worker: Some(SendWrapper::new(worker.clone())),
            pending: Some(Vec::new()),
        }),
        on_failure,
    };

    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        match serde_wasm_bindgen::from_value::<Response>(event.data()) {
            Ok(Response::WorkerReady) => handle.ready(),
            Ok(response) => on_response(response),
            Err(e) => on_failure.run(format!("unreadable message from the GPU worker: {e}")),
        }
    });
    let onerror = Closure::<dyn FnMut(ErrorEvent)>::new(move |event: ErrorEvent| {
        on_failure.run(format!("the GPU worker failed: {}", event.message()));
    });
    worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));

    let handlers = SendWrapper::new((onmessage, onerror));
    let state = handle.state;
    on_cleanup(move || {
        if let Some(worker) = state.try_update_value(|state| state.worker.take()).flatten() {
            worker.set_onmessage(None);
            worker.set_onerror(None);
            worker.terminate();
        }
        drop(handlers);
    });
    handle
}
