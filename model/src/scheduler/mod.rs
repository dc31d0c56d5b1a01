//! Noise schedulers: DDIM, Euler, Euler ancestral, DPM-Solver++ (2M, optionally with Karras
//! sigmas) and UniPC, equal to diffusers 0.42.1.
//!
//! A scheduler is built from a diffusers `scheduler/scheduler_config.json` the way
//! `XScheduler.from_config(pipe.scheduler.config)` builds it: each kind reads the fields its
//! diffusers class knows and takes that class's defaults for the rest (SD1.5 publishes a PNDM
//! config, so `timestep_spacing`, for one, comes from the class: `leading` for DDIM, `linspace`
//! for the others). Settings we do not implement are refused with [`SchedulerError::Unsupported`],
//! never ignored.
//!
//! The whole schedule (betas, `alphas_cumprod`, timesteps, sigmas, solver coefficients) is
//! computed on the host in f64. diffusers keeps some of it in f32 tensors (the betas, their
//! cumulative product, the sigma table, the final sigmas); we round to f32 at exactly those
//! points, with the same operations (torch's `linspace` is a fused multiply-add, its `cumprod`
//! accumulates in f64), so that timesteps and sigmas come out as diffusers' to the bit, with two
//! exceptions: torch's CPU `sqrt` (MKL) and numpy's f32 `log` are not correctly rounded, so a
//! sigma can differ by one f32 ulp, and Euler's unrounded Karras timesteps by a few f32 ulps.
//! Tensors only carry the per-step linear combinations, with each coefficient converted to f32
//! at the last moment; nothing is read back from the device.

mod ddim;
mod dpm_solver;
mod euler;
mod euler_ancestral;
mod unipc;

use std::borrow::Cow;
use std::fmt;

use burn::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

pub use vocabulary::SchedulerKind;

/// What a kind means beyond its class, applied on top of the config (as the pipeline's
/// `from_config(config, **extra)` does).
fn config_extra(kind: SchedulerKind) -> &'static [(&'static str, bool)] {
    match kind {
        SchedulerKind::DpmPp2MKarras => &[("use_karras_sigmas", true)],
        _ => &[],
    }
}

/// Why a scheduler could not be built.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerError {
    /// Zero inference steps were asked for.
    ZeroSteps,
    /// More inference steps than the model was trained with, or a spacing that leaves the
    /// training range.
    TooManySteps { steps: usize, num_train_timesteps: usize },
    /// `scheduler_config.json` is not JSON, or a field has the wrong type or an unknown value.
    Config { class: &'static str, message: String },
    /// A setting diffusers has but this port does not implement.
    Unsupported { class: &'static str, setting: String },
}

impl fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedulerError::ZeroSteps => f.write_str("the number of inference steps must be at least 1"),
            SchedulerError::TooManySteps { steps, num_train_timesteps } => write!(
                f,
                "{steps} inference steps do not fit a model trained with {num_train_timesteps} timesteps"
            ),
            SchedulerError::Config { class, message } => {
                write!(f, "invalid scheduler config for {class}: {message}")
            }
            SchedulerError::Unsupported { class, setting } => {
                write!(f, "{class}: {setting} is not supported by this port")
            }
        }
    }
}

impl std::error::Error for SchedulerError {}

/// A diffusers `scheduler_config.json`, kept as its JSON fields: each scheduler kind reads the
/// fields its class knows when it is built, and ignores the rest (PNDM's `skip_prk_steps`, say).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerConfig {
    fields: Map<String, Value>,
}

impl SchedulerConfig {
    /// Parses `scheduler_config.json`. Python writes `-Infinity` (DPM-Solver's
    /// `lambda_min_clipped`), `Infinity` and `NaN`, which are not JSON; they are accepted.
    pub fn from_json(text: &str) -> Result<Self, SchedulerError> {
        let config_error = |message: String| SchedulerError::Config { class: "any scheduler", message };
        let value = parse_json(text).map_err(|e| config_error(e.to_string()))?;
        let Value::Object(mut fields) = value else {
            return Err(config_error("the config is not a JSON object".to_owned()));
        };
        // Keys diffusers filled in with the *original* class's defaults: `from_config` drops
        // them so that the new class uses its own.
        if let Some(Value::Array(defaults)) = fields.remove("_use_default_values") {
            for key in defaults.iter().filter_map(Value::as_str) {
                fields.remove(key);
            }
        }
        Ok(Self { fields })
    }

    /// SD1.5's `scheduler/scheduler_config.json` as published (a `PNDMScheduler` config).
    pub fn sd15() -> Self {
        let text = r#"{"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
            "trained_betas": null, "clip_sample": false}"#;
        Self::from_json(text).expect("SD1.5's scheduler config parses")
    }

    /// Sets one field, as a keyword argument to diffusers' `from_config` does.
    pub fn with_override(mut self, key: impl Into<String>, value: Value) -> Self {
        self.fields.insert(key.into(), value);
        self
    }

    /// A field as written in the config (after overrides).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// The config as `class` sees it: its own fields, its defaults for the rest.
    fn resolve<T: DeserializeOwned>(&self, kind: SchedulerKind) -> Result<T, SchedulerError> {
        let mut fields = self.fields.clone();
        for (key, value) in config_extra(kind) {
            fields.insert((*key).to_owned(), Value::Bool(*value));
        }
        serde_json::from_value(Value::Object(fields))
            .map_err(|e| SchedulerError::Config { class: kind.class_name(), message: e.to_string() })
    }
}

/// The most training timesteps a config may declare (SD uses 1000): the schedule is computed
/// for each of them.
const MAX_TRAIN_TIMESTEPS: usize = 100_000;

/// The training schedule `DDPMScheduler.add_noise` uses (what `train_controlnet.py` noises
/// latents with): `alphas_cumprod` of the config's betas, one per training timestep. Refuses by
/// name what training here does not implement (v-prediction, zero-SNR rescaling).
pub fn training_alphas_cumprod(config: &SchedulerConfig) -> Result<Vec<f64>, SchedulerError> {
    const CLASS: &str = "DDPMScheduler";
    let train: TrainConfig = serde_json::from_value(Value::Object(config.fields.clone()))
        .map_err(|e| SchedulerError::Config { class: CLASS, message: e.to_string() })?;
    train.check(CLASS)?;
    Ok(train.alphas_cumprod())
}

/// Parses JSON as Python's `json` module writes it: `NaN`, `Infinity` and `-Infinity` outside
/// strings become the strings `"NaN"`, `"Infinity"` and `"-Infinity"` (which the scheduler
/// configs read back as numbers). diffusers' saved configs and our fixtures contain them.
pub fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(&quote_non_finite(text))
}

fn quote_non_finite(text: &str) -> Cow<'_, str> {
    const TOKENS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    if !TOKENS.iter().any(|t| text.contains(t)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !in_string && let Some(token) = TOKENS.iter().find(|t| rest.starts_with(**t)) {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// Reads a float written as a number or as one of [`parse_json`]'s non-finite strings.
fn lenient_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Float {
        Number(f64),
        Text(String),
    }
    match Float::deserialize(deserializer)? {
        Float::Number(x) => Ok(x),
        Float::Text(text) => match text.as_str() {
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => Err(serde::de::Error::custom(format!("expected a number, found \"{text}\""))),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The fields every scheduler class shares (with the same defaults in all five).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredcosCapV2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PredictionType {
    Epsilon,
    Sample,
    VPrediction,
    FlowPrediction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FinalSigmas {
    Zero,
    SigmaMin,
}

/// The training noise schedule and the fields that go with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct TrainConfig {
    num_train_timesteps: usize,
    beta_start: f64,
    beta_end: f64,
    beta_schedule: BetaSchedule,
    trained_betas: Option<Vec<f64>>,
    prediction_type: PredictionType,
    steps_offset: usize,
    rescale_betas_zero_snr: bool,
    thresholding: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            thresholding: false,
        }
    }
}

impl TrainConfig {
    /// Refuses what no scheduler here implements.
    fn check(&self, class: &'static str) -> Result<(), SchedulerError> {
        let unsupported = |setting: String| Err(SchedulerError::Unsupported { class, setting });
        if self.prediction_type != PredictionType::Epsilon {
            let name = match self.prediction_type {
                PredictionType::Epsilon => "epsilon",
                PredictionType::Sample => "sample",
                PredictionType::VPrediction => "v_prediction",
                PredictionType::FlowPrediction => "flow_prediction",
            };
            return unsupported(format!("prediction_type \"{name}\" (only \"epsilon\", which SD1.x uses)"));
        }
        if self.rescale_betas_zero_snr {
            return unsupported("rescale_betas_zero_snr".to_owned());
        }
        if self.thresholding {
            return unsupported("thresholding (dynamic thresholding is for pixel-space models)".to_owned());
        }
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&self.num_train_timesteps) {
            return Err(SchedulerError::Config {
                class,
                message: format!(
                    "num_train_timesteps is {} (2 to {MAX_TRAIN_TIMESTEPS})",
                    self.num_train_timesteps
                ),
            });
        }
        if let Some(betas) = &self.trained_betas
            && betas.len() != self.num_train_timesteps
        {
            return Err(SchedulerError::Config {
                class,
                message: format!(
                    "trained_betas has {} values for num_train_timesteps {}",
                    betas.len(),
                    self.num_train_timesteps
                ),
            });
        }
        // Every beta in (0, 1): else the noise levels are not numbers (found by fuzzing: a
        // beta_start above 1 made every timestep NaN, one of 0 a noise level of 0, whose log the
        // sigma schedulers take).
        if let Some(t) = self.alphas_cumprod().iter().position(|&a| !(a > 0.0 && a < 1.0)) {
            return Err(SchedulerError::Config {
                class,
                message: format!(
                    "the betas (beta_start {}, beta_end {}{}) give no noise level at timestep {t}: \
                     each beta must lie in (0, 1)",
                    self.beta_start,
                    self.beta_end,
                    if self.trained_betas.is_some() { ", trained_betas" } else { "" }
                ),
            });
        }
        Ok(())
    }

    /// `alphas_cumprod` as diffusers computes it: f32 betas (torch's `linspace` in f32), f32
    /// alphas, and a cumulative product accumulated in f64 and stored in f32 (torch's CPU
    /// `cumprod` for f32). The values are f32 numbers held in f64.
    fn alphas_cumprod(&self) -> Vec<f64> {
        let n = self.num_train_timesteps;
        let betas: Vec<f32> = match (&self.trained_betas, self.beta_schedule) {
            (Some(betas), _) => betas.iter().map(|&b| b as f32).collect(),
            (None, BetaSchedule::Linear) => torch_linspace_f32(self.beta_start, self.beta_end, n),
            (None, BetaSchedule::ScaledLinear) => {
                torch_linspace_f32(self.beta_start.powf(0.5), self.beta_end.powf(0.5), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            (None, BetaSchedule::SquaredcosCapV2) => betas_for_alpha_bar_cosine(n),
        };
        let mut product = 1.0f64;
        betas
            .into_iter()
            .map(|beta| {
                product *= f64::from(1.0f32 - beta);
                f64::from(product as f32)
            })
            .collect()
    }
}

/// `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU, to the bit: the step is
/// computed in f32, and each value is one fused multiply-add from the nearer end.
fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` with the cosine schedule ("squaredcos_cap_v2").
fn betas_for_alpha_bar_cosine(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`, in f32 like diffusers' tensor.
fn sigma_table(alphas_cumprod: &[f64]) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|&a| {
            let a = a as f32;
            f64::from(((1.0 - a) / a).sqrt())
        })
        .collect()
}

/// `np.log` of the f32 sigma table (an f32 array).
fn log_sigma_table(sigmas: &[f64]) -> Vec<f64> {
    sigmas.iter().map(|&s| f64::from(s.ln() as f32)).collect()
}

// ---------------------------------------------------------------------------------------------
// numpy, as the schedulers use it.
// ---------------------------------------------------------------------------------------------

/// `np.linspace(start, stop, num)` (f64): `i * step + start`, the last value exactly `stop`.
fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    values[num - 1] = stop;
    values
}

/// `np.arange(start, stop, step)` for floats: `ceil((stop - start) / step)` values, the first two
/// `start` and `start + step`, then `start + i * delta` with `delta` their difference.
fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, np.arange(len(fp)), fp)`.
fn np_interp(x: f64, fp: &[f64]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0];
    }
    if x >= last as f64 {
        return fp[last];
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / 1.0;
    slope * (x - j as f64) + fp[j]
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose sigma is `sigma`, by linear
/// interpolation in log sigma. `log_sigmas` is the f32 table (so `low - high` is an f32
/// subtraction, as in numpy).
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last index whose log sigma is at most `log_sigma` (0 when none is).
    let low_idx =
        log_sigmas.iter().rposition(|&l| log_sigma - l >= 0.0).unwrap_or(0).min(log_sigmas.len() - 2);
    let (low, high) = (log_sigmas[low_idx], log_sigmas[low_idx + 1]);
    let w = ((low - log_sigma) / f64::from((low - high) as f32)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * (low_idx + 1) as f64
}

/// Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"),
/// eq. 5 with ρ = 7: `num` sigmas from `sigma_max` down to `sigma_min`, evenly spaced in
/// `sigma^(1/ρ)`.
fn karras_sigmas(sigma_min: f64, sigma_max: f64, num: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let (min_inv_rho, max_inv_rho) = (sigma_min.powf(1.0 / RHO), sigma_max.powf(1.0 / RHO));
    np_linspace(0.0, 1.0, num)
        .into_iter()
        .map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

/// Integer timesteps for the multistep solvers (DPM-Solver and UniPC's `set_timesteps`), which
/// space `steps + 1` points and drop the last.
fn multistep_timesteps(
    spacing: TimestepSpacing,
    steps: usize,
    num_train_timesteps: usize,
    last_timestep: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut t: Vec<f64> = np_linspace(0.0, (last_timestep - 1) as f64, steps + 1)
                .into_iter()
                .map(f64::round_ties_even)
                .rev()
                .collect();
            t.pop();
            t
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            (1..=steps).rev().map(|i| (i * ratio + steps_offset) as f64).collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train_timesteps as f64 / steps as f64;
            np_arange(last_timestep as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| t.round_ties_even() - 1.0)
                .collect()
        }
    }
}

/// `1 / sqrt(sigma² + 1)` and `sigma / sqrt(sigma² + 1)`: the signal and noise scales (α_t, σ_t)
/// of the variance-preserving process at Karras sigma `sigma`.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// λ = log(α_t / σ_t), the half log-SNR the DPM-Solver and UniPC updates step in (+∞ at σ = 0).
fn lambda(sigma: f64) -> f64 {
    let (alpha, sigma) = alpha_sigma(sigma);
    alpha.ln() - sigma.ln()
}

/// `a·x + b·y` with f64 coefficients applied in f32.
fn lin2(x: Tensor<4>, a: f64, y: Tensor<4>, b: f64) -> Tensor<4> {
    x.mul_scalar(a as f32) + y.mul_scalar(b as f32)
}

/// Checks the step count against the training range.
fn check_steps(steps: usize, num_train_timesteps: usize) -> Result<(), SchedulerError> {
    match steps {
        0 => Err(SchedulerError::ZeroSteps),
        s if s > num_train_timesteps => Err(SchedulerError::TooManySteps { steps, num_train_timesteps }),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// The scheduler.
// ---------------------------------------------------------------------------------------------

/// What each scheduler implements; [`Scheduler`] dispatches to it.
trait Sampler: fmt::Debug + Send + Sync {
    fn timesteps(&self) -> &[f64];
    fn sigmas(&self) -> Option<&[f64]>;
    fn init_noise_sigma(&self) -> f64;
    /// The factor `scale_model_input` multiplies by, when it is not the identity.
    fn input_scale(&self, _step: usize) -> Option<f64> {
        None
    }
    fn needs_noise(&self) -> bool {
        false
    }
    /// Forgets the multistep history (a new run starts).
    fn reset(&mut self) {}
    fn step(
        &mut self,
        model_output: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Tensor<4>;
}

/// A scheduler set up for a number of inference steps.
#[derive(Debug)]
pub struct Scheduler {
    kind: SchedulerKind,
    sampler: Box<dyn Sampler>,
    /// The step the next call continues with (multistep state is only valid for it).
    next_step: Option<usize>,
}

impl Scheduler {
    /// Builds `kind` from a diffusers scheduler config for `steps` inference steps (diffusers'
    /// `from_config` followed by `set_timesteps(steps)`).
    pub fn new(kind: SchedulerKind, config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let sampler: Box<dyn Sampler> = match kind {
            SchedulerKind::Ddim => Box::new(ddim::Ddim::new(config.resolve(kind)?, steps)?),
            SchedulerKind::Euler => Box::new(euler::Euler::new(config.resolve(kind)?, steps)?),
            SchedulerKind::EulerAncestral => {
                Box::new(euler_ancestral::euler_ancestral(config.resolve(kind)?, steps)?)
            }
            SchedulerKind::DpmPp2M | SchedulerKind::DpmPp2MKarras => {
                Box::new(dpm_solver::DpmSolver::new(config.resolve(kind)?, steps)?)
            }
            SchedulerKind::UniPc => Box::new(unipc::UniPc::new(config.resolve(kind)?, steps)?),
        };
        Ok(Self { kind, sampler, next_step: None })
    }

    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// The timestep the UNet receives at each step (fractional for the Euler schedulers).
    pub fn timesteps(&self) -> &[f64] {
        self.sampler.timesteps()
    }

    /// diffusers' `scheduler.sigmas` (one more than the steps, ending in the final sigma) for
    /// the classes that have them; `None` for DDIM.
    pub fn sigmas(&self) -> Option<&[f64]> {
        self.sampler.sigmas()
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.timesteps().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The standard deviation of the initial noise: `x_T = noise * init_noise_sigma()`.
    pub fn init_noise_sigma(&self) -> f64 {
        self.sampler.init_noise_sigma()
    }

    /// The UNet's input at `step` (the Euler schedulers divide by `sqrt(sigma² + 1)`).
    pub fn scale_model_input(&self, sample: Tensor<4>, step: usize) -> Tensor<4> {
        match self.sampler.input_scale(step) {
            Some(scale) => sample.mul_scalar(scale as f32),
            None => sample,
        }
    }

    /// Whether [`Scheduler::step`] needs fresh standard normal noise (Euler ancestral).
    pub fn needs_noise(&self) -> bool {
        self.sampler.needs_noise()
    }

    /// One step: the sample at the next (lower) noise level, from the UNet's noise prediction
    /// `model_output` for `sample` at `step`.
    ///
    /// `step` runs `0..len()` in order; the multistep solvers keep their history inside. A call
    /// that does not continue the previous one (step 0 again, or a jump) starts a new run
    /// (img2img starts at a later step), as a fresh diffusers scheduler with that begin index
    /// would.
    ///
    /// # Panics
    /// If `step >= len()`, or if [`Scheduler::needs_noise`] and `noise` is `None`.
    pub fn step(
        &mut self,
        model_output: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        noise: Option<Tensor<4>>,
    ) -> Tensor<4> {
        assert!(step < self.len(), "scheduler step {step} out of 0..{}", self.len());
        assert!(
            noise.is_some() || !self.needs_noise(),
            "the {} scheduler needs noise at every step",
            self.kind
        );
        if self.next_step != Some(step) {
            self.sampler.reset();
        }
        self.next_step = Some(step + 1);
        self.sampler.step(model_output, step, sample, noise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vocabulary::Named;

    /// Found by fuzzing (`fuzz/fuzz_targets/configs.rs`): betas outside [0, 1) made every
    /// timestep NaN; a huge `num_train_timesteps` allocated its schedule.
    #[test]
    fn configs_without_a_noise_schedule_are_refused() {
        let with = |key: &str, value: Value| SchedulerConfig::sd15().with_override(key, value);
        for (config, says) in [
            (with("beta_start", 1.00085.into()), "beta_start 1.00085"),
            (with("beta_end", (-0.5).into()), "each beta must lie in (0, 1)"),
            (with("beta_start", (-0.1).into()), "each beta must lie in (0, 1)"),
            (with("beta_start", 0.into()), "no noise level at timestep 0"),
            (with("num_train_timesteps", 1_000_000_000_000u64.into()), "2 to 100000"),
        ] {
            for &kind in SchedulerKind::ALL {
                let Err(error) = Scheduler::new(kind, &config, 20) else { panic!("{kind:?}: not refused") };
                let error = error.to_string();
                assert!(error.contains(says), "{kind:?}: {error}");
            }
            assert!(training_alphas_cumprod(&config).is_err());
        }
        for &kind in SchedulerKind::ALL {
            Scheduler::new(kind, &SchedulerConfig::sd15(), 20).expect("SD1.5's schedule");
        }
    }

    #[test]
    fn non_finite_numbers_are_quoted_outside_strings_only() {
        let text = r#"{"a": -Infinity, "b": [NaN, Infinity], "c": "NaN \"Infinity\"", "d": 1}"#;
        let value = parse_json(text).expect("parses");
        assert_eq!(value["a"], "-Infinity");
        assert_eq!(value["b"][0], "NaN");
        assert_eq!(value["b"][1], "Infinity");
        assert_eq!(value["c"], "NaN \"Infinity\"");
        assert_eq!(value["d"], 1);
    }

    #[test]
    fn numpy_helpers_match_numpy() {
        // np.linspace(0, 999, 4) and np.arange(1000, 0, -1000 / 6).
        assert_eq!(np_linspace(0.0, 999.0, 4), vec![0.0, 333.0, 666.0, 999.0]);
        let arange = np_arange(1000.0, 0.0, -1000.0 / 6.0);
        assert_eq!(arange.len(), 6);
        let rounded: Vec<f64> = arange.iter().map(|t| t.round_ties_even()).collect();
        assert_eq!(rounded, vec![1000.0, 833.0, 667.0, 500.0, 333.0, 167.0]);
        assert_eq!(np_interp(2.5, &[0.0, 1.0, 2.0, 4.0]), 3.0);
        assert_eq!(np_interp(7.0, &[0.0, 1.0]), 1.0);
    }
}
