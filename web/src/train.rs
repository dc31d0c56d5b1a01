//! A ControlNet training run in the worker (the Learn view's): the recipe of `model::train` on
//! the shapes world's pairs, made here by the same generator the command line's `world make`
//! uses, so that a seed trains the same way in the tab and natively.
//!
//! The networks are trained in f32 whatever the pipeline was loaded in: the trainable copy and
//! the locked UNet are f32 copies, and the probe images cast the ControlNet back to the
//! pipeline's precision.

use model::burn::module::Module;
use model::burn::prelude::Device;
use model::burn::tensor::FloatDType;
use model::pipeline::{ControlUnit, Params, from_rgb8, to_rgb8};
use model::precision::{cast_module, of_dtype};
use model::train::{AdamW, ControlNetTrainer, NoiseSchedule, Recipe, Sampling, WorldPairs, micro_batch};
use model::vocabulary::Named;
use model::vocabulary::training::LogLine;
use model::{ControlNet, Precision};
use world::dataset::Spec;

use crate::load::Models;
use crate::protocol::{ConvInit, GenerationParams, Response, TrainSettings, UnitSettings};
use crate::worker::gpu_failure;

/// Probe rows: held-out examples of the world (its seed is the run's + 1, which the run never
/// draws from).
pub const PROBES: u64 = 3;

/// A run kept between `TrainStart` / `TrainResume` and `TrainDiscard`.
pub struct Training {
    pub id: u32,
    pub settings: TrainSettings,
    trainer: ControlNetTrainer,
    pairs: WorldPairs,
    sampling: Sampling,
    loss_ema: Option<f64>,
    probes: Vec<Probe>,
}

/// One probe row: a held-out example's condition and caption, and the locked model's image for
/// it (the UNet is frozen: it never changes).
struct Probe {
    scene: world::Scene,
    caption: String,
    condition: Vec<u8>,
    base: Vec<u8>,
}

impl Training {
    /// A fresh ControlNet for `models`' pipeline, seeded by the settings.
    pub async fn new(
        id: u32,
        models: &Models,
        settings: TrainSettings,
        device: &Device,
    ) -> Result<Self, String> {
        let condition = world::Condition::of(settings.condition).ok_or_else(|| {
            format!("the shapes world has no {} maps: train on Canny or scribble", settings.condition.label())
        })?;
        if settings.batch == 0 || settings.examples == 0 || settings.steps == 0 {
            return Err("the batch, the examples and the steps must be at least 1".into());
        }
        let pipeline = &models.pipeline;
        let side = vocabulary::shapes::SIDE as usize;
        let recipe = Recipe {
            adamw: AdamW { lr: settings.lr, ..AdamW::default() },
            prompt_drop: settings.prompt_drop,
            ..Recipe::default()
        };
        let schedule = NoiseSchedule::new(&pipeline.scheduler_config).map_err(|e| e.to_string())?;
        let unet = cast_module(pipeline.unet.clone(), Precision::F32);
        // As `controlnet train controlnet` makes its fresh ControlNet.
        device.seed(settings.seed);
        let controlnet = ControlNet::from_unet(&unet);
        let controlnet = match settings.init {
            ConvInit::Zero => controlnet,
            ConvInit::Gaussian => controlnet.with_gaussian_convs(),
        };
        let trainer =
            ControlNetTrainer::new(unet, controlnet, schedule, recipe).map_err(|e| e.to_string())?;
        let pairs = WorldPairs {
            spec: Spec { seed: settings.seed, count: settings.examples, size: side, condition },
        };
        let sampling = Sampling {
            seed: settings.seed,
            batch: settings.batch as usize,
            prompt_drop: settings.prompt_drop,
        };
        let held_out = settings.seed.wrapping_add(1);
        let mut probes = Vec::new();
        for index in 0..PROBES {
            let example = world::Example::make(held_out, index, side);
            let condition = example.condition(condition, held_out, index).to_rgb().pixels;
            let mut probe =
                Probe { scene: example.scene, caption: example.caption, condition, base: Vec::new() };
            probe.base = generate(models, &probe, None, settings.seed, device).await?;
            probes.push(probe);
        }
        Ok(Self { id, settings, trainer, pairs, sampling, loss_ema: None, probes })
    }

    pub fn step_count(&self) -> u64 {
        self.trainer.step_count()
    }

    pub fn finished(&self) -> bool {
        self.step_count() >= self.settings.steps
    }

    /// One optimiser step, and its log line (read back asynchronously).
    pub async fn step(&mut self, models: &Models) -> Result<LogLine, String> {
        let step = self.trainer.step_count();
        let (example, _) =
            micro_batch(&models.pipeline, &self.pairs, &self.sampling, step, 0).map_err(|e| e.to_string())?;
        let read = match self.trainer.step(&[example]).read().await {
            Ok(read) => read,
            Err(e) => return Err(gpu_failure(&models.pipeline.device(), e).await),
        };
        let done = self.trainer.step_count();
        if !read.loss.is_finite() {
            return Err(model::train::TrainError::Diverged { step: done }.to_string());
        }
        let loss_ema = LogLine::next_ema(self.loss_ema, read.loss);
        self.loss_ema = Some(loss_ema);
        Ok(LogLine {
            step: done,
            loss: read.loss,
            loss_ema,
            lr: self.trainer.recipe().lr_at(done - 1),
            grad_norm: read.grad_norm,
            zero_convs: read.zero_convs,
            hint_conv_norm: Some(read.hint_conv_norm),
            terms: Default::default(),
        })
    }

    /// Whether a probe grid is due after the step just taken (always at step 0).
    pub fn probe_due(&self) -> bool {
        let step = self.step_count();
        step == 0 || (self.settings.probe_every > 0 && step.is_multiple_of(self.settings.probe_every))
    }

    /// The ControlNet as it stands, for inference with `models`' pipeline (its precision).
    pub fn controlnet(&self, models: &Models) -> ControlNet {
        cast_module(self.trainer.controlnet().valid(), of_dtype(models.pipeline.unet.dtype()))
    }

    /// How the generator names the ControlNet as it stands, and the maps it takes.
    pub fn name(&self) -> (String, crate::protocol::Preprocessor) {
        let condition = self.settings.condition;
        let init = match self.settings.init {
            ConvInit::Zero => "",
            ConvInit::Gaussian => ", Gaussian",
        };
        (format!("trained here ({}{init}, step {})", condition.name(), self.step_count()), condition)
    }

    /// The probe grid with the ControlNet as it stands, at conditioning scale `scale`.
    pub async fn probe(&self, models: &Models, device: &Device, scale: f64) -> Result<Response, String> {
        let controlnet = self.controlnet(models);
        let side = vocabulary::shapes::SIDE as usize;
        let mut grid = vec![0u8; self.probes.len() * side * side * 3 * 3];
        let (mut differing, mut adherence) = (Vec::new(), 0.0);
        for (row, probe) in self.probes.iter().enumerate() {
            let controlled =
                generate(models, probe, Some((&controlnet, scale)), self.settings.seed, device).await?;
            differing.push(
                probe.base.chunks_exact(3).zip(controlled.chunks_exact(3)).filter(|(a, b)| a != b).count()
                    as u32,
            );
            let image = world::RgbImage { width: side, height: side, pixels: controlled.clone() };
            adherence += world::eval::coverage_iou(&image, &probe.scene) / self.probes.len() as f64;
            for (column, tile) in [&probe.condition, &probe.base, &controlled].into_iter().enumerate() {
                for y in 0..side {
                    let start = ((row * side + y) * 3 * side + column * side) * 3;
                    grid[start..start + side * 3].copy_from_slice(&tile[y * side * 3..(y + 1) * side * 3]);
                }
            }
        }
        let png = crate::image::encode_png(3 * side, self.probes.len() * side, &grid, &[])?;
        Ok(Response::TrainProbe {
            id: self.id,
            step: self.step_count(),
            scale,
            side: side as u32,
            png,
            differing,
            adherence,
        })
    }
}

/// A probe's image: its caption, the run's seed, the default sampler, with `controlnet` on its
/// condition at its scale (none: the locked model alone).
async fn generate(
    models: &Models,
    probe: &Probe,
    controlnet: Option<(&ControlNet, f64)>,
    seed: u64,
    device: &Device,
) -> Result<Vec<u8>, String> {
    let side = vocabulary::shapes::SIDE;
    let params = Params::from(GenerationParams {
        prompt: probe.caption.clone(),
        width: side,
        height: side,
        seed: seed as u32,
        ..GenerationParams::default()
    });
    let units: Vec<ControlUnit<'_>> = controlnet
        .map(|(controlnet, scale)| ControlUnit {
            controlnet,
            image: from_rgb8(side as usize, side as usize, &probe.condition, device),
            settings: UnitSettings { scale, ..UnitSettings::default() },
        })
        .into_iter()
        .collect();
    let image = models
        .pipeline
        .generate(&params, &units, |_| std::ops::ControlFlow::Continue(()))
        .map_err(|e| e.to_string())?;
    match to_rgb8(image.cast(FloatDType::F32)).await {
        Ok((_, _, rgb)) => Ok(rgb),
        Err(e) => Err(gpu_failure(device, e).await),
    }
}
