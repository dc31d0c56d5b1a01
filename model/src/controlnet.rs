//! ControlNet (`ControlNetModel`), named as the paper names its parts:
//!
//! - the **trainable copy** of the UNet's encoder: `conv_in`, `time_embedding`, `down_blocks`,
//!   `mid_block` — the same modules as [`UNet`]'s, with their own weights;
//! - the **hint encoder** ([`HintEncoder`], the paper's "tiny network E"): the condition image,
//!   full size, down to the latents' size and the first block's width;
//! - the **zero convolutions** ([`ZeroConv`]): one 1×1 convolution per skip connection and one for
//!   the mid block, initialised to zero so that a fresh ControlNet changes nothing.
//!
//! Its outputs are [`ControlResiduals`] for the **locked copy**, the UNet; [`Steering`] scales
//! them: the **conditioning scale**, **guess mode**'s `logspace(-1, 0, n)` from shallow to deep,
//! A1111's control modes, pooled conditions and the steps a unit acts on, all in one place.

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::config::ControlNetConfig;
use crate::nn::embeddings::TimestepEmbedding;
use crate::nn::ops;
use crate::nn::resnet::{conv1x1, conv3x3};
use crate::precision::cast_module;
use vocabulary::{ControlMode, UnitSettings};

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

/// How one control unit's residuals enter the UNet at one step: every factor in one place, as
/// diffusers' `ControlNetModel.forward` applies its own in one block ("6. scaling"), with the
/// pipeline's part (guess mode, start/end) and A1111's control modes beside them.
#[derive(Clone, Debug, PartialEq)]
pub struct Steering {
    /// One factor per residual: the down residuals (shallowest first), then the mid block's.
    pub factors: Vec<f64>,
    /// The control acts on the conditional half of the guidance batch only: the ControlNet runs
    /// on that half, and the unconditional half gets zeros.
    pub cond_only: bool,
    /// Each residual is averaged over the image (`global_pool_conditions`: shuffle ControlNets).
    pub pooled: bool,
}

impl Steering {
    /// How `unit` steers at step `step` of `total` a UNet through a ControlNet with `residuals`
    /// residuals (13 for SD1.5); `None` when the unit is not active at this step.
    pub fn new(
        unit: &UnitSettings,
        global_pool_conditions: bool,
        residuals: usize,
        step: usize,
        total: usize,
    ) -> Option<Self> {
        // diffusers' `controlnet_keep`: outside [start, end] the unit adds nothing (diffusers runs
        // it with a scale of 0; we skip it).
        if !unit.active_at(step, total) {
            return None;
        }
        let n = residuals;
        // The pipeline runs a pooled ControlNet in guess mode (conditional half only), but its
        // forward skips guess mode's logspace for it.
        let guess = unit.guess_mode || global_pool_conditions;
        let logspace = guess && !global_pool_conditions;
        // A1111's soft injection, for every control mode but Balanced.
        let soft = unit.mode != ControlMode::Balanced;
        let factors = (0..n)
            .map(|i| {
                let mut factor = unit.scale;
                if logspace && n > 1 {
                    // `torch.logspace(-1, 0, n)`: 0.1 for the shallowest residual, 1 for the mid block.
                    factor *= 10f64.powf(-1.0 + i as f64 / (n - 1) as f64);
                }
                if soft {
                    // `0.825 ** (12 - i)` for SD1.5's 13 residuals.
                    factor *= 0.825f64.powi((n - 1 - i) as i32);
                }
                factor
            })
            .collect();
        // A1111's CFG injection ("ControlNet is more important") masks the unconditional half,
        // as guess mode does.
        let cond_only = guess || unit.mode == ControlMode::ControlNetMoreImportant;
        Some(Self { factors, cond_only, pooled: global_pool_conditions })
    }

    /// The residuals scaled (and pooled) as this steering says.
    pub fn apply(&self, residuals: ControlResiduals) -> ControlResiduals {
        let scaled = residuals.scale_each(&self.factors);
        if !self.pooled {
            return scaled;
        }
        let pool = |r: Tensor<4>| r.mean_dims(&[2, 3]);
        ControlResiduals { down: scaled.down.into_iter().map(pool).collect(), mid: pool(scaled.mid) }
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
        let fresh = cast_module(Self::new(&config, &device), crate::precision::of_dtype(unet.dtype()));
        Self {
            conv_in: unet.conv_in.clone(),
            time_embedding: unet.time_embedding.clone(),
            down_blocks: unet.down_blocks.clone(),
            mid_block: unet.mid_block.clone(),
            ..fresh
        }
    }

    /// The paper's ablation: every zero convolution replaced by an ordinary convolution with
    /// Gaussian weights (He's initialisation, standard deviation `√(2 / fan_in)`, drawn from the
    /// device's generator) and zero biases. Unlike [`Self::from_unet`]'s, such a ControlNet
    /// changes the UNet's output before any training.
    pub fn with_gaussian_convs(self) -> Self {
        fn gaussian(zero: ZeroConv) -> ZeroConv {
            let mut conv = zero.conv;
            conv.weight = conv.weight.init_mapper(|w| {
                let [_, fan_in, kh, kw] = w.dims();
                let std = (2.0 / (fan_in * kh * kw) as f64).sqrt();
                let device = w.device();
                Tensor::<4>::random(w.shape(), burn::tensor::Distribution::Normal(0.0, std), &device)
                    .cast(w.dtype())
            });
            ZeroConv { conv }
        }
        Self {
            controlnet_down_blocks: self.controlnet_down_blocks.into_iter().map(gaussian).collect(),
            controlnet_mid_block: gaussian(self.controlnet_mid_block),
            ..self
        }
    }

    /// The residuals this ControlNet makes for `condition`, before any [`Steering`] (the zero
    /// convolutions' outputs as they are).
    ///
    /// # Shapes
    /// - `sample`: `[b, in_channels, h, w]`; `context`: `[b, tokens, cross_attention_dim]`
    /// - `condition`: `[b, conditioning_channels, f·h, f·w]` in `[0, 1]`, RGB, `f` the hint
    ///   encoder's downscaling (8 for SD1.5)
    /// - output: one residual per skip connection (shaped like it) and one for the mid block
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: Tensor<3>,
        condition: Tensor<4>,
    ) -> ControlResiduals {
        self.forward_traced(sample, timesteps, context, condition, None)
    }

    /// How many times larger than the latents its condition images are.
    pub fn hint_scale(&self) -> usize {
        self.config.hint_scale()
    }

    /// How many residuals [`Self::forward`] makes: one per zero convolution.
    pub fn residual_count(&self) -> usize {
        self.controlnet_down_blocks.len() + 1
    }

    /// [`Self::forward`], recording intermediates into `trace`.
    pub fn forward_traced(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: Tensor<3>,
        condition: Tensor<4>,
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

        // 5. zero convolutions (6., the scaling, is `Steering`'s)
        assert_eq!(states.len(), self.controlnet_down_blocks.len(), "one zero conv per skip connection");
        let down = states
            .into_iter()
            .zip(&self.controlnet_down_blocks)
            .map(|(state, zc)| zc.forward(state))
            .collect();
        let mid = self.controlnet_mid_block.forward(x);
        ControlResiduals { down, mid }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steer(unit: UnitSettings, pooled: bool) -> Steering {
        Steering::new(&unit, pooled, 13, 0, 1).expect("active")
    }

    #[test]
    fn every_factor_comes_from_one_place() {
        let unit = UnitSettings { scale: 0.5, ..UnitSettings::default() };
        let balanced = steer(unit, false);
        assert_eq!(balanced.factors, vec![0.5; 13]);
        assert!(!balanced.cond_only && !balanced.pooled);

        // A1111: soft injection for both modes but Balanced, the mask for "ControlNet".
        let prompt = steer(UnitSettings { mode: ControlMode::PromptMoreImportant, ..unit }, false);
        let controlnet = steer(UnitSettings { mode: ControlMode::ControlNetMoreImportant, ..unit }, false);
        for (i, (&p, &c)) in prompt.factors.iter().zip(&controlnet.factors).enumerate() {
            let soft = 0.5 * 0.825f64.powi(12 - i as i32);
            assert!((p - soft).abs() < 1e-15 && (c - soft).abs() < 1e-15, "residual {i}");
        }
        assert!(!prompt.cond_only && controlnet.cond_only);

        // Guess mode: logspace(-1, 0, 13), conditional half only.
        let guess = steer(UnitSettings { guess_mode: true, ..unit }, false);
        assert!((guess.factors[0] - 0.05).abs() < 1e-15 && (guess.factors[12] - 0.5).abs() < 1e-15);
        assert!(guess.cond_only);

        // Pooled conditions: conditional half, no logspace even in guess mode (diffusers).
        let pooled = steer(UnitSettings { guess_mode: true, ..unit }, true);
        assert_eq!(pooled.factors, vec![0.5; 13]);
        assert!(pooled.cond_only && pooled.pooled);
    }

    #[test]
    fn a_unit_acts_only_within_its_steps() {
        let unit = UnitSettings { start: 0.5, end: 1.0, ..UnitSettings::default() };
        let active: Vec<bool> =
            (0..4).map(|step| Steering::new(&unit, false, 13, step, 4).is_some()).collect();
        assert_eq!(active, [false, false, true, true]);
    }
}
