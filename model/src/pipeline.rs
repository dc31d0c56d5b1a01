//! The guided pipeline: a prompt and zero or more ControlNet units become an image, the way
//! diffusers' `StableDiffusionControlNetPipeline` (and, without units, `StableDiffusionPipeline`)
//! does it.
//!
//! Classifier-free guidance runs the UNet on a batch of two, `[uncond, cond]`, and extrapolates:
//! `ε = ε_uncond + g·(ε_cond − ε_uncond)`. Each control unit is data: its ControlNet (the trainable
//! copy), its condition image, its conditioning scale, guess mode, and the fraction of the steps
//! it is active for. The residuals of all active units are summed and added to the locked copy,
//! the UNet.
//!
//! The loop is exposed step by step ([`Pipeline::start`], [`Run::step`]) so that a browser
//! worker can yield to its event loop between steps (progress, previews, cancellation);
//! [`Pipeline::generate`] drives it with a callback. Nothing here reads the GPU synchronously.

use std::ops::ControlFlow;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::clip::ClipTextModel;
use crate::controlnet::{ControlNet, ControlScale};
use crate::rng::Rng;
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerError, SchedulerKind};
use crate::tokenizer::{ClipTokenizer, TokenizerError};
use crate::unet::{ControlResiduals, UNet};
use crate::vae::AutoencoderKL;
use crate::weights::WeightsError;
use crate::{Precision, clip, vae, weights};

/// Why a pipeline could not be loaded or run.
#[derive(Debug)]
pub enum PipelineError {
    /// The folder is not a diffusers Stable Diffusion pipeline folder.
    NotAPipeline {
        dir: String,
        why: String,
    },
    Weights {
        component: &'static str,
        error: WeightsError,
    },
    Tokenizer(TokenizerError),
    Scheduler(SchedulerError),
    /// Width and height must be positive multiples of 8.
    Size {
        width: usize,
        height: usize,
    },
    /// A condition image does not have the generation's size (resize it first).
    ControlImage {
        unit: usize,
        expected: [usize; 2],
        found: Vec<usize>,
    },
    /// Explicit initial noise of the wrong shape.
    Noise {
        expected: [usize; 4],
        found: Vec<usize>,
    },
    /// Parameters out of range (steps, guidance, control start/end …).
    Parameter(String),
    /// The step callback asked to stop.
    Cancelled {
        step: usize,
    },
    /// The device failed (lost, out of memory) while reading a result back.
    Device(String),
}

impl std::fmt::Display for PipelineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineError::NotAPipeline { dir, why } => {
                write!(f, "{dir} is not a diffusers Stable Diffusion folder: {why}")
            }
            PipelineError::Weights { component, error } => write!(f, "{component}: {error}"),
            PipelineError::Tokenizer(e) => write!(f, "tokenizer: {e}"),
            PipelineError::Scheduler(e) => write!(f, "scheduler: {e}"),
            PipelineError::Size { width, height } => {
                write!(f, "the size {width}×{height} is not a positive multiple of 8 on both sides")
            }
            PipelineError::ControlImage { unit, expected: [h, w], found } => write!(
                f,
                "control unit {}: the condition image is {found:?}, expected [1, 3, {h}, {w}] (the generation size)",
                unit + 1
            ),
            PipelineError::Noise { expected, found } => {
                write!(f, "the initial noise has the shape {found:?}, expected {expected:?}")
            }
            PipelineError::Parameter(message) => f.write_str(message),
            PipelineError::Cancelled { step } => write!(f, "cancelled at step {step}"),
            PipelineError::Device(message) => write!(f, "the GPU failed: {message}"),
        }
    }
}

impl std::error::Error for PipelineError {}

impl From<TokenizerError> for PipelineError {
    fn from(e: TokenizerError) -> Self {
        PipelineError::Tokenizer(e)
    }
}

impl From<SchedulerError> for PipelineError {
    fn from(e: SchedulerError) -> Self {
        PipelineError::Scheduler(e)
    }
}

/// Stable Diffusion 1.x: tokenizer, text encoder, UNet (the locked copy), VAE and the
/// scheduler configuration, as a diffusers pipeline folder holds them.
pub struct Pipeline {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet,
    pub vae: AutoencoderKL,
    pub scheduler_config: SchedulerConfig,
    /// The precision of the UNet, the ControlNets and the text encoder.
    pub precision: Precision,
}

/// One ControlNet steering a generation.
#[derive(Clone)]
pub struct ControlUnit<'a> {
    /// The trainable copy.
    pub controlnet: &'a ControlNet,
    /// `[1, 3, height, width]`, RGB in `[0, 1]`, at the generation's size.
    pub image: Tensor<4>,
    /// The conditioning scale ("control weight").
    pub scale: f64,
    /// Guess mode: the ControlNet sees only the conditional half of the guidance batch (zeros
    /// for the other), and its residuals are scaled from 0.1 (shallowest) to 1 (mid block).
    pub guess_mode: bool,
    /// How the control weighs against the prompt (A1111's control modes).
    pub mode: ControlMode,
    /// Active from this fraction of the steps…
    pub start: f64,
    /// …to this one (diffusers' `control_guidance_start` / `control_guidance_end`).
    pub end: f64,
}

/// The control modes users of A1111's ControlNet extension know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ControlMode {
    /// The residuals as the ControlNet computes them, on both halves of the guidance batch.
    #[default]
    Balanced,
    /// "My prompt is more important": residual `i` of `n` is scaled by `0.825^(n−1−i)` (the mid
    /// block's by 1, the shallowest SD1.5 one by 0.825¹²), on both halves.
    PromptMoreImportant,
    /// "ControlNet is more important": the control acts on the conditional half only (zeros for
    /// the unconditional one), as guess mode does, so guidance amplifies it.
    ControlNetMoreImportant,
}

impl ControlMode {
    /// The extra factor for each of `n` residuals (the down residuals, then the mid one).
    pub fn factors(self, n: usize) -> Vec<f64> {
        match self {
            ControlMode::PromptMoreImportant => (0..n).map(|i| 0.825f64.powi((n - 1 - i) as i32)).collect(),
            _ => vec![1.0; n],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ControlMode::Balanced => "balanced",
            ControlMode::PromptMoreImportant => "prompt",
            ControlMode::ControlNetMoreImportant => "controlnet",
        }
    }
}

impl std::str::FromStr for ControlMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "balanced" => Ok(ControlMode::Balanced),
            "prompt" => Ok(ControlMode::PromptMoreImportant),
            "controlnet" => Ok(ControlMode::ControlNetMoreImportant),
            other => Err(format!("unknown control mode `{other}` (expected balanced, prompt or controlnet)")),
        }
    }
}

/// Where the initial latents come from.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant, reason = "built once per generation; a Box would only add noise")]
pub enum Noise {
    /// Drawn with our own generator ([`Rng`]): the same seed gives the same image on a backend.
    Seed(u64),
    /// Given: standard normal `[1, 4, height/8, width/8]` (what diffusers' `randn_tensor`
    /// returns, before the scheduler's initial sigma), to reproduce a diffusers run exactly.
    Latents(Tensor<4>),
}

/// Everything about a generation but the models.
#[derive(Clone, Debug)]
pub struct Params {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    /// Classifier-free guidance scale; at 1 or below, guidance is off (one UNet pass per step).
    pub guidance: f64,
    pub scheduler: SchedulerKind,
    pub width: usize,
    pub height: usize,
    pub noise: Noise,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 20,
            guidance: 7.5,
            scheduler: SchedulerKind::default(),
            width: 512,
            height: 512,
            noise: Noise::Seed(0),
        }
    }
}

/// What the step callback sees.
pub struct Progress<'a> {
    /// Steps done so far (1 after the first).
    pub step: usize,
    pub total: usize,
    /// The current latents, `[1, 4, height/8, width/8]` f32 (unscaled: divide by the VAE's
    /// scaling factor to decode).
    pub latents: &'a Tensor<4>,
}

impl Pipeline {
    /// Loads a diffusers pipeline folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`). The VAE is loaded in f32 when its config asks for it
    /// (`force_upcast`: SD1.5's VAE overflows in f16).
    pub fn load(dir: &Path, precision: Precision, device: &Device) -> Result<Self, PipelineError> {
        let not_pipeline = |why: String| PipelineError::NotAPipeline { dir: dir.display().to_string(), why };
        let index = std::fs::read_to_string(dir.join("model_index.json"))
            .map_err(|e| not_pipeline(format!("model_index.json: {e}")))?;
        let index: serde_json::Value =
            serde_json::from_str(&index).map_err(|e| not_pipeline(format!("model_index.json: {e}")))?;
        for component in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
            if index.get(component).is_none() {
                return Err(not_pipeline(format!("model_index.json lists no `{component}`")));
            }
        }
        let weights_error = |component| move |error| PipelineError::Weights { component, error };
        let tokenizer = ClipTokenizer::load(&dir.join("tokenizer"))?;
        let text_encoder = clip::load_text_encoder(&dir.join("text_encoder"), precision, device)
            .map_err(weights_error("text_encoder"))?;
        let unet = weights::load_unet(&dir.join("unet"), precision, device).map_err(weights_error("unet"))?;
        // SD1.5's VAE overflows in f16 (NaN images): its config says `force_upcast`, and it then
        // runs in f32 whatever the rest does.
        let (vae_config, _) =
            weights::read_model_dir(&dir.join("vae"), Precision::F32).map_err(weights_error("vae"))?;
        let vae_config = vae::VaeConfig::from_json(&vae_config)
            .map_err(|e| PipelineError::Weights { component: "vae", error: WeightsError::Config(e) })?;
        let vae_precision = if vae_config.force_upcast { Precision::F32 } else { precision };
        let vae = vae::load_vae(&dir.join("vae"), vae_precision, device).map_err(weights_error("vae"))?;
        let path = dir.join("scheduler/scheduler_config.json");
        let scheduler_json =
            std::fs::read_to_string(&path).map_err(|e| not_pipeline(format!("{}: {e}", path.display())))?;
        let scheduler_config = SchedulerConfig::from_json(&scheduler_json)?;
        Ok(Self { tokenizer, text_encoder, unet, vae, scheduler_config, precision })
    }

    pub fn device(&self) -> Device {
        self.unet.conv_in.weight.val().device()
    }

    /// The prompt's embeddings, `[1, 77, hidden]`.
    pub fn encode_prompt(&self, prompt: &str) -> Tensor<3> {
        let ids = self.tokenizer.encode(prompt);
        self.text_encoder.encode_ids(&[ids], &self.device())
    }

    /// Checks the parameters, encodes the prompts and draws the noise: the first step is next.
    pub fn start<'a>(&'a self, params: &Params, units: &[ControlUnit<'a>]) -> Result<Run<'a>, PipelineError> {
        let (width, height) = (params.width, params.height);
        if width == 0 || height == 0 || width % 8 != 0 || height % 8 != 0 {
            return Err(PipelineError::Size { width, height });
        }
        if params.steps == 0 || params.steps > 1000 {
            return Err(PipelineError::Parameter(format!("steps must be 1 to 1000, not {}", params.steps)));
        }
        if !params.guidance.is_finite() {
            return Err(PipelineError::Parameter("the guidance scale must be a finite number".into()));
        }
        for (i, unit) in units.iter().enumerate() {
            let dims = unit.image.dims();
            if dims != [1, 3, height, width] {
                return Err(PipelineError::ControlImage {
                    unit: i,
                    expected: [height, width],
                    found: dims.to_vec(),
                });
            }
            if !(0.0..=1.0).contains(&unit.start) || !(0.0..=1.0).contains(&unit.end) || unit.start > unit.end
            {
                return Err(PipelineError::Parameter(format!(
                    "control unit {}: start {} and end {} must satisfy 0 ≤ start ≤ end ≤ 1",
                    i + 1,
                    unit.start,
                    unit.end
                )));
            }
            if !unit.scale.is_finite() {
                return Err(PipelineError::Parameter(format!(
                    "control unit {}: the scale must be finite",
                    i + 1
                )));
            }
        }
        let device = self.device();
        let scheduler = Scheduler::new(params.scheduler, &self.scheduler_config, params.steps)?;
        let guided = params.guidance > 1.0;
        let cond = self.encode_prompt(&params.prompt);
        let context = if guided {
            Tensor::cat(vec![self.encode_prompt(&params.negative_prompt), cond.clone()], 0)
        } else {
            cond.clone()
        };

        let shape = [1, 4, height / 8, width / 8];
        let (noise, rng) = match &params.noise {
            Noise::Seed(seed) => {
                let mut rng = Rng::new(*seed);
                let values = rng.normal_vec(shape.iter().product());
                (Tensor::from_data(TensorData::new(values, shape), &device), rng)
            }
            Noise::Latents(latents) => {
                if latents.dims() != shape {
                    return Err(PipelineError::Noise { expected: shape, found: latents.dims().to_vec() });
                }
                // Ancestral samplers' per-step noise still needs a generator: seed it from nothing
                // the user gave, deterministically.
                (latents.clone().cast(FloatDType::F32), Rng::new(0))
            }
        };
        let latents = noise * scheduler.init_noise_sigma();

        let units = units
            .iter()
            .map(|unit| {
                // A ControlNet trained with pooled conditions is always run in guess mode.
                let guess_mode = unit.guess_mode || unit.controlnet.config.global_pool_conditions;
                let cond_only = guess_mode || unit.mode == ControlMode::ControlNetMoreImportant;
                let image = if guided && !cond_only {
                    unit.image.clone().repeat_dim(0, 2)
                } else {
                    unit.image.clone()
                };
                PreparedUnit { unit: unit.clone(), guess_mode, cond_only, image }
            })
            .collect();
        Ok(Run {
            pipeline: self,
            scheduler,
            guided,
            guidance: params.guidance,
            context,
            cond,
            units,
            latents,
            rng,
            step: 0,
        })
    }

    /// Decodes latents (`[1, 4, h, w]`, unscaled) to an image `[1, 3, 8h, 8w]` in `[0, 1]`,
    /// tiling the VAE when a whole decode would need a buffer over WebGPU's 128 MiB binding.
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        let z = latents / self.vae.scaling_factor();
        let image = self.vae.decode_within(z, vae::MAX_BUFFER_BYTES);
        (image.cast(FloatDType::F32) / 2.0 + 0.5).clamp(0.0, 1.0)
    }

    /// The whole generation: `on_step` sees every step's latents and may stop the run
    /// (`ControlFlow::Break`), which returns [`PipelineError::Cancelled`].
    pub fn generate(
        &self,
        params: &Params,
        units: &[ControlUnit<'_>],
        mut on_step: impl FnMut(Progress<'_>) -> ControlFlow<()>,
    ) -> Result<Tensor<4>, PipelineError> {
        let mut run = self.start(params, units)?;
        while !run.is_done() {
            run.step();
            let progress = Progress { step: run.step, total: run.total(), latents: &run.latents };
            if on_step(progress).is_break() {
                return Err(PipelineError::Cancelled { step: run.step });
            }
        }
        Ok(self.decode(run.into_latents()))
    }
}

struct PreparedUnit<'a> {
    unit: ControlUnit<'a>,
    guess_mode: bool,
    /// The control acts on the conditional half of the guidance batch only.
    cond_only: bool,
    /// The condition image, doubled for the guidance batch unless `cond_only`.
    image: Tensor<4>,
}

/// A generation in progress.
pub struct Run<'a> {
    pipeline: &'a Pipeline,
    scheduler: Scheduler,
    guided: bool,
    guidance: f64,
    /// `[uncond, cond]` when guided, else `cond`.
    context: Tensor<3>,
    cond: Tensor<3>,
    units: Vec<PreparedUnit<'a>>,
    latents: Tensor<4>,
    rng: Rng,
    step: usize,
}

impl<'a> Run<'a> {
    pub fn total(&self) -> usize {
        self.scheduler.len()
    }

    /// Steps done.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.total()
    }

    /// The current latents, `[1, 4, h, w]` f32.
    pub fn latents(&self) -> &Tensor<4> {
        &self.latents
    }

    pub fn into_latents(self) -> Tensor<4> {
        self.latents
    }

    /// Whether control unit `unit` is active at step `step` (diffusers' `controlnet_keep`).
    fn keeps(&self, unit: &ControlUnit<'_>, step: usize) -> bool {
        let n = self.total() as f64;
        let i = step as f64;
        !(i / n < unit.start || (i + 1.0) / n > unit.end)
    }

    /// One denoising step (queued on the device; nothing is read back).
    pub fn step(&mut self) {
        assert!(!self.is_done(), "the run is over");
        let i = self.step;
        let t = self.scheduler.timesteps()[i] as f32;
        let dtype = self.pipeline.unet.dtype();
        let batch = if self.guided { 2 } else { 1 };
        let doubled = if self.guided { self.latents.clone().repeat_dim(0, 2) } else { self.latents.clone() };
        let model_input = self.scheduler.scale_model_input(doubled, i);

        let mut residuals: Option<ControlResiduals> = None;
        for prepared in &self.units {
            let unit = &prepared.unit;
            if !self.keeps(unit, i) {
                continue; // diffusers runs it with a scale of 0: residuals of zeros
            }
            let scale = ControlScale { scale: unit.scale, guess_mode: prepared.guess_mode };
            let r = if prepared.cond_only && self.guided {
                // The ControlNet sees only the conditional half; the unconditional half gets zeros.
                let input = self.scheduler.scale_model_input(self.latents.clone(), i);
                let r = unit.controlnet.forward(
                    input,
                    &[t],
                    self.cond.clone(),
                    prepared.image.clone().cast(dtype),
                    scale,
                );
                let pad = |x: Tensor<4>| Tensor::cat(vec![x.zeros_like(), x], 0);
                ControlResiduals { down: r.down.into_iter().map(pad).collect(), mid: pad(r.mid) }
            } else {
                unit.controlnet.forward(
                    model_input.clone(),
                    &vec![t; batch],
                    self.context.clone(),
                    prepared.image.clone().cast(dtype),
                    scale,
                )
            };
            let r = match unit.mode {
                ControlMode::PromptMoreImportant => {
                    let factors = unit.mode.factors(r.down.len() + 1);
                    r.scale_each(&factors)
                }
                _ => r,
            };
            residuals = Some(match residuals {
                Some(sum) => sum + r,
                None => r,
            });
        }

        let noise_pred = self.pipeline.unet.forward(
            model_input,
            &vec![t; batch],
            self.context.clone(),
            residuals.as_ref(),
        );
        let noise_pred = noise_pred.cast(FloatDType::F32);
        let noise_pred = if self.guided {
            let [uncond, cond] = noise_pred.chunk(2, 0).try_into().expect("a batch of two");
            uncond.clone() + (cond - uncond) * self.guidance
        } else {
            noise_pred
        };
        let noise = self.scheduler.needs_noise().then(|| {
            let shape: [usize; 4] = self.latents.dims();
            let values = self.rng.normal_vec(shape.iter().product());
            Tensor::from_data(TensorData::new(values, shape), &self.latents.device())
        });
        self.latents = self.scheduler.step(noise_pred, i, self.latents.clone(), noise);
        self.step += 1;
    }
}

/// A control unit as A1111's parameters text names it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnitSummary<'a> {
    /// The ControlNet's name (a folder or repository).
    pub model: &'a str,
    /// What the condition image was (a file name, or the preprocessor that made it).
    pub image: &'a str,
    pub weight: f64,
    pub start: f64,
    pub end: f64,
    pub mode: ControlMode,
    pub guess_mode: bool,
}

/// A1111's `parameters` text, which other Stable Diffusion tools (and A1111's "PNG Info") read
/// back from a PNG: the prompt, the negative prompt, then one line of settings with a quoted
/// entry per ControlNet unit. The seed is the noise's ([`Noise::Seed`]); given latents have none
/// and say `noise file`.
pub fn parameters_text(
    params: &Params,
    model: &str,
    precision: Precision,
    units: &[UnitSummary<'_>],
) -> String {
    let mut text = params.prompt.clone();
    if !params.negative_prompt.is_empty() {
        text += &format!("\nNegative prompt: {}", params.negative_prompt);
    }
    let seed = match params.noise {
        Noise::Seed(seed) => seed.to_string(),
        Noise::Latents(_) => "noise file".into(),
    };
    text += &format!(
        "\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {seed}, Size: {}x{}, Model: {model}, Precision: {precision}",
        params.steps,
        params.scheduler.name(),
        params.guidance,
        params.width,
        params.height,
    );
    for (i, unit) in units.iter().enumerate() {
        text += &format!(
            ", ControlNet {i}: \"Model: {}, Image: {}, Weight: {}, Guidance Start: {}, Guidance End: {}, Control Mode: {}, Guess Mode: {}\"",
            unit.model,
            unit.image,
            unit.weight,
            unit.start,
            unit.end,
            unit.mode.name(),
            unit.guess_mode,
        );
    }
    text
}

/// SD1.x's latent channels → RGB, least squares over decoded images (the "cheap approximation"
/// A1111 and ComfyUI show as previews).
const LATENT_RGB: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// A preview of latents `[1, 4, h, w]` without the VAE: `[1, 3, h, w]` in `[0, 1]`, one linear
/// map per pixel (an eighth of the image's size; the page scales it up).
pub fn latent_preview(latents: Tensor<4>) -> Tensor<4> {
    let device = latents.device();
    let [b, c, h, w] = latents.dims();
    assert_eq!(c, 4, "SD1.x latents have 4 channels");
    let factors: Vec<f32> = LATENT_RGB.iter().flatten().copied().collect();
    let factors = Tensor::<2>::from_data(TensorData::new(factors, [4, 3]), &device);
    let pixels = latents.cast(FloatDType::F32).permute([0, 2, 3, 1]).reshape([b * h * w, 4]);
    let rgb = pixels.matmul(factors).reshape([b, h, w, 3]).permute([0, 3, 1, 2]);
    ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
}

/// Converts an image `[1, 3, h, w]` in `[0, 1]` to 8-bit RGB rows, as diffusers' `numpy_to_pil`
/// rounds (`(x · 255).round()`).
pub async fn to_rgb8(image: Tensor<4>) -> Result<(usize, usize, Vec<u8>), PipelineError> {
    let [_, _, h, w] = image.dims();
    let hwc = image.cast(FloatDType::F32).squeeze_dim::<3>(0).permute([1, 2, 0]);
    let data = hwc.into_data_async().await.map_err(|e| PipelineError::Device(format!("{e:?}")))?;
    let values = data.try_to_vec::<f32>().map_err(|e| PipelineError::Device(format!("{e:?}")))?;
    let bytes = values.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    Ok((w, h, bytes))
}

/// An 8-bit RGB image (rows of `width` pixels) as `[1, 3, height, width]` in `[0, 1]`.
pub fn from_rgb8(width: usize, height: usize, rgb: &[u8], device: &Device) -> Tensor<4> {
    assert_eq!(rgb.len(), width * height * 3, "RGB bytes do not match the size");
    let values: Vec<f32> = rgb.iter().map(|&v| v as f32 / 255.0).collect();
    Tensor::<3>::from_data(TensorData::new(values, [height, width, 3]), device)
        .permute([2, 0, 1])
        .unsqueeze_dim(0)
}
