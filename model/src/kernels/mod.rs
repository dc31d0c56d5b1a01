//! Hand-written GPU kernels for the ops that dominate a diffusion step, with burn's own ops as the
//! fallback wherever a kernel cannot run.
//!
//! The kernels are cubecl `#[cube]` functions, the way burn's own kernels are written, so the same
//! source compiles to WGSL for WebGPU in the browser and for Vulkan natively (lavapipe in CI).
//!
//! burn 0.22 picks the backend at run time: a `Tensor<D>` carries a dispatch primitive, and only a
//! tensor on a cubecl device (wgpu here) holds a `CubeTensor` with a GPU buffer a kernel can bind.
//! burn's `extension` feature exposes that primitive (`Tensor::try_into_primitive::<Cube>`); on a
//! Flex (CPU) tensor the downcast fails and the reference op runs instead. Nothing here changes
//! what the model computes until its layers call these functions.
//!
//! Every public function gives the same result as its reference within floating-point rounding;
//! `tests/kernels.rs` holds the tolerances.

#[cfg(feature = "wgpu")]
mod conv;
#[cfg(feature = "wgpu")]
mod cube;
#[cfg(feature = "wgpu")]
mod flash;

use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

/// Which implementation [`attention_with`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionKernel {
    /// This crate's flash attention: online softmax over tiles of keys held in workgroup memory,
    /// no score buffer. Needs nothing beyond core WGSL (no subgroups, no cooperative matrices).
    Flash,
    /// burn's own flash attention (cubek's "unit" routine), reachable without autotune only
    /// through burn-cubecl. It needs subgroups (WebGPU's `subgroups` feature); where its launch
    /// is refused as invalid burn falls back to its naive attention, score buffer and all.
    Burn,
    /// [`crate::nn::attention::attention`]: matmul, softmax, matmul, in query chunks.
    Reference,
}

impl AttentionKernel {
    pub const ALL: [AttentionKernel; 3] =
        [AttentionKernel::Flash, AttentionKernel::Burn, AttentionKernel::Reference];

    /// The name used in benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            AttentionKernel::Flash => "flash",
            AttentionKernel::Burn => "burn-flash-unit",
            AttentionKernel::Reference => "reference",
        }
    }
}

/// `softmax(q·kᵀ / √d) · v` by [`AttentionKernel::Flash`] where the tensors live on a cubecl
/// device (wgpu), else by [`crate::nn::attention::attention`].
///
/// f32 and f16 inputs; scores, softmax and the accumulator are f32 whatever the inputs' dtype,
/// as in the reference.
///
/// # Shapes
/// - `q`: `[batch·heads, queries, dim]`
/// - `k`, `v`: `[batch·heads, keys, dim]`
/// - output: `[batch·heads, queries, dim]`
pub fn flash_attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
    attention_with(AttentionKernel::Flash, q, k, v)
}

/// [`flash_attention`] by the implementation `kernel`, or by the reference where that one cannot
/// run (a CPU device, a dtype or head size it does not handle, a device without the features it
/// needs).
pub fn attention_with(kernel: AttentionKernel, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
    try_attention_with(kernel, &q, &k, &v).unwrap_or_else(|| crate::nn::attention::attention(q, k, v))
}

/// [`attention_with`] without the fallback: `None` where `kernel` cannot run on these inputs.
/// [`AttentionKernel::Reference`] always runs.
pub fn try_attention_with(
    kernel: AttentionKernel,
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
) -> Option<Tensor<3>> {
    match kernel {
        AttentionKernel::Reference => Some(crate::nn::attention::attention(q.clone(), k.clone(), v.clone())),
        #[cfg(feature = "wgpu")]
        AttentionKernel::Flash => flash::flash_attention(q, k, v),
        #[cfg(feature = "wgpu")]
        AttentionKernel::Burn => flash::burn_flash_attention(q, k, v),
        #[cfg(not(feature = "wgpu"))]
        AttentionKernel::Flash | AttentionKernel::Burn => None,
    }
}

/// Which implementation [`conv2d_with`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvKernel {
    /// This crate's implicit-GEMM convolution: tiles of the weight and of the gathered input
    /// patches in workgroup memory, a register block of outputs per invocation. Any kernel size,
    /// stride and padding; no groups, no dilation.
    ImplicitGemm,
    /// A 1×1 convolution (stride 1, no padding) as one batched matmul `W · x` over the pixels,
    /// with burn's public ops only: it runs on every backend.
    Matmul1x1,
    /// burn's `conv2d` (without autotune its direct kernel on wgpu).
    Reference,
}

impl ConvKernel {
    pub const ALL: [ConvKernel; 3] = [ConvKernel::ImplicitGemm, ConvKernel::Matmul1x1, ConvKernel::Reference];

    /// The name used in benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            ConvKernel::ImplicitGemm => "implicit-gemm",
            ConvKernel::Matmul1x1 => "matmul-1x1",
            ConvKernel::Reference => "reference",
        }
    }
}

/// A 2-d convolution (square stride and padding, no dilation, one group) by the fastest
/// implementation that applies: [`ConvKernel::Matmul1x1`] for 1×1 kernels, else
/// [`ConvKernel::ImplicitGemm`] on a cubecl device, else burn's `conv2d`.
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`; `weight`: `[out, channels, kh, kw]`; `bias`: `[out]`
/// - output: `[batch, out, (height + 2·padding − kh)/stride + 1, (width + 2·padding − kw)/stride + 1]`
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Tensor<4> {
    [ConvKernel::Matmul1x1, ConvKernel::ImplicitGemm]
        .into_iter()
        .find_map(|kernel| try_conv2d_with(kernel, &x, &weight, bias.as_ref(), stride, padding))
        .unwrap_or_else(|| reference_conv2d(x, weight, bias, stride, padding))
}

/// [`conv2d`] by the implementation `kernel`, or by burn's `conv2d` where that one cannot run.
pub fn conv2d_with(
    kernel: ConvKernel,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Tensor<4> {
    try_conv2d_with(kernel, &x, &weight, bias.as_ref(), stride, padding)
        .unwrap_or_else(|| reference_conv2d(x, weight, bias, stride, padding))
}

/// [`conv2d_with`] without the fallback: `None` where `kernel` cannot run on these inputs.
/// [`ConvKernel::Reference`] always runs.
pub fn try_conv2d_with(
    kernel: ConvKernel,
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Option<Tensor<4>> {
    match kernel {
        ConvKernel::Reference => {
            Some(reference_conv2d(x.clone(), weight.clone(), bias.cloned(), stride, padding))
        }
        ConvKernel::Matmul1x1 => conv1x1_matmul(x, weight, bias, stride, padding),
        #[cfg(feature = "wgpu")]
        ConvKernel::ImplicitGemm => conv::conv2d(x, weight, bias, stride, padding),
        #[cfg(not(feature = "wgpu"))]
        ConvKernel::ImplicitGemm => None,
    }
}

fn reference_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Tensor<4> {
    burn::tensor::module::conv2d(
        x,
        weight,
        bias,
        ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
    )
}

/// `out[n] = W · x[n]` with `x[n]` seen as `[channels, pixels]`: no data movement besides the
/// matmul itself (NCHW keeps each channel's pixels contiguous).
fn conv1x1_matmul(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
) -> Option<Tensor<4>> {
    let [batch, channels, height, width] = x.dims();
    let [out_channels, weight_channels, kh, kw] = weight.dims();
    if (kh, kw, stride, padding) != (1, 1, 1, 0) || weight_channels != channels {
        return None;
    }
    let w = weight.clone().reshape([1, out_channels, channels]).expand([batch, out_channels, channels]);
    let out = w.matmul(x.clone().reshape([batch, channels, height * width]));
    let out = match bias {
        Some(bias) => out + bias.clone().reshape([1, out_channels, 1]),
        None => out,
    };
    Some(out.reshape([batch, out_channels, height, width]))
}
