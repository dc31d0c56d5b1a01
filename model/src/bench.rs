//! The step benchmark: one ControlNet + UNet step of classifier-free guidance, as the pipeline
//! runs it, with figures for time and memory.

use burn::prelude::*;

use crate::{ControlNet, Precision, UNet};

/// What one benchmark run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepReport {
    pub width: usize,
    pub height: usize,
    pub batch: usize,
    pub precision: Precision,
    /// Milliseconds of the first step, which also compiles the kernels and initialises lazy weights.
    pub first_step_ms: f64,
    /// Milliseconds per step after it.
    pub step_ms: Vec<f64>,
    /// The largest single buffer the device allocator served, bytes (WebGPU's default storage
    /// binding limit is 128 MiB).
    pub largest_buffer_bytes: Option<u64>,
    /// The most bytes the allocator's dynamic pools held at once: activations and temporaries
    /// (weights are allocated apart from these pools and are not counted).
    pub peak_pooled_bytes: Option<u64>,
    pub parameters: usize,
}

/// Runs one warm-up step, then `iterations` steps, of `unet` guided by `controlnet` on `width`×`height` images
/// with a batch of `batch` (2 for classifier-free guidance) and reports the figures. `now` is a
/// clock in milliseconds; each step ends with a read-back, so that it measures finished work.
pub async fn run_steps(
    unet: &UNet,
    controlnet: &ControlNet,
    width: usize,
    height: usize,
    batch: usize,
    iterations: usize,
    now: impl Fn() -> f64,
) -> StepReport {
    let device = unet.conv_in.weight.val().device();
    let encoder = &unet.config.encoder;
    let latents = Tensor::<4>::ones([batch, encoder.in_channels, height / 8, width / 8], &device) * 0.5;
    let context = Tensor::<3>::ones([batch, 77, encoder.cross_attention_dim], &device) * 0.1;
    let condition = Tensor::<4>::ones([batch, 3, height, width], &device) * 0.5;
    let mut step_ms = Vec::new();
    let mut first_step_ms = 0.0;
    for i in 0..=iterations {
        let started = now();
        let residuals = controlnet.forward(latents.clone(), &[500.0], context.clone(), condition.clone());
        let noise = unet.forward(latents.clone(), &[500.0], context.clone(), Some(&residuals));
        // Reading one value back waits for the whole step.
        let _ = noise.slice([0..1, 0..1, 0..1, 0..1]).into_data_async().await;
        if i == 0 {
            first_step_ms = now() - started;
        } else {
            step_ms.push(now() - started);
        }
    }
    let pools = device.memory_pool_report();
    StepReport {
        width,
        height,
        batch,
        precision: crate::precision::of_dtype(unet.dtype()),
        first_step_ms,
        step_ms,
        largest_buffer_bytes: pools.as_ref().map(|p| p.iter().map(|p| p.largest_alloc).max().unwrap_or(0)),
        peak_pooled_bytes: pools.as_ref().map(|p| p.iter().map(|p| p.pages_peak * p.page_size).sum()),
        parameters: unet.num_params() + controlnet.num_params(),
    }
}
