//! Training: the ControlNet recipe on the very networks the pipeline runs, under burn's autodiff.
//!
//! The recipe is the paper's and diffusers' `examples/controlnet/train_controlnet.py`: the UNet,
//! the text encoder and the VAE are the *locked copy* (frozen: out of the optimiser, no gradient
//! buffers, bit-unchanged); [`crate::ControlNet::from_unet`] is the *trainable copy*, joined to
//! the UNet through zero convolutions. One step:
//!
//! ```text
//! images ─► VAE encoder (frozen) ─► latent sample × scaling ─► + noise at t (training betas)
//! captions ─► "" with probability p ─► tokenizer ─► CLIP (frozen) ─► context
//! noisy latents, t, context, condition ─► ControlNet ─► residuals ─► UNet (frozen) ─► ε̂
//! MSE(ε̂, ε) ─► backward ─► [accumulate K micro-batches] ─► [clip the global norm] ─► AdamW
//! ```
//!
//! Autodiff is a device in burn 0.22: the trainer forks its modules onto
//! `device.autodiff()`; the frozen encoders stay on the plain device (what they compute is a
//! constant for the step). Nothing here reads a tensor back synchronously: losses and the
//! zero convolutions' statistics come back as device tensors for the caller to read when it
//! logs (`into_data_async`), so the same loop runs in a browser.

mod base;
pub mod checkpoint;
mod controlnet;
#[cfg(feature = "images")]
pub mod data;
mod ema;
mod grads;
mod lr;
mod noise;
mod pairs;
mod part;

pub use base::{BaseTrainer, TextExample, VaeLoss, VaeTrainer};
pub use controlnet::{ControlNetTrainer, Example, StepReport, StepValues};
pub use ema::Ema;
pub use grads::{ParamGradient, clip_factor, named_gradients, scale_by, squared_norm};
pub use lr::LrSchedule;
pub use noise::{Draws, NoiseSchedule};
#[cfg(feature = "world")]
pub use pairs::WorldPairs;
pub use pairs::{Pair, Pairs, Sampling, batch, micro_batch};

use serde::{Deserialize, Serialize};

/// AdamW's settings; the defaults are `train_controlnet.py`'s (lr 1e-5, as the paper trains).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    pub lr: f64,
    pub beta_1: f32,
    pub beta_2: f32,
    pub weight_decay: f32,
    pub epsilon: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        Self { lr: 1e-5, beta_1: 0.9, beta_2: 0.999, weight_decay: 1e-2, epsilon: 1e-8 }
    }
}

impl AdamW {
    /// burn's AdamW with these settings. Gradient clipping is not burn's (it clips each tensor
    /// on its own) but the trainer's, over the global norm as torch's `clip_grad_norm_`.
    fn optimizer(&self) -> burn::optim::ModuleOptimizer {
        burn::optim::AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_weight_decay(self.weight_decay)
            .with_epsilon(self.epsilon)
            .init()
    }
}

/// The recipe's settings (the official repository's options by their names there).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub adamw: AdamW,
    /// The probability that a caption is replaced by "" (the paper's 50 %).
    pub prompt_drop: f64,
    /// Micro-batches per optimiser step; their gradients are averaged.
    pub grad_accum: usize,
    /// Clip the gradients' global L2 norm to this (`train_controlnet.py`'s `max_grad_norm`, 1.0).
    pub max_grad_norm: Option<f64>,
    /// `sd_locked=False`: the UNet's decoder (up blocks, output norm, `conv_out`) trains too, at
    /// this learning rate.
    pub unlock_decoder: Option<f64>,
    /// `only_mid_control`: the UNet takes the mid-block residual only.
    pub only_mid_control: bool,
    /// The KL term's weight when training a VAE (the LDM autoencoder's 1e-6).
    pub kl_weight: f64,
    /// The learning rate over the run (constant unless set).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Base models: keep an exponential moving average of the UNet's weights whose decay grows
    /// to this (diffusers' `--use_ema`, 0.9999), the UNet the checkpoint then holds.
    #[serde(default)]
    pub ema_decay: Option<f64>,
}

impl Recipe {
    /// The learning rate optimiser step `step` (from 0) takes: AdamW's rate times the schedule's
    /// factor.
    pub fn lr_at(&self, step: u64) -> f64 {
        self.adamw.lr * self.lr_schedule.factor(step)
    }
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            adamw: AdamW::default(),
            prompt_drop: 0.5,
            grad_accum: 1,
            max_grad_norm: Some(1.0),
            unlock_decoder: None,
            only_mid_control: false,
            kl_weight: 1e-6,
            lr_schedule: LrSchedule::Constant,
            ema_decay: None,
        }
    }
}

/// Why training cannot start or go on.
#[derive(Debug)]
pub enum TrainError {
    /// The scheduler config describes a schedule training does not implement (v-prediction).
    Schedule(crate::scheduler::SchedulerError),
    /// A setting is out of range.
    Setting(String),
    /// The data folder is unusable (the message names the file).
    Data(String),
    /// A checkpoint could not be written or read.
    Checkpoint(String),
    /// A loss is not finite: the step was not applied.
    Diverged { step: u64 },
    /// The device failed while reading a value back.
    Device(String),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Schedule(e) => write!(f, "{e}"),
            TrainError::Setting(m) | TrainError::Data(m) => f.write_str(m),
            TrainError::Checkpoint(m) => write!(f, "checkpoint: {m}"),
            TrainError::Device(m) => write!(f, "the device failed: {m}"),
            TrainError::Diverged { step } => {
                write!(f, "the loss is not finite at step {step}; the step was not applied")
            }
        }
    }
}

impl std::error::Error for TrainError {}

impl Recipe {
    /// Refuses settings the recipe cannot run with.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Setting(m));
        if !(0.0..=1.0).contains(&self.prompt_drop) {
            return bad(format!("prompt drop {} is not a probability", self.prompt_drop));
        }
        if self.grad_accum == 0 {
            return bad("gradient accumulation must be at least 1".into());
        }
        let positive = |lr: f64| lr.is_finite() && lr > 0.0;
        if !positive(self.adamw.lr) || self.unlock_decoder.is_some_and(|lr| !positive(lr)) {
            return bad("learning rates must be positive".into());
        }
        if !(self.kl_weight.is_finite() && self.kl_weight >= 0.0) {
            return bad(format!("KL weight {} must be a non-negative number", self.kl_weight));
        }
        if self.max_grad_norm.is_some_and(|n| !(n.is_finite() && n > 0.0)) {
            return bad("the gradient norm limit must be positive".into());
        }
        if self.ema_decay.is_some_and(|d| !(d > 0.0 && d < 1.0)) {
            return bad("the average's decay must lie between 0 and 1".into());
        }
        Ok(())
    }
}
