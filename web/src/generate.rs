//! `Generate`: one image with the loaded models, step by step, as `Pipeline::generate` makes it
//! natively (the same seed gives the same noise, the same steps, the same image).
//!
//! After every step the latents are read back asynchronously. That waits for the GPU to finish
//! the step (so the progress and it/s are honest, and the queue never runs ahead of the page)
//! and yields to the worker's event loop, where a `Cancel` is handled; the loop checks for it
//! before the next step.

use model::burn::prelude::Device;
use model::pipeline::{
    self, ControlMode, ControlUnit, Noise, Params, UnitSummary, from_rgb8, latent_preview, to_rgb8,
};
use model::scheduler::SchedulerKind;

use crate::image;
use crate::load::Models;
use crate::protocol::{GenerateParams, Resize, Response, UnitParams};
use crate::worker::{now_ms, post};

/// The most steps a generation may take (the schedulers' own limit is the model's training
/// timesteps, 1000 for SD1.x).
pub const MAX_STEPS: u32 = 1000;

/// A `Generate` request checked against the loaded models: nothing in it can make the pipeline
/// panic.
#[derive(Debug)]
pub struct Checked {
    pub params: Params,
    /// Each unit's control mode, parsed.
    pub modes: Vec<ControlMode>,
}

/// Checks a request's parameters and units (`controlnets`: how many ControlNets are loaded).
/// Messages are meant for the user and name the unit (1-based, as the page shows them).
pub fn validate(
    params: &GenerateParams,
    units: &[UnitParams],
    controlnets: usize,
) -> Result<Checked, String> {
    let scheduler: SchedulerKind = params.scheduler.parse().map_err(|e| format!("{e}"))?;
    for (name, side) in [("width", params.width), ("height", params.height)] {
        if !side.is_multiple_of(Resize::MULTIPLE) || !(Resize::MIN_SIDE..=Resize::MAX_SIDE).contains(&side) {
            return Err(format!(
                "the image's {name} must be a multiple of {} from {} to {}, not {side}",
                Resize::MULTIPLE,
                Resize::MIN_SIDE,
                Resize::MAX_SIDE
            ));
        }
    }
    if !(1..=MAX_STEPS).contains(&params.steps) {
        return Err(format!("the number of steps must be 1 to {MAX_STEPS}, not {}", params.steps));
    }
    if !params.guidance.is_finite() {
        return Err("the guidance scale must be a number".into());
    }
    let pixels = params.width as usize * params.height as usize;
    let mut modes = Vec::with_capacity(units.len());
    for (i, unit) in units.iter().enumerate() {
        let n = i + 1;
        if unit.controlnet as usize >= controlnets {
            return Err(match controlnets {
                0 => format!("control unit {n} needs a ControlNet, and none is loaded"),
                _ => format!(
                    "control unit {n} uses ControlNet {}, but only {controlnets} are loaded",
                    unit.controlnet + 1
                ),
            });
        }
        if unit.rgb.len() != pixels * 3 {
            return Err(format!(
                "control unit {n}: the control map has {} bytes, not the {} of a {}×{} RGB image (resize it to the \
                 image's size)",
                unit.rgb.len(),
                pixels * 3,
                params.width,
                params.height
            ));
        }
        modes.push(unit.mode.parse::<ControlMode>().map_err(|e| format!("control unit {n}: {e}"))?);
        if !(unit.start.is_finite()
            && unit.end.is_finite()
            && 0.0 <= unit.start
            && unit.start <= unit.end
            && unit.end <= 1.0)
        {
            return Err(format!(
                "control unit {n}: it must start and end within the steps (0 ≤ start ≤ end ≤ 1), not from {} to {}",
                unit.start, unit.end
            ));
        }
        if !unit.scale.is_finite() {
            return Err(format!("control unit {n}: the weight must be a number"));
        }
    }
    let params = Params {
        prompt: params.prompt.clone(),
        negative_prompt: params.negative_prompt.clone(),
        steps: params.steps as usize,
        guidance: params.guidance,
        scheduler,
        width: params.width as usize,
        height: params.height as usize,
        noise: Noise::Seed(u64::from(params.seed)),
    };
    Ok(Checked { params, modes })
}

/// A1111's parameters text for a generation with `models`.
pub fn parameters(models: &Models, checked: &Checked, units: &[UnitParams]) -> String {
    let summaries: Vec<UnitSummary<'_>> = units
        .iter()
        .zip(&checked.modes)
        .map(|(unit, &mode)| UnitSummary {
            model: models.controlnet_names.get(unit.controlnet as usize).map_or("", String::as_str),
            image: &unit.label,
            weight: unit.scale,
            start: unit.start,
            end: unit.end,
            mode,
            guess_mode: unit.guess_mode,
        })
        .collect();
    pipeline::parameters_text(&checked.params, &models.pipeline_name, models.pipeline.precision, &summaries)
}

/// Whether a step's number is one the page gets a preview for: every `every` steps, never the
/// last (the image itself follows).
pub fn wants_preview(step: u32, total: u32, every: u32) -> bool {
    every > 0 && step.is_multiple_of(every) && step < total
}

/// Runs generation `id`, posting `GenerateProgress` and `Preview` on the way. Returns the
/// terminal response: `Generated`, or `Cancelled` when `cancelled()` turned true between steps.
pub async fn generate(
    id: u32,
    models: &Models,
    request: &GenerateParams,
    units: &[UnitParams],
    device: &Device,
    cancelled: &dyn Fn() -> bool,
) -> Result<Response, String> {
    let checked = validate(request, units, models.controlnets.len())?;
    if cancelled() {
        return Ok(Response::Cancelled { id, step: 0 });
    }
    let started = now_ms();
    let (width, height) = (checked.params.width, checked.params.height);
    let control: Vec<ControlUnit<'_>> = units
        .iter()
        .zip(&checked.modes)
        .map(|(unit, &mode)| ControlUnit {
            controlnet: &models.controlnets[unit.controlnet as usize],
            image: from_rgb8(width, height, &unit.rgb, device),
            scale: unit.scale,
            guess_mode: unit.guess_mode,
            mode,
            start: unit.start,
            end: unit.end,
        })
        .collect();
    let mut run = models.pipeline.start(&checked.params, &control).map_err(|e| e.to_string())?;
    let total = run.total() as u32;
    while !run.is_done() {
        run.step();
        // Wait for the step (and let a Cancel in).
        run.latents().clone().into_data_async().await.map_err(|e| format!("the GPU failed: {e:?}"))?;
        let step = run.steps_done() as u32;
        post(&Response::GenerateProgress { id, step, total, elapsed_ms: now_ms() - started });
        if cancelled() {
            // The run, its latents and the control images are dropped on return.
            return Ok(Response::Cancelled { id, step });
        }
        if wants_preview(step, total, request.preview_every) {
            let (w, h, rgb) =
                to_rgb8(latent_preview(run.latents().clone())).await.map_err(|e| e.to_string())?;
            post(&Response::Preview { id, step, width: w as u32, height: h as u32, rgb });
        }
    }
    let denoised_ms = now_ms() - started;
    let image = models.pipeline.decode(run.into_latents());
    drop(control);
    let (w, h, rgb) = to_rgb8(image).await.map_err(|e| e.to_string())?;
    let elapsed_ms = now_ms() - started;

    let parameters = parameters(models, &checked, units);
    let png = image::encode_png(w, h, &rgb, &[("parameters", &parameters)])?;
    let thumbnail = image::thumbnail_png(w, h, &rgb)?;
    Ok(Response::Generated {
        id,
        width: w as u32,
        height: h as u32,
        png,
        thumbnail,
        parameters,
        elapsed_ms,
        step_ms: denoised_ms / f64::from(total.max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GenerateParams {
        GenerateParams {
            prompt: "a tiny cat".into(),
            negative_prompt: String::new(),
            steps: 4,
            guidance: 7.5,
            scheduler: "unipc".into(),
            width: 64,
            height: 96,
            seed: 42,
            preview_every: 2,
        }
    }

    fn unit() -> UnitParams {
        UnitParams {
            controlnet: 1,
            rgb: vec![0; 64 * 96 * 3],
            scale: 0.7,
            guess_mode: false,
            mode: "prompt".into(),
            start: 0.0,
            end: 0.8,
            label: "canny".into(),
        }
    }

    #[test]
    fn valid_requests_become_pipeline_params() {
        let checked = validate(&params(), &[unit()], 2).unwrap();
        assert_eq!(checked.modes, [ControlMode::PromptMoreImportant]);
        let p = &checked.params;
        assert_eq!((p.width, p.height, p.steps, p.scheduler), (64, 96, 4, SchedulerKind::UniPc));
        assert!(matches!(p.noise, Noise::Seed(42)));
    }

    #[test]
    fn invalid_requests_are_refused_with_a_reason() {
        let refused = |params: GenerateParams, units: Vec<UnitParams>, loaded: usize| {
            validate(&params, &units, loaded).expect_err("refused")
        };
        let message = refused(GenerateParams { scheduler: "plms".into(), ..params() }, vec![], 0);
        assert!(message.contains("unknown scheduler `plms`"), "{message}");
        let message = refused(GenerateParams { width: 100, ..params() }, vec![], 0);
        assert!(message.contains("width") && message.contains("100"), "{message}");
        assert!(refused(GenerateParams { height: 4096, ..params() }, vec![], 0).contains("height"));
        assert!(refused(GenerateParams { steps: 0, ..params() }, vec![], 0).contains("steps"));
        assert!(refused(GenerateParams { steps: 1001, ..params() }, vec![], 0).contains("1001"));
        assert!(refused(GenerateParams { guidance: f64::NAN, ..params() }, vec![], 0).contains("guidance"));
        let message = refused(params(), vec![unit()], 0);
        assert!(message.contains("none is loaded"), "{message}");
        let message = refused(params(), vec![unit()], 1);
        assert!(message.contains("uses ControlNet 2, but only 1"), "{message}");
        let message = refused(params(), vec![UnitParams { rgb: vec![0; 64 * 64 * 3], ..unit() }], 2);
        assert!(message.starts_with("control unit 1: the control map has 12288 bytes"), "{message}");
        let message = refused(params(), vec![unit(), UnitParams { mode: "loud".into(), ..unit() }], 2);
        assert!(message.starts_with("control unit 2: unknown control mode `loud`"), "{message}");
        let message = refused(params(), vec![UnitParams { start: 0.9, ..unit() }], 2);
        assert!(message.contains("0 ≤ start ≤ end ≤ 1"), "{message}");
        assert!(refused(params(), vec![UnitParams { scale: f64::INFINITY, ..unit() }], 2).contains("weight"));
    }

    #[test]
    fn previews_every_n_steps_but_not_the_last() {
        let steps: Vec<u32> = (1..=10).filter(|&s| wants_preview(s, 10, 3)).collect();
        assert_eq!(steps, [3, 6, 9]);
        let steps: Vec<u32> = (1..=10).filter(|&s| wants_preview(s, 10, 5)).collect();
        assert_eq!(steps, [5]);
        assert!(!(1..=10).any(|s| wants_preview(s, 10, 0)));
    }
}
