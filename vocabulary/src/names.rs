//! The named choices: each a plain enum with its machine name, its label for the page and its
//! name in A1111's parameters text, all in one table per type.

use std::fmt;
use std::str::FromStr;

/// A closed set of choices, each with its names.
pub trait Named: Copy + Eq + fmt::Debug + 'static {
    /// What a value is, for messages: "scheduler".
    const WHAT: &'static str;
    /// Every value, in the order menus show them.
    const ALL: &'static [Self];

    /// The machine name: command-line flags, the protocol, stored settings.
    fn name(self) -> &'static str;
    /// What the page shows.
    fn label(self) -> &'static str;
    /// As A1111 writes it in a PNG's parameters text.
    fn a1111(self) -> &'static str;

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|value| value.name() == name)
    }

    /// Reads A1111's name (also accepts the machine name).
    fn from_a1111(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.a1111().eq_ignore_ascii_case(name))
            .or_else(|| Self::from_name(name))
    }

    /// Parses the machine name, with an error that lists the valid ones.
    fn parse_name(name: &str) -> Result<Self, UnknownName> {
        Self::from_name(name).ok_or_else(|| UnknownName {
            what: Self::WHAT,
            name: name.to_owned(),
            expected: Self::ALL.iter().map(|value| value.name()).collect(),
        })
    }
}

/// A name that is none of a [`Named`] type's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
    pub expected: Vec<&'static str>,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}` (expected one of: {})", self.what, self.name, self.expected.join(", "))
    }
}

impl std::error::Error for UnknownName {}

/// Declares a [`Named`] enum from one table: variant, machine name, label, A1111 name. The
/// machine name is also its serde form and what `FromStr` and `Display` use.
macro_rules! named {
    (
        $(#[$meta:meta])*
        $vis:vis enum $ty:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = ($name:literal, $label:literal, $a1111:literal) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $ty {
            $( $(#[$vmeta])* $variant ),+
        }

        impl Named for $ty {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = &[$($ty::$variant),+];

            fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }

            fn label(self) -> &'static str {
                match self { $($ty::$variant => $label),+ }
            }

            fn a1111(self) -> &'static str {
                match self { $($ty::$variant => $a1111),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse_name(s)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse_name(&name).map_err(serde::de::Error::custom)
            }
        }
    };
}

named! {
    /// The sampler: which diffusers scheduler class steps the latents.
    pub enum SchedulerKind ("scheduler") {
        /// `UniPCMultistepScheduler` (predictor-corrector, second order): the ControlNet authors'
        /// default.
        UniPc = ("unipc", "UniPC", "UniPC"),
        /// `DDIMScheduler`, deterministic (η = 0).
        Ddim = ("ddim", "DDIM", "DDIM"),
        /// `EulerDiscreteScheduler`.
        Euler = ("euler", "Euler", "Euler"),
        /// `EulerAncestralDiscreteScheduler`: fresh noise at every step.
        EulerAncestral = ("euler-a", "Euler a", "Euler a"),
        /// `DPMSolverMultistepScheduler` (DPM-Solver++, second order).
        DpmPp2M = ("dpmpp-2m", "DPM++ 2M", "DPM++ 2M"),
        /// `DPMSolverMultistepScheduler` with `use_karras_sigmas=True`.
        DpmPp2MKarras = ("dpmpp-2m-karras", "DPM++ 2M Karras", "DPM++ 2M Karras"),
    }
}

#[allow(clippy::derivable_impls, reason = "declared by `named!`, whose derives every type shares")]
impl Default for SchedulerKind {
    fn default() -> Self {
        SchedulerKind::UniPc
    }
}

impl SchedulerKind {
    /// The diffusers class this kind reproduces.
    pub fn class_name(self) -> &'static str {
        match self {
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::DpmPp2M | SchedulerKind::DpmPp2MKarras => "DPMSolverMultistepScheduler",
            SchedulerKind::UniPc => "UniPCMultistepScheduler",
        }
    }
}

named! {
    /// How a unit's control weighs against the prompt: A1111's control modes. What each does to
    /// the residuals is `model::controlnet::Steering`.
    pub enum ControlMode ("control mode") {
        /// The residuals as the ControlNet makes them, on both halves of the guidance batch.
        Balanced = ("balanced", "Balanced", "Balanced"),
        /// A1111's soft injection: residual `i` of `n` scaled by `0.825^(n−1−i)`.
        PromptMoreImportant = ("prompt", "My prompt is more important", "My prompt is more important"),
        /// Soft injection, and the control on the conditional half of the guidance batch only
        /// (A1111's CFG injection), so guidance amplifies it.
        ControlNetMoreImportant = ("controlnet", "ControlNet is more important", "ControlNet is more important"),
    }
}

#[allow(clippy::derivable_impls, reason = "declared by `named!`, whose derives every type shares")]
impl Default for ControlMode {
    fn default() -> Self {
        ControlMode::Balanced
    }
}

named! {
    /// What turns a picture into a control map (`preprocess`).
    pub enum Preprocessor ("preprocessor") {
        /// OpenCV's Canny, as the ControlNet annotator calls it.
        Canny = ("canny", "Canny edges", "canny"),
        /// Black-on-white line art turned into white strokes on black.
        Scribble = ("scribble", "Scribble from line art", "scribble_thr"),
        /// A pencil sketch from a photo, by difference of Gaussians.
        Xdog = ("xdog", "Sketch from photo (XDoG)", "scribble_xdog"),
        /// The image is the control map.
        None = ("none", "None (the image is the control map)", "none"),
    }
}

impl Preprocessor {
    /// The kind of ControlNet this preprocessor's maps are for (`canny`, `scribble`): what a unit
    /// looks for among the loaded ControlNets.
    pub fn control_kind(self) -> Option<&'static str> {
        match self {
            Preprocessor::Canny => Some("canny"),
            Preprocessor::Scribble | Preprocessor::Xdog => Some("scribble"),
            Preprocessor::None => None,
        }
    }
}

named! {
    /// How a picture is fitted to the control map's size.
    pub enum ResizeMode ("resize mode") {
        /// Stretch to the target size, ignoring the aspect ratio.
        Just = ("just", "Just resize", "Just Resize"),
        /// Scale to cover the target and cut off what overflows, centred.
        Crop = ("crop", "Crop and resize", "Crop and Resize"),
        /// Scale to fit inside the target and fill the margins.
        Fill = ("fill", "Resize and fill", "Resize and Fill"),
    }
}

impl Default for ResizeMode {
    /// A1111's default: fill the frame without distorting the picture.
    fn default() -> Self {
        ResizeMode::Crop
    }
}

named! {
    /// The floating-point precision the models compute in.
    pub enum Precision ("precision") {
        /// 32-bit floats: always available.
        F32 = ("f32", "f32", "fp32"),
        /// 16-bit floats: half the memory; on WebGPU it needs the adapter's `shader-f16`.
        F16 = ("f16", "f16", "fp16"),
    }
}

impl Precision {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: Named + FromStr<Err = UnknownName> + serde::Serialize + serde::de::DeserializeOwned>() {
        for &value in T::ALL {
            assert_eq!(value.name().parse::<T>(), Ok(value));
            assert_eq!(T::from_a1111(value.a1111()), Some(value));
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(json, format!("\"{}\"", value.name()));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value);
        }
        let names: std::collections::HashSet<&str> = T::ALL.iter().map(|v| v.name()).collect();
        assert_eq!(names.len(), T::ALL.len(), "{}: names are unique", T::WHAT);
    }

    #[test]
    fn every_name_round_trips() {
        round_trips::<SchedulerKind>();
        round_trips::<ControlMode>();
        round_trips::<Preprocessor>();
        round_trips::<ResizeMode>();
        round_trips::<Precision>();
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let error = "plms".parse::<SchedulerKind>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown scheduler `plms` (expected one of: unipc, ddim, euler, euler-a, dpmpp-2m, dpmpp-2m-karras)"
        );
        assert!(
            serde_json::from_str::<ControlMode>("\"loud\"").unwrap_err().to_string().contains("control mode")
        );
        assert_eq!(SchedulerKind::from_a1111("dpm++ 2m karras"), Some(SchedulerKind::DpmPp2MKarras));
        assert_eq!(Preprocessor::from_a1111("scribble_xdog"), Some(Preprocessor::Xdog));
    }
}
