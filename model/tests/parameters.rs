//! A1111's parameters text, as `controlnet generate` and the browser write it into PNGs: other
//! Stable Diffusion tools parse it, so its exact shape matters.

use model::Precision;
use model::pipeline::{ControlMode, Noise, Params, UnitSummary, parameters_text};
use model::scheduler::SchedulerKind;

fn params() -> Params {
    Params {
        prompt: "a tiny cat".into(),
        negative_prompt: String::new(),
        steps: 4,
        guidance: 7.5,
        scheduler: SchedulerKind::UniPc,
        width: 64,
        height: 96,
        noise: Noise::Seed(42),
    }
}

#[test]
fn without_units_or_negative_prompt() {
    let text = parameters_text(&params(), "tiny", Precision::F32, &[]);
    assert_eq!(
        text,
        "a tiny cat\nSteps: 4, Sampler: unipc, CFG scale: 7.5, Seed: 42, Size: 64x96, Model: tiny, Precision: f32"
    );
}

#[test]
fn with_a_negative_prompt_and_two_units() {
    let params = Params { negative_prompt: "blurry".into(), guidance: 1.0, ..params() };
    let units = [
        UnitSummary {
            model: "test/tiny/controlnet",
            image: "canny",
            weight: 0.7,
            start: 0.0,
            end: 0.8,
            mode: ControlMode::Balanced,
            guess_mode: false,
        },
        UnitSummary {
            model: "test/tiny/controlnet2",
            image: "scribble",
            weight: 1.0,
            start: 0.25,
            end: 1.0,
            mode: ControlMode::PromptMoreImportant,
            guess_mode: true,
        },
    ];
    let text = parameters_text(&params, "test/tiny", Precision::F16, &units);
    assert_eq!(
        text,
        "a tiny cat\nNegative prompt: blurry\nSteps: 4, Sampler: unipc, CFG scale: 1, Seed: 42, Size: 64x96, \
         Model: test/tiny, Precision: f16, \
         ControlNet 0: \"Model: test/tiny/controlnet, Image: canny, Weight: 0.7, Guidance Start: 0, \
         Guidance End: 0.8, Control Mode: balanced, Guess Mode: false\", \
         ControlNet 1: \"Model: test/tiny/controlnet2, Image: scribble, Weight: 1, Guidance Start: 0.25, \
         Guidance End: 1, Control Mode: prompt, Guess Mode: true\""
    );
}
