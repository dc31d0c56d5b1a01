//! The UNet (`UNet2DConditionModel`): the locked copy that predicts noise, and the one entry
//! point through which ControlNets steer it.

mod blocks;

use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::silu;

pub use blocks::{DownBlock, MidBlock, UpBlock};

use crate::config::{EncoderConfig, UNetConfig};
use crate::nn::embeddings::{TimestepEmbedding, timestep_features};
use crate::nn::ops;
use crate::nn::resnet::{conv3x3, group_norm};

/// What ControlNets add to the UNet: one residual per skip connection of the down path (12 for
/// SD1.5) and one for the mid block. Several ControlNets' residuals sum.
#[derive(Clone, Debug)]
pub struct ControlResiduals {
    pub down: Vec<Tensor<4>>,
    pub mid: Tensor<4>,
}

/// The element-wise sum of two sets of residuals: two ControlNets steering together.
impl std::ops::Add for ControlResiduals {
    type Output = ControlResiduals;

    fn add(self, other: ControlResiduals) -> ControlResiduals {
        assert_eq!(self.down.len(), other.down.len(), "residual sets of different lengths");
        ControlResiduals {
            down: self.down.into_iter().zip(other.down).map(|(a, b)| a + b).collect(),
            mid: self.mid + other.mid,
        }
    }
}

impl ControlResiduals {
    /// Residual `i` multiplied by `factors[i]` (the down residuals, then the mid one).
    pub fn scale_each(self, factors: &[f64]) -> ControlResiduals {
        assert_eq!(factors.len(), self.down.len() + 1, "one factor per residual");
        ControlResiduals {
            down: self.down.into_iter().zip(factors).map(|(r, &f)| r * f).collect(),
            mid: self.mid * factors[factors.len() - 1],
        }
    }
}

/// Intermediate results recorded by a forward pass, for debugging and per-layer tests: names as
/// diffusers' module paths (`conv_in`, `down_blocks.0`, …).
#[derive(Debug, Default)]
pub struct Trace {
    pub entries: Vec<(String, Vec<usize>, Tensor<1>)>,
}

impl Trace {
    pub fn record<const D: usize>(trace: &mut Option<&mut Trace>, name: &str, tensor: &Tensor<D>) {
        if let Some(trace) = trace {
            let shape = tensor.dims().to_vec();
            let flat = tensor.clone().reshape([shape.iter().product::<usize>()]);
            trace.entries.push((name.to_owned(), shape, flat));
        }
    }

    pub fn get(&self, name: &str) -> Option<&(String, Vec<usize>, Tensor<1>)> {
        self.entries.iter().find(|(n, _, _)| n == name)
    }
}

/// The dtype a module computes in: its first convolution's.
pub(crate) fn module_dtype(conv: &Conv2d) -> FloatDType {
    conv.weight.val().dtype().into()
}

/// Sinusoidal features → time embedding, for `timesteps` given once or once per batch element.
pub(crate) fn embed_time(
    config: &EncoderConfig,
    embedding: &TimestepEmbedding,
    timesteps: &[f32],
    batch: usize,
    dtype: FloatDType,
    device: &Device,
    trace: &mut Option<&mut Trace>,
) -> Tensor<2> {
    assert!(
        timesteps.len() == 1 || timesteps.len() == batch,
        "{} timesteps for a batch of {batch}",
        timesteps.len()
    );
    let timesteps: Vec<f32> = (0..batch).map(|i| timesteps[i.min(timesteps.len() - 1)]).collect();
    let dim = config.block_out_channels[0];
    let features = timestep_features(&timesteps, dim, config.flip_sin_to_cos, config.freq_shift);
    let features = Tensor::<2>::from_data(TensorData::new(features, [batch, dim]), device).cast(dtype);
    Trace::record(trace, "time_proj", &features);
    let emb = embedding.forward(features);
    Trace::record(trace, "time_embedding", &emb);
    emb
}

/// The encoder's modules, built the same way for the UNet and for the ControlNet's trainable copy.
pub(crate) struct EncoderParts {
    pub conv_in: Conv2d,
    pub time_embedding: TimestepEmbedding,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
}

impl EncoderParts {
    pub fn new(config: &EncoderConfig, device: &Device) -> Self {
        let channels = &config.block_out_channels;
        let kinds = config.down_block_kinds().expect("validated config");
        Self {
            conv_in: conv3x3(config.in_channels, channels[0], 1, device),
            time_embedding: TimestepEmbedding::new(channels[0], config.time_embed_dim(), device),
            down_blocks: kinds
                .iter()
                .enumerate()
                .map(|(i, &k)| DownBlock::new(config, k, i, device))
                .collect(),
            mid_block: MidBlock::new(config, device),
        }
    }
}

/// The down path shared by the UNet and the ControlNet: returns the mid block's input and every
/// state the skip connections carry (conv_in's output first).
pub(crate) fn encode(
    down_blocks: &[DownBlock],
    mut x: Tensor<4>,
    temb: &Tensor<2>,
    context: &Tensor<3>,
    trace: &mut Option<&mut Trace>,
) -> (Tensor<4>, Vec<Tensor<4>>) {
    let mut states = vec![x.clone()];
    for (i, block) in down_blocks.iter().enumerate() {
        let (out, block_states) = block.forward(x, temb.clone(), context.clone());
        Trace::record(trace, &format!("down_blocks.{i}"), &out);
        states.extend(block_states);
        x = out;
    }
    (x, states)
}

#[derive(Module, Debug)]
pub struct UNet {
    pub conv_in: Conv2d,
    pub time_embedding: TimestepEmbedding,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    #[module(skip)]
    pub config: UNetConfig,
}

impl UNet {
    /// A UNet with the module tree `config` describes and freshly initialised weights (load a
    /// checkpoint's with [`crate::weights`]).
    pub fn new(config: &UNetConfig, device: &Device) -> Self {
        let encoder = &config.encoder;
        let first = encoder.block_out_channels[0];
        let up_kinds = config.up_block_kinds().expect("validated config");
        let EncoderParts { conv_in, time_embedding, down_blocks, mid_block } =
            EncoderParts::new(encoder, device);
        Self {
            conv_in,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks: up_kinds
                .iter()
                .enumerate()
                .map(|(i, &k)| UpBlock::new(config, k, i, device))
                .collect(),
            conv_norm_out: group_norm(encoder.norm_num_groups, first, encoder.norm_eps, device),
            conv_out: conv3x3(first, config.out_channels, 1, device),
            config: config.clone(),
        }
    }

    /// The dtype the UNet computes in (its weights').
    pub fn dtype(&self) -> FloatDType {
        module_dtype(&self.conv_in)
    }

    /// Predicts the noise in `sample` at `timesteps` given the text `context`, steered by
    /// ControlNet `residuals` when given (the sum of every unit's).
    ///
    /// # Shapes
    /// - `sample`: `[b, in_channels, h, w]` (latents, any h and w)
    /// - `timesteps`: one, or one per batch element
    /// - `context`: `[b, tokens, cross_attention_dim]`
    /// - output: `[b, out_channels, h, w]`, in the UNet's dtype
    pub fn forward(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: Tensor<3>,
        residuals: Option<&ControlResiduals>,
    ) -> Tensor<4> {
        self.forward_traced(sample, timesteps, context, residuals, None)
    }

    /// [`Self::forward`], recording intermediates into `trace`.
    pub fn forward_traced(
        &self,
        sample: Tensor<4>,
        timesteps: &[f32],
        context: Tensor<3>,
        residuals: Option<&ControlResiduals>,
        mut trace: Option<&mut Trace>,
    ) -> Tensor<4> {
        let dtype = self.dtype();
        let device = sample.device();
        let [batch, _, _, _] = sample.dims();
        let sample = sample.cast(dtype);
        let context = context.cast(dtype);

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

        // 2. pre-process
        let x = ops::conv(&self.conv_in, sample); // [b, c0, h, w]
        Trace::record(&mut trace, "conv_in", &x);

        // 3. down
        let (x, mut skips) = encode(&self.down_blocks, x, &temb, &context, &mut trace);
        if let Some(residuals) = residuals {
            assert_eq!(
                residuals.down.len(),
                skips.len(),
                "{} ControlNet residuals for {} skip connections",
                residuals.down.len(),
                skips.len()
            );
            skips = skips.into_iter().zip(&residuals.down).map(|(s, r)| s + r.clone().cast(dtype)).collect();
        }

        // 4. mid
        let mut x = self.mid_block.forward(x, temb.clone(), context.clone());
        Trace::record(&mut trace, "mid_block", &x);
        if let Some(residuals) = residuals {
            x = x + residuals.mid.clone().cast(dtype);
        }

        // 5. up
        for (i, block) in self.up_blocks.iter().enumerate() {
            x = block.forward(x, &mut skips, temb.clone(), context.clone());
            Trace::record(&mut trace, &format!("up_blocks.{i}"), &x);
        }

        // 6. post-process
        let x = ops::group_norm(&self.conv_norm_out, x);
        Trace::record(&mut trace, "conv_norm_out", &x);
        ops::conv(&self.conv_out, silu(x))
    }
}
