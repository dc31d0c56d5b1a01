//! CLIP's text encoder (transformers' `CLIPTextModel`): what turns the prompt's 77 token ids into
//! the `encoder_hidden_states` the UNet attends to.
//!
//! Token and position embeddings, then pre-LN transformer layers with *causal* self-attention
//! (each token sees only itself and the tokens before it, so the padding after EOS never changes
//! the prompt's states), then a final layer norm. Stable Diffusion uses `last_hidden_state`, the
//! output of that norm, not the pooled or projected embedding.
//!
//! Module paths are the published checkpoint keys (`text_model.encoder.layers.0.self_attn.q_proj`);
//! transformers 5 saves the same tensors without the `text_model.` prefix, and both load.

use std::path::{Path, PathBuf};

use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid, softmax};
use burn::tensor::{DType, FloatDType};
use serde::Deserialize;

use crate::Precision;
use crate::config::ConfigError;
use crate::nn::embeddings::TokenEmbedding;
use crate::weights::{WeightsError, load_bytes};

/// Checkpoint keys written by transformers 5 (no `text_model.` prefix) → module paths.
pub const REMAPS: &[(&str, &str)] = &[(r"^(embeddings|encoder|final_layer_norm)\.(.+)$", "text_model.$1.$2")];
/// A buffer (`arange(77)`) that checkpoints saved by transformers 4 carry; it is not a weight.
pub const IGNORED: &[&str] = &[r"(^|\.)embeddings\.position_ids$"];

fn default_vocab_size() -> usize {
    49408
}
fn default_hidden_size() -> usize {
    512
}
fn default_intermediate_size() -> usize {
    2048
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    8
}
fn default_positions() -> usize {
    77
}
fn default_act() -> Activation {
    Activation::QuickGelu
}
fn default_eps() -> f64 {
    1e-5
}

/// transformers' `CLIPTextConfig` (`text_encoder/config.json`), with its defaults; fields we do not
/// use (projection, token ids, dropout) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

impl ClipTextConfig {
    /// SD1.5's text encoder, CLIP ViT-L/14's text tower (runwayml/stable-diffusion-v1-5
    /// `text_encoder/config.json`).
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// Parses and validates a `config.json`.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let config: Self =
            serde_json::from_str(json).map_err(|e| ConfigError(format!("text encoder config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses what this implementation cannot run, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError(format!("text encoder: `{name}` is 0")));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ConfigError(format!(
                "text encoder: {} hidden units do not split into {} heads",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }
}

/// The MLP's activation (`hidden_act`); any other name is refused when the config is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x · σ(1.702 x)`: CLIP's own, SD1.x's.
    QuickGelu,
    /// The exact (erf) GELU: OpenCLIP's text towers (SD2.x).
    Gelu,
}

impl Activation {
    fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::QuickGelu => x.clone() * sigmoid(x * 1.702),
            Activation::Gelu => gelu(x),
        }
    }
}

/// `CLIPTextModel`: the checkpoint's one top-level key, `text_model`.
#[derive(Module, Debug)]
pub struct ClipTextModel {
    pub text_model: ClipTextTransformer,
}

/// `CLIPTextTransformer`.
#[derive(Module, Debug)]
pub struct ClipTextTransformer {
    pub embeddings: ClipTextEmbeddings,
    pub encoder: ClipEncoder,
    pub final_layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct ClipTextEmbeddings {
    pub token_embedding: TokenEmbedding,
    pub position_embedding: Embedding,
}

#[derive(Module, Debug)]
pub struct ClipEncoder {
    pub layers: Vec<ClipEncoderLayer>,
}

/// One pre-LN transformer layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: ClipAttention,
    pub layer_norm2: LayerNorm,
    pub mlp: ClipMlp,
}

/// Multi-head self-attention; unlike diffusers' `Attention`, every projection has a bias.
#[derive(Module, Debug)]
pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

#[derive(Module, Debug)]
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub activation: Activation,
}

impl ClipTextModel {
    /// A model with freshly initialised weights, to be loaded (see [`load_text_encoder`]).
    /// The config must be valid ([`ClipTextConfig::validate`]).
    pub fn new(config: &ClipTextConfig, device: &Device) -> Self {
        let dim = config.hidden_size;
        let norm = || LayerNormConfig::new(dim).with_epsilon(config.layer_norm_eps).init(device);
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let layers = (0..config.num_hidden_layers)
            .map(|_| ClipEncoderLayer {
                layer_norm1: norm(),
                self_attn: ClipAttention {
                    q_proj: linear(dim, dim),
                    k_proj: linear(dim, dim),
                    v_proj: linear(dim, dim),
                    out_proj: linear(dim, dim),
                    heads: config.num_attention_heads,
                },
                layer_norm2: norm(),
                mlp: ClipMlp {
                    fc1: linear(dim, config.intermediate_size),
                    fc2: linear(config.intermediate_size, dim),
                    activation: config.hidden_act,
                },
            })
            .collect();
        Self {
            text_model: ClipTextTransformer {
                embeddings: ClipTextEmbeddings {
                    token_embedding: TokenEmbedding::new(
                        config.vocab_size,
                        dim,
                        vocabulary::memory::MAX_BUFFER_BYTES,
                        device,
                    ),
                    position_embedding: EmbeddingConfig::new(config.max_position_embeddings, dim)
                        .init(device),
                },
                encoder: ClipEncoder { layers },
                final_layer_norm: norm(),
            },
        }
    }

    /// `last_hidden_state`, in the weights' precision.
    ///
    /// # Shapes
    /// - `ids`: `[b, n]`, `n` ≤ `max_position_embeddings` (77), every id < `vocab_size`
    /// - output: `[b, n, hidden_size]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let model = &self.text_model;
        let [_, n] = ids.dims();
        let positions = model.embeddings.position_embedding.weight.dims()[0];
        assert!(n <= positions, "{n} tokens, but the text encoder has {positions} positions");

        // 1. Token embeddings plus the first n position embeddings.
        let position = model.embeddings.position_embedding.weight.val().narrow(0, 0, n).unsqueeze::<3>();
        let mut x = model.embeddings.token_embedding.forward(ids) + position; // [b, n, d]

        // 2. The layers, each token attending to itself and the ones before it.
        let mask = causal_mask(n, &x.device());
        for layer in &model.encoder.layers {
            let h = layer.self_attn.forward(layer.layer_norm1.forward(x.clone()), mask.clone());
            x = x + h;
            let h = layer.mlp.forward(layer.layer_norm2.forward(x.clone()));
            x = x + h;
        }

        // 3. The final norm: `last_hidden_state`.
        model.final_layer_norm.forward(x)
    }

    /// [`forward`](Self::forward) on a batch of token-id rows (all of the same length, as
    /// [`ClipTokenizer::encode`](crate::tokenizer::ClipTokenizer::encode) makes them).
    pub fn encode_ids(&self, ids: &[Vec<u32>], device: &Device) -> Tensor<3> {
        let n = ids.first().map_or(0, Vec::len);
        assert!(ids.iter().all(|row| row.len() == n), "token rows of different lengths");
        let flat: Vec<i64> = ids.iter().flatten().map(|&id| i64::from(id)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [ids.len(), n]), device);
        self.forward(ids)
    }
}

/// `[1, n, n]` f32: 0 where a query may attend to a key (key ≤ query), the most negative f32
/// elsewhere (as transformers' eager mask; softmax turns it into an exact 0).
fn causal_mask(n: usize, device: &Device) -> Tensor<3> {
    let future = Tensor::<2, Bool>::tril_mask([n, n], 0, device); // true above the diagonal
    Tensor::<2>::zeros([n, n], (device, DType::F32)).mask_fill(future, f32::MIN).unsqueeze::<3>()
}

impl ClipAttention {
    /// # Shapes
    /// - `x`: `[b, n, d]`; `mask`: `[1, n, n]` (f32, added to the scores)
    /// - output: `[b, n, d]`
    pub fn forward(&self, x: Tensor<3>, mask: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let head_dim = d / self.heads;
        let split = |t: Tensor<3>| {
            t.reshape([b, n, self.heads, head_dim]).swap_dims(1, 2).reshape([b * self.heads, n, head_dim])
        };
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));

        // Scores and softmax in f32 whatever the weights' precision (see `nn::attention`).
        let dtype: FloatDType = q.dtype().into();
        let (q, k) = if dtype != FloatDType::F32 {
            (q.cast(FloatDType::F32), k.cast(FloatDType::F32))
        } else {
            (q, k)
        };
        let scores = q.matmul(k.swap_dims(1, 2)) * (1.0 / (head_dim as f64).sqrt()) + mask; // [b·h, n, n]
        let out = softmax(scores, 2).cast(dtype).matmul(v); // [b·h, n, head_dim]

        let out = out.reshape([b, self.heads, n, head_dim]).swap_dims(1, 2).reshape([b, n, d]);
        self.out_proj.forward(out)
    }
}

impl ClipMlp {
    /// `[b, n, d]` → `[b, n, d]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(self.activation.forward(self.fc1.forward(x)))
    }
}

/// A text encoder from its `config.json` and safetensors bytes, strictly: every weight present,
/// nothing else but the `position_ids` buffer.
pub fn text_encoder_from_bytes(
    config_json: &str,
    safetensors: Vec<u8>,
    precision: Precision,
    device: &Device,
) -> Result<ClipTextModel, WeightsError> {
    let config = ClipTextConfig::from_json(config_json)?;
    load_bytes(ClipTextModel::new(&config, device), &safetensors, precision, device, REMAPS, IGNORED)
}

/// Loads a text encoder from a diffusers folder (`…/text_encoder`): `config.json` and
/// `model.fp16.safetensors` when computing in f16 and it exists, else `model.safetensors`, else
/// whichever exists.
pub fn load_text_encoder(
    dir: &Path,
    precision: Precision,
    device: &Device,
) -> Result<ClipTextModel, WeightsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| WeightsError::Io { path: path.into(), message: e.to_string() })
    };
    let config = read(&dir.join("config.json"))?;
    let config = String::from_utf8(config)
        .map_err(|_| WeightsError::Config(ConfigError("text encoder config.json is not UTF-8".into())))?;
    let full = dir.join("model.safetensors");
    let half = dir.join("model.fp16.safetensors");
    let candidates: [PathBuf; 2] = match precision {
        Precision::F16 => [half, full],
        Precision::F32 => [full, half],
    };
    let weights = candidates.iter().find(|p| p.is_file()).ok_or_else(|| WeightsError::Io {
        path: dir.join("model.safetensors"),
        message: "neither model.safetensors nor model.fp16.safetensors is there".into(),
    })?;
    text_encoder_from_bytes(&config, read(weights)?, precision, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let config = ClipTextConfig::from_json("{}").unwrap();
        assert_eq!(config.hidden_size, 512);
        assert_eq!(config.hidden_act, Activation::QuickGelu);
        let sd15 = r#"{"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
            "num_hidden_layers": 12, "projection_dim": 768, "hidden_act": "quick_gelu"}"#;
        assert_eq!(ClipTextConfig::from_json(sd15).unwrap(), ClipTextConfig::sd15());
        assert!(ClipTextConfig::from_json(r#"{"hidden_act": "relu"}"#).is_err());
        assert!(ClipTextConfig::from_json(r#"{"hidden_size": 10, "num_attention_heads": 4}"#).is_err());
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let mask = causal_mask(3, &Device::flex());
        let values = crate::block_on(mask.into_data_async()).unwrap().try_to_vec::<f32>().unwrap();
        let m = f32::MIN;
        assert_eq!(values, vec![0.0, m, m, 0.0, 0.0, m, 0.0, 0.0, 0.0]);
    }
}
