//! `controlnet bench-train`: ControlNet training steps per second (the recipe's whole step:
//! ControlNet + locked UNet forward, backward, global-norm clipping, AdamW), as one JSON line.
//! `bench/train_bench.py` runs PyTorch's same step beside it and prints the ratio.

use std::time::Instant;

use burn::prelude::*;
use model::config::UNetConfig;
use model::scheduler::SchedulerConfig;
use model::train::{ControlNetTrainer, Example, NoiseSchedule, Recipe};
use model::{ControlNet, UNet};

use super::Options;

pub const USAGE: &str =
    "  controlnet bench-train [--backend cpu|wgpu] --unet-config FILE [--latent L] [--batch B]
      [--iterations N]";

pub fn run(options: Options, device: fn(&str) -> Result<Device, String>) -> Result<(), String> {
    let backend: String = options.get("--backend", "cpu".to_owned())?;
    let latent: usize = options.get("--latent", 16)?;
    let batch: usize = options.get("--batch", 16)?;
    let iterations: usize = options.get("--iterations", 5)?;
    let path = options.path("--unet-config").ok_or("`--unet-config FILE` is required")?;
    let json = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let config = UNetConfig::from_json(&json).map_err(|e| e.to_string())?;
    let device = device(&backend)?;
    device.seed(0);
    let unet = UNet::new(&config, &device);
    let controlnet = ControlNet::from_unet(&unet);
    let trainable = burn::module::Module::num_params(&controlnet);
    let schedule = NoiseSchedule::new(&SchedulerConfig::sd15()).map_err(|e| e.to_string())?;
    let mut trainer =
        ControlNetTrainer::new(unet, controlnet, schedule, Recipe::default()).map_err(|e| e.to_string())?;
    let encoder = &config.encoder;
    let hint = latent * trainer.controlnet().hint_scale();
    let example = Example {
        latents: Tensor::random(
            [batch, encoder.in_channels, latent, latent],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        ),
        context: Tensor::random(
            [batch, 77, encoder.cross_attention_dim],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        ),
        condition: Tensor::random(
            [batch, 3, hint, hint],
            burn::tensor::Distribution::Uniform(0.0, 1.0),
            &device,
        ),
        noise: Tensor::random(
            [batch, encoder.in_channels, latent, latent],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        ),
        timesteps: (0..batch).map(|i| (i * 997 % 1000) as u32).collect(),
    };
    let mut step_ms = Vec::new();
    let mut first_step_ms = 0.0;
    for i in 0..=iterations {
        let started = Instant::now();
        let report = trainer.step(std::slice::from_ref(&example));
        // Reading the loss back waits for the whole step.
        let _ = model::block_on(report.loss.into_data_async());
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if i == 0 { first_step_ms = ms } else { step_ms.push(ms) }
    }
    let mean = step_ms.iter().sum::<f64>() / step_ms.len().max(1) as f64;
    let line = serde_json::json!({
        "kind": "controlnet_train_step",
        "framework": "burn",
        "backend": backend,
        "latent": latent,
        "batch": batch,
        "trainable_parameters": trainable,
        "first_step_ms": first_step_ms,
        "step_ms": step_ms,
        "steps_per_second": if mean > 0.0 { 1e3 / mean } else { 0.0 },
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{line}");
    Ok(())
}

/// The process's peak resident memory (Linux's `VmHWM`), where the system says.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
