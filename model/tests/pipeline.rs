//! The whole pipeline against diffusers' `StableDiffusionControlNetPipeline` runs on the tiny
//! models (`tests/fixtures/make_pipeline_fixtures.py`): same noise in, same latents and image out.
//!
//! Tolerances: the decoded image must reach PSNR ≥ 40 dB against diffusers' (the bar);
//! the final latents are compared by relative L2 and reported. In f32 both come out far better
//! (see the printed figures); the bar leaves room for lavapipe's different summation order, which
//! a multistep sampler carries from step to step.
#![cfg(feature = "images")]

mod common;

use std::ops::ControlFlow;

use burn::prelude::*;
use common::{HostTensor, devices, fixtures, read, relative_l2};
use model::PrecisionExt;
use model::image_io;
use model::pipeline::{ControlMode, ControlUnit, Params, Pipeline, PipelineError, from_rgb8};
use model::vocabulary::{GenerationParams, UnitSettings};
use model::{ControlNet, Precision, weights};

fn pipeline_fixture(name: &str) -> &'static HostTensor {
    common::pipeline_expected().get(name).unwrap_or_else(|| panic!("no fixture tensor `{name}`"))
}

fn cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("tiny/pipeline_cases.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["pipelines"].as_array().unwrap().clone()
}

/// Peak signal-to-noise ratio of two images in [0, 1].
fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let mse = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (1.0 / mse.max(1e-20)).log10()
}

/// A fixture case's generation settings (its noise is given, so the seed is unused).
fn case_settings(case: &serde_json::Value) -> GenerationParams {
    GenerationParams {
        prompt: case["prompt"].as_str().unwrap().into(),
        negative_prompt: case["negative_prompt"].as_str().unwrap().into(),
        steps: case["steps"].as_u64().unwrap() as u32,
        guidance: case["guidance"].as_f64().unwrap(),
        scheduler: case["scheduler"].as_str().unwrap().parse().unwrap(),
        width: case["width"].as_u64().unwrap() as u32,
        height: case["height"].as_u64().unwrap() as u32,
        seed: 0,
    }
}

fn control_image(path: &str, device: &Device) -> Tensor<4> {
    let bytes = std::fs::read(fixtures().join("tiny").join(path)).unwrap();
    let image = image_io::decode(&bytes).unwrap();
    from_rgb8(image.width, image.height, &image.pixels, device)
}

#[test]
fn pipelines_equal_diffusers() {
    for (label, device) in devices() {
        let pipeline = Pipeline::load(&fixtures().join("tiny"), Precision::F32, &device).unwrap();
        let load_cn = |name: &str| {
            weights::load_controlnet(&fixtures().join("tiny").join(name), Precision::F32, &device).unwrap()
        };
        let controlnets: Vec<(&str, ControlNet)> =
            vec![("controlnet", load_cn("controlnet")), ("controlnet2", load_cn("controlnet2"))];
        for case in cases() {
            let name = case["name"].as_str().unwrap();
            let units: Vec<ControlUnit<'_>> = case["units"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| ControlUnit {
                    controlnet: &controlnets
                        .iter()
                        .find(|(n, _)| *n == u["controlnet"].as_str().unwrap())
                        .unwrap()
                        .1,
                    image: control_image(u["image"].as_str().unwrap(), &device),
                    settings: UnitSettings {
                        scale: u["scale"].as_f64().unwrap(),
                        guess_mode: case["guess_mode"].as_bool().unwrap(),
                        mode: ControlMode::Balanced,
                        start: u["start"].as_f64().unwrap(),
                        end: u["end"].as_f64().unwrap(),
                    },
                })
                .collect();
            let params = Params {
                settings: case_settings(&case),
                noise: Some(pipeline_fixture(&format!("pipe.{name}.noise")).to_device(&device)),
            };
            let mut step_errors = Vec::new();
            let mut steps_seen = 0;
            let image = pipeline
                .generate(&params, &units, |progress| {
                    steps_seen += 1;
                    assert_eq!(progress.step, steps_seen);
                    assert_eq!(progress.total, params.settings.steps as usize);
                    let expected =
                        pipeline_fixture(&format!("pipe.{name}.step{}.latents", progress.step - 1));
                    let (_, values) = read(progress.latents.clone());
                    step_errors.push(relative_l2(&values, &expected.values));
                    ControlFlow::Continue(())
                })
                .unwrap();
            let (shape, values) = read(image);
            let expected = pipeline_fixture(&format!("pipe.{name}.image"));
            assert_eq!(shape, expected.shape, "{label} {name}: image shape");
            let db = psnr(&values, &expected.values);
            let errors: Vec<String> = step_errors.iter().map(|e| format!("{e:.1e}")).collect();
            println!("{label} {name}: PSNR {db:.1} dB; latents rel. L2 per step [{}]", errors.join(", "));
            assert!(db >= 40.0, "{label} {name}: PSNR {db:.1} dB < 40 dB");
            let last = *step_errors.last().unwrap();
            assert!(last <= 1e-3, "{label} {name}: final latents relative L2 {last:.2e} > 1e-3");
        }
    }
}

#[test]
fn same_seed_same_image_and_cancellation() {
    let device = Device::flex();
    let pipeline = Pipeline::load(&fixtures().join("tiny"), Precision::F32, &device).unwrap();
    let settings = GenerationParams {
        prompt: "a tiny cat".into(),
        steps: 3,
        width: 64,
        height: 64,
        scheduler: "euler-a".parse().unwrap(),
        seed: 1234,
        ..GenerationParams::default()
    };
    let params = Params::from(settings.clone());
    let run =
        |params: &Params| read(pipeline.generate(params, &[], |_| ControlFlow::Continue(())).unwrap()).1;
    let a = run(&params);
    assert_eq!(a, run(&params), "the same seed must give the same image");
    let b = run(&Params::from(GenerationParams { seed: 1235, ..settings }));
    assert!(relative_l2(&a, &b) > 1e-2, "another seed must give another image");

    let mut calls = 0;
    let result = pipeline.generate(&params, &[], |p| {
        calls += 1;
        if p.step == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    });
    assert!(matches!(result, Err(PipelineError::Cancelled { step: 2 })), "{:?}", result.err());
    assert_eq!(calls, 2);
}

#[test]
fn bad_parameters_are_errors() {
    let device = Device::flex();
    let tiny = fixtures().join("tiny");
    let pipeline = Pipeline::load(&tiny, Precision::F32, &device).unwrap();
    let base = GenerationParams { prompt: "x".into(), steps: 2, width: 64, height: 64, ..Default::default() };
    let fails = |params: &Params, units: &[ControlUnit<'_>]| {
        pipeline.start(params, units).err().map(|e| e.to_string())
    };
    let with = |settings: GenerationParams| Params::from(settings);
    assert!(
        fails(&with(GenerationParams { width: 60, ..base.clone() }), &[]).unwrap().contains("multiple of 8")
    );
    assert!(fails(&with(GenerationParams { steps: 0, ..base.clone() }), &[]).is_some());
    let wrong_noise = Params { settings: base.clone(), noise: Some(Tensor::zeros([1, 4, 4, 4], &device)) };
    assert!(fails(&wrong_noise, &[]).unwrap().contains("noise"));
    let controlnet = weights::load_controlnet(&tiny.join("controlnet"), Precision::F32, &device).unwrap();
    let unit = ControlUnit {
        controlnet: &controlnet,
        image: Tensor::zeros([1, 3, 32, 32], &device),
        settings: UnitSettings::default(),
    };
    assert!(fails(&with(base.clone()), std::slice::from_ref(&unit)).unwrap().contains("condition image"));
    let backwards = UnitSettings { start: 0.8, end: 0.2, ..UnitSettings::default() };
    let unit = ControlUnit { image: Tensor::zeros([1, 3, 64, 64], &device), settings: backwards, ..unit };
    assert!(fails(&with(base), &[unit]).unwrap().contains("start"));

    // Not a pipeline folder: the ControlNet's.
    let err = Pipeline::load(&tiny.join("controlnet"), Precision::F32, &device).err().unwrap();
    assert!(err.to_string().contains("model_index.json"), "{err}");
}

/// f16 compute (UNet, ControlNet, text encoder; the VAE stays f32 by `force_upcast`) against
/// diffusers' f32 run: the same image within f16's precision.
#[test]
fn f16_pipeline_stays_close_to_diffusers() {
    let device = common::wgpu().clone();
    if !Precision::F16.is_supported_on(&device) {
        println!("skipped: this wgpu device has no shader-f16");
        return;
    }
    let tiny = fixtures().join("tiny");
    let pipeline = Pipeline::load(&tiny, Precision::F16, &device).unwrap();
    let controlnet = weights::load_controlnet(&tiny.join("controlnet"), Precision::F16, &device).unwrap();
    let case = cases().into_iter().find(|c| c["name"] == "unipc").unwrap();
    let unit = &case["units"][0];
    let units = [ControlUnit {
        controlnet: &controlnet,
        image: control_image(unit["image"].as_str().unwrap(), &device),
        settings: UnitSettings { scale: unit["scale"].as_f64().unwrap(), ..UnitSettings::default() },
    }];
    let params = Params {
        settings: GenerationParams {
            prompt: case["prompt"].as_str().unwrap().into(),
            steps: case["steps"].as_u64().unwrap() as u32,
            guidance: case["guidance"].as_f64().unwrap(),
            scheduler: "unipc".parse().unwrap(),
            width: 64,
            height: 64,
            ..GenerationParams::default()
        },
        noise: Some(pipeline_fixture("pipe.unipc.noise").to_device(&device)),
    };
    let image = pipeline.generate(&params, &units, |_| ControlFlow::Continue(())).unwrap();
    let (_, values) = read(image);
    assert!(values.iter().all(|v| v.is_finite()));
    let db = psnr(&values, &pipeline_fixture("pipe.unipc.image").values);
    println!("wgpu f16 unipc: PSNR {db:.1} dB against diffusers f32");
    assert!(db >= 40.0, "f16: PSNR {db:.1} dB < 40 dB");
}

/// `tests/fixtures/make_published_fixtures.py`: what A1111 and diffusers compute for the cases
/// below, on the tiny models.
fn published(name: &str) -> &'static HostTensor {
    static EXPECTED: std::sync::OnceLock<std::collections::HashMap<String, HostTensor>> =
        std::sync::OnceLock::new();
    EXPECTED
        .get_or_init(|| common::read_safetensors_f32(&fixtures().join("tiny/published.safetensors")))
        .get(name)
        .unwrap_or_else(|| panic!("no fixture tensor `{name}`"))
}

/// Runs `published_cases.json`'s case with one unit of `controlnet` and `unit`'s settings; the
/// final latents and the image.
fn run_published_case(
    pipeline: &Pipeline,
    controlnet: &ControlNet,
    unit: UnitSettings,
    device: &Device,
) -> (Vec<f32>, Vec<f32>) {
    let text = std::fs::read_to_string(fixtures().join("tiny/published_cases.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = &json["case"];
    let params = Params { settings: case_settings(case), noise: Some(published("noise").to_device(device)) };
    let unit = ControlUnit {
        controlnet,
        image: control_image(case["image"].as_str().unwrap(), device),
        settings: UnitSettings { scale: case["weight"].as_f64().unwrap(), ..unit },
    };
    let mut run = pipeline.start(&params, &[unit]).unwrap();
    while !run.is_done() {
        run.step();
    }
    let (_, latents) = read(run.latents().clone());
    let (_, image) = read(pipeline.decode(run.into_latents()));
    (latents, image)
}

/// A1111's control modes, computed by its own formulas (soft injection `0.825^(12−i)` for every
/// mode but Balanced, the conditional-half mask for "ControlNet is more important") on diffusers'
/// models by the fixture script: our pipeline equals them.
#[test]
fn control_modes_equal_a1111s() {
    for (label, device) in devices() {
        let tiny = fixtures().join("tiny");
        let pipeline = Pipeline::load(&tiny, Precision::F32, &device).unwrap();
        let controlnet = weights::load_controlnet(&tiny.join("controlnet"), Precision::F32, &device).unwrap();
        let mut results = Vec::new();
        for (name, mode) in [
            ("balanced", ControlMode::Balanced),
            ("prompt", ControlMode::PromptMoreImportant),
            ("controlnet", ControlMode::ControlNetMoreImportant),
        ] {
            let unit = UnitSettings { mode, ..UnitSettings::default() };
            let (latents, image) = run_published_case(&pipeline, &controlnet, unit, &device);
            let error = relative_l2(&latents, &published(&format!("a1111.{name}.latents")).values);
            let db = psnr(&image, &published(&format!("a1111.{name}.image")).values);
            println!(
                "{label} {mode:?}: PSNR {db:.1} dB, latents rel. L2 {error:.1e} against A1111's formulas"
            );
            assert!(db >= 40.0, "{label} {mode:?}: PSNR {db:.1} dB < 40 dB");
            assert!(error <= 1e-3, "{label} {mode:?}: latents relative L2 {error:.2e} > 1e-3");
            results.push(latents);
        }
        assert!(relative_l2(&results[0], &results[1]) > 1e-4, "the modes differ");
        assert!(relative_l2(&results[1], &results[2]) > 1e-4, "the modes differ");
    }
}

/// A ControlNet with `global_pool_conditions` (shuffle): diffusers runs it on the conditional
/// half, averages each residual over the image, and skips guess mode's logspace, with guess mode
/// asked for or not.
#[test]
fn pooled_controlnets_follow_diffusers() {
    let device = Device::flex();
    let tiny = fixtures().join("tiny");
    let pipeline = Pipeline::load(&tiny, Precision::F32, &device).unwrap();
    let pooled = weights::load_controlnet(&tiny.join("controlnet_pooled"), Precision::F32, &device).unwrap();
    assert!(pooled.config.global_pool_conditions);
    for guess_mode in [false, true] {
        let unit = UnitSettings { guess_mode, ..UnitSettings::default() };
        let (latents, image) = run_published_case(&pipeline, &pooled, unit, &device);
        let name = format!("pooled.guess_{guess_mode}");
        let error = relative_l2(&latents, &published(&format!("{name}.latents")).values);
        let db = psnr(&image, &published(&format!("{name}.image")).values);
        println!("{name}: PSNR {db:.1} dB, latents rel. L2 {error:.1e}");
        assert!(db >= 40.0 && error <= 1e-3, "{name}: PSNR {db:.1} dB, latents {error:.2e}");
    }
}

#[test]
fn latent_preview_is_a_small_rgb_image() {
    let device = Device::flex();
    // Channel 0 at 1, the others 0: the first row of the latent → RGB map, mapped to [0, 1].
    let mut values = vec![0.0f32; 4 * 2 * 3];
    values[..6].fill(1.0);
    let latents = Tensor::<4>::from_data(TensorData::new(values, [1, 4, 2, 3]), &device);
    let (shape, rgb) = read(model::pipeline::latent_preview(latents));
    assert_eq!(shape, [1, 3, 2, 3]);
    for (channel, expected) in [0.3512f32, 0.2297, 0.3227].iter().enumerate() {
        for &v in &rgb[channel * 6..(channel + 1) * 6] {
            assert!((v - (expected + 1.0) / 2.0).abs() < 1e-6, "channel {channel}: {v}");
        }
    }
    let huge = Tensor::<4>::ones([1, 4, 8, 8], &device) * 100.0;
    let (_, rgb) = read(model::pipeline::latent_preview(huge));
    assert!(rgb.iter().all(|&v| (0.0..=1.0).contains(&v)), "clamped to [0, 1]");
}

/// A ControlNet kept as one file in the original format (`control_model.`-prefixed LDM key names,
/// as A1111 and ComfyUI users keep them): its config comes from the pipeline's UNet and the file's
/// hint-encoder shapes, its keys through the key map, and it is the very ControlNet of
/// `tiny/controlnet` (which diffusers' `from_single_file` reads the same file into: the fixture
/// script checks that tensor by tensor).
#[test]
fn single_file_controlnets_load_as_the_folder_does() {
    let device = Device::flex();
    let tiny = fixtures().join("tiny");
    let pipeline = Pipeline::load(&tiny, Precision::F32, &device).unwrap();
    let folder = pipeline.load_controlnet(&tiny.join("controlnet")).unwrap();
    let single = pipeline.load_controlnet(&tiny.join("control_v11p_sd15_tiny.safetensors")).unwrap();
    assert_eq!(
        single.config.conditioning_embedding_out_channels,
        folder.config.conditioning_embedding_out_channels
    );
    let input = |name: &str| common::fixture(&format!("sq.input.{name}"));
    let run = |controlnet: &ControlNet| {
        let r = controlnet.forward(
            input("sample").to_device(&device),
            &[999.0, 999.0],
            input("encoder_hidden_states").to_device(&device),
            input("controlnet_cond").to_device(&device),
        );
        r.down.into_iter().chain([r.mid]).map(|t| read(t).1).collect::<Vec<_>>()
    };
    let (a, b) = (run(&folder), run(&single));
    assert_eq!(a, b, "the single file's ControlNet computes what the folder's does");
    let error = relative_l2(&b[12], &common::fixture("sq.controlnet.scale_1_0.controlnet_mid").values);
    assert!(error < 1e-4, "mid residual against diffusers: {error:.1e}");
    // A file that is no ControlNet is refused by name.
    let err = pipeline.load_controlnet(&tiny.join("published.safetensors")).err().unwrap().to_string();
    assert!(err.contains("not a ControlNet in the original format"), "{err}");
}
