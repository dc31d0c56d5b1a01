//! `vae/config.json` of a diffusers `AutoencoderKL`, parsed with serde.
//!
//! Field names and defaults are diffusers' own (`AutoencoderKL.__init__`), so a config loads as
//! published (SD1.5's omits `scaling_factor`, `force_upcast` and the rest); fields we do not use
//! are ignored, and values we cannot honour are refused by [`VaeConfig::validate`], naming them.

use serde::Deserialize;

use crate::config::ConfigError;

/// `sample_size`: one number, or `[height, width]` (diffusers then reads the first).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    One(usize),
    HeightWidth(Vec<usize>),
}

impl SampleSize {
    /// The size diffusers' tiling reads: the number, or the first entry.
    pub fn first(&self) -> usize {
        match self {
            SampleSize::One(size) => *size,
            SampleSize::HeightWidth(sizes) => sizes.first().copied().unwrap_or(0),
        }
    }
}

fn default_three() -> usize {
    3
}
fn default_four() -> usize {
    4
}
fn default_one() -> usize {
    1
}
fn default_groups() -> usize {
    32
}
fn default_true() -> bool {
    true
}
fn default_silu() -> String {
    "silu".to_owned()
}
fn default_down() -> Vec<String> {
    vec![DOWN_BLOCK.to_owned()]
}
fn default_up() -> Vec<String> {
    vec![UP_BLOCK.to_owned()]
}
fn default_block_out_channels() -> Vec<usize> {
    vec![64]
}
fn default_sample_size() -> SampleSize {
    SampleSize::One(32)
}
fn default_scaling_factor() -> f64 {
    0.18215
}

const DOWN_BLOCK: &str = "DownEncoderBlock2D";
const UP_BLOCK: &str = "UpDecoderBlock2D";

/// Stable Diffusion 1.5's `vae/config.json` as published (stable-diffusion-v1-5/
/// stable-diffusion-v1-5): it predates `scaling_factor` and `force_upcast`, so both take diffusers'
/// defaults (0.18215, true).
const SD15_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.6.0",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 2,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

/// `vae/config.json` of a diffusers `AutoencoderKL`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "default_three")]
    pub in_channels: usize,
    #[serde(default = "default_three")]
    pub out_channels: usize,
    #[serde(default = "default_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_one")]
    pub layers_per_block: usize,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default = "default_four")]
    pub latent_channels: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    /// The image size the VAE was trained at: diffusers' default tile size.
    #[serde(default = "default_sample_size")]
    pub sample_size: SampleSize,
    /// Latents are `z · scaling_factor` for the UNet; [`super::AutoencoderKL::decode`] takes them
    /// divided back.
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    /// SD3/Flux-style latent shift; SD1.x has none (refused when set).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Per-channel latent statistics of later VAEs; SD1.x has none (refused when set).
    #[serde(default)]
    pub latents_mean: Option<Vec<f64>>,
    #[serde(default)]
    pub latents_std: Option<Vec<f64>>,
    /// The VAE overflows in f16 and must run in f32 (true for SD1.5's).
    #[serde(default = "default_true")]
    pub force_upcast: bool,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
}

impl VaeConfig {
    /// Stable Diffusion 1.5's VAE.
    pub fn sd15() -> Self {
        Self::from_json(SD15_CONFIG).expect("a valid preset")
    }

    /// Parses `vae/config.json`.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let config: Self =
            serde_json::from_str(json).map_err(|e| ConfigError(format!("invalid vae config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// How many times smaller the latents are than the image: 2 per down block but the last
    /// (8 for SD1.5).
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// diffusers' default tile, in latents: `sample_size / scale_factor` (64 for SD1.5).
    pub fn tile_latent_min_size(&self) -> usize {
        self.sample_size.first() / self.scale_factor()
    }

    /// Refuses what this port does not implement, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.block_out_channels.len();
        let unsupported = |field: &str, value: &dyn std::fmt::Debug| {
            Err(ConfigError(format!(
                "unsupported vae config: `{field}` = {value:?} (Stable Diffusion 1.x only)"
            )))
        };
        if n == 0 {
            return Err(ConfigError("vae: `block_out_channels` is empty".into()));
        }
        if n > 16 {
            return unsupported("block_out_channels", &self.block_out_channels);
        }
        for (field, types, expected) in [
            ("down_block_types", &self.down_block_types, DOWN_BLOCK),
            ("up_block_types", &self.up_block_types, UP_BLOCK),
        ] {
            if types.len() != n {
                return Err(ConfigError(format!(
                    "vae: {} `{field}` for {n} entries of `block_out_channels`",
                    types.len()
                )));
            }
            if let Some(other) = types.iter().find(|t| *t != expected) {
                return unsupported(field, other);
            }
        }
        if self.act_fn != "silu" {
            return unsupported("act_fn", &self.act_fn);
        }
        for (field, value) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("layers_per_block", self.layers_per_block),
            ("norm_num_groups", self.norm_num_groups),
        ] {
            if value == 0 {
                return unsupported(field, &0);
            }
        }
        for (i, &channels) in self.block_out_channels.iter().enumerate() {
            if channels == 0 || channels % self.norm_num_groups != 0 {
                return Err(ConfigError(format!(
                    "vae block {i}: {channels} channels do not split into {} groups",
                    self.norm_num_groups
                )));
            }
        }
        if self.sample_size.first() == 0 {
            return unsupported("sample_size", &self.sample_size);
        }
        if !self.scaling_factor.is_finite() || self.scaling_factor == 0.0 {
            return unsupported("scaling_factor", &self.scaling_factor);
        }
        if self.shift_factor.is_some() {
            return unsupported("shift_factor", &self.shift_factor);
        }
        if self.latents_mean.is_some() {
            return unsupported("latents_mean", &self.latents_mean);
        }
        if self.latents_std.is_some() {
            return unsupported("latents_std", &self.latents_std);
        }
        Ok(())
    }
}
