//! A generation's parameters, their limits and their one validation.
//!
//! The page clamps what is typed into these limits, the worker refuses a message outside them,
//! the CLI refuses its flags outside them, and the pipeline checks them again only by calling
//! the same [`GenerationParams::validate`] (it is a library, and trusts no caller).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{ControlMode, ResizeMode, SchedulerKind};

/// The limits of every generation, whoever asks for it.
pub struct Limits;

impl Limits {
    /// Sides are multiples of this (diffusers' rule: the latents are an eighth of the image for
    /// SD1.x, and every VAE we run scales by 8 or less).
    pub const MULTIPLE: u32 = 8;
    pub const MIN_SIDE: u32 = 64;
    /// 2048² is 16 times SD1.5's native 512²; larger images only cost memory.
    pub const MAX_SIDE: u32 = 2048;
    /// A1111's limit: past it, more steps change nothing a person sees.
    pub const MAX_STEPS: u32 = 150;
    /// A1111's CFG scale range.
    pub const MAX_GUIDANCE: f64 = 30.0;
    /// A1111's control weight range is 0 to 2.
    pub const MAX_CONTROL_WEIGHT: f64 = 2.0;
    /// Canny's thresholds (on 8-bit gradients).
    pub const MAX_THRESHOLD: f64 = 255.0;
    /// ControlNet's (and A1111's) Canny thresholds, `(low, high)`: the page's defaults and the
    /// shapes world's Canny maps.
    pub const CANNY_THRESHOLDS: (f64, f64) = (100.0, 200.0);

    /// `side` rounded to the nearest multiple of 8 within the allowed range: what the page
    /// makes of whatever is typed into a size field.
    pub fn snap_side(side: f64) -> u32 {
        if !side.is_finite() {
            return 512;
        }
        let multiple = f64::from(Self::MULTIPLE);
        let snapped = (side / multiple).round() * multiple;
        snapped.clamp(f64::from(Self::MIN_SIDE), f64::from(Self::MAX_SIDE)) as u32
    }

    fn check_side(name: &'static str, side: u32) -> Result<(), ParamError> {
        if !side.is_multiple_of(Self::MULTIPLE) || !(Self::MIN_SIDE..=Self::MAX_SIDE).contains(&side) {
            return Err(ParamError::Side { name, value: side });
        }
        Ok(())
    }
}

/// Why parameters were refused; the message is meant for the user.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamError {
    Side {
        name: &'static str,
        value: u32,
    },
    Steps(u32),
    Guidance(f64),
    /// Something wrong with control unit `unit` (0-based; messages count from 1).
    Unit {
        unit: usize,
        error: UnitError,
    },
}

/// What is wrong with a control unit's settings.
#[derive(Clone, Debug, PartialEq)]
pub enum UnitError {
    Weight(f64),
    Range { start: f64, end: f64 },
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Side { name, value } => write!(
                f,
                "the image's {name} must be a multiple of {} from {} to {}, not {value}",
                Limits::MULTIPLE,
                Limits::MIN_SIDE,
                Limits::MAX_SIDE
            ),
            ParamError::Steps(steps) => {
                write!(f, "the number of steps must be 1 to {}, not {steps}", Limits::MAX_STEPS)
            }
            ParamError::Guidance(g) => {
                write!(f, "the guidance scale must be a number from 0 to {}, not {g}", Limits::MAX_GUIDANCE)
            }
            ParamError::Unit { unit, error } => write!(f, "control unit {}: {error}", unit + 1),
        }
    }
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitError::Weight(w) => {
                write!(f, "the weight must be a number from 0 to {}, not {w}", Limits::MAX_CONTROL_WEIGHT)
            }
            UnitError::Range { start, end } => write!(
                f,
                "it must start and end within the steps (0 ≤ start ≤ end ≤ 1), not from {start} to {end}"
            ),
        }
    }
}

impl std::error::Error for ParamError {}

/// Everything about a generation but the models and the control images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: u32,
    /// Classifier-free guidance; at 1 or below, one UNet pass per step.
    pub guidance: f64,
    pub scheduler: SchedulerKind,
    /// Multiples of [`Limits::MULTIPLE`].
    pub width: u32,
    pub height: u32,
    /// The initial noise's seed: the same seed gives the same image on every backend.
    pub seed: u32,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 20,
            guidance: 7.5,
            scheduler: SchedulerKind::default(),
            width: 512,
            height: 512,
            seed: 0,
        }
    }
}

impl GenerationParams {
    /// Checks the parameters and the units' settings against [`Limits`].
    pub fn validate(&self, units: &[UnitSettings]) -> Result<(), ParamError> {
        Limits::check_side("width", self.width)?;
        Limits::check_side("height", self.height)?;
        if !(1..=Limits::MAX_STEPS).contains(&self.steps) {
            return Err(ParamError::Steps(self.steps));
        }
        if !(0.0..=Limits::MAX_GUIDANCE).contains(&self.guidance) {
            return Err(ParamError::Guidance(self.guidance));
        }
        for (unit, settings) in units.iter().enumerate() {
            settings.validate().map_err(|error| ParamError::Unit { unit, error })?;
        }
        Ok(())
    }

    /// Whether classifier-free guidance runs (two UNet passes per step).
    pub fn guided(&self) -> bool {
        self.guidance > 1.0
    }
}

/// How one control unit steers a generation (what `model::controlnet::Steering` turns into a
/// factor per residual).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitSettings {
    /// The conditioning scale (A1111's "control weight"), 0 to 2.
    pub scale: f64,
    /// diffusers' guess mode: the ControlNet sees the conditional half of the guidance batch only,
    /// and its residuals are scaled from 0.1 (shallowest) to 1 (the mid block).
    pub guess_mode: bool,
    pub mode: ControlMode,
    /// Active from this fraction of the steps…
    pub start: f64,
    /// …to this one (diffusers' `control_guidance_start` / `control_guidance_end`).
    pub end: f64,
}

impl Default for UnitSettings {
    fn default() -> Self {
        Self { scale: 1.0, guess_mode: false, mode: ControlMode::Balanced, start: 0.0, end: 1.0 }
    }
}

impl UnitSettings {
    pub fn validate(&self) -> Result<(), UnitError> {
        if !(0.0..=Limits::MAX_CONTROL_WEIGHT).contains(&self.scale) {
            return Err(UnitError::Weight(self.scale));
        }
        let (start, end) = (self.start, self.end);
        if !(0.0 <= start && start <= end && end <= 1.0) {
            return Err(UnitError::Range { start, end });
        }
        Ok(())
    }

    /// Whether the unit acts at step `step` of `total` (diffusers' `controlnet_keep`).
    pub fn active_at(&self, step: usize, total: usize) -> bool {
        let (i, n) = (step as f64, total as f64);
        !(i / n < self.start || (i + 1.0) / n > self.end)
    }
}

/// A control map's size and how a picture is fitted to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resize {
    pub mode: ResizeMode,
    pub width: u32,
    pub height: u32,
}

impl Resize {
    /// Refuses sizes the page would never send: a worker trusts no message.
    pub fn validate(&self) -> Result<(), ParamError> {
        Limits::check_side("width", self.width)?;
        Limits::check_side("height", self.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> UnitSettings {
        UnitSettings {
            scale: 0.7,
            guess_mode: false,
            mode: ControlMode::PromptMoreImportant,
            start: 0.0,
            end: 0.8,
        }
    }

    #[test]
    fn sizes_snap_to_multiples_of_eight_within_range() {
        assert_eq!(Limits::snap_side(512.0), 512);
        assert_eq!(Limits::snap_side(515.0), 512);
        assert_eq!(Limits::snap_side(516.0), 520);
        assert_eq!(Limits::snap_side(3.0), Limits::MIN_SIDE);
        assert_eq!(Limits::snap_side(1e9), Limits::MAX_SIDE);
        assert_eq!(Limits::snap_side(f64::NAN), 512);
        let resize = |width, height| Resize { mode: ResizeMode::Just, width, height }.validate();
        assert!(resize(512, 2048).is_ok());
        let odd = resize(500, 512).unwrap_err().to_string();
        assert!(odd.contains("width") && odd.contains("500"), "{odd}");
        assert!(resize(512, 4096).is_err());
    }

    #[test]
    fn parameters_are_refused_with_a_reason() {
        let ok = GenerationParams { width: 64, height: 96, steps: 4, ..Default::default() };
        assert_eq!(ok.validate(&[unit()]), Ok(()));
        let refused = |params: GenerationParams, units: &[UnitSettings]| {
            params.validate(units).unwrap_err().to_string()
        };
        assert!(
            refused(GenerationParams { width: 100, ..ok.clone() }, &[])
                .contains("width must be a multiple of 8")
        );
        assert!(refused(GenerationParams { height: 4096, ..ok.clone() }, &[]).contains("height"));
        assert!(
            refused(GenerationParams { steps: 0, ..ok.clone() }, &[])
                .contains("steps must be 1 to 150, not 0")
        );
        assert!(refused(GenerationParams { steps: 151, ..ok.clone() }, &[]).contains("151"));
        assert!(refused(GenerationParams { guidance: f64::NAN, ..ok.clone() }, &[]).contains("guidance"));
        assert!(refused(GenerationParams { guidance: -1.0, ..ok.clone() }, &[]).contains("guidance"));
        let message = refused(ok.clone(), &[unit(), UnitSettings { start: 0.9, ..unit() }]);
        assert!(
            message.starts_with("control unit 2: it must start and end") && message.contains("0.9"),
            "{message}"
        );
        let message = refused(ok.clone(), &[UnitSettings { scale: f64::INFINITY, ..unit() }]);
        assert!(message.starts_with("control unit 1: the weight"), "{message}");
        assert!(refused(ok, &[UnitSettings { scale: 2.5, ..unit() }]).contains("2.5"));
    }

    #[test]
    fn units_act_within_their_fraction_of_the_steps() {
        let unit = UnitSettings { start: 0.25, end: 0.75, ..unit() };
        let active: Vec<usize> = (0..8).filter(|&i| unit.active_at(i, 8)).collect();
        assert_eq!(active, [2, 3, 4, 5]);
        let always = UnitSettings::default();
        assert!((0..3).all(|i| always.active_at(i, 3)));
    }
}
