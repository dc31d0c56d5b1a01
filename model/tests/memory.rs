//! The page's memory estimate (`vocabulary::memory::estimate` of `Pipeline::memory_profile`)
//! against what burn's allocator measures on a real device (lavapipe): the largest buffer one
//! generation allocates, and the most bytes its pools held (weights and activations).
//!
//! The allocator's figures are the device's since it was made, and the tests of a binary share
//! one device: this file holds one test that runs by default (the shapes models) and one that
//! runs alone (`--ignored`: full-size SD1.5).

mod common;

use std::ops::ControlFlow;

use burn::prelude::*;
use common::{fixtures, wgpu};
use model::config::{ControlNetConfig, UNetConfig};
use model::pipeline::{ControlMode, ControlUnit, Params, Pipeline};
use model::vocabulary::memory::estimate;
use model::vocabulary::{GenerationParams, UnitSettings};
use model::{ControlNet, Precision, UNet};

/// What the allocator measured over a generation: the largest single allocation, and the pools'
/// peak (pages held at most, times their size, summed over pools).
struct Measured {
    largest: u64,
    peak: u64,
}

/// Generates one `size`² image (2 steps, CFG, one ControlNet) and reads the allocator's report.
/// Peaks only grow: measure sizes in increasing order.
fn measure(pipeline: &Pipeline, controlnet: &ControlNet, size: u32) -> Measured {
    let device = pipeline.device();
    let side = size as usize;
    let units = [ControlUnit {
        controlnet,
        image: Tensor::<4>::ones([1, 3, side, side], &device) * 0.5,
        settings: UnitSettings {
            scale: 1.0,
            guess_mode: false,
            mode: ControlMode::Balanced,
            start: 0.0,
            end: 1.0,
        },
    }];
    let settings = GenerationParams {
        prompt: "a cat".into(),
        steps: 2,
        width: size,
        height: size,
        ..Default::default()
    };
    let image =
        pipeline.generate(&Params { settings, noise: None }, &units, |_| ControlFlow::Continue(())).unwrap();
    let _ = image.into_data();
    let pools = device.memory_pool_report().expect("wgpu reports its pools");
    Measured {
        largest: pools.iter().map(|p| p.largest_alloc).max().unwrap_or(0),
        peak: pools.iter().map(|p| p.pages_peak * p.page_size).sum(),
    }
}

/// Compares and prints; the largest buffer must be within `tolerance` of the measured one, and
/// the total within `total_tolerance` of the pools' peak.
fn compare(label: &str, pipeline: &Pipeline, controlnet: &ControlNet, sizes: &[u32], total_tolerance: f64) {
    let profile = pipeline.memory_profile(&[controlnet]);
    for &size in sizes {
        let measured = measure(pipeline, controlnet, size);
        let e = estimate(&profile, size, size, 1);
        let largest = e.largest_buffer_bytes as f64 / measured.largest as f64;
        let total = e.total_bytes() as f64 / measured.peak as f64;
        println!(
            "{label} {size}²: largest buffer estimated {} ({}), measured {} (×{largest:.3}); total estimated {}, pools' peak {} (×{total:.3})",
            e.largest_buffer_bytes,
            e.largest_buffer,
            measured.largest,
            e.total_bytes(),
            measured.peak
        );
        assert!((largest - 1.0).abs() <= 0.15, "{label} {size}²: largest buffer ×{largest:.3}");
        assert!((total - 1.0).abs() <= total_tolerance, "{label} {size}²: total ×{total:.3}");
    }
}

/// The shapes world's models, as the site ships them (f16 files, loaded in f32 as on an adapter
/// without `shader-f16`), with their Canny ControlNet: the largest buffer within 15 %; the total
/// within 30 % (tens of MB, where the allocator's pages of 2–8 MiB weigh: measured 0.94 and 0.80
/// of the pools' peak).
#[test]
fn the_estimate_follows_the_allocator_for_the_shapes_models() {
    let device = wgpu().clone();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(model::vocabulary::shapes::source_dir());
    let pipeline =
        Pipeline::load(&dir.join(model::vocabulary::shapes::PIPELINE), Precision::F32, &device).unwrap();
    let canny = model::vocabulary::shapes::controlnet_for(model::vocabulary::Preprocessor::Canny).unwrap();
    let controlnet = pipeline.load_controlnet(&dir.join(canny)).unwrap();
    compare("shapes", &pipeline, &controlnet, &[64, 128], 0.3);
}

/// Full-size SD1.5 + ControlNet (random weights, f16), 2.4 GB of weights on lavapipe: the total
/// within 15 % of the pools' peak, the largest buffer within 15 %. Minutes on a CPU: run with
/// `--ignored`.
#[test]
#[ignore]
fn the_estimate_follows_the_allocator_for_full_size_sd15() {
    let device = wgpu().clone();
    let config = |file: &str| -> serde_json::Value {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join(file)).unwrap()).unwrap();
        json["config"].clone()
    };
    let precision = Precision::F16;
    let mut pipeline = Pipeline::load(&fixtures().join("tiny"), precision, &device).unwrap();
    let unet_config: UNetConfig = serde_json::from_value(config("sd15_unet_keys.json")).unwrap();
    let controlnet_config: ControlNetConfig =
        serde_json::from_value(config("sd15_controlnet_keys.json")).unwrap();
    // SD1.5's text encoder with the tiny tokenizer's vocabulary: SD1.5's token embedding (49408 ×
    // 768) is 145 MiB when made in f32 before its cast, over lavapipe's 128 MiB binding limit.
    let mut text_config =
        model::clip::ClipTextConfig::from_json(&config("sd15_text_encoder_keys.json").to_string()).unwrap();
    text_config.vocab_size = 1000;
    let vae_config = model::vae::VaeConfig::from_json(&config("sd15_vae_keys.json").to_string()).unwrap();
    // Random weights, made on the device when first used and cast to f16 one by one.
    pipeline.unet = model::precision::cast_module(UNet::new(&unet_config, &device), precision);
    pipeline.text_encoder =
        model::precision::cast_module(model::clip::ClipTextModel::new(&text_config, &device), precision);
    pipeline.vae = model::vae::AutoencoderKL::new(&vae_config, &device);
    let controlnet = model::precision::cast_module(ControlNet::new(&controlnet_config, &device), precision);
    compare("SD1.5", &pipeline, &controlnet, &[64, 256], 0.15);
}
