//! The GPU worker: a dedicated Web Worker that owns the burn device and answers the UI's
//! requests one at a time, in the order they arrive.
//!
//! Heavy work never runs on the UI thread, and every GPU read-back here is asynchronous.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Promise;
use model::burn::prelude::{Device, Tensor as BurnTensor, TensorData};
use model::burn::tensor::FloatDType;
use model::streaming::StreamLoader;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, WorkerGlobalScope};

use crate::cache::{Cache, FileKey};
use crate::download::{self, CacheProblem, DEFAULT_CHUNK_BYTES, Job, Loaded, Progress};
use crate::protocol::{FileLoaded, ModelSource, Precision, ProbeOutput, Request, Response, Tensor};

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
    /// The UNet `LoadUNet` loaded, and its precision.
    unet: RefCell<Option<(model::UNet, Precision)>>,
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
            Request::LoadUNet { id, source, config_file, weights_file, precision } => {
                let result = self.load_unet(id, &source, &config_file, &weights_file, precision).await;
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
            Request::RunUNet { id, sample, timesteps, context } => {
                let result = self.run_unet(id, sample, &timesteps, context).await;
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
            Request::StreamWeights { id, source, file, precision } => {
                let result = self.stream_weights(id, &source, &file, precision).await;
                post(&result.unwrap_or_else(|message| Response::Error { id: Some(id), message }));
            }
        }
    }

    async fn load_unet(
        &self,
        id: u32,
        source: &ModelSource,
        config_file: &str,
        weights_file: &str,
        precision: Precision,
    ) -> Result<Response, String> {
        let device = self.device().await?;
        let started = now_ms();
        // A new model replaces the old one: free its memory first.
        self.unet.borrow_mut().take();
        let cache = open_cache(source).await;
        let mut config = Vec::new();
        let config_loaded = fetch_file(id, source, cache.as_ref(), config_file, &mut |bytes| {
            config.extend_from_slice(bytes);
            Ok(())
        })
        .await?;
        let config = String::from_utf8(config).map_err(|_| format!("{config_file} is not UTF-8"))?;
        let config = model::config::UNetConfig::from_json(&config).map_err(|e| e.to_string())?;
        let mut loader = StreamLoader::new(&device, model_precision(precision), &[], &[]);
        let weights_loaded = fetch_file(id, source, cache.as_ref(), weights_file, &mut |bytes| {
            loader.push(bytes).map_err(|e| format!("{weights_file}: {e}"))
        })
        .await?;
        let unet = loader
            .apply(model::UNet::new(&config, &device))
            .map_err(|e| format!("{weights_file} does not fit the UNet: {e}"))?;
        *self.unet.borrow_mut() = Some((unet, precision));
        Ok(Response::ModelLoaded {
            id,
            elapsed_ms: now_ms() - started,
            files: vec![file_loaded(config_file, config_loaded), file_loaded(weights_file, weights_loaded)],
            wasm_memory: wasm_memory(),
        })
    }

    async fn run_unet(
        &self,
        id: u32,
        sample: Tensor,
        timesteps: &[f32],
        context: Tensor,
    ) -> Result<Response, String> {
        let device = self.device().await?;
        let started = now_ms();
        // The forward pass only queues GPU work; the borrow ends before the read-back awaits.
        let output = {
            let guard = self.unet.borrow();
            let (unet, precision) = guard.as_ref().ok_or("no UNet is loaded")?;
            let dtype = model_precision(*precision).dtype();
            let sample: BurnTensor<4> = tensor(sample, &device)?.cast(dtype);
            let context: BurnTensor<3> = tensor(context, &device)?.cast(dtype);
            let [batch, ..] = sample.dims();
            if !(timesteps.len() == 1 || timesteps.len() == batch) {
                return Err(format!("{} timesteps for a batch of {batch}", timesteps.len()));
            }
            unet.forward(sample, timesteps, context, None)
        };
        let shape = output.dims().to_vec();
        let data = output.cast(FloatDType::F32).into_data_async().await.map_err(|e| format!("{e:?}"))?;
        let values = data.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        Ok(Response::UNetOutput { id, output: Tensor { shape, values }, elapsed_ms: now_ms() - started })
    }

    async fn stream_weights(
        &self,
        id: u32,
        source: &ModelSource,
        file: &str,
        precision: Precision,
    ) -> Result<Response, String> {
        let device = self.device().await?;
        let started = now_ms();
        let cache = open_cache(source).await;
        let mut loader = StreamLoader::new(&device, model_precision(precision), &[], &[]);
        let loaded = fetch_file(id, source, cache.as_ref(), file, &mut |bytes| {
            loader.push(bytes).map_err(|e| format!("{file}: {e}"))
        })
        .await?;
        drop(loader);
        Ok(Response::ModelLoaded {
            id,
            elapsed_ms: now_ms() - started,
            files: vec![file_loaded(file, loaded)],
            wasm_memory: wasm_memory(),
        })
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

/// The cache, unless the source says not to use it or the browser has none (then the model
/// loads from the network only, and the user hears why).
async fn open_cache(source: &ModelSource) -> Option<Cache> {
    if !source.cache {
        return None;
    }
    match Cache::open().await {
        Ok(cache) => Some(cache),
        Err(e) => {
            web_sys::console::warn_1(&format!("weights will not be cached: {e}").into());
            None
        }
    }
}

/// One file of `source`, through the cache, into `consume`, posting progress.
async fn fetch_file(
    id: u32,
    source: &ModelSource,
    cache: Option<&Cache>,
    file: &str,
    consume: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<Loaded, String> {
    let url = source.url(file);
    let key = FileKey { repo: source.repo.clone(), revision: source.revision.clone(), file: file.to_owned() };
    let job =
        Job { url: &url, key: &key, cache, chunk_bytes: source.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES) };
    let mut on_progress = |p: Progress| {
        post(&Response::DownloadProgress {
            id,
            file: file.to_owned(),
            bytes: p.bytes,
            total: p.total,
            from_cache: p.from_cache,
            wasm_memory: wasm_memory(),
        })
    };
    let mut on_cache_problem = |p: &CacheProblem| {
        post(&Response::CacheUnavailable {
            id,
            file: file.to_owned(),
            needed: p.needed,
            available: p.available,
            quota_exceeded: matches!(p.error, crate::cache::CacheError::QuotaExceeded(_)),
            message: format!(
                "{} will load without being cached ({:.1} MiB needed{}): {}",
                file,
                p.needed as f64 / MIB,
                p.available.map(|free| format!(", {:.1} MiB free", free as f64 / MIB)).unwrap_or_default(),
                p.error
            ),
        })
    };
    download::load_file(job, &mut on_progress, &mut on_cache_problem, consume)
        .await
        .map_err(|e| e.to_string())
}

fn file_loaded(file: &str, loaded: Loaded) -> FileLoaded {
    FileLoaded {
        file: file.to_owned(),
        size: loaded.size,
        fetched_bytes: loaded.fetched_bytes,
        cached_bytes: loaded.cached_bytes,
        corrupt_chunks: loaded.corrupt_chunks,
        retries: loaded.retries,
        stored: loaded.stored,
        sha256: loaded.sha256,
    }
}

/// A protocol tensor on the device, its shape checked against its values.
fn tensor<const D: usize>(tensor: Tensor, device: &Device) -> Result<BurnTensor<D>, String> {
    let elements: usize = tensor.shape.iter().product();
    if tensor.shape.len() != D || elements != tensor.values.len() {
        return Err(format!("a tensor of shape {:?} with {} values", tensor.shape, tensor.values.len()));
    }
    Ok(BurnTensor::from_data(TensorData::new(tensor.values, tensor.shape), device))
}

const MIB: f64 = (1 << 20) as f64;

/// The worker's WebAssembly memory, in bytes.
fn wasm_memory() -> u64 {
    wasm_bindgen::memory()
        .unchecked_into::<js_sys::WebAssembly::Memory>()
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length() as u64
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
