//! Messages between the UI thread and the two workers: the GPU worker ([`Request`],
//! [`Response`]) and the preprocessing worker ([`PreprocessRequest`], [`PreprocessResponse`]).
//!
//! Both directions are serde enums sent through `postMessage` with `serde-wasm-bindgen`. Each
//! worker answers each request with exactly one terminal response (a result or an `Error`)
//! carrying the request's `id`. Byte buffers are `serde_bytes`, which `serde-wasm-bindgen` turns
//! into a `Uint8Array` (one `memcpy`) instead of a JS array of numbers (one object per byte).

use serde::{Deserialize, Serialize};

/// Compute precision, as the UI chooses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

/// UI → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    /// Run the device probe (conv2d, group norm, attention on fixed inputs) in `precision`.
    Probe { id: u32, precision: Precision },
    /// Load a UNet (its `config.json` and safetensors) from a Hub-style server into the worker,
    /// through the IndexedDB cache, chunk by chunk onto the device. Answered by progress
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
    /// Whether to use the IndexedDB cache at all.
    pub cache: bool,
}

impl ModelSource {
    pub fn url(&self, file: &str) -> String {
        format!("{}/{}/resolve/{}/{file}", self.base_url.trim_end_matches('/'), self.repo, self.revision)
    }
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
        file: String,
        /// The space the file needs and what the browser says is free, in bytes.
        needed: u64,
        available: Option<u64>,
        /// Whether the browser refused for lack of space (`QuotaExceededError`).
        quota_exceeded: bool,
        message: String,
    },
    /// A model (or a file, for `StreamWeights`) is loaded.
    ModelLoaded {
        id: u32,
        elapsed_ms: f64,
        files: Vec<FileLoaded>,
        /// The worker's WebAssembly memory afterwards: its peak, as it never shrinks.
        wasm_memory: u64,
    },
    /// The UNet's output for `RunUNet`.
    UNetOutput { id: u32, output: Tensor, elapsed_ms: f64 },
    /// The request failed; `message` is meant for the user.
    Error { id: Option<u32>, message: String },
}

/// How one file of a model was loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileLoaded {
    pub file: String,
    pub size: u64,
    /// Bytes that came over the network, and from the cache.
    pub fetched_bytes: u64,
    pub cached_bytes: u64,
    /// Cached chunks that failed their SHA-256 check and were fetched again.
    pub corrupt_chunks: u32,
    /// Network failures recovered from.
    pub retries: u32,
    /// Whether the file is now complete in the cache.
    pub stored: bool,
    pub sha256: String,
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
    /// A short name for messages and timings.
    pub fn label(&self) -> &'static str {
        match self {
            PreprocessOp::Canny { .. } => "Canny",
            PreprocessOp::Scribble => "Scribble",
            PreprocessOp::Xdog => "Sketch",
            PreprocessOp::None => "None",
        }
    }
}

/// How the source is fitted to the control map's size (the names are A1111's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Stretch to the target size, ignoring the aspect ratio.
    Just,
    /// Scale to cover the target and cut off what overflows, centred.
    Crop,
    /// Scale to fit inside the target and fill the margins.
    Fill,
}

impl ResizeMode {
    pub const ALL: [ResizeMode; 3] = [ResizeMode::Just, ResizeMode::Crop, ResizeMode::Fill];

    /// The name used in messages, `<select>` values and the `preprocess` crate's `FromStr`.
    pub fn name(self) -> &'static str {
        match self {
            ResizeMode::Just => "just",
            ResizeMode::Crop => "crop",
            ResizeMode::Fill => "fill",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.name() == name)
    }
}

/// The control map's size and how the source is fitted to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resize {
    pub mode: ResizeMode,
    pub width: u32,
    pub height: u32,
}

impl Resize {
    /// Stable Diffusion's latents are an eighth of the image: sides must be multiples of 8.
    pub const MULTIPLE: u32 = 8;
    pub const MIN_SIDE: u32 = 64;
    /// 2048² is 16 times SD1.5's native 512²; larger control maps only cost memory.
    pub const MAX_SIDE: u32 = 2048;

    /// `side` rounded to the nearest multiple of 8 within the allowed range: what the UI makes of
    /// whatever is typed into a size field.
    pub fn snap(side: f64) -> u32 {
        if !side.is_finite() {
            return 512;
        }
        let multiple = f64::from(Self::MULTIPLE);
        let snapped = (side / multiple).round() * multiple;
        snapped.clamp(f64::from(Self::MIN_SIDE), f64::from(Self::MAX_SIDE)) as u32
    }

    /// Refuses sizes the UI would never send: the worker trusts no message.
    pub fn validate(&self) -> Result<(), String> {
        for (name, side) in [("width", self.width), ("height", self.height)] {
            if side % Self::MULTIPLE != 0 || !(Self::MIN_SIDE..=Self::MAX_SIDE).contains(&side) {
                return Err(format!(
                    "the control map's {name} must be a multiple of {} from {} to {}, not {side}",
                    Self::MULTIPLE,
                    Self::MIN_SIDE,
                    Self::MAX_SIDE
                ));
            }
        }
        Ok(())
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
            Response::DeviceReady { init_ms: 12.5, f16: true },
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

    #[test]
    fn sizes_snap_to_multiples_of_eight_within_range() {
        assert_eq!(Resize::snap(512.0), 512);
        assert_eq!(Resize::snap(515.0), 512);
        assert_eq!(Resize::snap(516.0), 520);
        assert_eq!(Resize::snap(3.0), Resize::MIN_SIDE);
        assert_eq!(Resize::snap(1e9), Resize::MAX_SIDE);
        assert_eq!(Resize::snap(f64::NAN), 512);
        assert!(Resize { mode: ResizeMode::Just, width: 512, height: 2048 }.validate().is_ok());
        let odd = Resize { mode: ResizeMode::Just, width: 500, height: 512 }.validate().unwrap_err();
        assert!(odd.contains("width") && odd.contains("500"), "{odd}");
        assert!(Resize { mode: ResizeMode::Just, width: 512, height: 4096 }.validate().is_err());
        for mode in ResizeMode::ALL {
            assert_eq!(ResizeMode::from_name(mode.name()), Some(mode));
        }
    }
}
