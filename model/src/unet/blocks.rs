//! The UNet's down, mid and up blocks (`CrossAttnDownBlock2D`, `DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`, `UpBlock2D`). A block without attention has
//! an empty `attentions`; a block at the end of the resolution ladder has no resampler.

use burn::prelude::*;

use crate::config::{BlockKind, EncoderConfig, UNetConfig};
use crate::nn::resnet::ResnetBlock2D;
use crate::nn::transformer::Transformer2D;
use crate::nn::updown::{Downsample2D, Upsample2D};

#[derive(Module, Debug)]
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
    pub downsamplers: Vec<Downsample2D>,
}

impl DownBlock {
    /// Down block `i` of the encoder described by `config`.
    pub fn new(config: &EncoderConfig, kind: BlockKind, i: usize, device: &Device) -> Self {
        let out = config.block_out_channels[i];
        let input = if i == 0 { out } else { config.block_out_channels[i - 1] };
        let is_final = i + 1 == config.block_out_channels.len();
        let temb = config.time_embed_dim();
        let resnets = (0..config.layers_per_block)
            .map(|j| {
                let in_channels = if j == 0 { input } else { out };
                ResnetBlock2D::new(in_channels, out, temb, config.norm_num_groups, config.norm_eps, device)
            })
            .collect();
        let attentions = match kind {
            BlockKind::CrossAttn => (0..config.layers_per_block)
                .map(|_| transformer(config, out, config.heads(i), device))
                .collect(),
            BlockKind::Plain => Vec::new(),
        };
        let downsamplers = if is_final { Vec::new() } else { vec![Downsample2D::new(out, device)] };
        Self { resnets, attentions, downsamplers }
    }

    /// Returns the block's output and the states it hands to the up path (one per ResNet, one
    /// after the downsampler).
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        temb: Tensor<2>,
        context: Tensor<3>,
    ) -> (Tensor<4>, Vec<Tensor<4>>) {
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (j, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, temb.clone());
            if let Some(attention) = self.attentions.get(j) {
                x = attention.forward(x, context.clone());
            }
            states.push(x.clone());
        }
        for downsampler in &self.downsamplers {
            x = downsampler.forward(x);
            states.push(x.clone());
        }
        (x, states)
    }
}

fn transformer(config: &EncoderConfig, channels: usize, heads: usize, device: &Device) -> Transformer2D {
    // `upcast_attention` needs nothing here: attention always computes its scores in f32.
    Transformer2D::new(channels, heads, config.cross_attention_dim, config.norm_num_groups, device)
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (attention, resnet).
#[derive(Module, Debug)]
pub struct MidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
}

impl MidBlock {
    pub fn new(config: &EncoderConfig, device: &Device) -> Self {
        let channels = *config.block_out_channels.last().expect("validated: at least one block");
        let heads = config.heads(config.block_out_channels.len() - 1);
        let resnet = || {
            ResnetBlock2D::new(
                channels,
                channels,
                config.time_embed_dim(),
                config.norm_num_groups,
                config.norm_eps,
                device,
            )
        };
        Self {
            resnets: vec![resnet(), resnet()],
            attentions: vec![transformer(config, channels, heads, device)],
        }
    }

    pub fn forward(&self, x: Tensor<4>, temb: Tensor<2>, context: Tensor<3>) -> Tensor<4> {
        let mut x = self.resnets[0].forward(x, temb.clone());
        for (attention, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attention.forward(x, context.clone());
            x = resnet.forward(x, temb.clone());
        }
        x
    }
}

#[derive(Module, Debug)]
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2D>,
    pub upsamplers: Vec<Upsample2D>,
}

impl UpBlock {
    /// Up block `i` of the UNet described by `config` (`i = 0` is the deepest).
    pub fn new(config: &UNetConfig, kind: BlockKind, i: usize, device: &Device) -> Self {
        let encoder = &config.encoder;
        let n = encoder.block_out_channels.len();
        let reversed: Vec<usize> = encoder.block_out_channels.iter().rev().copied().collect();
        let prev_output = reversed[i.saturating_sub(1)];
        let out = reversed[i];
        let input = reversed[(i + 1).min(n - 1)];
        let layers = encoder.layers_per_block + 1;
        let is_final = i + 1 == n;
        let resnets = (0..layers)
            .map(|j| {
                let skip = if j + 1 == layers { input } else { out };
                let in_channels = if j == 0 { prev_output } else { out };
                ResnetBlock2D::new(
                    in_channels + skip,
                    out,
                    encoder.time_embed_dim(),
                    encoder.norm_num_groups,
                    encoder.norm_eps,
                    device,
                )
            })
            .collect();
        // Up block i mirrors down block n-1-i, and takes its number of heads.
        let heads = encoder.heads(n - 1 - i);
        let attentions = match kind {
            BlockKind::CrossAttn => (0..layers).map(|_| transformer(encoder, out, heads, device)).collect(),
            BlockKind::Plain => Vec::new(),
        };
        let upsamplers = if is_final { Vec::new() } else { vec![Upsample2D::new(out, device)] };
        Self { resnets, attentions, upsamplers }
    }

    /// `skips`: the down path's states not yet consumed; this block takes its share from the end
    /// and upsamples to the size of the next one (twice its own, unless a size was odd).
    pub fn forward(
        &self,
        mut x: Tensor<4>,
        skips: &mut Vec<Tensor<4>>,
        temb: Tensor<2>,
        context: Tensor<3>,
    ) -> Tensor<4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("the down path hands over one state per up-path ResNet");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), temb.clone());
            if let Some(attention) = self.attentions.get(j) {
                x = attention.forward(x, context.clone());
            }
        }
        for upsampler in &self.upsamplers {
            let [_, _, h, w] = x.dims();
            let size = skips.last().map_or([h * 2, w * 2], |next| {
                let [_, _, h, w] = next.dims();
                [h, w]
            });
            x = upsampler.forward(x, size);
        }
        x
    }
}
