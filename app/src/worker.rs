//! The workers as Leptos hooks: spawned with the component that uses them, terminated with it.
//!
//! Two workers, two protocols: the GPU worker (`web::protocol::{Request, Response}`, burn-wgpu)
//! and the preprocessing worker (`PreprocessRequest`, `PreprocessResponse`, no burn), so that
//! preprocessing never waits behind GPU work. One generic handle serves both.

use leptos::prelude::*;
use send_wrapper::SendWrapper;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web::protocol::{Backend, PreprocessRequest, PreprocessResponse, Request, Response};
use web_sys::{Event, MessageEvent, Worker};

use crate::gpu::describe_js_error;

/// A worker's script and protocol.
pub trait Protocol: 'static {
    type Request: Clone + Serialize + Send + Sync + 'static;
    type Response: DeserializeOwned + 'static;
    /// The workers' loader script (`public/worker_loader.js`, one for both; `.ci/site` puts it
    /// beside the bindings).
    const SCRIPT: &'static str = "./worker_loader.js";
    /// The bindings the loader loads (`{BINDINGS}.js`, `{BINDINGS}_bg.wasm`), given as the
    /// worker's name: not in the script's URL, which a service worker's cached answer replaces.
    const BINDINGS: &'static str;
    /// The worker's name in messages.
    const NAME: &'static str;
    /// Whether `response` is the worker's "listening" message.
    fn is_ready(response: &Self::Response) -> bool;
}

/// The GPU worker (burn-wgpu).
pub struct Gpu;

impl Protocol for Gpu {
    type Request = Request;
    type Response = Response;
    const BINDINGS: &'static str = "worker";
    const NAME: &'static str = "GPU worker";
    fn is_ready(response: &Response) -> bool {
        matches!(response, Response::WorkerReady)
    }
}

/// The preprocessing worker (decoding, Canny, scribble, sketch).
pub struct Preprocess;

impl Protocol for Preprocess {
    type Request = PreprocessRequest;
    type Response = PreprocessResponse;
    const BINDINGS: &'static str = "preprocess_worker";
    const NAME: &'static str = "preprocessing worker";
    fn is_ready(response: &PreprocessResponse) -> bool {
        matches!(response, PreprocessResponse::Ready)
    }
}

/// A handle to send requests to a worker. Cheap to copy.
pub struct WorkerHandle<P: Protocol> {
    state: StoredValue<State<P::Request>>,
    on_failure: Callback<String>,
}

impl<P: Protocol> Clone for WorkerHandle<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: Protocol> Copy for WorkerHandle<P> {}

pub type GpuWorker = WorkerHandle<Gpu>;
pub type PreprocessWorker = WorkerHandle<Preprocess>;

struct State<R> {
    worker: Option<SendWrapper<Worker>>,
    /// Requests held back until the worker says it is ready.
    pending: Option<Vec<R>>,
    /// Sent first to every worker started, before anything held back (the GPU worker's
    /// `UseBackend`).
    greeting: Option<R>,
    /// The worker's `onmessage` and `onerror`, kept so that a restarted worker gets the same
    /// ones (and dropped with the handle, after the worker is terminated).
    handlers: Option<SendWrapper<Handlers>>,
}

struct Handlers {
    onmessage: Closure<dyn FnMut(MessageEvent)>,
    onerror: Closure<dyn FnMut(Event)>,
}

impl<P: Protocol> WorkerHandle<P> {
    /// Sends `request` now, or as soon as the worker is ready.
    pub fn send(&self, request: P::Request) {
        let now = self
            .state
            .try_update_value(|state| match state.pending.as_mut() {
                Some(pending) => {
                    pending.push(request);
                    None
                }
                None => Some(request),
            })
            .flatten();
        if let Some(request) = now {
            self.post(&request);
        }
    }

    /// Terminates the worker and starts a fresh one with the same handlers: what a crashed
    /// worker (a lost GPU device, a WebAssembly trap such as running out of memory) needs, as
    /// its state cannot be trusted any more. Whatever it was doing is lost without an answer;
    /// requests sent from now on are held until the new worker is ready.
    pub fn restart(&self) {
        self.stop();
        self.spawn();
    }

    fn post(&self, request: &P::Request) {
        let sent = self.state.with_value(|state| {
            let worker = state.worker.as_ref().ok_or_else(|| format!("the {} is not running", P::NAME))?;
            // Byte buffers are moved to the worker, not copied.
            let (message, transfer) = web::message::to_js(request)?;
            worker.post_message_with_transfer(&message, &transfer).map_err(|e| describe_js_error(&e))
        });
        if let Err(message) = sent {
            self.on_failure.run(message);
        }
    }

    /// The worker is listening: send the greeting, then what was held back.
    fn ready(&self) {
        let greeting = self.state.with_value(|state| state.greeting.clone());
        let pending = self.state.try_update_value(|state| state.pending.take()).flatten();
        for request in greeting.into_iter().chain(pending.unwrap_or_default()) {
            self.post(&request);
        }
    }

    /// Starts a worker with the handlers; requests wait until it is ready.
    fn spawn(&self) {
        let started = self.state.try_update_value(|state| {
            // Requests held for a worker that never became ready go to the new one.
            state.pending.get_or_insert_with(Vec::new);
            let options = web_sys::WorkerOptions::new();
            options.set_name(P::BINDINGS);
            let worker = Worker::new_with_options(P::SCRIPT, &options)?;
            if let Some(handlers) = state.handlers.as_ref() {
                worker.set_onmessage(Some(handlers.onmessage.as_ref().unchecked_ref()));
                worker.set_onerror(Some(handlers.onerror.as_ref().unchecked_ref()));
            }
            state.worker = Some(SendWrapper::new(worker));
            Ok::<(), JsValue>(())
        });
        if let Some(Err(e)) = started {
            self.on_failure.run(format!("could not start the {}: {}", P::NAME, describe_js_error(&e)));
        }
    }

    /// Terminates the worker, first silencing it so that nothing it queued arrives afterwards.
    fn stop(&self) {
        if let Some(worker) = self.state.try_update_value(|state| state.worker.take()).flatten() {
            worker.set_onmessage(None);
            worker.set_onerror(None);
            worker.terminate();
        }
    }
}

/// Spawns the GPU worker, computing on `backend`. `on_response` sees every message it sends;
/// `on_failure` hears of a worker that could not start or crashed.
pub fn use_gpu_worker(
    backend: Backend,
    on_response: impl Fn(Response) + 'static,
    on_failure: impl Fn(String) + Send + Sync + 'static,
) -> GpuWorker {
    use_worker::<Gpu>(Some(Request::UseBackend { backend }), on_response, on_failure)
}

/// Spawns the preprocessing worker; as [`use_gpu_worker`].
pub fn use_preprocess_worker(
    on_response: impl Fn(PreprocessResponse) + 'static,
    on_failure: impl Fn(String) + Send + Sync + 'static,
) -> PreprocessWorker {
    use_worker::<Preprocess>(None, on_response, on_failure)
}

fn use_worker<P: Protocol>(
    greeting: Option<P::Request>,
    on_response: impl Fn(P::Response) + 'static,
    on_failure: impl Fn(String) + Send + Sync + 'static,
) -> WorkerHandle<P> {
    let on_failure = Callback::new(on_failure);
    let handle = WorkerHandle::<P> {
        state: StoredValue::new(State { worker: None, pending: Some(Vec::new()), greeting, handlers: None }),
        on_failure,
    };

    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        match serde_wasm_bindgen::from_value::<P::Response>(event.data()) {
            Ok(response) if P::is_ready(&response) => handle.ready(),
            Ok(response) => on_response(response),
            Err(e) => on_failure.run(format!("unreadable message from the {}: {e}", P::NAME)),
        }
    });
    // An `ErrorEvent` for an exception in the worker; a plain `Event`, with no message, for a
    // script that did not load.
    let onerror = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
        let message = js_sys::Reflect::get(&event, &"message".into())
            .ok()
            .and_then(|message| message.as_string())
            .filter(|message| !message.is_empty())
            .unwrap_or_else(|| format!("its script ({}) did not load", P::SCRIPT));
        on_failure.run(format!("the {} failed: {message}", P::NAME));
    });
    handle
        .state
        .update_value(|state| state.handlers = Some(SendWrapper::new(Handlers { onmessage, onerror })));
    handle.spawn();

    on_cleanup(move || {
        handle.stop();
        // The handlers go last: the worker no longer calls them.
        handle.state.try_update_value(|state| state.handlers.take());
    });
    handle
}

/// Only the latest request matters (a preview while a slider moves): at most one is in the
/// worker, and while it runs, each newer one replaces the one waiting.
#[derive(Debug)]
pub struct Latest<T> {
    in_flight: Option<u32>,
    waiting: Option<(u32, T)>,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Self { in_flight: None, waiting: None }
    }
}

impl<T> Latest<T> {
    /// Returns `request` if it should be sent now; otherwise it waits, replacing any request
    /// already waiting.
    pub fn submit(&mut self, id: u32, request: T) -> Option<T> {
        if self.in_flight.is_none() {
            self.in_flight = Some(id);
            Some(request)
        } else {
            self.waiting = Some((id, request));
            None
        }
    }

    /// Whether `id` is the request in the worker.
    pub fn is_in_flight(&self, id: u32) -> bool {
        self.in_flight == Some(id)
    }

    /// The answer to `id` arrived: returns the waiting request, to be sent now. An answer to
    /// anything but the request in flight changes nothing.
    pub fn answered(&mut self, id: u32) -> Option<T> {
        if !self.is_in_flight(id) {
            return None;
        }
        let (next, request) = self.waiting.take().unzip();
        self.in_flight = next;
        request
    }
}

#[cfg(test)]
mod tests {
    use super::Latest;

    #[test]
    fn only_the_latest_request_waits() {
        let mut latest = Latest::default();
        assert_eq!(latest.submit(1, "a"), Some("a"), "idle: sent at once");
        assert_eq!(latest.submit(2, "b"), None);
        assert_eq!(latest.submit(3, "c"), None, "replaces b");
        assert_eq!(latest.answered(7), None, "not in flight: ignored");
        assert!(latest.is_in_flight(1));
        assert_eq!(latest.answered(1), Some("c"));
        assert!(latest.is_in_flight(3));
        assert_eq!(latest.answered(3), None, "nothing waits: idle again");
        assert!(!latest.is_in_flight(3));
        assert_eq!(latest.submit(4, "d"), Some("d"));
    }
}
