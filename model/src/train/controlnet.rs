//! The ControlNet recipe: a trainable copy steering a locked UNet.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::DType;

use super::checkpoint::{self, RunState};
use super::part::{Part, Trained, finish_step};
use super::{NoiseSchedule, Recipe, TrainError};
use crate::clip::ClipTextModel;
use crate::tokenizer::ClipTokenizer;
use crate::unet::ControlResiduals;
use crate::vae::AutoencoderKL;
use crate::vocabulary::training::ZeroConv;
use crate::{ControlNet, UNet};

/// One micro-batch as the networks take it.
#[derive(Clone, Debug)]
pub struct Example {
    /// `[b, 4, h, w]`: the VAE's latent sample × its scaling factor.
    pub latents: Tensor<4>,
    /// `[b, 77, d]`: the text encoder's output for the (possibly dropped) captions.
    pub context: Tensor<3>,
    /// `[b, 3, f·h, f·w]` in `[0, 1]`.
    pub condition: Tensor<4>,
    /// `[b, 4, h, w]`: ε.
    pub noise: Tensor<4>,
    /// One training timestep per element.
    pub timesteps: Vec<u32>,
}

impl Example {
    /// The recipe's inputs from images and captions through the frozen encoders: latents from
    /// `vae.encode(images).latent_dist.sample() · scaling_factor` (the sample's noise is
    /// `draws.vae_noise`), captions replaced by "" where `draws.drop` says, encoded by CLIP.
    ///
    /// # Shapes
    /// - `images`: `[b, 3, H, W]` in `[-1, 1]`; `conditions`: `[b, 3, H, W]` in `[0, 1]`
    pub fn encode(
        vae: &AutoencoderKL,
        text_encoder: &ClipTextModel,
        tokenizer: &ClipTokenizer,
        images: Tensor<4>,
        conditions: Tensor<4>,
        captions: &[String],
        draws: &super::Draws,
    ) -> Self {
        let device = images.device();
        let (mean, logvar) = vae.encode(images);
        let shape = mean.shape();
        let vae_noise =
            Tensor::<1>::from_data(TensorData::new(draws.vae_noise.clone(), [shape.num_elements()]), &device)
                .reshape(shape.clone())
                .cast(mean.dtype());
        let latents = (mean + (logvar * 0.5).exp() * vae_noise) * vae.scaling_factor();
        let ids: Vec<Vec<u32>> = captions
            .iter()
            .zip(&draws.drop)
            .map(|(caption, &drop)| tokenizer.encode(if drop { "" } else { caption }))
            .collect();
        let context = text_encoder.encode_ids(&ids, &device);
        let noise =
            Tensor::<1>::from_data(TensorData::new(draws.noise.clone(), [shape.num_elements()]), &device)
                .reshape(shape)
                .cast(latents.dtype());
        Self { latents, context, condition: conditions, noise, timesteps: draws.timesteps.clone() }
    }
}

/// What one optimiser step leaves for the log, on the device (read it back asynchronously).
#[derive(Clone, Debug)]
pub struct StepReport {
    /// `[1]`: the mean loss over the micro-batches.
    pub loss: Tensor<1>,
    /// `[1]`: the gradients' global L2 norm before clipping (when clipping).
    pub grad_norm: Option<Tensor<1>>,
    /// `[n]`: the L2 norm of each zero convolution's weight after the step (the skip
    /// connections' in order, then the mid block's).
    pub zero_conv_norms: Tensor<1>,
    /// `[n]`: the mean magnitude of each zero convolution's output in the step.
    pub zero_conv_outputs: Tensor<1>,
    /// `[1]`: the L2 norm of the hint encoder's last convolution (a zero convolution too) after
    /// the step.
    pub hint_conv_norm: Tensor<1>,
}

/// A [`StepReport`] read back.
#[derive(Clone, Debug, PartialEq)]
pub struct StepValues {
    pub loss: f64,
    pub grad_norm: Option<f64>,
    pub zero_convs: Vec<ZeroConv>,
    pub hint_conv_norm: f64,
}

impl StepReport {
    /// The report's values, read back asynchronously (the only wait of a step: in a browser
    /// the worker's event loop runs meanwhile).
    pub async fn read(self) -> Result<StepValues, TrainError> {
        async fn values(t: Tensor<1>) -> Result<Vec<f32>, TrainError> {
            let data = t.into_data_async().await.map_err(|e| TrainError::Device(format!("{e:?}")))?;
            data.try_to_vec::<f32>().map_err(|e| TrainError::Device(format!("{e:?}")))
        }
        let loss = values(self.loss).await?.first().copied().map_or(f64::NAN, f64::from);
        let grad_norm = match self.grad_norm {
            Some(norm) => values(norm).await?.first().copied().map(f64::from),
            None => None,
        };
        let norms = values(self.zero_conv_norms).await?;
        let outputs = values(self.zero_conv_outputs).await?;
        let zero_convs = norms
            .iter()
            .zip(&outputs)
            .map(|(&n, &o)| ZeroConv { weight_norm: n.into(), output_mean: o.into() })
            .collect();
        let hint_conv_norm = values(self.hint_conv_norm).await?.first().copied().map_or(f64::NAN, f64::from);
        Ok(StepValues { loss, grad_norm, zero_convs, hint_conv_norm })
    }
}

/// A ControlNet training run's networks and optimiser state.
pub struct ControlNetTrainer {
    /// The locked copy; its decoder trains (its own optimiser, its own lr) when the recipe
    /// unlocks it.
    unet: Part<UNet>,
    controlnet: Part<ControlNet>,
    schedule: NoiseSchedule,
    recipe: Recipe,
    device: Device,
    step: u64,
}

impl ControlNetTrainer {
    /// Trains `controlnet` (say [`ControlNet::from_unet`]) against the locked `unet` on the
    /// device they live on, with autodiff.
    pub fn new(
        unet: UNet,
        controlnet: ControlNet,
        schedule: NoiseSchedule,
        recipe: Recipe,
    ) -> Result<Self, TrainError> {
        recipe.validate()?;
        let device = controlnet.conv_in.weight.val().device().autodiff();
        let unet = checkpoint::stable_ids(unet, "unet");
        let controlnet = checkpoint::stable_ids(controlnet, "controlnet");
        let mut unet = unet.fork(&device).no_grad().train();
        if recipe.unlock_decoder.is_some() {
            unet.up_blocks = unet.up_blocks.set_require_grad(true);
            unet.conv_norm_out = unet.conv_norm_out.set_require_grad(true);
            unet.conv_out = unet.conv_out.set_require_grad(true);
        }
        let controlnet = controlnet.fork(&device).set_require_grad(true).train();
        let unet = Part::new(unet, &recipe.adamw, recipe.unlock_decoder.unwrap_or(recipe.adamw.lr));
        let controlnet = Part::new(controlnet, &recipe.adamw, recipe.adamw.lr);
        Ok(Self { unet, controlnet, schedule, recipe, device, step: 0 })
    }

    /// The optimiser steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The trainable copy as it stands (on the autodiff device; `.valid()` for inference).
    pub fn controlnet(&self) -> &ControlNet {
        &self.controlnet.module
    }

    /// The locked UNet (its decoder trained when the recipe unlocks it).
    pub fn unet(&self) -> &UNet {
        &self.unet.module
    }

    fn decoder_unlocked(&self) -> bool {
        self.recipe.unlock_decoder.is_some()
    }

    /// The loss of `example` and the residuals the ControlNet made for it (before any step).
    pub fn forward(&self, example: &Example) -> (Tensor<1>, ControlResiduals) {
        let noisy =
            self.schedule.add_noise(example.latents.clone(), example.noise.clone(), &example.timesteps);
        let timesteps: Vec<f32> = example.timesteps.iter().map(|&t| t as f32).collect();
        let residuals = self.controlnet.module.forward(
            noisy.clone(),
            &timesteps,
            example.context.clone(),
            example.condition.clone(),
        );
        let fed = if self.recipe.only_mid_control {
            ControlResiduals {
                down: residuals.down.iter().map(|r| r.clone().detach().zeros_like()).collect(),
                mid: residuals.mid.clone(),
            }
        } else {
            residuals.clone()
        };
        let prediction = self.unet.module.forward(noisy, &timesteps, example.context.clone(), Some(&fed));
        let error = prediction.cast(DType::F32) - example.noise.clone().cast(DType::F32);
        (error.square().mean().reshape([1]), residuals)
    }

    /// The loss of `example` and its gradients for the ControlNet (and the unlocked decoder).
    pub fn gradients(&self, example: &Example) -> (Tensor<1>, GradientsParams, Option<GradientsParams>) {
        let (loss, _) = self.forward(example);
        let mut grads = loss.backward();
        let controlnet = GradientsParams::from_module(&mut grads, &self.controlnet.module);
        let decoder =
            self.decoder_unlocked().then(|| GradientsParams::from_module(&mut grads, &self.unet.module));
        (loss.without_autodiff(), controlnet, decoder)
    }

    /// One optimiser step over `micro_batches` (the recipe's gradient accumulation: each
    /// micro-batch's loss divided by their number, the gradients summed).
    pub fn step(&mut self, micro_batches: &[Example]) -> StepReport {
        assert!(!micro_batches.is_empty(), "a step needs a micro-batch");
        let share = 1.0 / micro_batches.len() as f64;
        let inner = self.device.clone().inner();
        let lr_factor = self.recipe.lr_schedule.factor(self.step);
        let zero_convs = self.controlnet.module.controlnet_down_blocks.len() + 1;
        let mut loss = Tensor::<1>::zeros([1], &inner);
        let mut outputs = Tensor::<1>::zeros([zero_convs], &inner);
        for example in micro_batches {
            let (example_loss, residuals) = self.forward(example);
            let magnitudes: Vec<Tensor<1>> = residuals
                .down
                .iter()
                .chain(std::iter::once(&residuals.mid))
                .map(|r| r.clone().without_autodiff().cast(DType::F32).abs().mean().reshape([1]))
                .collect();
            outputs = outputs + Tensor::cat(magnitudes, 0) * share;
            let mut grads = (example_loss.clone() * share).backward();
            self.controlnet.collect(&mut grads);
            if self.decoder_unlocked() {
                self.unet.collect(&mut grads);
            }
            loss = loss + example_loss.without_autodiff() * share;
        }
        // One global norm over everything that trains, as `clip_grad_norm_` over the
        // optimiser's parameters.
        let grad_norm = if self.decoder_unlocked() {
            finish_step(
                &mut [&mut self.controlnet, &mut self.unet],
                self.recipe.max_grad_norm,
                lr_factor,
                &inner,
            )
        } else {
            finish_step(&mut [&mut self.controlnet], self.recipe.max_grad_norm, lr_factor, &inner)
        };
        self.step += 1;
        StepReport {
            loss,
            grad_norm,
            zero_conv_norms: self.zero_conv_norms(),
            zero_conv_outputs: outputs,
            hint_conv_norm: weight_norm(&self.controlnet.module.controlnet_cond_embedding.conv_out),
        }
    }

    /// `[n]`: the L2 norm of each zero convolution's weight.
    pub fn zero_conv_norms(&self) -> Tensor<1> {
        let controlnet = &self.controlnet.module;
        let norms: Vec<Tensor<1>> = controlnet
            .controlnet_down_blocks
            .iter()
            .chain(std::iter::once(&controlnet.controlnet_mid_block))
            .map(weight_norm)
            .collect();
        Tensor::cat(norms, 0)
    }

    /// The checkpoint of the run as it stands: the ControlNet in diffusers' layout, the
    /// optimiser states and `state` (and, with the decoder unlocked, the UNet under `unet/`).
    pub async fn checkpoint_files(&self, state: &RunState) -> Result<Vec<(String, Vec<u8>)>, TrainError> {
        let mut files: Vec<(String, Vec<u8>)> = checkpoint::controlnet_files(&self.controlnet.module)
            .await
            .into_iter()
            .map(|(name, bytes)| (name.to_owned(), bytes))
            .collect();
        files.push((checkpoint::OPTIMIZER.to_owned(), self.controlnet.optimizer_bytes()?));
        if self.decoder_unlocked() {
            files.push((format!("unet/{}", checkpoint::OPTIMIZER), self.unet.optimizer_bytes()?));
            let metadata = std::collections::BTreeMap::new();
            files.push((
                format!("unet/{}", checkpoint::CONFIG),
                crate::config::to_diffusers_json(&self.unet.module.config, "UNet2DConditionModel")
                    .into_bytes(),
            ));
            files.push((
                format!("unet/{}", checkpoint::WEIGHTS),
                crate::save::to_safetensors(&self.unet.module, crate::Precision::F32, &metadata).await,
            ));
        }
        let state = serde_json::to_vec_pretty(state).expect("JSON");
        files.push((checkpoint::STATE.to_owned(), state));
        Ok(files)
    }

    /// Continues a run from a checkpoint's optimiser states (the networks are the checkpoint's,
    /// given to [`Self::new`]; parameters are matched by [`checkpoint::stable_ids`]).
    pub fn resume(
        mut self,
        step: u64,
        optimizer: Vec<u8>,
        decoder: Option<Vec<u8>>,
    ) -> Result<Self, TrainError> {
        self.controlnet.load_optimizer(optimizer)?;
        match (self.decoder_unlocked(), decoder) {
            (true, Some(bytes)) => self.unet.load_optimizer(bytes)?,
            (false, None) => {}
            _ => {
                return Err(TrainError::Checkpoint(
                    "the checkpoint's optimiser states and --unlock-decoder disagree".into(),
                ));
            }
        }
        self.step = step;
        Ok(self)
    }
}

/// `[1]`: the L2 norm of a zero convolution's weight, off the autodiff graph, in f32.
fn weight_norm(zero: &crate::controlnet::ZeroConv) -> Tensor<1> {
    zero.conv.weight.val().without_autodiff().cast(DType::F32).square().sum().sqrt().reshape([1])
}
