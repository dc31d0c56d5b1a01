//! The GPU worker: a dedicated Web Worker that owns the burn device and answers the UI's
//! requests one at a time, in the order they arrive.
//!
//! Two requests skip the queue: `Cancel` (it must reach the generation it stops, which is what
//! the queue is busy with) and `CacheList` (it only reads IndexedDB). Loading lives in
//! [`crate::load`], generation in [`crate::generate`].
//!
//! Heavy work never runs on the UI thread, and every GPU read-back here is asynchronous.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::Promise;
use model::PrecisionExt;
use model::burn::prelude::{Device, Tensor as BurnTensor};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise, spawn_local};
use web_sys::MessageEvent;

use crate::cache::{self, Cache, FileKey};
use crate::import::{Import, Imported};
use crate::load::{self, Models};
use crate::protocol::{
    Backend, GenerationParams, ModelSet, Precision, ProbeOutput, Request, Response, TrainSettings, UnitParams,
};
use crate::scope::{now_ms, scope};
use crate::train::Training;
use crate::{download, generate, message};

#[cfg(feature = "test-requests")]
mod test_requests;

// cubecl's compiler (pliron) registers its types with `inventory`, that is with Wasm
// constructors. A module that never runs them itself counts as a "command" to the Wasm linker,
// which then calls every constructor again at the start of *each* exported function: every
// allocation from JavaScript, every object handed to Rust (each WebGPU object, each message)
// paid ~0.5 ms in Chromium. Running them once, here, makes the module a "reactor" and those
// calls cost what they should (`.ci/site` fails a build whose bindings show the wrappers).
#[cfg(target_family = "wasm")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

/// The worker binaries' `main` (`worker`, and `test_worker` with the test requests): runs the
/// Wasm constructors once, then installs the message handler.
pub fn main() {
    // SAFETY: the linker's own constructor list, run once, before anything reads what it
    // registers.
    #[cfg(target_family = "wasm")]
    unsafe {
        __wasm_call_ctors();
    }
    start();
}

/// Installs the message handler.
fn start() {
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
    /// What the page said to compute on (`UseBackend`, its first message).
    backend: Cell<Backend>,
    /// Acquired on the first request, then kept.
    device: RefCell<Option<Device>>,
    /// The promise of the request being handled: the next one waits for it.
    queue: RefCell<Option<Promise>>,
    /// The UNet `TestRequest::LoadUNet` loaded, and its precision.
    #[cfg(feature = "test-requests")]
    unet: RefCell<Option<(model::UNet, Precision)>>,
    /// What `LoadPipeline` loaded. A generation holds its own `Rc` while it runs, so nothing
    /// borrows this cell across an `await`.
    models: RefCell<Option<Rc<Models>>>,
    /// Generations queued or running, by id.
    generations: RefCell<HashMap<u32, Generation>>,
    /// The local file being imported into the cache, slice by slice.
    import: RefCell<Option<Import>>,
    /// The Learn view's training run, kept while paused. Taken out while it runs.
    training: RefCell<Option<Training>>,
    /// The id of the run that is stepping, and whether a `TrainPause` asked it to stop.
    stepping: Cell<Option<(u32, bool)>>,
}

/// Where a generation stands, for `Cancel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Generation {
    /// Waiting in the queue.
    Queued,
    Running,
    /// Running, and asked to stop after the step in progress.
    Cancelling,
}

impl Worker {
    /// Handles what must not wait (`Cancel`, `CacheList`) at once, and queues the rest: requests
    /// run one at a time, in the order they arrive.
    fn enqueue(self: &Rc<Self>, data: JsValue) {
        let request = match serde_wasm_bindgen::from_value::<Request>(data) {
            Ok(request) => request,
            Err(e) => {
                post(&Response::Error { id: None, message: format!("malformed request: {e}") });
                return;
            }
        };
        match request {
            Request::Cancel { id } => {
                self.cancel(id);
                return;
            }
            Request::CacheList { id } => {
                spawn_local(async move { post(&cache_contents(id, None).await) });
                return;
            }
            Request::UseBackend { backend } => {
                if self.device.borrow().is_none() {
                    self.backend.set(backend);
                }
                return;
            }
            Request::Generate { id, .. } => {
                self.generations.borrow_mut().insert(id, Generation::Queued);
            }
            Request::TrainPause { id } => {
                if let Some((running, _)) = self.stepping.get()
                    && running == id
                {
                    self.stepping.set(Some((id, true)));
                }
                return;
            }
            _ => {}
        }
        let previous = self.queue.borrow_mut().take();
        let this = Rc::clone(self);
        let next = future_to_promise(async move {
            if let Some(previous) = previous {
                // A failed predecessor has already reported its own error.
                let _ = JsFuture::from(previous).await;
            }
            this.handle(request).await;
            Ok(JsValue::UNDEFINED)
        });
        *self.queue.borrow_mut() = Some(next);
    }

    async fn handle(&self, request: Request) {
        match request {
            Request::LoadPipeline { id, models, precision } => {
                let result = self.load_pipeline(id, &models, precision).await;
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
            Request::Generate { id, params, preview_every, units } => {
                match self.generations.borrow_mut().get_mut(&id) {
                    Some(state) => *state = Generation::Running,
                    // Cancelled while queued, and already answered.
                    None => return,
                }
                let result = self.generate(id, &params, preview_every, &units).await;
                self.generations.borrow_mut().remove(&id);
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
            Request::Unload { id } => {
                self.unload();
                post(&Response::Unloaded { id });
            }
            Request::CacheDelete { id, repo } => {
                // An unfinished import of what is deleted ends here, its file closed: an open file
                // cannot be removed.
                {
                    let mut import = self.import.borrow_mut();
                    if import.as_ref().is_some_and(|i| repo.as_ref().is_none_or(|repo| i.key().repo == *repo))
                    {
                        *import = None;
                    }
                }
                post(&cache_contents(id, Some(repo.as_deref())).await)
            }
            Request::ImportChunk { id, repo, file, size, offset, bytes } => {
                let result = self
                    .import_chunk(
                        id,
                        FileKey { repo, revision: crate::models::LOCAL_REVISION.into(), file },
                        size,
                        offset,
                        &bytes,
                    )
                    .await;
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
            // Handled in `enqueue`, never queued.
            Request::Cancel { .. }
            | Request::CacheList { .. }
            | Request::UseBackend { .. }
            | Request::TrainPause { .. } => {}
            Request::TrainStart { id, settings } => {
                let result = self.train_start(id, settings).await;
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
            Request::TrainResume { id } => {
                let result = self.train(id).await;
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
            Request::TrainDiscard { id } => {
                self.training.borrow_mut().take();
                post(&Response::TrainDiscarded { id });
            }
            Request::TrainProbe { id, scale } => {
                let result = self.train_probe(id, scale).await;
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
            Request::TrainUse { id } => {
                let result = self.train_use(id);
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
            Request::Probe { id, precision } => {
                let response = match self.probe(id, precision).await {
                    Ok(response) => response,
                    Err(message) => Response::Error { id: Some(id), message },
                };
                post(&response);
            }
            #[cfg(feature = "test-requests")]
            Request::Test(request) => self.handle_test(request).await,
        }
    }

    /// `Cancel`: a queued generation is answered at once and never starts; a running one stops
    /// after the step in progress. Unknown and finished generations have no entry: nothing to do.
    fn cancel(&self, id: u32) {
        let mut generations = self.generations.borrow_mut();
        match generations.get(&id) {
            Some(Generation::Queued) => {
                generations.remove(&id);
                post(&Response::Cancelled { id, step: 0 });
            }
            Some(Generation::Running) => {
                generations.insert(id, Generation::Cancelling);
            }
            Some(Generation::Cancelling) | None => {}
        }
    }

    /// `TrainStart`: a fresh run on the loaded pipeline (replacing a kept one), then its steps.
    async fn train_start(&self, id: u32, settings: TrainSettings) -> Result<Response, String> {
        self.training.borrow_mut().take();
        // A pause from now on stops the run before its first step.
        self.stepping.set(Some((id, false)));
        let started = async {
            let models = self.loaded()?;
            let device = self.device().await?;
            let training = Training::new(id, &models, settings, &device).await?;
            post(&training.probe(&models, &device, 1.0).await?);
            Ok::<_, String>(training)
        }
        .await;
        match started {
            Ok(training) => {
                *self.training.borrow_mut() = Some(training);
                self.train(id).await
            }
            Err(message) => {
                self.stepping.set(None);
                Err(message)
            }
        }
    }

    /// Steps the kept run `id` until its steps are done or a `TrainPause` arrives; the run is
    /// kept (also after an error: the step that failed was not applied).
    async fn train(&self, id: u32) -> Result<Response, String> {
        let mut training = match self.training.borrow_mut().take() {
            Some(training) if training.id == id => training,
            other => {
                *self.training.borrow_mut() = other;
                return Err(format!("no training run {id} is kept: start one"));
            }
        };
        // Paused while it started: keep that.
        if self.stepping.get().map(|(running, _)| running) != Some(id) {
            self.stepping.set(Some((id, false)));
        }
        let (started, first) = (now_ms(), training.step_count());
        let result = async {
            let models = self.loaded()?;
            let device = self.device().await?;
            while !training.finished() && self.stepping.get() == Some((id, false)) {
                let line = training.step(&models).await?;
                yield_now().await;
                let seconds = (now_ms() - started) / 1000.0;
                let steps_per_second = (training.step_count() - first) as f64 / seconds.max(1e-9);
                post(&Response::TrainStep { id, line, steps_per_second });
                if training.probe_due() {
                    post(&training.probe(&models, &device, 1.0).await?);
                }
            }
            Ok(Response::TrainStopped { id, step: training.step_count(), finished: training.finished() })
        }
        .await;
        self.stepping.set(None);
        *self.training.borrow_mut() = Some(training);
        result
    }

    /// `TrainProbe`: the kept run's probe grid at another conditioning scale.
    async fn train_probe(&self, id: u32, scale: f64) -> Result<Response, String> {
        crate::protocol::UnitSettings { scale, ..Default::default() }
            .validate()
            .map_err(|e| e.to_string())?;
        let models = self.loaded()?;
        let device = self.device().await?;
        let training = self.training.borrow_mut().take();
        let result = match &training {
            Some(training) if training.id == id => training.probe(&models, &device, scale).await,
            _ => Err(format!("no training run {id} is kept: start one")),
        };
        *self.training.borrow_mut() = training;
        result
    }

    /// `TrainUse`: the kept run's ControlNet becomes the loaded models' last.
    fn train_use(&self, id: u32) -> Result<Response, String> {
        let training = self.training.borrow();
        let training =
            training.as_ref().filter(|t| t.id == id).ok_or(format!("no training run {id} is kept"))?;
        let mut cell = self.models.borrow_mut();
        let models = cell
            .as_mut()
            .and_then(Rc::get_mut)
            .ok_or("the models are in use or not loaded: try again when the generation ends")?;
        let controlnet = training.controlnet(models);
        let (name, preprocessor) = training.name();
        let weight_bytes = model::memory::controlnet_weight_bytes(&controlnet, models.pipeline.precision);
        models.controlnets.push(controlnet);
        models.controlnet_names.push(name.clone());
        Ok(Response::ControlNetAdded { id, name, preprocessor, weight_bytes })
    }

    /// The loaded models, for a request that needs them.
    fn loaded(&self) -> Result<Rc<Models>, String> {
        self.models
            .borrow()
            .clone()
            .ok_or_else(|| "no models are loaded: load Stable Diffusion (and any ControlNets) first".into())
    }

    /// Drops every loaded model; their device memory goes back to burn's pool for the next load.
    fn unload(&self) {
        // A kept training run belongs to the pipeline it was started on.
        self.training.borrow_mut().take();
        self.models.borrow_mut().take();
        #[cfg(feature = "test-requests")]
        self.unet.borrow_mut().take();
    }

    async fn load_pipeline(&self, id: u32, set: &ModelSet, precision: Precision) -> Result<Response, String> {
        let device = self.device().await?;
        let started = now_ms();
        // A new set replaces the old one: free its memory before loading anything.
        self.unload();
        if !precision.is_supported_on(&device) {
            return Err(format!(
                "this GPU cannot compute in {precision} (no shader-f16 support): load in f32"
            ));
        }
        let (models, files) = load::load_pipeline(id, set, precision, &device).await?;
        let controlnets: Vec<&model::ControlNet> = models.controlnets.iter().collect();
        let memory = Some(models.pipeline.memory_profile(&controlnets));
        *self.models.borrow_mut() = Some(Rc::new(models));
        Ok(Response::ModelLoaded {
            id,
            elapsed_ms: now_ms() - started,
            files,
            wasm_memory: wasm_memory(),
            memory,
        })
    }

    async fn generate(
        &self,
        id: u32,
        params: &GenerationParams,
        preview_every: u32,
        units: &[UnitParams],
    ) -> Result<Response, String> {
        let cancelled = || self.generations.borrow().get(&id) == Some(&Generation::Cancelling);
        let models = self.loaded()?;
        let device = self.device().await?;
        generate::generate(id, &models, params, preview_every, units, &device, &cancelled).await
    }

    /// Stores one slice of a local file in the cache; offset 0 starts the file (over).
    async fn import_chunk(
        &self,
        id: u32,
        key: FileKey,
        size: u64,
        offset: u64,
        bytes: &[u8],
    ) -> Result<Response, String> {
        let cache = Cache::open().await.map_err(|e| format!("the weights cache: {e}"))?;
        // Taken out of the cell: the import is awaited on below.
        let pending = self.import.borrow_mut().take();
        let mut import = match pending {
            Some(import) if offset != 0 && *import.key() == key => import,
            pending if offset == 0 => {
                // An import left unfinished closes its file first: this one may replace it.
                drop(pending);
                Import::begin(&cache, key.clone(), size).await?
            }
            _ => {
                return Err(format!(
                    "{}: a slice at byte {offset} of a file whose import has not begun",
                    key.file
                ));
            }
        };
        match import.push(&cache, offset, bytes).await? {
            Imported::Partial { bytes } => {
                *self.import.borrow_mut() = Some(import);
                Ok(Response::ImportProgress { id, file: key.file, bytes, total: size })
            }
            Imported::Complete { sha256 } => Ok(Response::Imported { id, file: key.file, size, sha256 }),
        }
    }

    async fn probe(&self, id: u32, precision: Precision) -> Result<Response, String> {
        let device = self.device().await?;
        let started = now_ms();
        let outputs = model::probe::run(&device, precision).await.map_err(|e| e.to_string())?;
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

    /// The worker's device, acquired asynchronously on first use (WebGPU has no blocking calls):
    /// the WebGPU adapter, or burn's CPU backend where the page found none.
    async fn device(&self) -> Result<Device, String> {
        if let Some(device) = self.device.borrow().as_ref() {
            return Ok(device.clone());
        }
        let started = now_ms();
        let backend = self.backend.get();
        let device = match backend {
            Backend::WebGpu => Device::wgpu_options()
                .init_async()
                .await
                .map_err(|e| format!("could not acquire a WebGPU device: {e}"))?,
            Backend::Cpu => Device::flex(),
        };
        post(&Response::DeviceReady {
            backend,
            init_ms: now_ms() - started,
            f16: Precision::F16.is_supported_on(&device),
        });
        *self.device.borrow_mut() = Some(device.clone());
        Ok(device)
    }
}

/// The message for a GPU operation that failed with `error`. A lost device (a driver reset, a GPU
/// that went away, `GPUDevice.destroy()`) first shows as whatever the operation in flight saw — a
/// read-back whose staging buffer cannot be mapped — so the device is asked again with the
/// smallest read-back: if that fails too, the device is gone, and the message says so in the
/// words the page recognises (it then offers to restart the worker).
pub async fn gpu_failure(device: &Device, error: impl std::fmt::Display) -> String {
    // burn's errors nest ("… Caused by: …") and end with a backtrace: their innermost cause.
    let cause = |text: String| {
        let meaningful = |line: &&str| {
            let line = line.trim();
            !line.is_empty()
                && line != "Caused by:"
                && !line.starts_with("Backtrace")
                && !line.starts_with("No backtrace")
        };
        text.lines().rfind(meaningful).unwrap_or_default().trim().to_owned()
    };
    match BurnTensor::<1>::zeros([1], device).into_data_async().await {
        Ok(_) => format!("the GPU failed: {}", cause(error.to_string())),
        Err(lost) => match (cause(lost.to_string()), cause(error.to_string())) {
            (lost, first) if lost == first => format!("the GPU device was lost ({lost})"),
            (lost, first) => format!("the GPU device was lost ({lost}; first: {first})"),
        },
    }
}

/// `CacheContents`: what the cache holds, after deleting `delete`'s files first when given
/// (`Some(None)`: everything). An `Error` when the cache cannot be opened or read.
async fn cache_contents(id: u32, delete: Option<Option<&str>>) -> Response {
    let error = |e: crate::idb::IdbError| Response::Error {
        id: Some(id),
        message: format!("the weights cache: {e}"),
    };
    let cache = match Cache::open().await {
        Ok(cache) => cache,
        Err(e) => return error(e),
    };
    if let Some(repo) = delete
        && let Err(e) = cache.delete_repo(repo).await
    {
        return error(e);
    }
    let mut files = Vec::new();
    match cache.list().await {
        Ok(listed) => {
            for (key, manifest) in listed {
                let stored = if manifest.complete {
                    manifest.size
                } else {
                    match cache.stored_bytes(&key, &manifest).await {
                        Ok(stored) => stored,
                        Err(e) => return error(e),
                    }
                };
                files.push((key, manifest, stored));
            }
        }
        Err(e) => return error(e),
    }
    let (usage, quota) = download::storage_estimate().await;
    Response::CacheContents { id, models: cache::group_files(files), usage, quota }
}

/// The worker's WebAssembly memory, in bytes.
pub(crate) fn wasm_memory() -> u64 {
    wasm_bindgen::memory()
        .unchecked_into::<js_sys::WebAssembly::Memory>()
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length() as u64
}

/// Lets the worker's event loop run (a `Cancel` or `TrainPause` in) before going on. Awaiting a
/// read-back is not enough: on the CPU backend it is ready at once and yields nothing.
pub(crate) async fn yield_now() {
    let promise = Promise::new(&mut |resolve, _| {
        if scope().set_timeout_with_callback(&resolve).is_err() {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// Posts `response` to the page; its byte buffers (images, previews) are transferred, not copied.
pub(crate) fn post(response: &Response) {
    let posted = match message::to_js(response) {
        Ok((message, transfer)) => scope().post_message_with_transfer(&message, &transfer),
        Err(e) => scope().post_message(&JsValue::from_str(&e)),
    };
    if let Err(e) = posted {
        web_sys::console::error_2(&"the worker could not post a message".into(), &e);
    }
}
