//! Hand-written GPU kernels for the ops that dominate a diffusion step, with burn's own ops as the
//! fallback wherever a kernel cannot run.
//!
//! The kernels are cubecl `#[cube]` functions, the way burn's own kernels are written, so the same
//! source compiles to WGSL for WebGPU in the browser and for Vulkan natively (lavapipe in CI).
//!
//! burn 0.22 picks the backend at run time: a `Tensor<D>` carries a dispatch primitive, and only a
//! tensor on a cubecl device (wgpu here) holds a `CubeTensor` with a GPU buffer a kernel can bind.
//! burn's `extension` feature exposes that primitive (`Tensor::try_into_primitive::<Cube>`); on a
//! Flex (CPU) tensor the downcast fails and the reference op runs instead. The model's layers
//! reach these kernels through `crate::nn::ops`, by the set [`select`]ed ([`Kernels::FAST`] unless
//! told otherwise).
//!
//! Every public function gives the same result as its reference within floating-point rounding;
//! `tests/kernels.rs` holds the tolerances.

mod conv;
pub use conv::ConvTiles;
mod cube;
mod flash;
mod norm;
#[cfg(not(target_family = "wasm"))]
pub mod profile;

use std::sync::RwLock;

use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::ops::ConvOptions;

/// Which implementation the model's layers use for each kind of op: see [`select`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernels {
    pub attention: AttentionKernel,
    /// [`ConvKernel::ImplicitGemm`]: 1×1 convolutions as matmuls and the rest by the implicit
    /// GEMM; [`ConvKernel::Matmul1x1`]: only the 1×1 ones as matmuls; [`ConvKernel::Reference`]:
    /// burn's `conv2d` for all.
    pub conv: ConvKernel,
    pub norm: NormKernel,
}

impl Kernels {
    /// This crate's kernels for every op: the default.
    pub const FAST: Kernels = Kernels {
        attention: AttentionKernel::Flash,
        conv: ConvKernel::ImplicitGemm,
        norm: NormKernel::Fused,
    };
    /// burn's ops everywhere: the model as it computes without the `kernels` feature.
    pub const REFERENCE: Kernels = Kernels {
        attention: AttentionKernel::Reference,
        conv: ConvKernel::Reference,
        norm: NormKernel::Reference,
    };

    /// `fast` or `reference`, as benchmark flags and output name them.
    pub fn parse(name: &str) -> Option<Kernels> {
        match name {
            "fast" => Some(Kernels::FAST),
            "reference" => Some(Kernels::REFERENCE),
            _ => None,
        }
    }

    /// `fast`, `reference`, or the three kernels' names.
    pub fn name(self) -> String {
        match self {
            Kernels::FAST => "fast".into(),
            Kernels::REFERENCE => "reference".into(),
            Kernels { attention, conv, norm } => {
                format!("attention={},conv={},norm={}", attention.name(), conv.name(), norm.name())
            }
        }
    }
}

static SELECTED: RwLock<Kernels> = RwLock::new(Kernels::FAST);

/// Makes the model's layers use `kernels` from now on, for every model in the process (the
/// benchmark compares them; nothing else needs to). On a CPU device the reference runs whatever
/// is selected.
pub fn select(kernels: Kernels) {
    *SELECTED.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = kernels;
}

/// The kernels the model's layers use now ([`Kernels::FAST`] unless [`select`]ed otherwise).
pub fn selected() -> Kernels {
    *SELECTED.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `attention(q, k, v)` by the [`selected`] kernel (see [`attention_with`]).
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
    attention_with(selected().attention, q, k, v)
}

/// `conv.forward(x)` by the [`selected`] kernel where the tensors live on a cubecl device and the
/// module is one the kernels handle (one group, no dilation, square stride), else burn's.
pub fn conv_module(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let kernels = conv_kernels(selected().conv);
    let padding = match conv.padding {
        PaddingConfig2d::Valid => Some(Padding::same(0)),
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some(Padding { top, bottom, left, right }),
        PaddingConfig2d::Same => None,
    };
    let [stride_h, stride_w] = conv.stride;
    let plain = conv.groups == 1 && conv.dilation == [1, 1] && stride_h == stride_w;
    let Some(padding) = padding.filter(|_| plain && !kernels.is_empty() && cube::to_cube(&x).is_some())
    else {
        return conv.forward(x);
    };
    let weight = conv.weight.val();
    let bias = conv.bias.as_ref().map(|bias| bias.val());
    kernels
        .iter()
        .find_map(|&kernel| try_conv2d_with(kernel, &x, &weight, bias.as_ref(), stride_h, padding))
        .unwrap_or_else(|| conv.forward(x))
}

/// The kernels a [`Kernels::conv`] choice stands for, in the order they are tried (the first
/// that applies runs; none: burn's `conv2d`).
fn conv_kernels(choice: ConvKernel) -> &'static [ConvKernel] {
    match choice {
        ConvKernel::ImplicitGemm => &[ConvKernel::Matmul1x1, ConvKernel::ImplicitGemm],
        ConvKernel::Matmul1x1 => &[ConvKernel::Matmul1x1],
        ConvKernel::Reference => &[],
    }
}

/// `norm.forward(x)`, then SiLU if `then_silu`, by the [`selected`] kernel where the tensor lives
/// on a cubecl device, else by burn's ops.
pub fn group_norm_module(norm: &GroupNorm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
    group_norm_with(selected().norm, norm, x, then_silu)
}

/// Which implementation [`group_norm_with`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormKernel {
    /// Two launches: the groups' statistics in chunks, then normalisation, affine and the
    /// optional SiLU in one pass. f32 arithmetic whatever the tensor's dtype.
    Fused,
    /// burn's `GroupNorm` (and `silu`).
    Reference,
}

impl NormKernel {
    pub const ALL: [NormKernel; 2] = [NormKernel::Fused, NormKernel::Reference];

    /// The name used in benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            NormKernel::Fused => "fused",
            NormKernel::Reference => "reference",
        }
    }
}

/// `norm.forward(x)` (then SiLU if `then_silu`) by `kernel`, or by burn's ops where that one
/// cannot run.
pub fn group_norm_with(kernel: NormKernel, norm: &GroupNorm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
    if kernel == NormKernel::Fused
        && let Some(out) = try_group_norm(norm, &x, then_silu)
    {
        return out;
    }
    let y = norm.forward(x);
    if then_silu { silu(y) } else { y }
}

/// [`NormKernel::Fused`] without the fallback: `None` where it cannot run on `x`.
pub fn try_group_norm(norm: &GroupNorm, x: &Tensor<4>, then_silu: bool) -> Option<Tensor<4>> {
    if x.dims()[1] != norm.num_channels || (norm.affine && (norm.gamma.is_none() || norm.beta.is_none())) {
        return None;
    }
    let gamma = norm.gamma.as_ref().filter(|_| norm.affine).map(|gamma| gamma.val());
    let beta = norm.beta.as_ref().filter(|_| norm.affine).map(|beta| beta.val());
    norm::group_norm(x, norm.num_groups, gamma.as_ref(), beta.as_ref(), norm.epsilon, then_silu)
}

/// A convolution's zero padding on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    /// `padding` on all four sides.
    pub const fn same(padding: usize) -> Self {
        Padding { top: padding, bottom: padding, left: padding, right: padding }
    }

    fn options(self, stride: usize) -> ConvOptions<2> {
        ConvOptions::new_with_padding(
            [stride, stride],
            [(self.top, self.bottom), (self.left, self.right)],
            [1, 1],
            1,
        )
    }
}

impl From<usize> for Padding {
    fn from(padding: usize) -> Self {
        Padding::same(padding)
    }
}

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
        AttentionKernel::Flash => flash::flash_attention(q, k, v, flash::default_rows(q.dims()[2])),
        AttentionKernel::Burn => flash::burn_flash_attention(q, k, v),
    }
}

pub use flash::default_rows as default_flash_rows;

/// Whether [`attention`] over heads of `dim` in `dtype` runs as flash attention on `device` (no
/// score matrix in memory) rather than burn's chunked scores.
pub fn flash_runs(device: &Device, dim: usize, dtype: burn::tensor::FloatDType) -> bool {
    let q = Tensor::<3>::zeros([1, 1, dim], device).cast(dtype);
    selected().attention == AttentionKernel::Flash && flash::flash_applies(&q, &q)
}

/// [`AttentionKernel::Flash`] with `rows` queries per invocation (1 to 4; the benchmark compares
/// them), or `None` where it cannot run.
pub fn try_flash_attention_rows(
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
    rows: usize,
) -> Option<Tensor<3>> {
    flash::flash_attention(q, k, v, rows)
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
    padding: impl Into<Padding>,
) -> Tensor<4> {
    let padding = padding.into();
    conv_kernels(ConvKernel::ImplicitGemm)
        .iter()
        .find_map(|&kernel| try_conv2d_with(kernel, &x, &weight, bias.as_ref(), stride, padding))
        .unwrap_or_else(|| reference_conv2d(x, weight, bias, stride, padding))
}

/// [`conv2d`] by the implementation `kernel`, or by burn's `conv2d` where that one cannot run.
pub fn conv2d_with(
    kernel: ConvKernel,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: impl Into<Padding>,
) -> Tensor<4> {
    let padding = padding.into();
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
    padding: impl Into<Padding>,
) -> Option<Tensor<4>> {
    let padding = padding.into();
    match kernel {
        ConvKernel::Reference => {
            Some(reference_conv2d(x.clone(), weight.clone(), bias.cloned(), stride, padding))
        }
        ConvKernel::Matmul1x1 => conv1x1_matmul(x, weight, bias, stride, padding),
        ConvKernel::ImplicitGemm => try_conv2d_tiled(x, weight, bias, stride, padding, ConvTiles::DEFAULT),
    }
}

/// [`ConvKernel::ImplicitGemm`] with the tiling `tiles` (the benchmark compares them), or `None`
/// where it cannot run.
pub fn try_conv2d_tiled(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: impl Into<Padding>,
    tiles: ConvTiles,
) -> Option<Tensor<4>> {
    let padding = padding.into();
    conv::conv2d(
        x,
        weight,
        bias,
        stride,
        [(padding.top, padding.bottom), (padding.left, padding.right)],
        tiles,
    )
}

fn reference_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: Padding,
) -> Tensor<4> {
    burn::tensor::module::conv2d(x, weight, bias, padding.options(stride))
}

/// `out[n] = W · x[n]` with `x[n]` seen as `[channels, pixels]`: no data movement besides the
/// matmul itself (NCHW keeps each channel's pixels contiguous).
fn conv1x1_matmul(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: Padding,
) -> Option<Tensor<4>> {
    let [batch, channels, height, width] = x.dims();
    let [out_channels, weight_channels, kh, kw] = weight.dims();
    if (kh, kw, stride, padding) != (1, 1, 1, Padding::same(0)) || weight_channels != channels {
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
