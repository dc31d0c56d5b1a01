//! `Transformer2DModel` with one `BasicTransformerBlock`: how the UNet's feature maps attend to
//! themselves and to the prompt.

use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;

use super::attention::Attention;
use super::ops;
use super::resnet::{conv1x1, group_norm};

/// The transformer's input norm: diffusers fixes its epsilon at 1e-6, whatever the config says.
const TRANSFORMER_NORM_EPS: f64 = 1e-6;

#[derive(Module, Debug)]
pub struct Transformer2D {
    pub norm: GroupNorm,
    pub proj_in: Conv2d,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Conv2d,
}

impl Transformer2D {
    pub fn new(channels: usize, heads: usize, context_dim: usize, groups: usize, device: &Device) -> Self {
        Self {
            norm: group_norm(groups, channels, TRANSFORMER_NORM_EPS, device),
            proj_in: conv1x1(channels, channels, device),
            transformer_blocks: vec![BasicTransformerBlock::new(channels, heads, context_dim, device)],
            proj_out: conv1x1(channels, channels, device),
        }
    }

    /// # Shapes
    /// - `x`: `[b, c, h, w]`; `context`: `[b, tokens, context_dim]`
    /// - output: `[b, c, h, w]`
    pub fn forward(&self, x: Tensor<4>, context: Tensor<3>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = ops::conv(&self.proj_in, ops::group_norm(&self.norm, x));
        let mut x = x.reshape([b, c, h * w]).swap_dims(1, 2); // [b, h·w, c]
        for block in &self.transformer_blocks {
            x = block.forward(x, context.clone());
        }
        let x = x.swap_dims(1, 2).reshape([b, c, h, w]);
        ops::conv(&self.proj_out, x) + residual
    }
}

#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(dim: usize, heads: usize, context_dim: usize, device: &Device) -> Self {
        let norm = || LayerNormConfig::new(dim).init(device);
        Self {
            norm1: norm(),
            attn1: Attention::new(dim, dim, heads, device),
            norm2: norm(),
            attn2: Attention::new(dim, context_dim, heads, device),
            norm3: norm(),
            ff: FeedForward::new(dim, device),
        }
    }

    /// `[b, n, dim]` → `[b, n, dim]`
    pub fn forward(&self, x: Tensor<3>, context: Tensor<3>) -> Tensor<3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self.attn2.forward(self.norm2.forward(x.clone()), Some(context)) + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// GEGLU feed-forward: `proj` is the checkpoint's `ff.net.0.proj`, `out` its `ff.net.2`.
#[derive(Module, Debug)]
pub struct FeedForward {
    pub proj: Linear,
    pub out: Linear,
}

impl FeedForward {
    pub fn new(dim: usize, device: &Device) -> Self {
        let inner = dim * 4;
        Self {
            proj: LinearConfig::new(dim, inner * 2).init(device),
            out: LinearConfig::new(inner, dim).init(device),
        }
    }

    /// `[b, n, dim]` → `[b, n, dim]`: `out(h · gelu(gate))` where `[h | gate] = proj(x)`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let projected = ops::linear(&self.proj, x);
        let inner = projected.dims()[2] / 2;
        let hidden = projected.clone().narrow(2, 0, inner);
        let gate = projected.narrow(2, inner, inner);
        ops::linear(&self.out, hidden * gelu(gate))
    }
}
