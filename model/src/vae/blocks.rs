//! The VAE's encoder and decoder (`Encoder`, `Decoder` in diffusers' `autoencoders/vae.py`) and
//! their blocks (`DownEncoderBlock2D`, `UpDecoderBlock2D`, `UNetMidBlock2D`).
//!
//! They differ from the UNet's in three ways: the ResNets have no time embedding, the
//! downsampler pads only right and bottom (`padding=0` in diffusers), and the mid-block attention
//! is a single-head self-attention over the pixels with its own group norm and biases.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use super::VaeConfig;
use crate::nn::ops;
use crate::nn::resnet::{conv1x1, conv3x3, group_norm};
use crate::nn::updown::Upsample2D;

/// Every group norm of the VAE (`resnet_eps` and the output norms) uses this epsilon.
pub const EPS: f64 = 1e-6;

/// `ResnetBlock2D` built with `temb_channels=None`: the UNet's block without `time_emb_proj`.
#[derive(Module, Debug)]
pub struct PlainResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    /// Present when the block changes the number of channels.
    pub conv_shortcut: Option<Conv2d>,
}

impl PlainResnetBlock2D {
    pub fn new(in_channels: usize, out_channels: usize, groups: usize, device: &Device) -> Self {
        Self {
            norm1: group_norm(groups, in_channels, EPS, device),
            conv1: conv3x3(in_channels, out_channels, 1, device),
            norm2: group_norm(groups, out_channels, EPS, device),
            conv2: conv3x3(out_channels, out_channels, 1, device),
            conv_shortcut: (in_channels != out_channels).then(|| conv1x1(in_channels, out_channels, device)),
        }
    }

    /// `[b, in, h, w]` → `[b, out, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = ops::conv(&self.conv1, ops::group_norm_silu(&self.norm1, x.clone()));
        let h = ops::conv(&self.conv2, ops::group_norm_silu(&self.norm2, h));
        let skip = match &self.conv_shortcut {
            Some(conv) => ops::conv(conv, x),
            None => x,
        };
        skip + h
    }
}

/// The mid block's `Attention` (built with `_from_deprecated_attn_block=True`): group norm, one
/// head as wide as the channels, biased projections, and the input added back. Old checkpoints
/// name the projections `query`, `key`, `value`, `proj_attn` (see [`super::OLD_ATTENTION_REMAPS`]).
#[derive(Module, Debug)]
pub struct MidAttention {
    pub group_norm: GroupNorm,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    /// The checkpoint's `to_out.0`.
    pub to_out: Linear,
}

impl MidAttention {
    pub fn new(channels: usize, groups: usize, device: &Device) -> Self {
        let linear = || LinearConfig::new(channels, channels).init(device);
        Self {
            group_norm: group_norm(groups, channels, EPS, device),
            to_q: linear(),
            to_k: linear(),
            to_v: linear(),
            to_out: linear(),
        }
    }

    /// Self-attention over the `h·w` pixels. The `[b, hw, hw]` scores are computed in f32
    /// (diffusers' `upcast_softmax`) and in chunks of queries when large (see [`crate::nn::attention::attention`]).
    ///
    /// # Shapes
    /// `[b, c, h, w]` → `[b, c, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens = ops::group_norm(&self.group_norm, x.clone()).reshape([b, c, h * w]).swap_dims(1, 2); // [b, hw, c]
        let q = self.to_q.forward(tokens.clone());
        let k = self.to_k.forward(tokens.clone());
        let v = self.to_v.forward(tokens);
        let out = self.to_out.forward(ops::attention(q, k, v)); // [b, hw, c]
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}

/// `UNetMidBlock2D`: resnet, then (attention, resnet). Without `mid_block_add_attention` the
/// attentions are absent and the two ResNets follow each other.
#[derive(Module, Debug)]
pub struct MidBlock {
    pub resnets: Vec<PlainResnetBlock2D>,
    pub attentions: Vec<MidAttention>,
}

impl MidBlock {
    pub fn new(config: &VaeConfig, device: &Device) -> Self {
        let channels = *config.block_out_channels.last().expect("validated: at least one block");
        let groups = config.norm_num_groups;
        let resnet = || PlainResnetBlock2D::new(channels, channels, groups, device);
        let attentions = if config.mid_block_add_attention {
            vec![MidAttention::new(channels, groups, device)]
        } else {
            Vec::new()
        };
        Self { resnets: vec![resnet(), resnet()], attentions }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x);
        for (i, resnet) in self.resnets[1..].iter().enumerate() {
            if let Some(attention) = self.attentions.get(i) {
                x = attention.forward(x);
            }
            x = resnet.forward(x);
        }
        x
    }
}

/// `Downsample2D(padding=0)`: zero-pads one row at the bottom and one column on the right, then
/// a 3×3 convolution with stride 2 and no further padding (the original LDM's downsampler; the
/// UNet's pads all sides by one instead).
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
}

impl Downsample {
    pub fn new(channels: usize, device: &Device) -> Self {
        let conv = Conv2dConfig::new([channels, channels], [3, 3])
            .with_stride([2, 2])
            // (top, left, bottom, right): F.pad(x, (0, 1, 0, 1)).
            .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
            .init(device);
        Self { conv }
    }

    /// `[b, c, h, w]` → `[b, c, ⌊(h−2)/2⌋+1, ⌊(w−2)/2⌋+1]` (half, for even sizes)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        ops::conv(&self.conv, x)
    }
}

/// `DownEncoderBlock2D`: ResNets, then a downsampler except in the last block.
#[derive(Module, Debug)]
pub struct DownEncoderBlock {
    pub resnets: Vec<PlainResnetBlock2D>,
    pub downsamplers: Vec<Downsample>,
}

impl DownEncoderBlock {
    /// Down block `i` of the encoder.
    pub fn new(config: &VaeConfig, i: usize, device: &Device) -> Self {
        let channels = &config.block_out_channels;
        let out = channels[i];
        let input = if i == 0 { out } else { channels[i - 1] };
        let resnets = (0..config.layers_per_block)
            .map(|j| {
                let in_channels = if j == 0 { input } else { out };
                PlainResnetBlock2D::new(in_channels, out, config.norm_num_groups, device)
            })
            .collect();
        let is_final = i + 1 == channels.len();
        let downsamplers = if is_final { Vec::new() } else { vec![Downsample::new(out, device)] };
        Self { resnets, downsamplers }
    }

    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for resnet in &self.resnets {
            x = resnet.forward(x);
        }
        for downsampler in &self.downsamplers {
            x = downsampler.forward(x);
        }
        x
    }
}

/// `UpDecoderBlock2D`: `layers_per_block + 1` ResNets, then a 2× nearest upsampler and a 3×3
/// convolution except in the last block.
#[derive(Module, Debug)]
pub struct UpDecoderBlock {
    pub resnets: Vec<PlainResnetBlock2D>,
    pub upsamplers: Vec<Upsample2D>,
}

impl UpDecoderBlock {
    /// Up block `i` of the decoder (`i = 0` is the deepest).
    pub fn new(config: &VaeConfig, i: usize, device: &Device) -> Self {
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let out = reversed[i];
        let input = reversed[i.saturating_sub(1)];
        let resnets = (0..config.layers_per_block + 1)
            .map(|j| {
                let in_channels = if j == 0 { input } else { out };
                PlainResnetBlock2D::new(in_channels, out, config.norm_num_groups, device)
            })
            .collect();
        let is_final = i + 1 == reversed.len();
        let upsamplers = if is_final { Vec::new() } else { vec![Upsample2D::new(out, device)] };
        Self { resnets, upsamplers }
    }

    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for resnet in &self.resnets {
            x = resnet.forward(x);
        }
        for upsampler in &self.upsamplers {
            let [_, _, h, w] = x.dims();
            x = upsampler.forward(x, [2 * h, 2 * w]);
        }
        x
    }
}

/// diffusers' `Encoder` with `double_z=True`: image → mean and log-variance of the latents.
#[derive(Module, Debug)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownEncoderBlock>,
    pub mid_block: MidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Encoder {
    pub fn new(config: &VaeConfig, device: &Device) -> Self {
        let channels = &config.block_out_channels;
        let last = *channels.last().expect("validated: at least one block");
        Self {
            conv_in: conv3x3(config.in_channels, channels[0], 1, device),
            down_blocks: (0..channels.len()).map(|i| DownEncoderBlock::new(config, i, device)).collect(),
            mid_block: MidBlock::new(config, device),
            conv_norm_out: group_norm(config.norm_num_groups, last, EPS, device),
            conv_out: conv3x3(last, 2 * config.latent_channels, 1, device),
        }
    }

    /// # Shapes
    /// `[b, in_channels, h, w]` → `[b, 2·latent_channels, h/f, w/f]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // 1. conv_in and the down blocks
        let mut x = ops::conv(&self.conv_in, x);
        for block in &self.down_blocks {
            x = block.forward(x);
        }
        // 2. mid
        let x = self.mid_block.forward(x);
        // 3. post-process
        ops::conv(&self.conv_out, ops::group_norm_silu(&self.conv_norm_out, x))
    }
}

/// diffusers' `Decoder` (group norms, no spatial norm): latents → image.
#[derive(Module, Debug)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpDecoderBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    pub fn new(config: &VaeConfig, device: &Device) -> Self {
        let channels = &config.block_out_channels;
        let last = *channels.last().expect("validated: at least one block");
        Self {
            conv_in: conv3x3(config.latent_channels, last, 1, device),
            mid_block: MidBlock::new(config, device),
            up_blocks: (0..channels.len()).map(|i| UpDecoderBlock::new(config, i, device)).collect(),
            conv_norm_out: group_norm(config.norm_num_groups, channels[0], EPS, device),
            conv_out: conv3x3(channels[0], config.out_channels, 1, device),
        }
    }

    /// # Shapes
    /// `[b, latent_channels, h, w]` → `[b, out_channels, h·f, w·f]`
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        // 1. conv_in and mid
        let x = self.mid_block.forward(ops::conv(&self.conv_in, z));
        // 2. up blocks
        let mut x = x;
        for block in &self.up_blocks {
            x = block.forward(x);
        }
        // 3. post-process
        ops::conv(&self.conv_out, ops::group_norm_silu(&self.conv_norm_out, x))
    }
}
