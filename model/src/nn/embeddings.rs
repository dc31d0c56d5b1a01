//! Timestep embeddings.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

/// diffusers' `get_timestep_embedding`: sinusoids of the timestep at geometric frequencies,
/// computed on the host the way torch computes them (f32 frequencies and products).
///
/// Returns `[timesteps.len(), dim]` values, row-major: `[cos | sin]` when `flip_sin_to_cos`.
pub fn timestep_features(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: usize,
) -> Vec<f32> {
    let half = dim / 2;
    let log_period = -(10000f32.ln());
    let frequencies: Vec<f32> =
        (0..half).map(|i| (log_period * i as f32 / (half as f32 - freq_shift as f32)).exp()).collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args = frequencies.iter().map(|&f| t * f);
        let sin: Vec<f32> = args.clone().map(|a| (a as f64).sin() as f32).collect();
        let cos: Vec<f32> = args.map(|a| (a as f64).cos() as f32).collect();
        let (first, second) = if flip_sin_to_cos { (cos, sin) } else { (sin, cos) };
        out.extend(first);
        out.extend(second);
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// `TimestepEmbedding`: linear → SiLU → linear, from the sinusoidal features to the width the
/// ResNets take.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(in_features: usize, dim: usize, device: &Device) -> Self {
        Self {
            linear_1: LinearConfig::new(in_features, dim).init(device),
            linear_2: LinearConfig::new(dim, dim).init(device),
        }
    }

    /// # Shapes
    /// `[batch, in_features]` → `[batch, dim]`
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.linear_2.forward(silu(self.linear_1.forward(features)))
    }
}
