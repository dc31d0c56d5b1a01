//! `Generate`: one image with the loaded models, step by step, as `Pipeline::generate` makes it
//! natively (the same seed gives the same noise, the same steps, the same image).
//!
//! After every step the latents are read back asynchronously. That waits for the GPU to finish
//! the step (so the progress and it/s are honest, and the queue never runs ahead of the page)
//! and yields to the worker's event loop, where a `Cancel` is handled; the loop checks for it
//! before the next step.

use model::burn::prelude::Device;
use model::pipeline::{ControlUnit, Params, from_rgb8, latent_preview, to_rgb8};
use model::vocabulary::GenerationParams;
use model::vocabulary::a1111::{Parameters, UnitText};

use crate::image;
use crate::load::Models;
use crate::protocol::{Response, UnitParams};
use crate::scope::now_ms;
use crate::worker::{gpu_failure, post, yield_now};

/// Checks a request against the loaded models (`controlnets`: how many are loaded) and the
/// limits every generation shares. Messages are meant for the user and name the unit (1-based,
/// as the page shows them).
pub fn validate(params: &GenerationParams, units: &[UnitParams], controlnets: usize) -> Result<(), String> {
    let settings: Vec<_> = units.iter().map(|unit| unit.settings).collect();
    params.validate(&settings).map_err(|e| e.to_string())?;
    let pixels = params.width as usize * params.height as usize;
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
    }
    Ok(())
}

/// A1111's parameters text for a generation with `models`.
pub fn parameters(models: &Models, params: &GenerationParams, units: &[UnitParams]) -> String {
    let units = units
        .iter()
        .map(|unit| UnitText {
            module: unit.module,
            model: models.controlnet_names.get(unit.controlnet as usize).cloned().unwrap_or_default(),
            settings: unit.settings,
            resize: unit.resize,
            thresholds: unit.thresholds,
        })
        .collect();
    Parameters {
        params: params.clone(),
        has_seed: true,
        model: models.pipeline_name.clone(),
        precision: Some(models.pipeline.precision),
        units,
        other: Vec::new(),
    }
    .to_text()
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
    request: &GenerationParams,
    preview_every: u32,
    units: &[UnitParams],
    device: &Device,
    cancelled: &dyn Fn() -> bool,
) -> Result<Response, String> {
    validate(request, units, models.controlnets.len())?;
    if cancelled() {
        return Ok(Response::Cancelled { id, step: 0 });
    }
    let started = now_ms();
    let (width, height) = (request.width as usize, request.height as usize);
    let control: Vec<ControlUnit<'_>> = units
        .iter()
        .map(|unit| ControlUnit {
            controlnet: &models.controlnets[unit.controlnet as usize],
            image: from_rgb8(width, height, &unit.rgb, device),
            settings: unit.settings,
        })
        .collect();
    let params = Params::from(request.clone());
    let mut run = models.pipeline.start(&params, &control).map_err(|e| e.to_string())?;
    let total = run.total() as u32;
    while !run.is_done() {
        run.step();
        // Wait for the step (and let a Cancel in).
        if let Err(e) = run.latents().clone().into_data_async().await {
            return Err(gpu_failure(device, e).await);
        }
        yield_now().await;
        let step = run.steps_done() as u32;
        post(&Response::GenerateProgress { id, step, total, elapsed_ms: now_ms() - started });
        if cancelled() {
            // The run, its latents and the control images are dropped on return.
            return Ok(Response::Cancelled { id, step });
        }
        if wants_preview(step, total, preview_every) {
            let (w, h, rgb) = match to_rgb8(latent_preview(run.latents().clone())).await {
                Ok(preview) => preview,
                Err(e) => return Err(gpu_failure(device, e).await),
            };
            post(&Response::Preview { id, step, width: w as u32, height: h as u32, rgb });
        }
    }
    let denoised_ms = now_ms() - started;
    let image = models.pipeline.decode(run.into_latents());
    drop(control);
    let (w, h, rgb) = match to_rgb8(image).await {
        Ok(image) => image,
        Err(e) => return Err(gpu_failure(device, e).await),
    };
    let elapsed_ms = now_ms() - started;

    let parameters = parameters(models, request, units);
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
    use model::vocabulary::{ControlMode, Preprocessor, ResizeMode, SchedulerKind, UnitSettings};

    use super::*;

    fn params() -> GenerationParams {
        GenerationParams {
            prompt: "a tiny cat".into(),
            negative_prompt: String::new(),
            steps: 4,
            guidance: 7.5,
            scheduler: SchedulerKind::UniPc,
            width: 64,
            height: 96,
            seed: 42,
        }
    }

    fn unit() -> UnitParams {
        UnitParams {
            controlnet: 1,
            rgb: vec![0; 64 * 96 * 3],
            settings: UnitSettings {
                scale: 0.7,
                guess_mode: false,
                mode: ControlMode::PromptMoreImportant,
                start: 0.0,
                end: 0.8,
            },
            module: Preprocessor::Canny,
            resize: ResizeMode::Crop,
            thresholds: Some((100.0, 200.0)),
        }
    }

    #[test]
    fn invalid_requests_are_refused_with_a_reason() {
        assert_eq!(validate(&params(), &[unit()], 2), Ok(()));
        let refused = |params: GenerationParams, units: Vec<UnitParams>, loaded: usize| {
            validate(&params, &units, loaded).expect_err("refused")
        };
        // The shared limits (vocabulary's own tests cover each of them).
        let message = refused(GenerationParams { width: 100, ..params() }, vec![], 0);
        assert!(message.contains("width") && message.contains("100"), "{message}");
        let message = refused(params(), vec![unit()], 0);
        assert!(message.contains("none is loaded"), "{message}");
        let message = refused(params(), vec![unit()], 1);
        assert!(message.contains("uses ControlNet 2, but only 1"), "{message}");
        let message = refused(params(), vec![UnitParams { rgb: vec![0; 64 * 64 * 3], ..unit() }], 2);
        assert!(message.starts_with("control unit 1: the control map has 12288 bytes"), "{message}");
        let late = UnitParams { settings: UnitSettings { start: 0.9, ..unit().settings }, ..unit() };
        let message = refused(params(), vec![unit(), late], 2);
        assert!(
            message.starts_with("control unit 2:") && message.contains("0 ≤ start ≤ end ≤ 1"),
            "{message}"
        );
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
