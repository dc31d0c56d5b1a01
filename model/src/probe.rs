//! The device probe: a small, fixed computation with the operations the model leans on — a 3×3
//! convolution, group normalisation and softmax attention — on inputs known in advance.
//!
//! It answers one question: does this device compute what the reference computes? The browser's
//! worker runs it on WebGPU; the native tests run it on lavapipe and on the CPU and compare both
//! with an f64 implementation; the end-to-end test compares the browser's numbers with the
//! native ones.

use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use serde::{Deserialize, Serialize};

use crate::Precision;
use crate::nn::attention;
use crate::nn::resnet::group_norm;
use burn::module::Param;

/// Group-norm epsilon, as diffusers' ResNet blocks use it.
pub const GROUP_NORM_EPS: f64 = 1e-5;
/// Number of groups in the probe's group norm.
pub const GROUP_NORM_GROUPS: usize = 4;

/// The probe's inputs: shapes chosen odd so that tiling mistakes show.
#[derive(Clone, Debug)]
pub struct ProbeInputs {
    /// `[2, 4, 7, 9]`
    pub conv_x: Input,
    /// `[6, 4, 3, 3]`
    pub conv_weight: Input,
    /// `[6]`
    pub conv_bias: Input,
    /// `[2, 8, 5, 3]`
    pub norm_x: Input,
    /// `[8]`
    pub norm_weight: Input,
    /// `[8]`
    pub norm_bias: Input,
    /// `[3, 10, 8]`: batch·heads, queries, head dim
    pub q: Input,
    /// `[3, 13, 8]`
    pub k: Input,
    /// `[3, 13, 8]`
    pub v: Input,
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
    /// `conv2d`, `group_norm` or `attention`.
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

impl ProbeInputs {
    /// The fixed inputs every run of the probe uses.
    pub fn fixed() -> Self {
        Self {
            conv_x: pattern(&[2, 4, 7, 9], 1),
            conv_weight: pattern(&[6, 4, 3, 3], 2),
            conv_bias: pattern(&[6], 3),
            norm_x: pattern(&[2, 8, 5, 3], 4),
            norm_weight: pattern(&[8], 5),
            norm_bias: pattern(&[8], 6),
            q: pattern(&[3, 10, 8], 7),
            k: pattern(&[3, 13, 8], 8),
            v: pattern(&[3, 13, 8], 9),
        }
    }
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
    let inputs = ProbeInputs::fixed();

    let conv = conv2d(
        inputs.conv_x.tensor::<4>(device, dtype),
        inputs.conv_weight.tensor::<4>(device, dtype),
        Some(inputs.conv_bias.tensor::<1>(device, dtype)),
        ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
    );
    // The model's own group norm layer (burn's), with the probe's weight and bias.
    let mut norm_layer =
        group_norm(GROUP_NORM_GROUPS, inputs.norm_weight.values.len(), GROUP_NORM_EPS, device);
    norm_layer.gamma = Some(Param::from_tensor(inputs.norm_weight.tensor::<1>(device, dtype)));
    norm_layer.beta = Some(Param::from_tensor(inputs.norm_bias.tensor::<1>(device, dtype)));
    let norm = norm_layer.forward(inputs.norm_x.tensor::<4>(device, dtype));
    let attended = attention(
        inputs.q.tensor::<3>(device, dtype),
        inputs.k.tensor::<3>(device, dtype),
        inputs.v.tensor::<3>(device, dtype),
    );

    Ok(vec![read("conv2d", conv).await?, read("group_norm", norm).await?, read("attention", attended).await?])
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
