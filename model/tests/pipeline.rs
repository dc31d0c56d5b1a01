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
use model::image_io;
use model::pipeline::{ControlMode, ControlUnit, Noise, Params, Pipeline, PipelineError, from_rgb8};
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
                    scale: u["scale"].as_f64().unwrap(),
                    guess_mode: case["guess_mode"].as_bool().unwrap(),
                    mode: ControlMode::Balanced,
                    start: u["start"].as_f64().unwrap(),
                    end: u["end"].as_f64().unwrap(),
                })
                .collect();
            let params = Params {
                prompt: case["prompt"].as_str().unwrap().into(),
                negative_prompt: case["negative_prompt"].as_str().unwrap().into(),
                steps: case["steps"].as_u64().unwrap() as usize,
                guidance: case["guidance"].as_f64().unwrap(),
                scheduler: case["scheduler"].as_str().unwrap().parse().unwrap(),
                width: case["width"].as_u64().unwrap() as usize,
                height: case["height"].as_u64().unwrap() as usize,
                noise: Noise::Latents(pipeline_fixture(&format!("pipe.{name}.noise")).to_device(&device)),
            };
            let mut step_errors = Vec::new();
            let mut steps_seen = 0;
            let image = pipeline
                .generate(&params, &units, |progress| {
                    steps_seen += 1;
                    assert_eq!(progress.step, steps_seen);
                    assert_eq!(progress.total, params.steps);
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
    let params = Params {
        prompt: "a tiny cat".into(),
        steps: 3,
        width: 64,
        height: 64,
        scheduler: "euler-a".parse().unwrap(),
        noise: Noise::Seed(1234),
        ..Params::default()
    };
    let run =
        |params: &Params| read(pipeline.generate(params, &[], |_| ControlFlow::Continue(())).unwrap()).1;
    let a = run(&params);
    assert_eq!(a, run(&params), "the same seed must give the same image");
    let b = run(&Params { noise: Noise::Seed(1235), ..params.clone() });
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
    let base = Params { prompt: "x".into(), steps: 2, width: 64, height: 64, ..Params::default() };
    let fails = |params: &Params, units: &[ControlUnit<'_>]| {
        pipeline.start(params, units).err().map(|e| e.to_string())
    };
    assert!(fails(&Params { width: 60, ..base.clone() }, &[]).unwrap().contains("multiple of 8"));
    assert!(fails(&Params { steps: 0, ..base.clone() }, &[]).is_some());
    let wrong_noise = Noise::Latents(Tensor::zeros([1, 4, 4, 4], &device));
    assert!(fails(&Params { noise: wrong_noise, ..base.clone() }, &[]).unwrap().contains("noise"));
    let controlnet = weights::load_controlnet(&tiny.join("controlnet"), Precision::F32, &device).unwrap();
    let unit = ControlUnit {
        controlnet: &controlnet,
        image: Tensor::zeros([1, 3, 32, 32], &device),
        scale: 1.0,
        guess_mode: false,
        mode: ControlMode::Balanced,
        start: 0.0,
        end: 1.0,
    };
    assert!(fails(&base, std::slice::from_ref(&unit)).unwrap().contains("condition image"));
    let unit = ControlUnit { image: Tensor::zeros([1, 3, 64, 64], &device), start: 0.8, end: 0.2, ..unit };
    assert!(fails(&base, &[unit]).unwrap().contains("start"));

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
        scale: unit["scale"].as_f64().unwrap(),
        guess_mode: false,
        mode: ControlMode::Balanced,
        start: 0.0,
        end: 1.0,
    }];
    let params = Params {
        prompt: case["prompt"].as_str().unwrap().into(),
        steps: case["steps"].as_u64().unwrap() as usize,
        guidance: case["guidance"].as_f64().unwrap(),
        scheduler: "unipc".parse().unwrap(),
        width: 64,
        height: 64,
        noise: Noise::Latents(pipeline_fixture("pipe.unipc.noise").to_device(&device)),
        ..Params::default()
    };
    let image = pipeline.generate(&params, &units, |_| ControlFlow::Continue(())).unwrap();
    let (_, values) = read(image);
    assert!(values.iter().all(|v| v.is_finite()));
    let db = psnr(&values, &pipeline_fixture("pipe.unipc.image").values);
    println!("wgpu f16 unipc: PSNR {db:.1} dB against diffusers f32");
    assert!(db >= 40.0, "f16: PSNR {db:.1} dB < 40 dB");
}

/// One step of each control mode, against the same step composed by hand from the public parts
/// (text encoder, ControlNet, UNet, scheduler): the modes do what they say.
#[test]
fn control_modes_do_what_they_say() {
    use model::ControlScale;
    use model::scheduler::Scheduler;

    let device = Device::flex();
    let tiny = fixtures().join("tiny");
    let pipeline = Pipeline::load(&tiny, Precision::F32, &device).unwrap();
    let controlnet = weights::load_controlnet(&tiny.join("controlnet"), Precision::F32, &device).unwrap();
    let image = control_image("control/edges_64x64.png", &device);
    let noise = pipeline_fixture("pipe.ddim.noise").to_device::<4>(&device);
    let params = Params {
        prompt: "a tiny cat".into(),
        negative_prompt: "blurry".into(),
        steps: 5,
        guidance: 6.0,
        scheduler: "ddim".parse().unwrap(),
        width: 64,
        height: 64,
        noise: Noise::Latents(noise.clone()),
    };
    let scale = 0.9;
    let mut results = Vec::new();
    for mode in
        [ControlMode::Balanced, ControlMode::PromptMoreImportant, ControlMode::ControlNetMoreImportant]
    {
        let unit = ControlUnit {
            controlnet: &controlnet,
            image: image.clone(),
            scale,
            guess_mode: false,
            mode,
            start: 0.0,
            end: 1.0,
        };
        let mut run = pipeline.start(&params, std::slice::from_ref(&unit)).unwrap();
        run.step();
        let (_, ours) = read(run.latents().clone());

        // By hand.
        let mut scheduler =
            Scheduler::new(params.scheduler, &pipeline.scheduler_config, params.steps).unwrap();
        let t = scheduler.timesteps()[0] as f32;
        let latents = noise.clone() * scheduler.init_noise_sigma();
        let uncond = pipeline.encode_prompt("blurry");
        let cond = pipeline.encode_prompt("a tiny cat");
        let context = Tensor::cat(vec![uncond, cond.clone()], 0);
        let input = scheduler.scale_model_input(latents.clone().repeat_dim(0, 2), 0);
        let plain = ControlScale { scale, guess_mode: false };
        let residuals = match mode {
            ControlMode::ControlNetMoreImportant => {
                let single = scheduler.scale_model_input(latents.clone(), 0);
                let r = controlnet.forward(single, &[t], cond, image.clone(), plain);
                let pad = |x: Tensor<4>| Tensor::cat(vec![x.zeros_like(), x], 0);
                model::ControlResiduals { down: r.down.into_iter().map(pad).collect(), mid: pad(r.mid) }
            }
            _ => {
                let r = controlnet.forward(
                    input.clone(),
                    &[t, t],
                    context.clone(),
                    image.clone().repeat_dim(0, 2),
                    plain,
                );
                if mode == ControlMode::PromptMoreImportant {
                    let factors: Vec<f64> = (0..13).map(|i| 0.825f64.powi(12 - i)).collect();
                    r.scale_each(&factors)
                } else {
                    r
                }
            }
        };
        let eps = pipeline.unet.forward(input, &[t, t], context, Some(&residuals));
        let [u, c] = eps.chunk(2, 0).try_into().unwrap();
        let eps = u.clone() + (c - u) * params.guidance;
        let (_, expected) = read(scheduler.step(eps, 0, latents, None));
        let error = relative_l2(&ours, &expected);
        println!("{mode:?}: one step vs composed by hand: relative L2 {error:.1e}");
        assert!(error < 1e-6, "{mode:?}: {error:.2e}");
        results.push(ours);
    }
    // And the three modes differ from each other.
    assert!(relative_l2(&results[0], &results[1]) > 1e-4);
    assert!(relative_l2(&results[0], &results[2]) > 1e-4);
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
