//! The GPU session: the one GPU worker that loads the models and generates, shared by the models
//! panel and the generation panel through Leptos' context.
//!
//! Every response goes to every listener; each panel picks the ids it sent. Ids come from one
//! counter, so no two requests of the page share one.

use std::cell::RefCell;
use std::rc::Rc;

use leptos::prelude::*;
use send_wrapper::SendWrapper;
use web::protocol::vocabulary::memory::Profile;
use web::protocol::{Backend, Precision, Request, Response};

use crate::worker::{GpuWorker, use_gpu_worker};

type Listener = Rc<dyn Fn(&Response)>;
/// The listeners, each under a key to remove it by.
type Listeners = StoredValue<SendWrapper<RefCell<Vec<(u32, Listener)>>>>;

/// A handle to the session. Cheap to copy.
#[derive(Clone, Copy)]
pub struct GpuSession {
    worker: GpuWorker,
    /// Where the worker computes.
    pub backend: Backend,
    listeners: Listeners,
    next_id: StoredValue<u32>,
    /// The worker could not start, or crashed: what the user is told, until it is restarted.
    pub failure: RwSignal<Option<String>>,
    /// What the worker has loaded (set by the models panel when `ModelLoaded` answers its
    /// `LoadPipeline`; cleared when the worker is restarted or unloads).
    pub models: RwSignal<Option<LoadedModels>>,
    /// How many times the worker was restarted: the models panel reloads the models after each.
    restarts: RwSignal<u32>,
}

/// The models on the GPU, as the generation panel needs to know them.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedModels {
    /// The pipeline's name (its repository), for the PNG's parameters and the page.
    pub pipeline: String,
    /// The ControlNets' names, in the order `UnitParams::controlnet` indexes them.
    pub controlnets: Vec<String>,
    /// The preprocessor each ControlNet expects (`canny`, `scribble`), where known.
    pub preprocessors: Vec<Option<String>>,
    pub precision: Precision,
    /// What they take and need, for the memory estimate (from the worker's `ModelLoaded`).
    pub memory: Option<Profile>,
}

impl GpuSession {
    /// Spawns the worker, computing on `backend`, and makes the session available to the
    /// components below.
    pub fn provide(backend: Backend) -> Self {
        let listeners: Listeners = StoredValue::new(SendWrapper::new(RefCell::new(Vec::new())));
        let failure = RwSignal::new(None::<String>);
        let worker = use_gpu_worker(
            backend,
            move |response| {
                // Clone the list first: a listener may add or remove listeners.
                let current: Vec<Listener> =
                    listeners.with_value(|l| l.borrow().iter().map(|(_, f)| Rc::clone(f)).collect());
                for listener in current {
                    listener(&response);
                }
            },
            move |message| failure.set(Some(message)),
        );
        let session = Self {
            worker,
            backend,
            listeners,
            next_id: StoredValue::new(1),
            failure,
            models: RwSignal::new(None),
            restarts: RwSignal::new(0),
        };
        provide_context(session);
        session
    }

    /// The session [`GpuSession::provide`] made.
    pub fn use_session() -> Self {
        expect_context::<Self>()
    }

    /// A fresh request id.
    pub fn next_id(&self) -> u32 {
        let id = self.next_id.get_value();
        self.next_id.set_value(id.wrapping_add(1));
        id
    }

    pub fn send(&self, request: Request) {
        self.worker.send(request);
    }

    /// Replaces a crashed worker (a lost GPU device, a WebAssembly trap such as running out of
    /// memory) with a fresh one. Requests in flight get no answer; the models are gone, and the
    /// models panel loads them again (from the cache, so quickly) when it sees
    /// [`GpuSession::restarts`] change.
    pub fn restart(&self) {
        self.worker.restart();
        self.models.set(None);
        self.failure.set(None);
        self.restarts.update(|n| *n += 1);
    }

    /// The number of restarts so far.
    pub fn restarts(&self) -> ReadSignal<u32> {
        self.restarts.read_only()
    }

    /// Calls `listener` with every response from now on, until the calling component is
    /// cleaned up.
    pub fn listen(&self, listener: impl Fn(&Response) + 'static) {
        let key = self.next_id();
        let listeners = self.listeners;
        listeners.with_value(|l| l.borrow_mut().push((key, Rc::new(listener))));
        on_cleanup(move || {
            listeners.try_with_value(|l| l.borrow_mut().retain(|(k, _)| *k != key));
        });
    }
}

/// Whether a worker's error message says its GPU device is gone (a driver reset, a GPU process
/// crash, an out-of-memory the browser answered by destroying the device): nothing runs on it
/// any more, and only [`GpuSession::restart`] helps.
pub fn is_device_lost(message: &str) -> bool {
    let message = message.to_lowercase();
    message.contains("device") && (message.contains("lost") || message.contains("destroyed"))
}
