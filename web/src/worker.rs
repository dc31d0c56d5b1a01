//! The GPU worker: a dedicated Web Worker that owns the burn device and answers the UI's
//! requests one at a time, in the order they arrive.
//!
//! Heavy work never runs on the UI thread, and every GPU read-back here is asynchronous.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Promise;
use model::burn::prelude::Device;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, WorkerGlobalScope};

use crate::protocol::{Precision, ProbeOutput, Request, Response};

/// Installs the message handler. Called once from the worker binary's `main`.
pub fn start() {
    console_error_panic_hook::set_once();
    let worker = Rc::new(Worker::default());
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        worker.enqueue(event.data());
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    // The handler lives as long as the worker does.
    onmessage.forget();
    post(&Response::WorkerReady);
}

#[derive(Default)]
struct Worker {
    /// Acquired on the first request, then kept.
    device: RefCell<Option<Device>>,
    /// The promise of the request being handled: the next one waits for it.
    queue: RefCell<Option<Promise>>,
}

impl Worker {
    fn enqueue(self: &Rc<Self>, data: JsValue) {
        let previous = self.queue.borrow_mut().take();
        let this = Rc::clone(self);
        let next = future_to_promise(async move {
            if let Some(previous) = previous {
                // A failed predecessor has already reported its own error.
                let _ = JsFuture::from(previous).await;
            }
            match serde_wasm_bindgen::from_value::<Request>(data) {
                Ok(request) => this.handle(request).await,
                Err(e) => post(&Response::Error { id: None, message: format!("malformed request: {e}") }),
            }
            Ok(JsValue::UNDEFINED)
        });
        *self.queue.borrow_mut() = Some(next);
    }

    async fn handle(&self, request: Request) {
        match request {
            Request::Probe { id, precision } => {
                let response = match self.probe(id, precision).await {
                    Ok(response) => response,
                    Err(message) => Response::Error { id: Some(id), message },
                };
                post(&response);
            }
        }
    }

    async fn probe(&self, id: u32, precision: Precision) -> Result<Response, String> {
        let device = self.device().await?;
        let started = now_ms();
        let outputs =
            model::probe::run(&device, model_precision(precision)).await.map_err(|e| e.to_string())?;
        Ok(Response::ProbeDone {
            id,
            precision,
            elapsed_ms: now_ms() - started,
            outputs: outputs
                .into_iter()
                .map(|o| ProbeOutput { name: o.name, shape: o.shape, values: o.values })
                .collect(),
        })
    }

    /// The worker's device, acquired asynchronously on first use (WebGPU has no blocking calls).
    async fn device(&self) -> Result<Device, String> {
        if let Some(device) = self.device.borrow().as_ref() {
            return Ok(device.clone());
        }
        let started = now_ms();
        let device = Device::wgpu_options()
            .init_async()
            .await
            .map_err(|e| format!("could not acquire a WebGPU device: {e}"))?;
        post(&Response::DeviceReady {
            init_ms: now_ms() - started,
            f16: model::Precision::F16.is_supported_on(&device),
        });
        *self.device.borrow_mut() = Some(device.clone());
        Ok(device)
    }
}

fn model_precision(precision: Precision) -> model::Precision {
    match precision {
        Precision::F32 => model::Precision::F32,
        Precision::F16 => model::Precision::F16,
    }
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn now_ms() -> f64 {
    js_sys::global()
        .unchecked_into::<WorkerGlobalScope>()
        .performance()
        .map_or(0.0, |performance| performance.now())
}

fn post(response: &Response) {
    let message = match serde_wasm_bindgen::to_value(response) {
        Ok(message) => message,
        Err(e) => JsValue::from_str(&format!("unserialisable response: {e}")),
    };
    if let Err(e) = scope().post_message(&message) {
        web_sys::console::error_2(&"the worker could not post a message".into(), &e);
    }
}
