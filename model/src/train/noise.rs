//! The forward diffusion process training noises latents with, and the step's random draws.

use burn::prelude::*;

use super::TrainError;
use crate::rng::Rng;
use crate::scheduler::{SchedulerConfig, training_alphas_cumprod};

/// `DDPMScheduler`'s training schedule: `alphas_cumprod` per training timestep.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// From a `scheduler_config.json` (any scheduler class: the betas are what count).
    pub fn new(config: &SchedulerConfig) -> Result<Self, TrainError> {
        Ok(Self { alphas_cumprod: training_alphas_cumprod(config).map_err(TrainError::Schedule)? })
    }

    /// The number of training timesteps (1000 for SD1.5).
    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alphas_cumprod.is_empty()
    }

    /// `DDPMScheduler.add_noise`: `√ᾱ_t · x + √(1 − ᾱ_t) · ε`, per batch element, with the
    /// factors computed in f32 as diffusers computes them.
    pub fn add_noise(&self, latents: Tensor<4>, noise: Tensor<4>, timesteps: &[u32]) -> Tensor<4> {
        let [batch, ..] = latents.dims();
        assert_eq!(batch, timesteps.len(), "one timestep per batch element");
        let device = latents.device();
        let dtype = latents.dtype();
        let (signal, noise_level): (Vec<f32>, Vec<f32>) = timesteps
            .iter()
            .map(|&t| {
                let alpha = self.alphas_cumprod[t as usize] as f32;
                (alpha.sqrt(), (1.0 - alpha).sqrt())
            })
            .unzip();
        let column = |values: Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(values, [batch]), &device)
                .reshape([batch, 1, 1, 1])
                .cast(dtype)
        };
        latents * column(signal) + noise * column(noise_level)
    }
}

/// The random part of one micro-batch, drawn on the host from the run's generator so that a
/// run is reproduced from its seed and step (and resumed exactly).
#[derive(Clone, Debug, PartialEq)]
pub struct Draws {
    /// Which captions are replaced by "".
    pub drop: Vec<bool>,
    /// The VAE's sampling noise (`latent_dist.sample()`'s), latent-shaped.
    pub vae_noise: Vec<f32>,
    /// The diffusion noise ε, latent-shaped.
    pub noise: Vec<f32>,
    /// One training timestep per element, uniform.
    pub timesteps: Vec<u32>,
}

impl Draws {
    /// Draws for `batch` elements of `latent_elements` values each.
    pub fn sample(
        rng: &mut Rng,
        batch: usize,
        latent_elements: usize,
        timesteps: usize,
        prompt_drop: f64,
    ) -> Self {
        Self {
            drop: (0..batch).map(|_| rng.uniform() < prompt_drop).collect(),
            vae_noise: rng.normal_vec(batch * latent_elements),
            noise: rng.normal_vec(batch * latent_elements),
            timesteps: (0..batch).map(|_| rng.below(timesteps as u64) as u32).collect(),
        }
    }

    /// The generator of step `step`'s micro-batch `micro` in a run seeded `seed`: a pure
    /// function of the three, so that a resumed run draws what an uninterrupted one would.
    pub fn rng(seed: u64, step: u64, micro: usize) -> Rng {
        Rng::new(
            seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (micro as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
        )
    }
}
