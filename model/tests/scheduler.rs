//! The schedulers against diffusers 0.42.1 (`tests/fixtures/make_pipeline_fixtures.py`): the
//! schedules (timesteps, sigmas, initial sigma) for 6 and 20 steps, and whole runs of `step`
//! with the fixture's fake model outputs, on the CPU backend and on burn-wgpu.

mod common;

use burn::prelude::*;
use common::{HostTensor, devices, fixtures, pipeline_expected_f64, read, relative_l2};
use model::scheduler::{Scheduler, SchedulerConfig, SchedulerError, SchedulerKind, parse_json};
use model::vocabulary::Named;
use serde_json::{Value, json};

/// The fixture cases (`pipeline_cases.json`'s "schedulers").
const CASES: [&str; 8] =
    ["ddim", "ddim-trailing", "euler", "euler-leading", "euler-a", "dpmpp-2m", "dpmpp-2m-karras", "unipc"];
const STEPS: [usize; 2] = [6, 20];

/// Timesteps are integers or f32 values computed in f64 by numpy: equal but for the last bits.
const TIMESTEPS: f64 = 1e-9;
/// Sigmas are f32 values. Ours are correctly rounded; torch's CPU `sqrt` (MKL) is not always,
/// so a table entry can differ by one f32 ulp (2⁻²³ relative at most), and so can the
/// interpolated sigmas and the initial sigma derived from them.
const SIGMAS: f64 = 2.4e-7;
/// One step and a whole run, relative L2, f32 tensors (the coefficients are f64 here and f32 in
/// diffusers).
const STEP: f64 = 1e-5;

fn f64s(name: &str) -> &'static [f64] {
    let (_, values) =
        pipeline_expected_f64().get(name).unwrap_or_else(|| panic!("no fixture tensor `{name}`"));
    values
}

fn host(name: &str) -> HostTensor {
    let (shape, values) =
        pipeline_expected_f64().get(name).unwrap_or_else(|| panic!("no fixture tensor `{name}`"));
    HostTensor { shape: shape.clone(), values: values.iter().map(|&v| v as f32).collect() }
}

fn cases_json() -> Value {
    let text =
        std::fs::read_to_string(fixtures().join("tiny/pipeline_cases.json")).expect("pipeline_cases.json");
    // Python's json writes `-Infinity` (DPM-Solver's lambda_min_clipped).
    parse_json(&text).expect("pipeline_cases.json parses")
}

/// The kind and config of a fixture case: `tiny/scheduler/scheduler_config.json` with the case's
/// overrides, as the fixture script builds it.
fn case(cases: &Value, name: &str) -> (SchedulerKind, SchedulerConfig) {
    let case = &cases["schedulers"][name];
    let kind: SchedulerKind = case["kind"].as_str().expect("kind").parse().expect("a known kind");
    let text = std::fs::read_to_string(fixtures().join("tiny/scheduler/scheduler_config.json"))
        .expect("scheduler_config.json");
    let mut config = SchedulerConfig::from_json(&text).expect("the scheduler config parses");
    for (key, value) in case["overrides"].as_object().expect("overrides") {
        config = config.with_override(key.clone(), value.clone());
    }
    (kind, config)
}

/// The largest relative difference, elementwise.
fn max_relative(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ: {actual:?} vs {expected:?}");
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| (a - e).abs() / e.abs().max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

fn assert_schedule(scheduler: &Scheduler, prefix: &str, label: &str) {
    let timesteps = f64s(&format!("{prefix}.timesteps"));
    let error = max_relative(scheduler.timesteps(), timesteps);
    println!("{label}: timesteps max relative error {error:.1e}");
    assert!(error <= TIMESTEPS, "{label}: timesteps {:?} != {timesteps:?}", scheduler.timesteps());
    assert_eq!(scheduler.len(), timesteps.len());

    let sigmas_name = format!("{prefix}.sigmas");
    match (scheduler.sigmas(), pipeline_expected_f64().contains_key(&sigmas_name)) {
        (Some(sigmas), true) => {
            let expected = f64s(&sigmas_name);
            // The final sigma is 0 in both.
            let error = max_relative(&sigmas[..sigmas.len() - 1], &expected[..expected.len() - 1]);
            println!("{label}: sigmas max relative error {error:.1e}");
            assert!(error <= SIGMAS, "{label}: sigmas {sigmas:?} != {expected:?}");
            assert_eq!(sigmas[sigmas.len() - 1], expected[expected.len() - 1], "{label}: final sigma");
        }
        (None, false) => {}
        (ours, _) => panic!("{label}: sigmas {ours:?} but the fixture has {sigmas_name}: {}", ours.is_none()),
    }

    let init = f64s(&format!("{prefix}.init_noise_sigma"))[0];
    let error = (scheduler.init_noise_sigma() - init).abs() / init;
    println!("{label}: init_noise_sigma {} (relative error {error:.1e})", scheduler.init_noise_sigma());
    assert!(error <= SIGMAS, "{label}: init_noise_sigma {} != {init}", scheduler.init_noise_sigma());
}

#[test]
fn schedules_match_diffusers() {
    let cases = cases_json();
    for name in CASES {
        let (kind, config) = case(&cases, name);
        for steps in STEPS {
            let scheduler = Scheduler::new(kind, &config, steps).expect("the scheduler builds");
            assert_eq!(scheduler.kind(), kind);
            assert_schedule(&scheduler, &format!("sched.{name}.n{steps}"), &format!("{name} n{steps}"));
        }
    }
}

/// The complete config diffusers reports after `from_config` (every field of the class, its
/// `_use_default_values`, `lambda_min_clipped: -Infinity`) gives the same schedule.
#[test]
fn full_diffusers_configs_give_the_same_schedules() {
    let cases = cases_json();
    for name in CASES {
        let case = &cases["schedulers"][name];
        let kind: SchedulerKind = case["kind"].as_str().expect("kind").parse().expect("a known kind");
        let config = SchedulerConfig::from_json(&case["config"].to_string()).expect("the full config parses");
        for steps in STEPS {
            let scheduler = Scheduler::new(kind, &config, steps).expect("the scheduler builds");
            assert_schedule(
                &scheduler,
                &format!("sched.{name}.n{steps}"),
                &format!("{name} (full config) n{steps}"),
            );
        }
    }
}

/// A whole run fed our own results forward, like a real run, compared at every step.
#[test]
fn steps_match_diffusers() {
    let cases = cases_json();
    for (device_name, device) in devices() {
        for name in CASES {
            let (kind, config) = case(&cases, name);
            for steps in STEPS {
                let mut scheduler = Scheduler::new(kind, &config, steps).expect("the scheduler builds");
                let prefix = format!("sched.{name}.n{steps}");
                let label = format!("{device_name} {name} n{steps}");
                let mut sample: Tensor<4> = host(&format!("{prefix}.sample")).to_device(&device);
                let (mut worst_scaled, mut worst_prev) = (0.0f64, 0.0f64);
                for i in 0..scheduler.len() {
                    let step = format!("{prefix}.step{i}");
                    let scaled = scheduler.scale_model_input(sample.clone(), i);
                    worst_scaled = worst_scaled.max(compare(scaled, &format!("{step}.scaled"), &label));
                    let model_output = host(&format!("{step}.model_output")).to_device(&device);
                    let noise =
                        scheduler.needs_noise().then(|| host(&format!("{step}.noise")).to_device(&device));
                    sample = scheduler.step(model_output, i, sample, noise);
                    worst_prev = worst_prev.max(compare(sample.clone(), &format!("{step}.prev"), &label));
                }
                println!(
                    "{label}: worst relative L2 error: scaled {worst_scaled:.1e}, prev {worst_prev:.1e}"
                );
            }
        }
    }
}

fn compare(tensor: Tensor<4>, name: &str, label: &str) -> f64 {
    let (shape, values) = read(tensor);
    let expected = host(name);
    assert_eq!(shape, expected.shape, "{label}: shape of {name}");
    let error = relative_l2(&values, &expected.values);
    assert!(error <= STEP, "{label}: {name}: relative L2 error {error:.3e} > {STEP:.0e}");
    error
}

#[test]
fn bad_requests_are_errors() {
    let sd15 = SchedulerConfig::sd15();
    for &kind in SchedulerKind::ALL {
        assert_eq!(Scheduler::new(kind, &sd15, 0).unwrap_err(), SchedulerError::ZeroSteps, "{kind}");
        assert!(
            matches!(Scheduler::new(kind, &sd15, 1001), Err(SchedulerError::TooManySteps { .. })),
            "{kind}"
        );
        // Every step count up to the training range works.
        for steps in [1, 2, 3, 14, 15, 50, 999, 1000] {
            if let Err(e) = Scheduler::new(kind, &sd15, steps) {
                // Leading spacing plus SD1.5's steps_offset leaves the range when the steps fill it.
                assert!(
                    steps == 1000 && matches!(e, SchedulerError::TooManySteps { .. }),
                    "{kind} {steps}: {e}"
                );
            }
        }

        let v_prediction = sd15.clone().with_override("prediction_type", json!("v_prediction"));
        let error = Scheduler::new(kind, &v_prediction, 20).unwrap_err();
        assert!(matches!(error, SchedulerError::Unsupported { .. }), "{kind}: {error:?}");
        assert!(error.to_string().contains("\"v_prediction\""), "{error}");
        println!("{kind}: {error}");

        let spacing = sd15.clone().with_override("timestep_spacing", json!("quadratic"));
        let error = Scheduler::new(kind, &spacing, 20).unwrap_err();
        assert!(matches!(error, SchedulerError::Config { .. }), "{kind}: {error:?}");
        println!("{kind}: {error}");

        let wrong_type = sd15.clone().with_override("num_train_timesteps", json!("many"));
        assert!(
            matches!(Scheduler::new(kind, &wrong_type, 20), Err(SchedulerError::Config { .. })),
            "{kind}"
        );
    }
    for text in ["", "[1, 2]", "{\"beta_start\": }"] {
        let error = SchedulerConfig::from_json(text).unwrap_err();
        assert!(matches!(error, SchedulerError::Config { .. }), "{text}: {error:?}");
    }
    let sde = sd15.clone().with_override("algorithm_type", json!("sde-dpmsolver++"));
    assert!(matches!(
        Scheduler::new(SchedulerKind::DpmPp2M, &sde, 20),
        Err(SchedulerError::Unsupported { .. })
    ));
}

#[test]
fn the_kind_decides_karras_sigmas() {
    let sd15 = SchedulerConfig::sd15();
    let karras = Scheduler::new(SchedulerKind::DpmPp2MKarras, &sd15, 20).expect("builds");
    let plain = Scheduler::new(SchedulerKind::DpmPp2M, &sd15, 20).expect("builds");
    assert_ne!(karras.timesteps(), plain.timesteps());
    // A config that asks for Karras sigmas gets them from dpmpp-2m too (diffusers' from_config).
    let asked = sd15.with_override("use_karras_sigmas", json!(true));
    let from_config = Scheduler::new(SchedulerKind::DpmPp2M, &asked, 20).expect("builds");
    assert_eq!(from_config.timesteps(), karras.timesteps());
}

/// DDIM's `clip_sample` (its default when a config does not set it): x₀ is clamped to ±range
/// before the step, checked against the formula on the host.
#[test]
fn ddim_clips_the_predicted_sample() {
    let config = SchedulerConfig::sd15().with_override("clip_sample", json!(true));
    let device = Device::flex();
    let mut scheduler = Scheduler::new(SchedulerKind::Ddim, &config, 10).expect("builds");
    assert_eq!(scheduler.timesteps()[0], 901.0);
    let x = [3.0f32, -0.2, 0.5, -4.0];
    let eps = [0.1f32, 0.3, -2.0, 0.7];
    let tensor = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, 1, 2, 2]), &device);
    let out = read(scheduler.step(tensor(&eps), 0, tensor(&x), None)).1;

    // ᾱ at 901 and 801: diffusers' `alphas_cumprod` for SD1.5's betas.
    let (a_t, a_prev): (f64, f64) = (0.014_004_888_944_327_831, 0.036_546_494_811_773_3);
    for i in 0..4 {
        let x0 = ((x[i] as f64 - (1.0 - a_t).sqrt() * eps[i] as f64) / a_t.sqrt()).clamp(-1.0, 1.0);
        let expected = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps[i] as f64;
        let error = (out[i] as f64 - expected).abs();
        assert!(error < 1e-4, "element {i}: {} vs {expected}", out[i]);
    }
}
