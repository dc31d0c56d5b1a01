//! Checkpoints as diffusers publishes them: a folder with `config.json` and
//! `diffusion_pytorch_model[.fp16].safetensors`, loaded strictly.
//!
//! Every tensor in the file must land in the module and every parameter of the module must be in
//! the file, with the same shape; anything else is an error naming the keys and shapes (an SD2.x
//! ControlNet offered for SD1.5, a truncated file, the wrong folder). Weights are converted to the
//! requested precision as they are loaded.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::Precision;
use crate::config::{ConfigError, ControlNetConfig, UNetConfig};
use crate::controlnet::ControlNet;
use crate::streaming::StreamLoader;
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
    module_path_with::<&str>(&[], checkpoint_key)
}

/// The module path a checkpoint key loads into with `extra` remaps, applied before the shared
/// ones (so that an extra map may produce diffusers' own names, which the shared remaps then
/// bring to this crate's module paths).
pub fn module_path_with<S: AsRef<str>>(extra: &[(S, S)], checkpoint_key: &str) -> String {
    remap(&remap_patterns(extra), checkpoint_key)
}

/// Applies compiled remaps ([`remap_patterns`]) to a checkpoint key, in order.
pub fn remap(patterns: &[(regex::Regex, String)], checkpoint_key: &str) -> String {
    patterns
        .iter()
        .fold(checkpoint_key.to_owned(), |key, (re, to)| re.replace(&key, to.as_str()).into_owned())
}

/// `extra` (checkpoint key pattern → module path) followed by the shared remaps, compiled.
pub fn remap_patterns<S: AsRef<str>>(extra: &[(S, S)]) -> Vec<(regex::Regex, String)> {
    let extra = extra.iter().map(|(pattern, to)| (pattern.as_ref(), to.as_ref()));
    extra.chain(REMAPS.iter().copied()).map(|(pattern, to)| (regex_lite(pattern), to.to_owned())).collect()
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

/// Loads a whole safetensors file into `module`, strictly, converting to `precision`: the
/// browser's streaming loader ([`StreamLoader`]), fed the file as one chunk, so that every native
/// load exercises the parser the browser uses. `extra_remaps` (checkpoint key pattern → module
/// path, after the shared ones) and `ignored` (checkpoint keys passed over unread, e.g. a buffer
/// old exports saved) as for [`StreamLoader::new`].
pub fn load_bytes<M: Module>(
    module: M,
    safetensors: &[u8],
    precision: Precision,
    device: &Device,
    extra_remaps: &[(&str, &str)],
    ignored: &[&str],
) -> Result<M, WeightsError> {
    let mut loader = StreamLoader::new(device, precision, extra_remaps, ignored);
    loader.push(safetensors)?;
    loader.apply(module)
}

/// A UNet from `unet/config.json` and its safetensors bytes.
pub fn unet_from_bytes(
    config_json: &str,
    safetensors: Vec<u8>,
    precision: Precision,
    device: &Device,
) -> Result<UNet, WeightsError> {
    let config = UNetConfig::from_json(config_json)?;
    load_bytes(UNet::new(&config, device), &safetensors, precision, device, &[], &[])
}

/// A ControlNet from its `config.json` and safetensors bytes.
pub fn controlnet_from_bytes(
    config_json: &str,
    safetensors: Vec<u8>,
    precision: Precision,
    device: &Device,
) -> Result<ControlNet, WeightsError> {
    let config = ControlNetConfig::from_json(config_json)?;
    load_bytes(ControlNet::new(&config, device), &safetensors, precision, device, &[], &[])
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
