//! Checkpoints as diffusers publishes them: a folder with `config.json` and
//! `diffusion_pytorch_model[.fp16].safetensors`, loaded strictly.
//!
//! Every tensor in the file must land in the module and every parameter of the module must be in
//! the file, with the same shape; anything else is an error naming the keys and shapes (an SD2.x
//! ControlNet offered for SD1.5, a truncated file, the wrong folder). Weights are converted to the
//! requested precision as they are loaded.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{
    ApplyResult, ChainAdapter, FloatCastAdapter, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter,
    SafetensorsStore,
};

use crate::Precision;
use crate::config::{ConfigError, ControlNetConfig, UNetConfig};
use crate::controlnet::ControlNet;
use crate::unet::UNet;

/// Where our module paths differ from diffusers' keys (checkpoint key pattern → module path).
const REMAPS: &[(&str, &str)] = &[
    // `to_out` is a ModuleList (linear, dropout) in diffusers.
    (r"^(.*)\.to_out\.0\.(weight|bias)$", "$1.to_out.$2"),
    // GEGLU's projection and the output linear of FeedForward's `net` ModuleList.
    (r"^(.*)\.ff\.net\.0\.proj\.(weight|bias)$", "$1.ff.proj.$2"),
    (r"^(.*)\.ff\.net\.2\.(weight|bias)$", "$1.ff.out.$2"),
    // Zero convolutions are bare convolutions in checkpoints, `ZeroConv { conv }` here.
    (
        r"^(controlnet_down_blocks\.\d+|controlnet_mid_block|controlnet_cond_embedding\.conv_out)\.(weight|bias)$",
        "$1.conv.$2",
    ),
];

/// The module path a checkpoint key loads into (the key itself, but for [`REMAPS`]).
pub fn module_path(checkpoint_key: &str) -> String {
    REMAPS.iter().fold(checkpoint_key.to_owned(), |key, (pattern, replacement)| {
        regex_lite(pattern).replace(&key, *replacement).into_owned()
    })
}

/// The shared remaps followed by `extra` (checkpoint key pattern → module path), compiled.
pub fn remap_patterns(extra: &[(&str, &str)]) -> Vec<(regex::Regex, String)> {
    REMAPS.iter().chain(extra).map(|(pattern, to)| (regex_lite(pattern), (*to).to_owned())).collect()
}

fn regex_lite(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).expect("the remap patterns are valid")
}

/// Why weights could not be loaded.
#[derive(Debug)]
pub enum WeightsError {
    /// A file could not be read.
    Io { path: PathBuf, message: String },
    /// The folder holds no weights file we know.
    NoWeights { dir: PathBuf },
    /// `config.json` is invalid or describes a model we do not implement.
    Config(ConfigError),
    /// The file is not valid safetensors (truncated, corrupt, not safetensors at all).
    Format(String),
    /// The file's tensors do not fit the module: the wrong model, or a damaged file.
    Mismatch { missing: Vec<String>, unused: Vec<String>, errors: Vec<String> },
}

impl std::fmt::Display for WeightsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightsError::Io { path, message } => write!(f, "cannot read {}: {message}", path.display()),
            WeightsError::NoWeights { dir } => write!(
                f,
                "{} holds no diffusion_pytorch_model[.fp16].safetensors (is it a diffusers model folder?)",
                dir.display()
            ),
            WeightsError::Config(e) => write!(f, "{e}"),
            WeightsError::Format(message) => write!(f, "not a valid safetensors file: {message}"),
            WeightsError::Mismatch { missing, unused, errors } => {
                f.write_str("the weights do not fit this model (is it the right checkpoint?)")?;
                let mut list = |what: &str, items: &[String]| -> std::fmt::Result {
                    if items.is_empty() {
                        return Ok(());
                    }
                    write!(f, "\n  {} {what}: ", items.len())?;
                    let shown: Vec<&str> = items.iter().take(8).map(String::as_str).collect();
                    f.write_str(&shown.join(", "))?;
                    if items.len() > shown.len() {
                        write!(f, ", …")?;
                    }
                    Ok(())
                };
                list("disagree", errors)?;
                list("missing from the file", missing)?;
                list("in the file but not in the model", unused)
            }
        }
    }
}

impl std::error::Error for WeightsError {}

impl From<ConfigError> for WeightsError {
    fn from(e: ConfigError) -> Self {
        WeightsError::Config(e)
    }
}

/// Loads `safetensors` bytes into `module`, strictly, converting to `precision`.
pub fn apply_safetensors<M: ModuleSnapshot>(
    module: &mut M,
    safetensors: Vec<u8>,
    precision: Precision,
) -> Result<(), WeightsError> {
    apply_safetensors_with(module, safetensors, precision, &[], &[])
}

/// [`apply_safetensors`] with more key remaps (checkpoint key pattern → module path, applied
/// after the shared ones) and checkpoint keys that may be present and are not loaded (regex
/// patterns, e.g. a buffer that old exports saved). Everything else stays strict.
pub fn apply_safetensors_with<M: ModuleSnapshot>(
    module: &mut M,
    safetensors: Vec<u8>,
    precision: Precision,
    extra_remaps: &[(&str, &str)],
    ignored: &[&str],
) -> Result<(), WeightsError> {
    let patterns: Vec<(&str, &str)> = REMAPS.iter().chain(extra_remaps).copied().collect();
    let remapper = KeyRemapper::from_patterns(patterns).expect("the remap patterns are valid");
    let mut store = SafetensorsStore::from_bytes(Some(safetensors))
        .remap(remapper)
        .with_from_adapter(ChainAdapter::new(
            PyTorchToBurnAdapter,
            FloatCastAdapter::to(precision.dtype().into()),
        ))
        .allow_partial(true)
        .validate(false);
    let mut result = module.load_from(&mut store).map_err(|e| WeightsError::Format(e.to_string()))?;
    let ignored: Vec<regex::Regex> = ignored.iter().map(|p| regex_lite(p)).collect();
    result.unused.retain(|key| !ignored.iter().any(|re| re.is_match(key)));
    check(result)
}

fn check(result: ApplyResult) -> Result<(), WeightsError> {
    if result.missing.is_empty() && result.unused.is_empty() && result.errors.is_empty() {
        return Ok(());
    }
    Err(WeightsError::Mismatch {
        missing: result.missing.into_iter().map(|(path, _)| path).collect(),
        unused: result.unused,
        errors: result.errors.iter().map(ToString::to_string).collect(),
    })
}

/// A UNet from `unet/config.json` and its safetensors bytes.
pub fn unet_from_bytes(
    config_json: &str,
    safetensors: Vec<u8>,
    precision: Precision,
    device: &Device,
) -> Result<UNet, WeightsError> {
    let config = UNetConfig::from_json(config_json)?;
    let mut unet = UNet::new(&config, device);
    apply_safetensors(&mut unet, safetensors, precision)?;
    Ok(unet)
}

/// A ControlNet from its `config.json` and safetensors bytes.
pub fn controlnet_from_bytes(
    config_json: &str,
    safetensors: Vec<u8>,
    precision: Precision,
    device: &Device,
) -> Result<ControlNet, WeightsError> {
    let config = ControlNetConfig::from_json(config_json)?;
    let mut controlnet = ControlNet::new(&config, device);
    apply_safetensors(&mut controlnet, safetensors, precision)?;
    Ok(controlnet)
}

/// A diffusers model folder's `config.json` and weights file: the fp16 variant when computing
/// in f16 and it exists, else the full-precision file, else whichever exists.
pub fn read_model_dir(dir: &Path, precision: Precision) -> Result<(String, Vec<u8>), WeightsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| WeightsError::Io { path: path.into(), message: e.to_string() })
    };
    let config = read(&dir.join("config.json"))?;
    let config = String::from_utf8(config)
        .map_err(|_| WeightsError::Config(ConfigError("config.json is not UTF-8".into())))?;
    let full = dir.join("diffusion_pytorch_model.safetensors");
    let half = dir.join("diffusion_pytorch_model.fp16.safetensors");
    let candidates = match precision {
        Precision::F16 => [half, full],
        Precision::F32 => [full, half],
    };
    let weights =
        candidates.iter().find(|p| p.is_file()).ok_or_else(|| WeightsError::NoWeights { dir: dir.into() })?;
    Ok((config, read(weights)?))
}

/// Loads a UNet from a diffusers folder (`…/unet`).
pub fn load_unet(dir: &Path, precision: Precision, device: &Device) -> Result<UNet, WeightsError> {
    let (config, weights) = read_model_dir(dir, precision)?;
    unet_from_bytes(&config, weights, precision, device)
}

/// Loads a ControlNet from a diffusers folder.
pub fn load_controlnet(
    dir: &Path,
    precision: Precision,
    device: &Device,
) -> Result<ControlNet, WeightsError> {
    let (config, weights) = read_model_dir(dir, precision)?;
    controlnet_from_bytes(&config, weights, precision, device)
}
