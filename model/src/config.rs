//! diffusers `config.json` files, parsed with serde.
//!
//! Field names and defaults are diffusers' own (`UNet2DConditionModel`, `ControlNetModel`), so
//! any SD1.x checkpoint's config loads as published; fields we do not use are ignored, and values
//! we cannot honour are refused by [`UNetConfig::validate`] with a message naming them.

use serde::{Deserialize, Serialize};

/// An error in a `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A per-block value that configs write either once or once per block.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    /// The value for block `i` of `n`.
    pub fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v[i],
        }
    }

    fn check_len(&self, n: usize, name: &str) -> Result<(), ConfigError> {
        match self {
            PerBlock::Each(v) if v.len() != n => {
                Err(ConfigError(format!("`{name}` has {} entries for {n} blocks", v.len())))
            }
            _ => Ok(()),
        }
    }
}

fn default_in_channels() -> usize {
    4
}
fn default_block_out_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_layers_per_block() -> usize {
    2
}
fn default_heads() -> PerBlock {
    PerBlock::One(8)
}
fn default_cross_attention_dim() -> usize {
    1280
}
fn default_norm_num_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}
fn default_one_f64() -> f64 {
    1.0
}
fn default_silu() -> String {
    "silu".to_owned()
}
fn default_down_blocks() -> Vec<String> {
    ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
        .map(str::to_owned)
        .to_vec()
}
fn default_up_blocks() -> Vec<String> {
    ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
        .map(str::to_owned)
        .to_vec()
}
fn default_conditioning_embedding() -> Vec<usize> {
    vec![16, 32, 96, 256]
}
fn default_rgb() -> String {
    "rgb".to_owned()
}
fn default_three() -> usize {
    3
}

/// The encoder half that the UNet and the ControlNet share: what `conv_in`, the time embedding,
/// the down blocks and the mid block are built from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EncoderConfig {
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: usize,
    /// In SD1.x configs this is, despite its name, the number of attention heads.
    #[serde(default = "default_heads")]
    pub attention_head_dim: PerBlock,
    /// The number of heads when set; SD1.x leaves it null and means `attention_head_dim`.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: usize,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: usize,
    #[serde(default = "default_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "default_one")]
    pub downsample_padding: usize,
    #[serde(default = "default_one_f64")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default)]
    pub only_cross_attention: bool,
    #[serde(default = "default_one")]
    pub transformer_layers_per_block: usize,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    #[serde(default)]
    pub resnet_time_scale_shift: Option<String>,
}

/// `unet/config.json` of a diffusers `UNet2DConditionModel`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct UNetConfig {
    #[serde(flatten)]
    pub encoder: EncoderConfig,
    #[serde(default = "default_in_channels")]
    pub out_channels: usize,
    #[serde(default = "default_up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

/// `config.json` of a diffusers `ControlNetModel`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ControlNetConfig {
    #[serde(flatten)]
    pub encoder: EncoderConfig,
    /// Widths of the hint encoder's convolutions (the paper's "tiny network E").
    #[serde(default = "default_conditioning_embedding")]
    pub conditioning_embedding_out_channels: Vec<usize>,
    #[serde(default = "default_three")]
    pub conditioning_channels: usize,
    /// `rgb`, or `bgr` for checkpoints trained on OpenCV's channel order.
    #[serde(default = "default_rgb")]
    pub controlnet_conditioning_channel_order: String,
    /// Shuffle-style ControlNets average each residual over the image.
    #[serde(default)]
    pub global_pool_conditions: bool,
}

/// What a down block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// ResNets interleaved with transformers (cross-attention on the text).
    CrossAttn,
    /// ResNets only.
    Plain,
}

impl EncoderConfig {
    /// Number of attention heads in down block `i` (SD1.x's reading of `attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim).get(i)
    }

    /// Width of the time embedding: four times the first block's.
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    pub fn down_block_kinds(&self) -> Result<Vec<BlockKind>, ConfigError> {
        self.down_block_types.iter().map(|t| block_kind(t, "CrossAttnDownBlock2D", "DownBlock2D")).collect()
    }

    /// Refuses what this port does not implement, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.block_out_channels.len();
        let unsupported = |field: &str, value: &dyn std::fmt::Debug| {
            Err(ConfigError(format!("unsupported config: `{field}` = {value:?} (Stable Diffusion 1.x only)")))
        };
        if n == 0 {
            return Err(ConfigError("`block_out_channels` is empty".into()));
        }
        if self.down_block_types.len() != n {
            return Err(ConfigError(format!(
                "{} down block types for {n} entries of `block_out_channels`",
                self.down_block_types.len()
            )));
        }
        let kinds = self.down_block_kinds()?;
        self.attention_head_dim.check_len(n, "attention_head_dim")?;
        if let Some(heads) = &self.num_attention_heads {
            heads.check_len(n, "num_attention_heads")?;
        }
        for (i, &channels) in self.block_out_channels.iter().enumerate() {
            if channels == 0 || !channels.is_multiple_of(self.norm_num_groups) {
                return Err(ConfigError(format!(
                    "block {i}: {channels} channels do not split into {} groups",
                    self.norm_num_groups
                )));
            }
            // Heads matter only where there is attention: the cross-attention blocks, and the mid
            // block (the last block's heads), as diffusers builds them.
            let attends = kinds[i] == BlockKind::CrossAttn || i + 1 == n;
            if attends && !channels.is_multiple_of(self.heads(i)) {
                return Err(ConfigError(format!(
                    "block {i}: {channels} channels do not split into {} heads",
                    self.heads(i)
                )));
            }
        }
        if self.act_fn != "silu" {
            return unsupported("act_fn", &self.act_fn);
        }
        if self.use_linear_projection {
            return unsupported("use_linear_projection", &true);
        }
        if self.only_cross_attention {
            return unsupported("only_cross_attention", &true);
        }
        if self.transformer_layers_per_block != 1 {
            return unsupported("transformer_layers_per_block", &self.transformer_layers_per_block);
        }
        for (field, value) in [
            ("class_embed_type", &self.class_embed_type),
            ("addition_embed_type", &self.addition_embed_type),
            ("encoder_hid_dim_type", &self.encoder_hid_dim_type),
        ] {
            if value.is_some() {
                return unsupported(field, value);
            }
        }
        if self.resnet_time_scale_shift.as_deref().is_some_and(|s| s != "default") {
            return unsupported("resnet_time_scale_shift", &self.resnet_time_scale_shift);
        }
        Ok(())
    }
}

fn block_kind(name: &str, cross: &str, plain: &str) -> Result<BlockKind, ConfigError> {
    if name == cross {
        Ok(BlockKind::CrossAttn)
    } else if name == plain {
        Ok(BlockKind::Plain)
    } else {
        Err(ConfigError(format!("unsupported block type `{name}`")))
    }
}

impl UNetConfig {
    /// Stable Diffusion 1.5's UNet: its published `unet/config.json`
    /// (stable-diffusion-v1-5/stable-diffusion-v1-5), as the fixtures keep it.
    pub fn sd15() -> Self {
        Self::from_json(include_str!("../../tests/fixtures/sd15/unet_config.json")).expect("a valid preset")
    }

    /// Parses `unet/config.json`.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_json_from_str(json)?;
        config.validate()?;
        Ok(config)
    }

    pub fn up_block_kinds(&self) -> Result<Vec<BlockKind>, ConfigError> {
        self.up_block_types.iter().map(|t| block_kind(t, "CrossAttnUpBlock2D", "UpBlock2D")).collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.encoder.validate()?;
        let n = self.encoder.block_out_channels.len();
        if self.up_block_types.len() != n {
            return Err(ConfigError(format!(
                "{} up block types for {n} down blocks",
                self.up_block_types.len()
            )));
        }
        let channels = &self.encoder.block_out_channels;
        for (i, kind) in self.up_block_kinds()?.into_iter().enumerate() {
            let block = n - 1 - i;
            let heads = self.encoder.heads(block);
            if kind == BlockKind::CrossAttn && !channels[block].is_multiple_of(heads) {
                return Err(ConfigError(format!(
                    "up block {i}: {} channels do not split into {heads} heads",
                    channels[block]
                )));
            }
        }
        Ok(())
    }
}

impl ControlNetConfig {
    /// ControlNet v1.1 for SD1.5 (lllyasviel/control_v11p_sd15_*): its published `config.json`.
    pub fn sd15() -> Self {
        Self::from_json(include_str!("../../tests/fixtures/sd15/controlnet_config.json"))
            .expect("a valid preset")
    }

    /// Parses a ControlNet's `config.json`.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_json_from_str(json)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.encoder.validate()?;
        if self.conditioning_embedding_out_channels.is_empty() {
            return Err(ConfigError("`conditioning_embedding_out_channels` is empty".into()));
        }
        match self.controlnet_conditioning_channel_order.as_str() {
            "rgb" | "bgr" => Ok(()),
            other => Err(ConfigError(format!("unknown `controlnet_conditioning_channel_order` `{other}`"))),
        }
    }

    /// How many times larger than the latents the condition image is: the hint encoder halves
    /// it between each of its widths (8 for SD1.5's four).
    pub fn hint_scale(&self) -> usize {
        1 << (self.conditioning_embedding_out_channels.len() - 1)
    }

    /// The config `ControlNetModel.from_unet` gives: the UNet's encoder and diffusers' defaults.
    pub fn from_unet(unet: &UNetConfig) -> Self {
        Self {
            encoder: unet.encoder.clone(),
            conditioning_embedding_out_channels: default_conditioning_embedding(),
            conditioning_channels: 3,
            controlnet_conditioning_channel_order: default_rgb(),
            global_pool_conditions: false,
        }
    }
}

/// A `config.json` as diffusers writes it for `class` (`ControlNetModel`, `UNet2DConditionModel`):
/// the fields of `config`, the class name, and the diffusers version the fixtures are made with.
pub fn to_diffusers_json<T: Serialize>(config: &T, class: &str) -> String {
    let mut value = serde_json::to_value(config).expect("configs serialize");
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert("_class_name".into(), class.into());
        fields.insert("_diffusers_version".into(), DIFFUSERS_VERSION.into());
    }
    serde_json::to_string_pretty(&value).expect("JSON") + "\n"
}

/// The diffusers version whose layout the checkpoints written here follow (the fixtures').
pub const DIFFUSERS_VERSION: &str = "0.42.1";

fn serde_json_from_str<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, ConfigError> {
    serde_json::from_str(json).map_err(|e| ConfigError(format!("invalid config.json: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_checked_only_where_there_is_attention() {
        // As diffusers' own small test UNets: a plain first block narrower than the head count.
        let json = r#"{"block_out_channels": [4, 8], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8,
            "norm_num_groups": 2, "cross_attention_dim": 16}"#;
        UNetConfig::from_json(json).unwrap();
        let attends_at_4 = json.replace(
            r#"["DownBlock2D", "CrossAttnDownBlock2D"]"#,
            r#"["CrossAttnDownBlock2D", "DownBlock2D"]"#,
        );
        let message = UNetConfig::from_json(&attends_at_4).unwrap_err().to_string();
        assert!(message.contains("4 channels do not split into 8 heads"), "{message}");
        let up =
            json.replace(r#"["CrossAttnUpBlock2D", "UpBlock2D"]"#, r#"["UpBlock2D", "CrossAttnUpBlock2D"]"#);
        let message = UNetConfig::from_json(&up).unwrap_err().to_string();
        assert!(message.contains("up block 1"), "{message}");
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/configs.rs`): zero heads or groups divided by zero.
    #[test]
    fn zero_heads_or_groups_are_refused() {
        let json = r#"{"block_out_channels": [4, 8], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 0,
            "norm_num_groups": 2, "cross_attention_dim": 16}"#;
        let message = UNetConfig::from_json(json).unwrap_err().to_string();
        assert!(message.contains("8 channels do not split into 0 heads"), "{message}");
        let groups = json
            .replace(r#""attention_head_dim": 0"#, r#""attention_head_dim": 2"#)
            .replace(r#""norm_num_groups": 2"#, r#""norm_num_groups": 0"#);
        let message = UNetConfig::from_json(&groups).unwrap_err().to_string();
        assert!(message.contains("do not split into 0 groups"), "{message}");
    }
}
