//! A1111's `parameters` text: what a PNG says about how it was made, in the form AUTOMATIC1111's
//! web UI writes and its "PNG Info" (and the image sites that copy it) reads.
//!
//! ```text
//! a red fox in the snow
//! Negative prompt: blurry
//! Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: sd15, ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny, Weight: 1, Resize Mode: Crop and Resize, Threshold A: 100, Threshold B: 200, Guidance Start: 0, Guidance End: 1, Control Mode: Balanced"
//! ```
//!
//! The prompt may span lines; the last line holds `key: value` pairs, a value in double quotes
//! when it holds commas (each ControlNet unit's own pairs). [`Parameters::parse`] reads it back
//! the way A1111's `parse_generation_parameters` does; unknown keys are kept aside, not refused.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::names::{ControlMode, Named, Precision, Preprocessor, ResizeMode, SchedulerKind};
use crate::params::{GenerationParams, UnitSettings};

/// A generation as its PNG describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameters {
    pub params: GenerationParams,
    /// `false` when the noise came from a file (no seed to write).
    pub has_seed: bool,
    /// The pipeline's name (a folder or repository).
    pub model: String,
    pub precision: Option<Precision>,
    pub units: Vec<UnitText>,
    /// Pairs of the settings line this crate does not know, in order.
    pub other: Vec<(String, String)>,
}

/// One ControlNet unit as A1111 writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitText {
    /// What made the control map.
    pub module: Preprocessor,
    /// The ControlNet's name.
    pub model: String,
    pub settings: UnitSettings,
    pub resize: ResizeMode,
    /// Canny's low and high thresholds (A1111's "Threshold A" and "Threshold B").
    pub thresholds: Option<(f64, f64)>,
}

/// Why a text could not be read as parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not A1111 parameters: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

/// A value as A1111 quotes it: in double quotes, with `"` and `\` escaped, when it holds a comma,
/// a colon or a quote; else as it is.
fn quote(value: &str) -> String {
    // Also where the ends are blank: the reader trims unquoted values (found by fuzzing).
    if value.contains([',', ':', '"', '\n']) || value.trim() != value {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
    } else {
        value.to_owned()
    }
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `key: value` pairs of a line, as A1111's regex
/// `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)` finds them (values still quoted).
fn pairs(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        let Some(colon) = rest.find(':') else { break };
        let key = rest[..colon].trim();
        let valid_key = key.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_')
            && key.chars().all(|c| c.is_alphanumeric() || " _-/".contains(c));
        let after = rest[colon + 1..].trim_start();
        let (value, remainder) = if after.starts_with('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices().skip(1) {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            match end {
                Some(end) => (&after[..=end], &after[end + 1..]),
                None => (after, ""),
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if valid_key {
            out.push((key.to_owned(), value.trim().to_owned()));
        }
        rest = remainder.trim_start().strip_prefix(',').unwrap_or(remainder.trim_start());
        if rest.is_empty() {
            break;
        }
    }
    out
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ParseError> {
    value.trim().parse().map_err(|_| ParseError(format!("`{key}: {value}` is not a number")))
}

impl Parameters {
    /// The text A1111 would write for this generation.
    pub fn to_text(&self) -> String {
        let p = &self.params;
        let mut text = p.prompt.clone();
        if !p.negative_prompt.is_empty() {
            write!(text, "\nNegative prompt: {}", p.negative_prompt).expect("a String");
        }
        let mut line = vec![
            format!("Steps: {}", p.steps),
            format!("Sampler: {}", p.scheduler.a1111()),
            format!("CFG scale: {}", p.guidance),
        ];
        if self.has_seed {
            line.push(format!("Seed: {}", p.seed));
        }
        line.push(format!("Size: {}x{}", p.width, p.height));
        if !self.model.is_empty() {
            line.push(format!("Model: {}", quote(&self.model)));
        }
        for (i, unit) in self.units.iter().enumerate() {
            line.push(format!("ControlNet {i}: {}", quote(&unit.to_text())));
        }
        if let Some(precision) = self.precision {
            line.push(format!("Precision: {}", precision.a1111()));
        }
        line.extend(self.other.iter().map(|(k, v)| format!("{k}: {}", quote(v))));
        text.push('\n');
        text += &line.join(", ");
        text
    }

    /// Reads a parameters text back. Keys it does not know are kept in `other`; the settings
    /// missing from the text keep [`GenerationParams`]' defaults.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let text = text.trim();
        let (body, last) = text.rsplit_once('\n').unwrap_or(("", text));
        let settings = pairs(last);
        // A1111: a last line with fewer than three pairs is part of the prompt.
        let (body, settings) = if settings.len() >= 3 { (body, settings) } else { (text, Vec::new()) };
        if settings.is_empty() {
            return Err(ParseError("no line of settings (`Steps: …, Sampler: …`)".into()));
        }
        let mut prompt = Vec::new();
        let mut negative: Option<Vec<&str>> = None;
        // Line ends as any system writes them: a carriage return before a newline is not text.
        for line in body.split('\n').map(|line| line.trim_end_matches('\r')) {
            match (&mut negative, line.strip_prefix("Negative prompt:")) {
                (None, Some(rest)) => negative = Some(vec![rest.trim_start()]),
                (Some(lines), _) => lines.push(line),
                (None, None) => prompt.push(line),
            }
        }
        let mut parsed = Parameters {
            params: GenerationParams {
                // Trimmed, as A1111 reads them: surrounding blank lines are not part of a prompt.
                prompt: prompt.join("\n").trim().to_owned(),
                negative_prompt: negative.map(|lines| lines.join("\n").trim().to_owned()).unwrap_or_default(),
                ..GenerationParams::default()
            },
            has_seed: false,
            model: String::new(),
            precision: None,
            units: Vec::new(),
            other: Vec::new(),
        };
        let mut units: BTreeMap<usize, UnitText> = BTreeMap::new();
        for (key, value) in settings {
            let p = &mut parsed.params;
            match key.as_str() {
                "Steps" => p.steps = number(&key, &value)?,
                "Sampler" => {
                    p.scheduler = SchedulerKind::from_a1111(&unquote(&value))
                        .ok_or_else(|| ParseError(format!("unknown sampler `{value}`")))?
                }
                "CFG scale" => p.guidance = number(&key, &value)?,
                "Seed" => {
                    p.seed = number(&key, &value)?;
                    parsed.has_seed = true;
                }
                "Size" => {
                    let (w, h) = value
                        .split_once('x')
                        .ok_or_else(|| ParseError(format!("`Size: {value}` is not WIDTHxHEIGHT")))?;
                    (p.width, p.height) = (number(&key, w)?, number(&key, h)?);
                }
                "Model" => parsed.model = unquote(&value),
                "Precision" => parsed.precision = Precision::from_a1111(&value),
                _ => match key.strip_prefix("ControlNet ").and_then(|i| i.trim().parse::<usize>().ok()) {
                    Some(index) => {
                        units.insert(index, UnitText::parse(&unquote(&value))?);
                    }
                    None => parsed.other.push((key, unquote(&value))),
                },
            }
        }
        parsed.units = units.into_values().collect();
        Ok(parsed)
    }
}

impl UnitText {
    fn to_text(&self) -> String {
        let s = &self.settings;
        let mut pairs = vec![
            format!("Module: {}", self.module.a1111()),
            format!("Model: {}", quote(&self.model)),
            format!("Weight: {}", s.scale),
            format!("Resize Mode: {}", self.resize.a1111()),
        ];
        if let Some((low, high)) = self.thresholds {
            pairs.push(format!("Threshold A: {low}"));
            pairs.push(format!("Threshold B: {high}"));
        }
        pairs.push(format!("Guidance Start: {}", s.start));
        pairs.push(format!("Guidance End: {}", s.end));
        pairs.push(format!("Control Mode: {}", s.mode.a1111()));
        if s.guess_mode {
            pairs.push("Guess Mode: True".into());
        }
        pairs.join(", ")
    }

    fn parse(text: &str) -> Result<Self, ParseError> {
        let mut unit = UnitText {
            module: Preprocessor::None,
            model: String::new(),
            settings: UnitSettings::default(),
            resize: ResizeMode::default(),
            thresholds: None,
        };
        let (mut low, mut high) = (None, None);
        for (key, value) in pairs(text) {
            let s = &mut unit.settings;
            match key.as_str() {
                // A1111's preprocessors we do not have leave the map as it is.
                "Module" => unit.module = Preprocessor::from_a1111(&value).unwrap_or(Preprocessor::None),
                "Model" => unit.model = unquote(&value),
                "Weight" => s.scale = number(&key, &value)?,
                "Resize Mode" => unit.resize = ResizeMode::from_a1111(&value).unwrap_or_default(),
                "Threshold A" => low = Some(number(&key, &value)?),
                "Threshold B" => high = Some(number(&key, &value)?),
                "Guidance Start" => s.start = number(&key, &value)?,
                "Guidance End" => s.end = number(&key, &value)?,
                "Control Mode" => {
                    s.mode = ControlMode::from_a1111(&value)
                        .ok_or_else(|| ParseError(format!("unknown control mode `{value}`")))?
                }
                "Guess Mode" => s.guess_mode = value.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if unit.module == Preprocessor::Canny {
            unit.thresholds = Some((low.unwrap_or(100.0), high.unwrap_or(200.0)));
        }
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fuzz/fuzz_targets/parameters.rs`): a prompt ending in blank lines lost
    /// one on each read and write, so a text never read back as what it was written from.
    #[test]
    fn blank_lines_around_prompts_are_not_part_of_them() {
        let text = "a cat \n\n\nNegative prompt: dog\n\nSteps: 20, Sampler: UniPC, CFG scale: 7.5";
        let parsed = Parameters::parse(text).unwrap();
        assert_eq!((parsed.params.prompt.as_str(), parsed.params.negative_prompt.as_str()), ("a cat", "dog"));
        assert_eq!(Parameters::parse(&parsed.to_text()).unwrap().to_text(), parsed.to_text());
        // A quoted model name with blank ends keeps them, written and read again.
        let text = "a cat\nSteps: 20, Sampler: UniPC, Model: \" sd15\u{c}\"";
        let parsed = Parameters::parse(text).unwrap();
        assert_eq!(parsed.model, " sd15\u{c}");
        assert_eq!(Parameters::parse(&parsed.to_text()).unwrap().model, parsed.model);
    }

    /// A unit's model name with a quote, commas or colons is quoted inside the unit's own quoted
    /// text, and reads back whole (found by fuzzing: it was written bare, and read back cut at
    /// its first comma).
    #[test]
    fn unit_model_names_with_quotes_and_commas_survive() {
        for name in ["\"M: 20Sampler:ul", "a, b: \"c\"", "me/tiny:controlnet", " padded "] {
            let mut parameters = example();
            parameters.units[0].model = name.into();
            let read = Parameters::parse(&parameters.to_text()).unwrap();
            assert_eq!(read.units[0].model, name);
            assert_eq!(read.units[1].model, parameters.units[1].model);
            assert_eq!(read.to_text(), parameters.to_text());
        }
    }

    fn example() -> Parameters {
        Parameters {
            params: GenerationParams {
                prompt: "a red fox, in the snow\nwinter light".into(),
                negative_prompt: "blurry".into(),
                steps: 20,
                guidance: 7.5,
                scheduler: SchedulerKind::DpmPp2MKarras,
                width: 512,
                height: 768,
                seed: 4_294_967_295,
            },
            has_seed: true,
            model: "stable-diffusion-v1-5/stable-diffusion-v1-5".into(),
            precision: Some(Precision::F16),
            units: vec![
                UnitText {
                    module: Preprocessor::Canny,
                    model: "lllyasviel/control_v11p_sd15_canny".into(),
                    settings: UnitSettings::default(),
                    resize: ResizeMode::Crop,
                    thresholds: Some((100.0, 200.0)),
                },
                UnitText {
                    module: Preprocessor::Scribble,
                    model: "test/tiny/controlnet2".into(),
                    settings: UnitSettings {
                        scale: 0.45,
                        guess_mode: true,
                        mode: ControlMode::ControlNetMoreImportant,
                        start: 0.25,
                        end: 0.8,
                    },
                    resize: ResizeMode::Fill,
                    thresholds: None,
                },
            ],
            other: vec![("Version".into(), "v1.6.0".into())],
        }
    }

    #[test]
    fn the_text_is_a1111s() {
        let text = example().to_text();
        let expected = "a red fox, in the snow\nwinter light\nNegative prompt: blurry\n\
            Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 4294967295, Size: 512x768, \
            Model: stable-diffusion-v1-5/stable-diffusion-v1-5, \
            ControlNet 0: \"Module: canny, Model: lllyasviel/control_v11p_sd15_canny, Weight: 1, Resize Mode: Crop and Resize, \
            Threshold A: 100, Threshold B: 200, Guidance Start: 0, Guidance End: 1, Control Mode: Balanced\", \
            ControlNet 1: \"Module: scribble_thr, Model: test/tiny/controlnet2, Weight: 0.45, Resize Mode: Resize and Fill, \
            Guidance Start: 0.25, Guidance End: 0.8, Control Mode: ControlNet is more important, Guess Mode: True\", \
            Precision: fp16, Version: v1.6.0";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_text_reads_back() {
        let example = example();
        assert_eq!(Parameters::parse(&example.to_text()).unwrap(), example);
        let no_seed = Parameters { has_seed: false, units: vec![], other: vec![], ..example };
        let parsed = Parameters::parse(&no_seed.to_text()).unwrap();
        assert_eq!(parsed.params.seed, GenerationParams::default().seed);
        assert!(!parsed.has_seed);
    }

    #[test]
    fn a1111s_own_text_reads() {
        // As A1111 1.6 with sd-webui-controlnet 1.1.4 writes it.
        let text = "masterpiece, a house\nNegative prompt: lowres\nSteps: 30, Sampler: Euler a, CFG scale: 7, \
            Seed: 3407, Size: 512x512, Model hash: c0d1994c73, Model: realisticVision, \
            ControlNet 0: \"Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize, \
            Low Vram: False, Processor Res: 512, Threshold A: 50, Threshold B: 150, Guidance Start: 0.0, Guidance End: 1.0, \
            Pixel Perfect: False, Control Mode: My prompt is more important\", Version: v1.6.0";
        let parsed = Parameters::parse(text).unwrap();
        assert_eq!(parsed.params.prompt, "masterpiece, a house");
        assert_eq!(parsed.params.negative_prompt, "lowres");
        assert_eq!(parsed.params.scheduler, SchedulerKind::EulerAncestral);
        assert_eq!((parsed.params.steps, parsed.params.guidance, parsed.params.seed), (30, 7.0, 3407));
        assert_eq!(parsed.model, "realisticVision");
        let unit = &parsed.units[0];
        assert_eq!(unit.model, "control_v11p_sd15_canny [d14c016b]");
        assert_eq!(unit.thresholds, Some((50.0, 150.0)));
        assert_eq!(unit.settings.mode, ControlMode::PromptMoreImportant);
        assert_eq!(parsed.other[0], ("Model hash".to_owned(), "c0d1994c73".to_owned()));
    }

    #[test]
    fn a_prompt_alone_is_refused() {
        assert!(Parameters::parse("just a prompt, with: a colon").is_err());
        assert!(
            Parameters::parse("Steps: x, Sampler: UniPC, CFG scale: 7").unwrap_err().0.contains("Steps: x")
        );
    }
}
