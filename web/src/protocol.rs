//! Messages between the UI thread and the two workers: the GPU worker ([`Request`],
//! [`Response`]) and the preprocessing worker ([`PreprocessRequest`], [`PreprocessResponse`]).
//!
//! Both directions are serde enums sent through `postMessage` with `serde-wasm-bindgen`. Each
//! worker answers each request with exactly one terminal response (a result or an `Error`)
//! carrying the request's `id`. Byte buffers are `serde_bytes`, which `serde-wasm-bindgen` turns
//! into a `Uint8Array` (one `memcpy`) instead of a JS array of numbers (one object per byte).

use serde::{Deserialize, Serialize};
use vocabulary::memory::Profile;

pub use vocabulary::{
    self, ControlMode, GenerationParams, Limits, Precision, Preprocessor, Resize, ResizeMode, SchedulerKind,
    UnitSettings,
};

/// Where the GPU worker computes: the page chooses (WebGPU where the browser offers an adapter),
/// the worker obeys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// burn-wgpu on the browser's WebGPU adapter.
    #[default]
    WebGpu,
    /// burn's CPU backend (Flex), compiled into the worker's WebAssembly: one thread, f32, slow,
    /// but in every browser. For the small built-in models.
    Cpu,
}

impl Backend {
    /// Its name in the page.
    pub fn label(self) -> &'static str {
        match self {
            Backend::WebGpu => "WebGPU",
            Backend::Cpu => "CPU (WebAssembly)",
        }
    }
}

/// UI → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// Which device to compute on. The page sends it before anything else, to every worker it
    /// starts (a restarted one too); the worker takes it at once, ahead of its queue.
    UseBackend { backend: Backend },
    /// Run the device probe (conv2d, group norm, attention on fixed inputs) in `precision`.
    Probe { id: u32, precision: Precision },
    /// Load Stable Diffusion (tokenizer, text encoder, UNet, VAE, scheduler) and zero or more
    /// ControlNets, replacing whatever was loaded. Answered by `LoadPlan`, progress messages,
    /// then `ModelLoaded` or `Error`. The models stay on the device between generations.
    LoadPipeline { id: u32, models: ModelSet, precision: Precision },
    /// Generate one image with the loaded models. Answered by `GenerateProgress` after every
    /// step, `Preview` every `preview_every` steps (0: none), then `Generated`, `Cancelled` or
    /// `Error`.
    Generate { id: u32, params: GenerationParams, preview_every: u32, units: Vec<UnitParams> },
    /// Stop generation `id` after the step in progress. Handled as soon as it arrives, never
    /// queued behind the generation it stops; answered by that generation's `Cancelled`.
    Cancel { id: u32 },
    /// Drop the loaded models and free their device memory. Answered by `Unloaded`.
    Unload { id: u32 },
    /// What the weights cache holds, and the storage estimate. Handled as soon as it arrives
    /// (it only reads IndexedDB). Answered by `CacheContents`.
    CacheList { id: u32 },
    /// Delete one repository's files (`repo: None`: everything) from the cache; queued behind any
    /// load, so it never pulls a file from under one. Answered by `CacheContents`.
    CacheDelete { id: u32, repo: Option<String> },
    /// One slice of a local file being imported into the cache as `repo` (`local/{folder}`) at
    /// revision `local`: `bytes` start at `offset` and are one cache chunk (16 MiB) or the file's
    /// last, shorter one. Slices come in order; offset 0 starts the file over. Answered by
    /// `ImportProgress`, or `Imported` after the last slice, or `Error`.
    ImportChunk {
        id: u32,
        repo: String,
        /// Its path in the folder, e.g. `unet/config.json`.
        file: String,
        size: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Starts a ControlNet training run on the loaded pipeline (the Learn view's), replacing any
    /// kept run: `TrainStep` after every step, `TrainProbe` at step 0 and every
    /// `probe_every` steps, then `TrainStopped` (paused or finished) or `Error`. The run is kept
    /// for `TrainResume` until `TrainDiscard` or the next `TrainStart`.
    TrainStart { id: u32, settings: TrainSettings },
    /// Continues the kept run `id` where it stopped (answered as `TrainStart`).
    TrainResume { id: u32 },
    /// Stops run `id` after the step in progress (handled at once, not queued).
    TrainPause { id: u32 },
    /// Drops the kept run and its memory; answered by `TrainDiscarded`.
    TrainDiscard { id: u32 },
    /// The kept run's probe grid again, its ControlNet at conditioning scale `scale`; answered
    /// by `TrainProbe`.
    TrainProbe { id: u32, scale: f64 },
    /// Adds the kept run's ControlNet, as it stands, to the loaded models (the last of their
    /// ControlNets) for the generator's control units; answered by `ControlNetAdded`.
    TrainUse { id: u32 },
    /// What only the end-to-end tests ask (`web/src/worker/test_requests.rs`), in the test
    /// build of the worker alone (feature `test-requests`, `.ci/site`'s `TEST_WORKER`): never in
    /// the site.
    #[cfg(feature = "test-requests")]
    #[serde(untagged)]
    Test(TestRequest),
}

/// UI → worker, in the test build alone: the weights path driven without the rest of the app.
#[cfg(feature = "test-requests")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TestRequest {
    /// Load a UNet (its `config.json` and safetensors) from a Hub-style server into the worker,
    /// through the weights cache, chunk by chunk onto the device. Answered by progress
    /// messages, then `ModelLoaded` or `Error`.
    LoadUNet { id: u32, source: ModelSource, config_file: String, weights_file: String, precision: Precision },
    /// Run the loaded UNet once (no ControlNet) on the given inputs. Answered by `UNetOutput`.
    RunUNet {
        id: u32,
        /// `[batch, in_channels, height, width]` latents, row-major.
        sample: Tensor,
        /// One timestep, or one per batch element.
        timesteps: Vec<f32>,
        /// `[batch, tokens, cross_attention_dim]`.
        context: Tensor,
    },
    /// Stream a safetensors file onto the device tensor by tensor and let it go: the weights
    /// path without a model (to measure memory with a realistic file). Answered by `ModelLoaded`.
    StreamWeights { id: u32, source: ModelSource, file: String, precision: Precision },
}

/// How a run's ControlNet starts its zero convolutions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvInit {
    /// The paper's zero convolutions: the locked model's output is untouched at step 0.
    #[default]
    Zero,
    /// The paper's ablation: ordinary convolutions with Gaussian weights.
    Gaussian,
}

/// A ControlNet training run in the tab: a fresh ControlNet (`from_unet` of the loaded UNet)
/// trained by the recipe on the shapes world's pairs, made in the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Which maps it learns from (the world's Canny or scribble).
    pub condition: Preprocessor,
    pub init: ConvInit,
    pub lr: f64,
    pub batch: u32,
    /// The probability that a caption is replaced by "".
    pub prompt_drop: f64,
    /// The run's seed: the fresh hint encoder, the world, every draw.
    pub seed: u64,
    /// The world's examples `0..examples` the batches are drawn from.
    pub examples: u64,
    /// The run stops after this many steps.
    pub steps: u64,
    /// A probe grid every this many steps (and at step 0); 0: at step 0 only.
    pub probe_every: u64,
}

impl TrainSettings {
    /// A run's defaults where it computes on `backend`: the recipe's, but a batch of 4 on the
    /// CPU (a quarter of the recipe's work per step: about 2 steps a second there, README).
    pub fn for_backend(backend: Backend) -> Self {
        match backend {
            Backend::WebGpu => Self::default(),
            Backend::Cpu => Self { batch: 4, ..Self::default() },
        }
    }
}

impl Default for TrainSettings {
    /// The recipe's ControlNet stage, on Canny.
    fn default() -> Self {
        use vocabulary::shapes::recipe;
        Self {
            condition: Preprocessor::Canny,
            init: ConvInit::Zero,
            lr: recipe::CONTROLNET_LR,
            batch: recipe::BATCH as u32,
            prompt_drop: 0.5,
            seed: 0,
            examples: recipe::EXAMPLES,
            steps: recipe::CONTROLNET_STEPS,
            probe_every: 50,
        }
    }
}

/// One model: a repository (or a folder inside one) in the Hub's layout, or one file in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub source: ModelSource,
    /// The folder inside the repository that holds the model (`""`: the repository's root, as
    /// `lllyasviel/control_v11p_sd15_canny` has it; `"controlnet"` in the test fixtures).
    pub subfolder: String,
    /// The weights variant: `Some("fp16")` reads `diffusion_pytorch_model.fp16.safetensors` and
    /// `model.fp16.safetensors`, as diffusers' `variant="fp16"` does.
    pub variant: Option<String>,
    /// `Some(name)`: the model is one `.safetensors` file in `subfolder`, in the original (LDM)
    /// format, as A1111 and ComfyUI users keep ControlNets (`control_v11p_sd15_canny.safetensors`;
    /// its config follows from the pipeline's UNet). `None`: a diffusers folder.
    #[serde(default)]
    pub file: Option<String>,
}

impl ModelRef {
    /// The path of `file` in the repository.
    pub fn path(&self, file: &str) -> String {
        if self.subfolder.is_empty() { file.to_owned() } else { format!("{}/{file}", self.subfolder) }
    }

    /// A weights file's name with the variant: `diffusion_pytorch_model.safetensors` →
    /// `diffusion_pytorch_model.fp16.safetensors`; a single-file model's file whatever the stem.
    pub fn weights_name(&self, stem: &str) -> String {
        match (&self.file, &self.variant) {
            (Some(file), _) => file.clone(),
            (None, Some(variant)) => format!("{stem}.{variant}.safetensors"),
            (None, None) => format!("{stem}.safetensors"),
        }
    }

    /// Where the model is in its repository: its folder, or its file for a single-file model
    /// (`""`: the repository's root).
    pub fn location(&self) -> String {
        match &self.file {
            Some(file) => self.path(file),
            None => self.subfolder.clone(),
        }
    }

    /// The model's name for the user (the page, errors, the PNG's `parameters`): its repository,
    /// and its folder or file inside it if any.
    pub fn name(&self) -> String {
        let location = self.location();
        if location.is_empty() {
            self.source.repo.clone()
        } else {
            format!("{}/{location}", self.source.repo)
        }
    }
}

/// What `LoadPipeline` loads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSet {
    /// A diffusers pipeline folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`).
    pub pipeline: ModelRef,
    /// ControlNet folders (`config.json` + weights); `UnitParams::controlnet` indexes this list.
    pub controlnets: Vec<ModelRef>,
}

/// One control unit of a generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitParams {
    /// Index into the loaded `ModelSet::controlnets`.
    pub controlnet: u32,
    /// The control map: `GenerationParams::width × height` RGB, row-major.
    #[serde(with = "serde_bytes")]
    pub rgb: Vec<u8>,
    pub settings: UnitSettings,
    /// How the map was made, for the PNG's parameters: the preprocessor (`Scribble` for a
    /// drawing alone), how the picture was fitted, and Canny's thresholds.
    pub module: Preprocessor,
    pub resize: ResizeMode,
    pub thresholds: Option<(f64, f64)>,
}

/// Where model files come from, and how they are cached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSource {
    /// The Hub (`https://huggingface.co`) or a mirror with its URL layout:
    /// `{base_url}/{repo}/resolve/{revision}/{file}`.
    pub base_url: String,
    /// `owner/name`.
    pub repo: String,
    /// A branch, tag or commit.
    pub revision: String,
    /// The cache's chunk size in bytes (`None`: 16 MiB).
    pub chunk_bytes: Option<u64>,
    /// Whether to use the weights cache at all.
    pub cache: bool,
}

impl ModelSource {
    pub fn url(&self, file: &str) -> String {
        format!("{}/{}/resolve/{}/{file}", self.base_url.trim_end_matches('/'), self.repo, self.revision)
    }

    /// The Hub's JSON API answer for this repository at this revision: every file, its size and
    /// (with `blobs`) the SHA-256 of LFS files. The site serves one for its own models.
    pub fn api_url(&self) -> String {
        hub_api_url(&self.base_url, &self.repo, &self.revision)
    }

    /// A folder imported from the visitor's disk: no server, only the cache.
    pub fn is_local(&self) -> bool {
        self.base_url == crate::models::LOCAL_BASE_URL
    }
}

/// `{base_url}/api/models/{repo}/revision/{revision}?blobs=true`: the Hub's JSON API.
pub fn hub_api_url(base_url: &str, repo: &str, revision: &str) -> String {
    format!("{}/api/models/{repo}/revision/{revision}?blobs=true", base_url.trim_end_matches('/'))
}

/// A tensor in a message: its shape and its values, row-major.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Worker → UI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    /// The worker's message handler is installed. Messages posted to a worker before that are
    /// lost (its WebAssembly is still compiling), so the UI holds requests back until it sees this.
    WorkerReady,
    /// The worker has acquired its GPU device.
    DeviceReady {
        backend: Backend,
        /// Time to acquire the adapter and device, in milliseconds.
        init_ms: f64,
        /// Whether the device computes in f16.
        f16: bool,
    },
    /// The probe's results.
    ProbeDone {
        id: u32,
        precision: Precision,
        /// Wall time of the computation and the asynchronous read-back, in milliseconds. The first
        /// run of a precision includes compiling its shaders.
        elapsed_ms: f64,
        outputs: Vec<ProbeOutput>,
    },
    /// A model file is on its way to the device.
    DownloadProgress {
        id: u32,
        file: String,
        /// Bytes loaded so far (from the cache or the network) and the file's size.
        bytes: u64,
        total: u64,
        from_cache: bool,
        /// The worker's WebAssembly memory, in bytes.
        wasm_memory: u64,
    },
    /// The weights cannot be cached (no IndexedDB, or not enough space): they load anyway, and
    /// will be downloaded again next time.
    CacheUnavailable {
        id: u32,
        /// The file that will not be cached; empty when no file will (the cache cannot be opened).
        file: String,
        /// The space the file needs and what the browser says is free, in bytes.
        needed: u64,
        available: Option<u64>,
        /// Whether the browser refused for lack of space (`QuotaExceededError`).
        quota_exceeded: bool,
        message: String,
    },
    /// A model (or a file, for `TestRequest::StreamWeights`) is loaded.
    ModelLoaded {
        id: u32,
        elapsed_ms: f64,
        files: Vec<FileLoaded>,
        /// The worker's WebAssembly memory afterwards: its peak, as it never shrinks.
        wasm_memory: u64,
        /// What the loaded pipeline and ControlNets take and need (`LoadPipeline` only).
        memory: Option<Profile>,
    },
    /// The UNet's output for `TestRequest::RunUNet`.
    #[cfg(feature = "test-requests")]
    UNetOutput { id: u32, output: Tensor, elapsed_ms: f64 },
    /// The files `LoadPipeline` will read, before it reads any: for a total progress bar.
    LoadPlan { id: u32, files: Vec<PlannedFile> },
    /// A step of generation `id` is done (its latents were read back: the GPU has finished it).
    GenerateProgress { id: u32, step: u32, total: u32, elapsed_ms: f64 },
    /// The latents as a cheap linear RGB approximation (no VAE), an eighth of the image's size.
    Preview {
        id: u32,
        step: u32,
        width: u32,
        height: u32,
        #[serde(with = "serde_bytes")]
        rgb: Vec<u8>,
    },
    /// The image of generation `id`.
    Generated {
        id: u32,
        width: u32,
        height: u32,
        /// The image as a PNG whose `parameters` text chunk holds `parameters`.
        #[serde(with = "serde_bytes")]
        png: Vec<u8>,
        /// A small PNG for the gallery (at most 256 pixels on its longer side).
        #[serde(with = "serde_bytes")]
        thumbnail: Vec<u8>,
        /// A1111's parameters text.
        parameters: String,
        /// Denoising and decoding, in milliseconds.
        elapsed_ms: f64,
        /// Denoising alone, per step, in milliseconds.
        step_ms: f64,
    },
    /// Generation `id` stopped after `step` steps, as asked; what it allocated is freed.
    Cancelled { id: u32, step: u32 },
    /// The models are dropped.
    Unloaded { id: u32 },
    /// A slice of an imported file is stored: `bytes` of `total`.
    ImportProgress { id: u32, file: String, bytes: u64, total: u64 },
    /// An imported file is complete in the cache.
    Imported { id: u32, file: String, size: u64, sha256: String },
    /// The cache's contents, by repository and revision, and the browser's storage estimate.
    CacheContents {
        id: u32,
        models: Vec<CachedModel>,
        /// `navigator.storage.estimate()`: bytes used by this origin, and its quota.
        usage: Option<u64>,
        quota: Option<u64>,
    },
    /// Training run `id` took a step: its log line, and its steps per second since it
    /// (re)started.
    TrainStep { id: u32, line: vocabulary::training::LogLine, steps_per_second: f64 },
    /// The probe grid after `step` steps: one row per probe, `side`² pixels each — the
    /// condition, the locked model's image alone, the image with the ControlNet as it stands.
    TrainProbe {
        id: u32,
        step: u64,
        /// The ControlNet's conditioning scale in the grid (1 while training).
        scale: f64,
        side: u32,
        #[serde(with = "serde_bytes")]
        png: Vec<u8>,
        /// Per row: the pixels where the ControlNet's image differs from the locked model's.
        differing: Vec<u32>,
        /// The mean shape coverage IoU of the ControlNet's images (the world's adherence score).
        adherence: f64,
    },
    /// Run `id` stopped after `step` steps: paused, or `finished` its steps.
    TrainStopped { id: u32, step: u64, finished: bool },
    /// The kept run is dropped.
    TrainDiscarded { id: u32 },
    /// A ControlNet trained in the tab is the loaded models' last, named `name`, for
    /// `preprocessor`'s maps.
    ControlNetAdded { id: u32, name: String, preprocessor: Preprocessor, weight_bytes: u64 },
    /// The request failed; `message` is meant for the user.
    Error { id: Option<u32>, message: String },
}

/// How one file of a model was loaded: the downloader's account of it, as the page shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileLoaded {
    /// The file as the page names it (`unet/diffusion_pytorch_model.safetensors`, or with the
    /// ControlNet's name before it).
    pub file: String,
    pub size: u64,
    /// Body bytes received from the network (including chunks fetched again).
    pub fetched_bytes: u64,
    /// Bytes read back from the cache and verified.
    pub cached_bytes: u64,
    /// Cached chunks that failed their checksum and were fetched again.
    pub corrupt_chunks: u32,
    /// Network failures recovered from.
    pub retries: u32,
    /// Whether the file is now complete in the cache.
    pub stored: bool,
    pub sha256: String,
    /// What the whole file was checked against.
    pub verified: Verified,
    /// Where the worker's time went while it loaded the file.
    pub times: LoadTimes,
}

/// What a loaded file's SHA-256 was checked against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verified {
    /// Its server's SHA-256 (now, or when it was downloaded into the cache).
    Server,
    /// Nothing but its size and each cached chunk's own hash: its server named no SHA-256. The
    /// page marks such a weights file "unverified".
    #[default]
    Unchecked,
    /// No hash was to be had: a small config file (the Hub names hashes for LFS files only), or
    /// a file of a folder imported from the visitor's disk.
    NotExpected,
}

/// Where a file's load spent the worker's time, in milliseconds (`performance.now()`); the rest
/// of a load's elapsed time is everything else (the cache and the manifest opened, progress
/// messages, the models built).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadTimes {
    /// Awaiting bytes: the cache's chunk records, the network's body and cache writes.
    pub wait_ms: f64,
    /// Bringing chunks into the wasm heap: reading cached ones from their chunk file (or their
    /// record), copying downloaded ones out of the body.
    pub copy_ms: f64,
    /// Checking them: each cached chunk's XXH3, the file's SHA-256 when it is computed.
    pub hash_ms: f64,
    /// The consumer: parsing the safetensors stream and uploading tensors to the device.
    pub consume_ms: f64,
}

/// One file a load will read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedFile {
    /// As `DownloadProgress::file` names it: `{repo}/{path}`.
    pub file: String,
    /// Its size when known (from the cache or the server), in bytes.
    pub size: Option<u64>,
    /// Whether it is complete in the cache.
    pub cached: bool,
}

/// One repository revision in the cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedModel {
    pub repo: String,
    pub revision: String,
    pub files: Vec<CachedFile>,
}

/// One file in the cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedFile {
    /// Its path in the repository.
    pub file: String,
    pub size: u64,
    /// Bytes stored so far (less than `size` while a download is incomplete).
    pub stored: u64,
    pub complete: bool,
}

/// One tensor the probe computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutput {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// UI → preprocessing worker.
///
/// The worker keeps the last image it decoded, so a slider move sends only a small `Process`
/// and never the file again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PreprocessRequest {
    /// Decode an image file (PNG, JPEG with its EXIF orientation, WebP, GIF, BMP) and keep it
    /// as the source of later `Process` requests. A file that does not decode leaves the previous
    /// source in place. Answered by `Decoded` or `Error`.
    Decode {
        id: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Resize the kept source, run `op` on it, optionally invert the result, and send it back.
    /// Answered by `Processed` or `Error`.
    Process { id: u32, op: PreprocessOp, resize: Resize, invert: bool },
}

/// The preprocessor that turns the source image into a control map.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PreprocessOp {
    /// OpenCV's Canny edge detector with hysteresis thresholds on the gradient magnitude
    /// (ControlNet's defaults: 100 and 200).
    Canny { low: f64, high: f64 },
    /// Black-on-white line art (a drawing, a scan) turned into white strokes on black.
    Scribble,
    /// Difference of Gaussians: a pencil sketch from a photo, as white strokes on black.
    Xdog,
    /// The image as it is: for a control map made elsewhere.
    None,
}

impl PreprocessOp {
    /// The preprocessor, without its parameters.
    pub fn preprocessor(&self) -> Preprocessor {
        match self {
            PreprocessOp::Canny { .. } => Preprocessor::Canny,
            PreprocessOp::Scribble => Preprocessor::Scribble,
            PreprocessOp::Xdog => Preprocessor::Xdog,
            PreprocessOp::None => Preprocessor::None,
        }
    }

    /// Its machine name, for messages, timings and the page's `data-op`.
    pub fn name(&self) -> &'static str {
        use vocabulary::Named;
        self.preprocessor().name()
    }
}

/// Preprocessing worker → UI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PreprocessResponse {
    /// The message handler is installed; requests posted before this are held back by the UI.
    Ready,
    /// The file decoded; this is the source's size (a very large photo is scaled down on decode).
    Decoded {
        id: u32,
        width: u32,
        height: u32,
        /// Decoding time in milliseconds.
        decode_ms: f64,
    },
    /// The control map, `width × height` RGBA (alpha 255), ready for `ImageData`.
    Processed {
        id: u32,
        width: u32,
        height: u32,
        #[serde(with = "serde_bytes")]
        rgba: Vec<u8>,
        /// The preprocessor alone, in milliseconds.
        op_ms: f64,
        /// Resize, preprocessor, inversion and conversion to RGBA, in milliseconds.
        elapsed_ms: f64,
    },
    /// The request failed; `message` is meant for the user.
    Error { id: Option<u32>, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_json() {
        let messages = [
            Response::WorkerReady,
            Response::DeviceReady { backend: Backend::Cpu, init_ms: 12.5, f16: true },
            Response::ProbeDone {
                id: 3,
                precision: Precision::F16,
                elapsed_ms: 1.0,
                outputs: vec![ProbeOutput {
                    name: "conv2d".into(),
                    shape: vec![1, 2],
                    values: vec![0.5, -1.0],
                }],
            },
            Response::Error { id: None, message: "no adapter".into() },
        ];
        for message in messages {
            let json = serde_json::to_string(&message).unwrap();
            assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), message, "{json}");
        }
        let request = Request::Probe { id: 1, precision: Precision::F32 };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(json, r#"{"type":"Probe","id":1,"precision":"f32"}"#);
    }

    #[test]
    fn preprocess_messages_round_trip_as_json() {
        let requests = [
            PreprocessRequest::Decode { id: 1, bytes: vec![0x89, b'P', b'N', b'G'] },
            PreprocessRequest::Process {
                id: 2,
                op: PreprocessOp::Canny { low: 100.0, high: 200.0 },
                resize: Resize { mode: ResizeMode::Crop, width: 512, height: 768 },
                invert: true,
            },
            PreprocessRequest::Process {
                id: 3,
                op: PreprocessOp::None,
                resize: Resize { mode: ResizeMode::Fill, width: 64, height: 2048 },
                invert: false,
            },
        ];
        for request in requests {
            let json = serde_json::to_string(&request).unwrap();
            assert_eq!(serde_json::from_str::<PreprocessRequest>(&json).unwrap(), request, "{json}");
        }
        let responses = [
            PreprocessResponse::Ready,
            PreprocessResponse::Decoded { id: 1, width: 640, height: 480, decode_ms: 3.5 },
            PreprocessResponse::Processed {
                id: 2,
                width: 8,
                height: 8,
                rgba: vec![255; 256],
                op_ms: 1.5,
                elapsed_ms: 2.0,
            },
            PreprocessResponse::Error { id: Some(1), message: "not an image".into() },
        ];
        for response in responses {
            let json = serde_json::to_string(&response).unwrap();
            assert_eq!(serde_json::from_str::<PreprocessResponse>(&json).unwrap(), response, "{json}");
        }
        let op = serde_json::to_string(&PreprocessOp::Canny { low: 1.0, high: 2.0 }).unwrap();
        assert_eq!(op, r#"{"kind":"canny","low":1.0,"high":2.0}"#);
    }
}
