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
#[cfg(not(target_family = "wasm"))]
use std::path::Path;

use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::clip::ClipTextModel;
use crate::compat::Incompatible;
use crate::config::ConfigError;
use vocabulary::{GenerationParams, ParamError, UnitSettings};

use crate::controlnet::{ControlNet, Steering};
use crate::rng::Rng;
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerError};
use crate::tokenizer::{ClipTokenizer, TokenizerError};
use crate::unet::{ControlResiduals, UNet};
use crate::vae::AutoencoderKL;
use crate::weights::WeightsError;
use crate::{Precision, vae};

pub use vocabulary::ControlMode;

/// Why a pipeline could not be loaded or run.
#[derive(Debug)]
pub enum PipelineError {
    Weights {
        component: &'static str,
        error: WeightsError,
    },
    /// Models that do not fit together (an SD2.x ControlNet, an inpainting UNet…).
    Incompatible(Incompatible),
    /// A file could not be had (missing, unreadable, a refused download); worded by its source.
    Source(String),
    /// A `config.json` that is invalid or describes what this port does not run.
    Config {
        file: String,
        error: ConfigError,
    },
    Tokenizer(TokenizerError),
    Scheduler(SchedulerError),
    /// Parameters outside the limits every generation shares.
    Params(ParamError),
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
    /// A ControlNet that cannot steer this UNet at this size.
    Control(String),
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
            PipelineError::Weights { component, error } => write!(f, "{component}: {error}"),
            PipelineError::Incompatible(e) => write!(f, "{e}"),
            PipelineError::Source(message) => f.write_str(message),
            PipelineError::Config { file, error } => write!(f, "{file}: {error}"),
            PipelineError::Tokenizer(e) => write!(f, "tokenizer: {e}"),
            PipelineError::Scheduler(e) => write!(f, "scheduler: {e}"),
            PipelineError::Params(e) => write!(f, "{e}"),
            PipelineError::ControlImage { unit, expected: [h, w], found } => write!(
                f,
                "control unit {}: the condition image is {found:?}, expected [1, 3, {h}, {w}] (the generation size)",
                unit + 1
            ),
            PipelineError::Noise { expected, found } => {
                write!(f, "the initial noise has the shape {found:?}, expected {expected:?}")
            }
            PipelineError::Control(message) => f.write_str(message),
            PipelineError::Cancelled { step } => write!(f, "cancelled at step {step}"),
            PipelineError::Device(message) => write!(f, "the GPU failed: {message}"),
        }
    }
}

impl std::error::Error for PipelineError {}

impl From<Incompatible> for PipelineError {
    fn from(e: Incompatible) -> Self {
        PipelineError::Incompatible(e)
    }
}

impl From<ParamError> for PipelineError {
    fn from(e: ParamError) -> Self {
        PipelineError::Params(e)
    }
}

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
    /// Scale, guess mode, control mode, start and end: what [`Steering`] makes of them.
    pub settings: UnitSettings,
}

/// Everything about a generation but the models.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub settings: GenerationParams,
    /// Given initial latents, standard normal `[1, 4, height/f, width/f]` (what diffusers'
    /// `randn_tensor` returns, before the scheduler's initial sigma), to reproduce a diffusers run
    /// exactly; `None`: drawn from `settings.seed` with our own generator ([`Rng`]), the same on
    /// every backend.
    pub noise: Option<Tensor<4>>,
}

impl From<GenerationParams> for Params {
    fn from(settings: GenerationParams) -> Self {
        Self { settings, noise: None }
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
    /// `tokenizer/`, `scheduler/`) through [`crate::loader`], as the browser loads one. The VAE
    /// is loaded in f32 when its config asks for it (`force_upcast`: SD1.5's VAE overflows in f16).
    #[cfg(not(target_family = "wasm"))]
    pub fn load(dir: &Path, precision: Precision, device: &Device) -> Result<Self, PipelineError> {
        crate::loader::load_pipeline_dir(dir, precision, device)
    }

    /// Loads a ControlNet folder for this pipeline, checked against its UNet and VAE first.
    #[cfg(not(target_family = "wasm"))]
    pub fn load_controlnet(&self, dir: &Path) -> Result<ControlNet, PipelineError> {
        crate::loader::load_controlnet_dir(dir, self)
    }

    pub fn device(&self) -> Device {
        self.unet.conv_in.weight.val().device()
    }

    /// The prompt's embeddings, `[1, 77, hidden]`.
    pub fn encode_prompt(&self, prompt: &str) -> Tensor<3> {
        let ids = self.tokenizer.encode(prompt);
        self.text_encoder.encode_ids(&[ids], &self.device())
    }

    /// How many times smaller than the image the latents are: the VAE's `2^(levels − 1)`.
    pub fn latent_scale(&self) -> usize {
        self.vae.scale_factor()
    }

    /// The initial latents' shape for a `width × height` image.
    pub fn latent_shape(&self, width: usize, height: usize) -> [usize; 4] {
        let f = self.latent_scale();
        [1, self.unet.config.encoder.in_channels, height / f, width / f]
    }

    /// Checks the parameters, encodes the prompts and draws the noise: the first step is next.
    pub fn start<'a>(&'a self, params: &Params, units: &[ControlUnit<'a>]) -> Result<Run<'a>, PipelineError> {
        let settings = &params.settings;
        let unit_settings: Vec<UnitSettings> = units.iter().map(|unit| unit.settings).collect();
        settings.validate(&unit_settings)?;
        let (width, height) = (settings.width as usize, settings.height as usize);
        for (i, unit) in units.iter().enumerate() {
            let dims = unit.image.dims();
            if dims != [1, 3, height, width] {
                return Err(PipelineError::ControlImage {
                    unit: i,
                    expected: [height, width],
                    found: dims.to_vec(),
                });
            }
            let hint_scale = unit.controlnet.hint_scale();
            if hint_scale != self.latent_scale() {
                return Err(PipelineError::Control(format!(
                    "control unit {}: its ControlNet reads condition images {hint_scale} times the latents' size, \
                     but this VAE's latents are {} times smaller than the image",
                    i + 1,
                    self.latent_scale()
                )));
            }
        }
        let device = self.device();
        let scheduler = Scheduler::new(settings.scheduler, &self.scheduler_config, settings.steps as usize)?;
        let guided = settings.guided();
        let cond = self.encode_prompt(&settings.prompt);
        let context = if guided {
            Tensor::cat(vec![self.encode_prompt(&settings.negative_prompt), cond.clone()], 0)
        } else {
            cond.clone()
        };

        let shape = self.latent_shape(width, height);
        let (noise, rng) = match &params.noise {
            None => {
                let mut rng = Rng::new(u64::from(settings.seed));
                let values = rng.normal_vec(shape.iter().product());
                (Tensor::from_data(TensorData::new(values, shape), &device), rng)
            }
            Some(latents) => {
                if latents.dims() != shape {
                    return Err(PipelineError::Noise { expected: shape, found: latents.dims().to_vec() });
                }
                // Ancestral samplers' per-step noise still needs a generator: seed it from nothing
                // the user gave, deterministically.
                (latents.clone().cast(FloatDType::F32), Rng::new(0))
            }
        };
        let latents = noise * scheduler.init_noise_sigma();
        Ok(Run {
            pipeline: self,
            scheduler,
            guided,
            guidance: settings.guidance,
            context,
            cond,
            units: units.to_vec(),
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

/// A generation in progress.
pub struct Run<'a> {
    pipeline: &'a Pipeline,
    scheduler: Scheduler,
    guided: bool,
    guidance: f64,
    /// `[uncond, cond]` when guided, else `cond`.
    context: Tensor<3>,
    cond: Tensor<3>,
    units: Vec<ControlUnit<'a>>,
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
        for unit in &self.units {
            let controlnet = unit.controlnet;
            let pooled = controlnet.config.global_pool_conditions;
            let Some(steering) =
                Steering::new(&unit.settings, pooled, controlnet.residual_count(), i, self.total())
            else {
                continue;
            };
            let image = unit.image.clone().cast(dtype);
            let r = if steering.cond_only && self.guided {
                // The ControlNet sees only the conditional half; the unconditional half gets zeros.
                let input = self.scheduler.scale_model_input(self.latents.clone(), i);
                let r = steering.apply(controlnet.forward(input, &[t], self.cond.clone(), image));
                let pad = |x: Tensor<4>| Tensor::cat(vec![x.zeros_like(), x], 0);
                ControlResiduals { down: r.down.into_iter().map(pad).collect(), mid: pad(r.mid) }
            } else {
                let image = if self.guided { image.repeat_dim(0, 2) } else { image };
                steering.apply(controlnet.forward(
                    model_input.clone(),
                    &vec![t; batch],
                    self.context.clone(),
                    image,
                ))
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
