//! The variational autoencoder (diffusers' `AutoencoderKL`): images ↔ latents.
//!
//! The pipeline denoises 8× smaller latents; [`AutoencoderKL::decode`] turns them into the image
//! and [`AutoencoderKL::encode`] an image into them (img2img). Full-size decodes are the largest
//! buffers of the whole pipeline (SD1.5 at 512² holds a `[1, 256, 512, 512]` activation, 256 MiB
//! in f32, twice WebGPU's default storage binding), so [`AutoencoderKL::decode_within`] decodes in
//! overlapping tiles, exactly as diffusers' `tiled_decode`, when a whole decode would not fit a
//! buffer budget.

mod blocks;
mod config;
mod tiling;

use std::path::Path;

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::FloatDType;

pub use blocks::{
    Decoder, DownEncoderBlock, Downsample, Encoder, MidAttention, MidBlock, PlainResnetBlock2D,
    UpDecoderBlock,
};
pub use config::{SampleSize, VaeConfig};
pub use tiling::{
    DecodePlan, MAX_BUFFER_BYTES, TILE_OVERLAP_FACTOR, decode_peak_bytes, decoder_elements_per_latent,
    plan_decode,
};

use crate::Precision;
use crate::nn::ops;
use crate::nn::resnet::conv1x1;
use crate::unet::module_dtype;
use crate::weights::{WeightsError, load_bytes, read_model_dir};

/// The mid-block attention's old key names (diffusers < 0.14 and the published SD1.5 VAE, whose
/// projections are Linear-shaped `[c, c]`), mapped onto today's. diffusers converts them on load
/// (`_convert_deprecated_attention_blocks`); so do we.
pub const OLD_ATTENTION_REMAPS: &[(&str, &str)] = &[
    (r"^(.*\.attentions\.\d+)\.query\.(weight|bias)$", "$1.to_q.$2"),
    (r"^(.*\.attentions\.\d+)\.key\.(weight|bias)$", "$1.to_k.$2"),
    (r"^(.*\.attentions\.\d+)\.value\.(weight|bias)$", "$1.to_v.$2"),
    (r"^(.*\.attentions\.\d+)\.proj_attn\.(weight|bias)$", "$1.to_out.$2"),
];

/// diffusers' `AutoencoderKL`. Field names are the checkpoint's keys.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    pub encoder: Encoder,
    pub decoder: Decoder,
    /// 1×1 convolution on the encoder's moments (absent with `use_quant_conv: false`).
    pub quant_conv: Option<Conv2d>,
    /// 1×1 convolution on the latents before the decoder (absent with `use_post_quant_conv: false`).
    pub post_quant_conv: Option<Conv2d>,
    #[module(skip)]
    pub config: VaeConfig,
}

impl AutoencoderKL {
    /// A VAE with burn's default initialisation (load weights with [`vae_from_bytes`]).
    pub fn new(config: &VaeConfig, device: &Device) -> Self {
        let latent = config.latent_channels;
        Self {
            encoder: Encoder::new(config, device),
            decoder: Decoder::new(config, device),
            quant_conv: config.use_quant_conv.then(|| conv1x1(2 * latent, 2 * latent, device)),
            post_quant_conv: config.use_post_quant_conv.then(|| conv1x1(latent, latent, device)),
            config: config.clone(),
        }
    }

    /// Latents are the decoder's input times this (0.18215 for SD1.5).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// Whether this VAE must run in f32 (SD1.5's overflows in f16).
    pub fn force_upcast(&self) -> bool {
        self.config.force_upcast
    }

    /// How many times smaller the latents are than the image (8 for SD1.5).
    pub fn scale_factor(&self) -> usize {
        self.config.scale_factor()
    }

    /// The dtype the VAE computes in (its weights').
    pub fn dtype(&self) -> FloatDType {
        module_dtype(&self.decoder.conv_in)
    }

    /// Decodes latents, whole. Inputs are cast to the VAE's dtype; the output stays in it.
    ///
    /// # Shapes
    /// - `z`: `[b, latent_channels, h, w]`, the UNet's latents already divided by
    ///   [`Self::scaling_factor`]
    /// - output: `[b, out_channels, h·f, w·f]`, roughly in [-1, 1]
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let z = z.cast(self.dtype());
        let z = match &self.post_quant_conv {
            Some(conv) => ops::conv(conv, z),
            None => z,
        };
        self.decoder.forward(z)
    }

    /// The mean and log-variance of the latent distribution (`DiagonalGaussianDistribution`,
    /// log-variance clamped to [-30, 20] as diffusers does). The pipeline's latents are
    /// `mean · scaling_factor` (or a sample `mean + exp(logvar / 2) · ε`, scaled).
    ///
    /// # Shapes
    /// - `image`: `[b, in_channels, H, W]` in [-1, 1]
    /// - outputs: `[b, latent_channels, H/f, W/f]` each, in the VAE's dtype
    pub fn encode(&self, image: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let moments = self.encoder.forward(image.cast(self.dtype()));
        let moments = match &self.quant_conv {
            Some(conv) => ops::conv(conv, moments),
            None => moments,
        };
        let latent = self.config.latent_channels;
        let mean = moments.clone().narrow(1, 0, latent);
        let logvar = moments.narrow(1, latent, latent).clamp(-30.0, 20.0);
        (mean, logvar)
    }
}

/// A VAE from `vae/config.json` and its safetensors bytes; the old attention key names
/// (`query`, `key`, `value`, `proj_attn`) load as well as today's.
pub fn vae_from_bytes(
    config_json: &str,
    safetensors: Vec<u8>,
    precision: Precision,
    device: &Device,
) -> Result<AutoencoderKL, WeightsError> {
    let config = VaeConfig::from_json(config_json)?;
    load_bytes(
        AutoencoderKL::new(&config, device),
        &safetensors,
        precision,
        device,
        OLD_ATTENTION_REMAPS,
        &[],
    )
}

/// Loads a VAE from a diffusers folder (`…/vae`), in the precision asked (the pipeline asks for
/// f32 when [`AutoencoderKL::force_upcast`] says so).
pub fn load_vae(dir: &Path, precision: Precision, device: &Device) -> Result<AutoencoderKL, WeightsError> {
    let (config, weights) = read_model_dir(dir, precision)?;
    vae_from_bytes(&config, weights, precision, device)
}
