//! The UNet and the ControlNet against diffusers: the tiny fixture models (SD1.5's key layout at
//! toy widths, made by `tests/fixtures/make_fixtures.py`), on the CPU backend and on burn-wgpu.

mod common;

use burn::prelude::*;
use common::{assert_close, devices, fixture, fixtures, read, relative_l2};
use model::PrecisionExt;
use model::unet::Trace;
use model::vocabulary::UnitSettings;
use model::weights::{WeightsError, load_controlnet, load_unet};
use model::{ControlNet, ControlResiduals, Precision, Steering, UNet};

/// Relative L2 error allowed with f32 weights in f32.
const F32: f64 = 1e-4;
/// With f16 weights computing in f16, against diffusers' f32 run of the same fp16 files. Every
/// activation is rounded to 11 bits; across the ~20 layers of these random tiny models the drift
/// measured is ≤ 2e-3 on the CPU backend and ≤ 5.7e-3 on lavapipe (whose WGSL kernels accumulate
/// in f16) for the deepest residuals, ≤ 4.1e-3 for the UNet's output.
const F16: f64 = 1e-2;

const CASES: [&str; 2] = ["sq", "wide"];

struct Inputs {
    sample: Tensor<4>,
    timesteps: Vec<f32>,
    context: Tensor<3>,
    condition: Tensor<4>,
}

fn inputs(case: &str, device: &Device) -> Inputs {
    Inputs {
        sample: fixture(&format!("{case}.input.sample")).to_device(device),
        timesteps: fixture(&format!("{case}.input.timestep")).values.clone(),
        context: fixture(&format!("{case}.input.encoder_hidden_states")).to_device(device),
        condition: fixture(&format!("{case}.input.controlnet_cond")).to_device(device),
    }
}

fn unet(precision: Precision, device: &Device) -> UNet {
    load_unet(&fixtures().join("tiny/unet"), precision, device).expect("the tiny UNet loads")
}

fn controlnet(precision: Precision, device: &Device) -> ControlNet {
    load_controlnet(&fixtures().join("tiny/controlnet"), precision, device)
        .expect("the tiny ControlNet loads")
}

fn assert_residuals(residuals: &ControlResiduals, prefix: &str, tolerance: f64, label: &str) {
    assert_eq!(residuals.down.len(), 12, "SD1.5's layout has 12 down residuals");
    for (i, r) in residuals.down.iter().enumerate() {
        assert_close(r.clone(), &format!("{prefix}.controlnet_down.{i}"), tolerance, label);
    }
    assert_close(residuals.mid.clone(), &format!("{prefix}.controlnet_mid"), tolerance, label);
}

fn assert_trace(trace: &Trace, prefix: &str, tolerance: f64, label: &str) {
    assert!(!trace.entries.is_empty());
    for (name, shape, values) in &trace.entries {
        let (_, values) = read(values.clone());
        common::assert_close_values(shape, &values, &format!("{prefix}.hooks.{name}"), tolerance, label);
    }
}

#[test]
fn unet_matches_diffusers_layer_by_layer() {
    for (device_name, device) in devices() {
        let unet = unet(Precision::F32, &device);
        for case in CASES {
            let label = format!("{device_name} f32 {case}");
            let i = inputs(case, &device);
            let mut trace = Trace::default();
            let out = unet.forward_traced(i.sample, &i.timesteps, i.context, None, Some(&mut trace));
            assert_trace(&trace, &format!("{case}.unet"), F32, &label);
            assert_close(out, &format!("{case}.unet.out"), F32, &label);
        }
    }
}

#[test]
fn controlnet_and_guided_unet_match_diffusers() {
    for (device_name, device) in devices() {
        let unet = unet(Precision::F32, &device);
        let controlnet = controlnet(Precision::F32, &device);
        for case in CASES {
            let label = format!("{device_name} f32 {case}");
            let i = inputs(case, &device);
            let mut trace = Trace::default();
            let residuals = controlnet.forward_traced(
                i.sample.clone(),
                &i.timesteps,
                i.context.clone(),
                i.condition.clone(),
                Some(&mut trace),
            );
            assert_trace(&trace, &format!("{case}.controlnet"), F32, &label);
            assert_residuals(&residuals, &format!("{case}.controlnet.scale_1_0"), F32, &label);

            let mut trace = Trace::default();
            let out = unet.forward_traced(
                i.sample.clone(),
                &i.timesteps,
                i.context.clone(),
                Some(&residuals),
                Some(&mut trace),
            );
            assert_trace(&trace, &format!("{case}.unet_cn"), F32, &label);
            assert_close(out, &format!("{case}.unet_cn.out"), F32, &label);

            let half = steering(UnitSettings { scale: 0.5, ..UnitSettings::default() });
            let raw = controlnet.forward(i.sample, &i.timesteps, i.context, i.condition);
            let residuals = half.apply(raw.clone());
            assert_residuals(&residuals, &format!("{case}.controlnet.scale_0_5"), F32, &label);

            // The model's part of guess mode (diffusers' `ControlNetModel.forward`).
            let guess = steering(UnitSettings { guess_mode: true, ..UnitSettings::default() });
            assert_residuals(&guess.apply(raw), &format!("{case}.controlnet.guess_1_0"), F32, &label);
        }
    }
}

/// A unit's steering at the first of one step, for a 13-residual ControlNet without pooling.
fn steering(unit: UnitSettings) -> Steering {
    Steering::new(&unit, false, 13, 0, 1).expect("active at its only step")
}

#[test]
fn guess_mode_scales_are_diffusers_logspace() {
    let guess = steering(UnitSettings { guess_mode: true, ..UnitSettings::default() });
    let ours: Vec<f32> = guess.factors.iter().map(|&f| f as f32).collect();
    let error = relative_l2(&ours, &fixture("guess_mode_scales").values);
    assert!(error < 1e-6, "guess mode scales differ: {error:e}");
}

/// The fp16 checkpoint files: loaded into f32 they match diffusers' run of the same files tightly;
/// computing in f16 (where the device has it) stays within the f16 tolerance.
#[test]
fn fp16_checkpoints_match_diffusers() {
    for (device_name, device) in devices() {
        for (precision, tolerance) in [(Precision::F32, F32), (Precision::F16, F16)] {
            if !precision.is_supported_on(&device) {
                panic!("{device_name} cannot compute in {precision}");
            }
            // f16 compute reads the fp16 files; f32 compute the full files, so load fp16 explicitly.
            let unet_dir = fixtures().join("tiny/unet");
            let cn_dir = fixtures().join("tiny/controlnet");
            let (unet, controlnet) = if precision == Precision::F16 {
                (
                    load_unet(&unet_dir, precision, &device).unwrap(),
                    load_controlnet(&cn_dir, precision, &device).unwrap(),
                )
            } else {
                let read = |dir: &std::path::Path| {
                    (
                        std::fs::read_to_string(dir.join("config.json")).unwrap(),
                        std::fs::read(dir.join("diffusion_pytorch_model.fp16.safetensors")).unwrap(),
                    )
                };
                let (uc, uw) = read(&unet_dir);
                let (cc, cw) = read(&cn_dir);
                (
                    model::weights::unet_from_bytes(&uc, uw, precision, &device).unwrap(),
                    model::weights::controlnet_from_bytes(&cc, cw, precision, &device).unwrap(),
                )
            };
            assert_eq!(unet.dtype(), precision.dtype());
            for case in CASES {
                let label = format!("{device_name} fp16 weights, {precision} compute, {case}");
                let i = inputs(case, &device);
                let residuals =
                    controlnet.forward(i.sample.clone(), &i.timesteps, i.context.clone(), i.condition);
                assert_residuals(
                    &residuals,
                    &format!("{case}.fp16w.controlnet.scale_1_0"),
                    tolerance,
                    &label,
                );
                let plain = unet.forward(i.sample.clone(), &i.timesteps, i.context.clone(), None);
                assert_close(plain, &format!("{case}.fp16w.unet.out"), tolerance, &label);
                let guided = unet.forward(i.sample, &i.timesteps, i.context, Some(&residuals));
                assert_close(guided, &format!("{case}.fp16w.unet_cn.out"), tolerance, &label);
            }
        }
    }
}

/// The paper's promise: a ControlNet fresh from `from_unet` (zero convolutions at zero) leaves the
/// UNet's output exactly as it was.
#[test]
fn fresh_controlnet_from_unet_changes_nothing() {
    let device = Device::flex();
    let unet = unet(Precision::F32, &device);
    let controlnet = ControlNet::from_unet(&unet);
    let i = inputs("sq", &device);
    let residuals = controlnet.forward(i.sample.clone(), &i.timesteps, i.context.clone(), i.condition);
    for r in residuals.down.iter().chain([&residuals.mid]) {
        assert!(read(r.clone()).1.iter().all(|&v| v == 0.0), "a zero convolution output non-zero values");
    }
    let (_, without) = read(unet.forward(i.sample.clone(), &i.timesteps, i.context.clone(), None));
    let (_, with) = read(unet.forward(i.sample, &i.timesteps, i.context, Some(&residuals)));
    assert_eq!(without, with, "the UNet's output changed");
    // And the trainable copy is a copy: same encoder weights as the UNet's.
    let (_, a) = read(unet.conv_in.weight.val());
    let (_, b) = read(controlnet.conv_in.weight.val());
    assert_eq!(a, b);
}

/// Two ControlNets' residuals sum before the UNet sees them.
#[test]
fn residuals_of_two_controlnets_sum() {
    let device = Device::flex();
    let controlnet = controlnet(Precision::F32, &device);
    let i = inputs("sq", &device);
    let run = |scale: f64| {
        let raw = controlnet.forward(i.sample.clone(), &i.timesteps, i.context.clone(), i.condition.clone());
        steering(UnitSettings { scale, ..UnitSettings::default() }).apply(raw)
    };
    let summed = run(0.5) + run(0.5);
    assert_residuals(&summed, "sq.controlnet.scale_1_0", F32, "0.5 + 0.5");
}

#[test]
fn a_controlnet_checkpoint_is_not_a_unet() {
    let device = Device::flex();
    let dir = fixtures().join("tiny/unet");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let weights =
        std::fs::read(fixtures().join("tiny/controlnet/diffusion_pytorch_model.safetensors")).unwrap();
    let error = model::weights::unet_from_bytes(&config, weights, Precision::F32, &device).unwrap_err();
    let message = error.to_string();
    let WeightsError::Mismatch { missing, unused, .. } = &error else { panic!("{message}") };
    assert!(missing.iter().any(|k| k.starts_with("up_blocks.")), "{missing:?}");
    assert!(unused.iter().any(|k| k.starts_with("controlnet_down_blocks.")), "{unused:?}");
    assert!(message.contains("missing from the file: conv_norm_out"), "the message names keys: {message}");
}

#[test]
fn wrong_shapes_are_named() {
    // An SD2.x-style text width (1024) offered weights made for 16: every cross-attention key and
    // value projection disagrees, and the error says which and how.
    let device = Device::flex();
    let dir = fixtures().join("tiny/controlnet");
    let config = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"cross_attention_dim\": 16", "\"cross_attention_dim\": 1024");
    let weights = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let message = model::weights::controlnet_from_bytes(&config, weights, Precision::F32, &device)
        .unwrap_err()
        .to_string();
    assert!(message.contains("attn2.to_k.weight"), "{message}");
    assert!(message.contains("1024"), "{message}");
}

#[test]
fn truncated_weights_are_an_error() {
    let device = Device::flex();
    let dir = fixtures().join("tiny/unet");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut weights = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    weights.truncate(weights.len() / 2);
    let error = model::weights::unet_from_bytes(&config, weights, Precision::F32, &device).unwrap_err();
    assert!(matches!(error, WeightsError::Format(_)), "{error}");
}
