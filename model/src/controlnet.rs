//! ControlNet (`ControlNetModel`), named as the paper names its parts:
//!
//! - the **trainable copy** of the UNet's encoder: `conv_in`, `time_embedding`, `down_blocks`,
//!   `mid_block` — the same modules as [`UNet`]'s, with their own weights;
//! - the **hint encoder** ([`HintEncoder`], the paper's "tiny network E"): the condition image,
//!   full size, down to the latents' size and the first block's width;
//! - the **zero convolutions** ([`ZeroConv`]): one 1×1 convolution per skip connection and one for
//!   the mid block, initialised to zero so that a fresh ControlNet changes nothing.
//!
//! Its outputs are [`ControlResiduals`] for the **locked copy**, the UNet, scaled by the
//! **conditioning scale**, or in **guess mode** by `logspace(-1, 0, n)` from shallow to deep.

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::Precision;
use crate::config::ControlNetConfig;
use crate::nn::embeddings::TimestepEmbedding;
use crate::nn::ops;
use crate::nn::resnet::{conv1x1, conv3x3};
use crate::precision::cast_module;
use crate::unet::{
    ControlResiduals, DownBlock, EncoderParts, MidBlock, Trace, UNet, embed_time, encode, module_dtype,
};

/// The hint encoder: `conv_in`, then pairs of 3×3 convolutions (the second of each with stride 2)
/// with SiLU between, then the zero convolution `conv_out` to the first block's width.
#[derive(Module, Debug)]
pub struct HintEncoder {
    pub conv_in: Conv2d,
    pub blocks: Vec<Conv2d>,
    pub conv_out: ZeroConv,
}

impl HintEncoder {
    pub fn new(conditioning_channels: usize, widths: &[usize], out_channels: usize, device: &Device) -> Self {
        let blocks = widths
            .windows(2)
            .flat_map(|w| [conv3x3(w[0], w[0], 1, device), conv3x3(w[0], w[1], 2, device)])
            .collect();
        let last = *widths.last().expect("validated: at least one width");
        Self {
            conv_in: conv3x3(conditioning_channels, widths[0], 1, device),
            blocks,
            conv_out: ZeroConv::new(conv3x3(last, out_channels, 1, device)),
        }
    }

    /// # Shapes
    /// `[b, conditioning_channels, H, W]` → `[b, out_channels, H / 2^(n-1), W / 2^(n-1)]`
    pub fn forward(&self, condition: Tensor<4>) -> Tensor<4> {
        let mut x = silu(ops::conv(&self.conv_in, condition));
        for block in &self.blocks {
            x = silu(ops::conv(block, x));
        }
        self.conv_out.forward(x)
    }
}

/// A convolution initialised to zero: the paper's zero convolution. Until training moves its
/// weights, whatever flows through it contributes nothing.
#[derive(Module, Debug)]
pub struct ZeroConv {
    pub conv: Conv2d,
}

impl ZeroConv {
    /// Wraps `conv`, zeroing its weight and bias.
    pub fn new(conv: Conv2d) -> Self {
        let mut conv = conv;
        conv.weight = conv.weight.init_mapper(|w| w.zeros_like());
        conv.bias = conv.bias.map(|b| b.init_mapper(|b| b.zeros_like()));
        Self { conv }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        ops::conv(&self.conv, x)
    }
}

/// How a ControlNet's residuals are scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ControlScale {
    /// The conditioning scale (the "control weight").
    pub scale: f64,
    /// Guess mode: residual `i` of `n` is further scaled by `10^(i/(n-1) - 1)`, from 0.1 for the
    /// shallowest to 1 for the mid block, so the ControlNet recognises content without a prompt.
    pub guess_mode: bool,
}

impl Default for ControlScale {
    fn default() -> Self {
        Self { scale: 1.0, guess_mode: false }
    }
}

impl ControlScale {
    /// The factor for each of `n` residuals (the down residuals then the mid one).
    pub fn factors(&self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let guess =
                    if self.guess_mode && n > 1 { 10f64.powf(-1.0 + i as f64 / (n - 1) as f64) } else { 1.0 };
                guess * self.scale
            })
            .collect()
    }
}

#[derive(Module, Debug)]
pub struct ControlNet {
    pub conv_in: Conv2d,
    pub time_embedding: TimestepEmbedding,
    /// Named as the checkpoint names it: the hint encoder.
    pub controlnet_cond_embedding: HintEncoder,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    /// The zero convolutions on the skip connections.
    pub controlnet_down_blocks: Vec<ZeroConv>,
    /// The zero convolution on the mid block.
    pub controlnet_mid_block: ZeroConv,
    #[module(skip)]
    pub config: ControlNetConfig,
}

impl ControlNet {
    /// A ControlNet with the module tree `config` describes and fresh weights.
    pub fn new(config: &ControlNetConfig, device: &Device) -> Self {
        let encoder = &config.encoder;
        let channels = &encoder.block_out_channels;
        let EncoderParts { conv_in, time_embedding, down_blocks, mid_block } =
            EncoderParts::new(encoder, device);
        // One zero convolution per skip connection: conv_in's, then each ResNet's and downsampler's.
        let mut zero_convs = vec![ZeroConv::new(conv1x1(channels[0], channels[0], device))];
        for (i, &c) in channels.iter().enumerate() {
            let per_block = encoder.layers_per_block + usize::from(i + 1 < channels.len());
            zero_convs.extend((0..per_block).map(|_| ZeroConv::new(conv1x1(c, c, device))));
        }
        let last = *channels.last().expect("validated config");
        Self {
            conv_in,
            time_embedding,
            controlnet_cond_embedding: HintEncoder::new(
                config.conditioning_channels,
                &config.conditioning_embedding_out_channels,
                channels[0],
                device,
            ),
            down_blocks,
            mid_block,
            controlnet_down_blocks: zero_convs,
            controlnet_mid_block: ZeroConv::new(conv1x1(last, last, device)),
            config: config.clone(),
        }
    }

    /// `ControlNetModel.from_unet`: the trainable copy starts as the UNet's encoder, the hint
    /// encoder fresh, every zero convolution zero. Such a ControlNet leaves the UNet's output
    /// unchanged.
    pub fn from_unet(unet: &UNet) -> Self {
        let config = ControlNetConfig::from_unet(&unet.config);
        let device = unet.conv_in.weight.val().device();
        let fresh = cast_module(Self::new(&config, &device), Precision::from_dtype(unet.dtype()));
        Self {
            conv_in: unet.conv_in.clone(),
            time_embedding: unet.time_embedding.clone(),
            down_blocks: unet.down_blocks.clone(),
            mid_block: unet.mid_block.clone(),
            ..fresh
        }
    }

    /// The residuals this ControlNet adds to the UNet for `condition`.
    ///
    /// # Shapes
    /// - `sample`: `[b, in_channels, h, w]`; `context`: `[b, tokens, cross_attention_dim]`
    /// - `condition`: `[b, conditioning_channels, 8h, 8w]` in `[0, 1]`, RGB
    /// - output: one residual per skip connection (shaped like it) and one for the mid block
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: Tensor<3>,
        condition: Tensor<4>,
        scale: ControlScale,
    ) -> ControlResiduals {
        self.forward_traced(sample, timesteps, context, condition, scale, None)
    }

    /// [`Self::forward`], recording intermediates into `trace`.
    pub fn forward_traced(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: Tensor<3>,
        condition: Tensor<4>,
        scale: ControlScale,
        mut trace: Option<&mut Trace>,
    ) -> ControlResiduals {
        let dtype = module_dtype(&self.conv_in);
        let device = sample.device();
        let [batch, _, _, _] = sample.dims();
        let sample = sample.cast(dtype);
        let context = context.cast(dtype);
        let mut condition = condition.cast(dtype);
        if self.config.controlnet_conditioning_channel_order == "bgr" {
            condition = condition.flip([1]);
        }

        // 1. time
        let temb = embed_time(
            &self.config.encoder,
            &self.time_embedding,
            timesteps,
            batch,
            dtype,
            &device,
            &mut trace,
        );

        // 2. pre-process: the latents plus the hint encoder's reading of the condition
        let x = ops::conv(&self.conv_in, sample);
        Trace::record(&mut trace, "conv_in", &x);
        let hint = self.controlnet_cond_embedding.forward(condition);
        Trace::record(&mut trace, "controlnet_cond_embedding", &hint);
        let x = x + hint;

        // 3. down (the trainable copy)
        let (x, states) = encode(&self.down_blocks, x, &temb, &context, &mut trace);

        // 4. mid
        let x = self.mid_block.forward(x, temb, context);
        Trace::record(&mut trace, "mid_block", &x);

        // 5. zero convolutions, 6. scaling
        assert_eq!(states.len(), self.controlnet_down_blocks.len(), "one zero conv per skip connection");
        let factors = scale.factors(states.len() + 1);
        let pool = |r: Tensor<4>| if self.config.global_pool_conditions { r.mean_dims(&[2, 3]) } else { r };
        let down = states
            .into_iter()
            .zip(&self.controlnet_down_blocks)
            .zip(&factors)
            .map(|((state, zero_conv), &factor)| pool(zero_conv.forward(state) * factor))
            .collect();
        let mid = pool(self.controlnet_mid_block.forward(x) * factors[factors.len() - 1]);
        ControlResiduals { down, mid }
    }
}
