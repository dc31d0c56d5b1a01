//! diffusers' `EulerAncestralDiscreteScheduler`. The caller draws the noise (see
//! [`super::Scheduler::needs_noise`]), so that runs are reproducible across devices.

use serde::Deserialize;

use super::euler::{Euler, euler_timesteps};
use super::{SchedulerError, TimestepSpacing, TrainConfig, check_steps, np_interp, sigma_table};

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

/// Euler ancestral sampling ([`Euler`], ancestral) with `EulerAncestralDiscreteScheduler`'s
/// schedule: its timesteps spaced as Euler's, their sigmas interpolated, then a final zero.
pub(super) fn euler_ancestral(config: EulerAncestralConfig, steps: usize) -> Result<Euler, SchedulerError> {
    let train = &config.train;
    train.check(CLASS)?;
    let t_train = train.num_train_timesteps;
    check_steps(steps, t_train)?;
    let timesteps = euler_timesteps(config.timestep_spacing, steps, t_train, train.steps_offset);
    let table = sigma_table(&train.alphas_cumprod());
    let sigmas = timesteps.iter().map(|&t| np_interp(t, &table)).chain([0.0]).collect();
    Ok(Euler::along(timesteps, sigmas, config.timestep_spacing, true))
}
