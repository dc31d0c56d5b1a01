//! `ResnetBlock2D`: two 3×3 convolutions with group norm and SiLU, the time embedding added in
//! between, and a skip connection (1×1 when the width changes).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::ops;

#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Linear,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    /// Present when the block changes the number of channels.
    pub conv_shortcut: Option<Conv2d>,
}

/// A 3×3 convolution with padding 1 (and the given stride).
pub fn conv3x3(in_channels: usize, out_channels: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([in_channels, out_channels], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A 1×1 convolution.
pub fn conv1x1(in_channels: usize, out_channels: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([in_channels, out_channels], [1, 1]).init(device)
}

pub fn group_norm(groups: usize, channels: usize, eps: f64, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, channels).with_epsilon(eps).init(device)
}

impl ResnetBlock2D {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        temb_channels: usize,
        groups: usize,
        eps: f64,
        device: &Device,
    ) -> Self {
        Self {
            norm1: group_norm(groups, in_channels, eps, device),
            conv1: conv3x3(in_channels, out_channels, 1, device),
            time_emb_proj: LinearConfig::new(temb_channels, out_channels).init(device),
            norm2: group_norm(groups, out_channels, eps, device),
            conv2: conv3x3(out_channels, out_channels, 1, device),
            conv_shortcut: (in_channels != out_channels).then(|| conv1x1(in_channels, out_channels, device)),
        }
    }

    /// # Shapes
    /// - `x`: `[b, in, h, w]`, `temb`: `[b, temb_channels]`
    /// - output: `[b, out, h, w]`
    pub fn forward(&self, x: Tensor<4>, temb: Tensor<2>) -> Tensor<4> {
        let h = ops::conv(&self.conv1, ops::group_norm_silu(&self.norm1, x.clone()));
        let [b, c, _, _] = h.dims();
        let h = h + ops::linear(&self.time_emb_proj, silu(temb)).reshape([b, c, 1, 1]);
        let h = ops::conv(&self.conv2, ops::group_norm_silu(&self.norm2, h));
        let skip = match &self.conv_shortcut {
            Some(conv) => ops::conv(conv, x),
            None => x,
        };
        skip + h
    }
}
