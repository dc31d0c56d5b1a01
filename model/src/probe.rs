//! The device probe: a small, fixed computation with the operations the model leans on — 3×3
//! and 1×1 convolutions, group normalisation (with SiLU) and softmax attention — on inputs known
//! in advance, through the very functions the model's layers call (`nn::ops`: on a GPU, the
//! hand-written kernels of `crate::kernels`).
//!
//! It answers one question: does this device compute what the reference computes? The browser's
//! worker runs it on WebGPU; the native tests run it on lavapipe and on the CPU and compare both
//! with an f64 implementation; the end-to-end test compares the browser's numbers with the
//! native ones. The sizes are odd and some cases span several of a kernel's tiles (70 output
//! channels, 77 keys, a group of two statistics chunks), so that tiling mistakes show.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::Precision;
use crate::PrecisionExt;
use crate::nn::ops;
use crate::nn::resnet::group_norm;

/// Group-norm epsilon, as diffusers' ResNet blocks use it.
pub const GROUP_NORM_EPS: f64 = 1e-5;

/// One computation of the probe.
#[derive(Clone, Debug)]
pub struct ProbeCase {
    /// The name its output carries.
    pub name: &'static str,
    pub op: Op,
}

/// What a [`ProbeCase`] computes, on which inputs.
#[derive(Clone, Debug)]
pub enum Op {
    /// NCHW convolution, stride 1, zero padding `padding` on every side.
    Conv2d { x: Input, weight: Input, bias: Input, padding: usize },
    /// Group normalisation in `groups` groups (ε = [`GROUP_NORM_EPS`]), then SiLU if `silu`.
    GroupNorm { x: Input, weight: Input, bias: Input, groups: usize, silu: bool },
    /// `softmax(q·kᵀ/√d)·v`; `q`: `[batch·heads, queries, d]`, `k`, `v`: `[batch·heads, keys, d]`.
    Attention { q: Input, k: Input, v: Input },
}

impl Op {
    /// Every input, for checks on them all.
    pub fn inputs(&self) -> [&Input; 3] {
        match self {
            Op::Conv2d { x, weight, bias, .. } | Op::GroupNorm { x, weight, bias, .. } => [x, weight, bias],
            Op::Attention { q, k, v } => [q, k, v],
        }
    }
}

/// One named input tensor on the host.
#[derive(Clone, Debug)]
pub struct Input {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// One result of the probe, read back to the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutput {
    /// The [`ProbeCase`]'s name.
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Why the probe could not run.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeError {
    /// The device cannot compute in the requested precision (on WebGPU: no `shader-f16`).
    Unsupported(Precision),
    /// Reading a result back from the device failed.
    ReadBack(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Unsupported(precision) => {
                write!(f, "this device cannot compute in {precision}")?;
                if *precision == Precision::F16 {
                    f.write_str(" (the adapter does not offer `shader-f16`)")?;
                }
                Ok(())
            }
            ProbeError::ReadBack(message) => write!(f, "reading a result back failed: {message}"),
        }
    }
}

impl std::error::Error for ProbeError {}

/// Values in `[-1, 1]` from a fixed xorshift sequence, quantised to multiples of 1/1024 so that
/// they are exact in f16 too: the inputs are identical in both precisions, only arithmetic differs.
fn pattern(shape: &[usize], seed: u32) -> Input {
    let len = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9) | 1;
    let values = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            ((state >> 8) % 2049) as f32 / 1024.0 - 1.0
        })
        .collect();
    Input { shape: shape.to_vec(), values }
}

/// The fixed cases every run of the probe computes, in this order.
pub fn cases() -> Vec<ProbeCase> {
    let conv = |name, [n, c, h, w]: [usize; 4], out: usize, size: usize, seed: u32| ProbeCase {
        name,
        op: Op::Conv2d {
            x: pattern(&[n, c, h, w], seed),
            weight: pattern(&[out, c, size, size], seed + 1),
            bias: pattern(&[out], seed + 2),
            padding: size / 2,
        },
    };
    let norm = |name, shape: [usize; 4], groups: usize, silu: bool, seed: u32| ProbeCase {
        name,
        op: Op::GroupNorm {
            x: pattern(&shape, seed),
            weight: pattern(&[shape[1]], seed + 1),
            bias: pattern(&[shape[1]], seed + 2),
            groups,
            silu,
        },
    };
    let attention = |name, [bh, queries, keys, dim]: [usize; 4], seed: u32| ProbeCase {
        name,
        op: Op::Attention {
            q: pattern(&[bh, queries, dim], seed),
            k: pattern(&[bh, keys, dim], seed + 1),
            v: pattern(&[bh, keys, dim], seed + 2),
        },
    };
    vec![
        conv("conv2d", [2, 4, 7, 9], 6, 3, 1),
        conv("conv2d_wide", [1, 5, 9, 11], 70, 3, 10),
        conv("conv1x1", [2, 16, 5, 7], 24, 1, 13),
        norm("group_norm", [2, 8, 5, 3], 4, false, 4),
        norm("group_norm_silu", [1, 4, 48, 48], 1, true, 16),
        attention("attention", [3, 10, 13, 8], 7),
        attention("attention_long", [2, 70, 77, 40], 19),
    ]
}

impl Input {
    fn tensor<const D: usize>(&self, device: &Device, dtype: FloatDType) -> Tensor<D> {
        let data = TensorData::new(self.values.clone(), self.shape.clone());
        Tensor::<D>::from_data(data, device).cast(dtype)
    }
}

/// Runs the probe on `device` in `precision` and reads every result back asynchronously.
///
/// Results are returned as f32 whatever the compute precision.
pub async fn run(device: &Device, precision: Precision) -> Result<Vec<ProbeOutput>, ProbeError> {
    if !precision.is_supported_on(device) {
        return Err(ProbeError::Unsupported(precision));
    }
    let dtype = precision.dtype();
    let mut outputs = Vec::new();
    for case in cases() {
        let output = match &case.op {
            Op::Conv2d { x, weight, bias, padding } => {
                let [out, channels, kh, kw] = weight.shape[..] else { unreachable!("4-d by construction") };
                let p = *padding;
                let mut conv = Conv2dConfig::new([channels, out], [kh, kw])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .init(device);
                conv.weight = Param::from_tensor(weight.tensor::<4>(device, dtype));
                conv.bias = Some(Param::from_tensor(bias.tensor::<1>(device, dtype)));
                read(case.name, ops::conv(&conv, x.tensor::<4>(device, dtype))).await?
            }
            Op::GroupNorm { x, weight, bias, groups, silu } => {
                let mut norm = group_norm(*groups, weight.values.len(), GROUP_NORM_EPS, device);
                norm.gamma = Some(Param::from_tensor(weight.tensor::<1>(device, dtype)));
                norm.beta = Some(Param::from_tensor(bias.tensor::<1>(device, dtype)));
                let x = x.tensor::<4>(device, dtype);
                let y = if *silu { ops::group_norm_silu(&norm, x) } else { ops::group_norm(&norm, x) };
                read(case.name, y).await?
            }
            Op::Attention { q, k, v } => {
                let (q, k, v) = (
                    q.tensor::<3>(device, dtype),
                    k.tensor::<3>(device, dtype),
                    v.tensor::<3>(device, dtype),
                );
                read(case.name, ops::attention(q, k, v)).await?
            }
        };
        outputs.push(output);
    }
    Ok(outputs)
}

async fn read<const D: usize>(name: &str, tensor: Tensor<D>) -> Result<ProbeOutput, ProbeError> {
    let shape = tensor.dims().to_vec();
    let data = tensor
        .cast(FloatDType::F32)
        .into_data_async()
        .await
        .map_err(|e| ProbeError::ReadBack(format!("{e:?}")))?;
    let values = data.try_to_vec::<f32>().map_err(|e| ProbeError::ReadBack(format!("{e:?}")))?;
    Ok(ProbeOutput { name: name.to_owned(), shape, values })
}
