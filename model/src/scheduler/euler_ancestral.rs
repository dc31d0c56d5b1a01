//! diffusers' `EulerAncestralDiscreteScheduler`. The caller draws the noise (see
//! [`super::Scheduler::needs_noise`]), so that runs are reproducible across devices.

use burn::prelude::*;
use serde::Deserialize;

use super::euler::{euler_init_noise_sigma, euler_timesteps};
use super::{Sampler, SchedulerError, TimestepSpacing, TrainConfig, check_steps, np_interp, sigma_table};

const CLASS: &str = "EulerAncestralDiscreteScheduler";

/// `EulerAncestralDiscreteScheduler`'s config fields and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(super) struct EulerAncestralConfig {
    #[serde(flatten)]
    train: TrainConfig,
    timestep_spacing: TimestepSpacing,
}

impl Default for EulerAncestralConfig {
    fn default() -> Self {
        Self { train: TrainConfig::default(), timestep_spacing: TimestepSpacing::Linspace }
    }
}

/// Euler ancestral sampling (k-diffusion's `sample_euler_ancestral`, after Karras et al. 2022's
/// parametrisation): an Euler step down to `σ_down`, then fresh noise of scale `σ_up`, with
/// `σ_down² + σ_up² = σ_next²`.
#[derive(Debug)]
pub(super) struct EulerAncestral {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

impl EulerAncestral {
    pub(super) fn new(config: EulerAncestralConfig, steps: usize) -> Result<Self, SchedulerError> {
        let train = &config.train;
        train.check(CLASS)?;
        let t_train = train.num_train_timesteps;
        check_steps(steps, t_train)?;
        let timesteps = euler_timesteps(config.timestep_spacing, steps, t_train, train.steps_offset);
        let table = sigma_table(&train.alphas_cumprod());
        let sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| np_interp(t, &table))
            .chain([0.0])
            .map(|s| f64::from(s as f32))
            .collect();
        let init_noise_sigma = euler_init_noise_sigma(&sigmas, config.timestep_spacing);
        Ok(Self { timesteps, sigmas, init_noise_sigma })
    }
}

impl Sampler for EulerAncestral {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn input_scale(&self, step: usize) -> Option<f64> {
        let sigma = self.sigmas[step];
        Some(1.0 / (sigma * sigma + 1.0).sqrt())
    }

    fn needs_noise(&self) -> bool {
        true
    }

    fn step(
        &mut self,
        eps: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Tensor<4> {
        let (sigma_from, sigma_to) = (self.sigmas[step], self.sigmas[step + 1]);
        let sigma_up = (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt();
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        // x₀ = x − σ·ε, d = (x − x₀)/σ = ε, x_next = x + d·(σ_down − σ) + σ_up·z
        let x = sample + eps.mul_scalar((sigma_down - sigma_from) as f32);
        let noise = noise.expect("Scheduler::step checks that euler-a gets noise");
        x + noise.mul_scalar(sigma_up as f32)
    }
}
