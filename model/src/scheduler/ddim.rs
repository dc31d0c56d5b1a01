//! diffusers' `DDIMScheduler`, deterministic (η = 0).

use burn::prelude::*;
use serde::Deserialize;

use super::{Sampler, SchedulerError, TimestepSpacing, TrainConfig, check_steps, np_arange};

const CLASS: &str = "DDIMScheduler";

/// `DDIMScheduler`'s config fields and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(super) struct DdimConfig {
    #[serde(flatten)]
    train: TrainConfig,
    clip_sample: bool,
    clip_sample_range: f64,
    set_alpha_to_one: bool,
    timestep_spacing: TimestepSpacing,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            timestep_spacing: TimestepSpacing::Leading,
        }
    }
}

/// DDIM: Song, Meng & Ermon 2020, "Denoising Diffusion Implicit Models", eq. 12 with σ = 0:
/// predict x₀ from the noise, then move to the previous timestep along the same noise.
#[derive(Debug)]
pub(super) struct Ddim {
    alphas_cumprod: Vec<f64>,
    /// ᾱ after the last step: 1, or ᾱ₀ when `set_alpha_to_one` is false (SD1.5).
    final_alpha_cumprod: f64,
    timesteps: Vec<f64>,
    /// `num_train_timesteps // steps`: diffusers takes the previous timestep as `t - ratio` for
    /// every spacing, even where that is not the next timestep of the schedule (trailing).
    step_ratio: usize,
    clip_sample_range: Option<f64>,
}

impl Ddim {
    pub(super) fn new(config: DdimConfig, steps: usize) -> Result<Self, SchedulerError> {
        let train = &config.train;
        train.check(CLASS)?;
        let t_train = train.num_train_timesteps;
        check_steps(steps, t_train)?;
        let timesteps: Vec<f64> = match config.timestep_spacing {
            TimestepSpacing::Linspace => super::np_linspace(0.0, (t_train - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(f64::round_ties_even)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = t_train / steps;
                (0..steps).rev().map(|i| (i * ratio + train.steps_offset) as f64).collect()
            }
            TimestepSpacing::Trailing => np_arange(t_train as f64, 0.0, -(t_train as f64 / steps as f64))
                .into_iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect(),
        };
        // They index `alphas_cumprod` (where diffusers would fail with an IndexError): a leading
        // spacing with `steps_offset` leaves the range when the steps fill it.
        if timesteps.iter().any(|&t| !(0.0..t_train as f64).contains(&t)) {
            return Err(SchedulerError::TooManySteps { steps, num_train_timesteps: t_train });
        }
        let alphas_cumprod = train.alphas_cumprod();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Self {
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps,
            step_ratio: t_train / steps,
            clip_sample_range: config.clip_sample.then_some(config.clip_sample_range),
        })
    }
}

impl Sampler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn step(
        &mut self,
        eps: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        _noise: Option<Tensor<4>>,
    ) -> Tensor<4> {
        let t = self.timesteps[step] as usize;
        let alpha_t = self.alphas_cumprod[t];
        let alpha_prev = match t.checked_sub(self.step_ratio) {
            Some(prev) => self.alphas_cumprod[prev],
            None => self.final_alpha_cumprod,
        };
        // x₀ = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t
        let x0 =
            super::lin2(sample, 1.0 / alpha_t.sqrt(), eps.clone(), -(1.0 - alpha_t).sqrt() / alpha_t.sqrt());
        let x0 = match self.clip_sample_range {
            Some(range) => x0.clamp(-range as f32, range as f32),
            None => x0,
        };
        // x_{t−1} = √ᾱ_{t−1}·x₀ + √(1−ᾱ_{t−1})·ε
        super::lin2(x0, alpha_prev.sqrt(), eps, (1.0 - alpha_prev).sqrt())
    }
}
