//! diffusers' `EulerDiscreteScheduler` (without churn: `s_churn = 0`, as pipelines call it).

use burn::prelude::*;
use serde::Deserialize;

use super::{
    FinalSigmas, Sampler, SchedulerError, TimestepSpacing, TrainConfig, check_steps, karras_sigmas,
    log_sigma_table, np_arange, np_interp, np_linspace, sigma_table, sigma_to_t,
};

const CLASS: &str = "EulerDiscreteScheduler";

/// `EulerDiscreteScheduler`'s config fields and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(super) struct EulerConfig {
    #[serde(flatten)]
    train: TrainConfig,
    interpolation_type: String,
    use_karras_sigmas: bool,
    use_exponential_sigmas: bool,
    use_beta_sigmas: bool,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
    timestep_spacing: TimestepSpacing,
    timestep_type: String,
    final_sigmas_type: FinalSigmas,
}

impl Default for EulerConfig {
    fn default() -> Self {
        Self {
            train: TrainConfig::default(),
            interpolation_type: "linear".to_owned(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_spacing: TimestepSpacing::Linspace,
            timestep_type: "discrete".to_owned(),
            final_sigmas_type: FinalSigmas::Zero,
        }
    }
}

/// The f32 timesteps of the Euler schedulers (`EulerDiscreteScheduler` and
/// `EulerAncestralDiscreteScheduler` space them the same way).
pub(super) fn euler_timesteps(
    spacing: TimestepSpacing,
    steps: usize,
    num_train_timesteps: usize,
    steps_offset: usize,
) -> Vec<f64> {
    let to_f32 = |t: f64| f64::from(t as f32);
    match spacing {
        TimestepSpacing::Linspace => {
            np_linspace(0.0, (num_train_timesteps - 1) as f64, steps).into_iter().rev().map(to_f32).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = num_train_timesteps / steps;
            (0..steps).rev().map(|i| to_f32((i * ratio) as f64) + steps_offset as f64).collect()
        }
        TimestepSpacing::Trailing => {
            np_arange(num_train_timesteps as f64, 0.0, -(num_train_timesteps as f64 / steps as f64))
                .into_iter()
                .map(|t| to_f32(t.round_ties_even()) - 1.0)
                .collect()
        }
    }
}

/// `init_noise_sigma` of the Euler schedulers: the largest sigma, or `sqrt(σ_max² + 1)` for the
/// leading spacing (in f32, as diffusers' tensor arithmetic).
fn euler_init_noise_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(f64::NEG_INFINITY, f64::max) as f32;
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => f64::from(max),
        TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
    }
}

/// Euler's method on the probability-flow ODE in the Karras et al. 2022 parametrisation
/// (`x = x₀ + σ·ε`, input scaled by `1/√(σ²+1)`), "Elucidating the Design Space of
/// Diffusion-Based Generative Models", Algorithm 2 without churn; or, `ancestral`, Euler
/// ancestral sampling (k-diffusion's `sample_euler_ancestral`): an Euler step down to `σ_down`,
/// then fresh noise of scale `σ_up`, with `σ_down² + σ_up² = σ_next²`.
#[derive(Debug)]
pub(super) struct Euler {
    timesteps: Vec<f64>,
    /// One per step and the final sigma (f32 values).
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    ancestral: bool,
}

impl Euler {
    pub(super) fn new(config: EulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let train = &config.train;
        train.check(CLASS)?;
        let unsupported =
            |setting: &str| Err(SchedulerError::Unsupported { class: CLASS, setting: setting.into() });
        if config.interpolation_type != "linear" {
            return unsupported(&format!("interpolation_type \"{}\"", config.interpolation_type));
        }
        if config.use_exponential_sigmas || config.use_beta_sigmas {
            return unsupported("use_exponential_sigmas / use_beta_sigmas");
        }
        if config.timestep_type != "discrete" {
            return unsupported(&format!("timestep_type \"{}\"", config.timestep_type));
        }
        let t_train = train.num_train_timesteps;
        check_steps(steps, t_train)?;
        let mut timesteps = euler_timesteps(config.timestep_spacing, steps, t_train, train.steps_offset);

        let alphas_cumprod = train.alphas_cumprod();
        let table = sigma_table(&alphas_cumprod);
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| np_interp(t, &table)).collect();
        if config.use_karras_sigmas {
            // From the interpolated sigmas of this schedule (not the whole table, as DPM-Solver).
            let sigma_min = config.sigma_min.unwrap_or(sigmas[steps - 1]);
            let sigma_max = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let log_sigmas = log_sigma_table(&table);
            timesteps = sigmas.iter().map(|&s| f64::from(sigma_to_t(s, &log_sigmas) as f32)).collect();
        }
        let last = match config.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => table[0],
        };
        sigmas.push(last);
        Ok(Self::along(timesteps, sigmas, config.timestep_spacing, false))
    }

    /// The sampler along `timesteps` and their `sigmas` (the final sigma last), which it holds
    /// as diffusers does: in f32.
    pub(super) fn along(
        timesteps: Vec<f64>,
        sigmas: Vec<f64>,
        spacing: TimestepSpacing,
        ancestral: bool,
    ) -> Self {
        let sigmas: Vec<f64> = sigmas.into_iter().map(|s| f64::from(s as f32)).collect();
        let init_noise_sigma = euler_init_noise_sigma(&sigmas, spacing);
        Self { timesteps, sigmas, init_noise_sigma, ancestral }
    }
}

impl Sampler for Euler {
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
        self.ancestral
    }

    fn step(
        &mut self,
        eps: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Tensor<4> {
        let (sigma_from, sigma_to) = (self.sigmas[step], self.sigmas[step + 1]);
        if !self.ancestral {
            // x₀ = x − σ·ε, d = (x − x₀)/σ = ε, x_next = x + d·(σ_next − σ)
            return sample + eps.mul_scalar((sigma_to - sigma_from) as f32);
        }
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
