//! Group normalisation, optionally followed by SiLU, in two launches instead of burn's dozen.
//!
//! burn's `GroupNorm` is a chain of tensor ops (reshape, cast, mean, subtract, square, mean, add,
//! sqrt, divide, cast, multiply, add) and SD follows most norms with a SiLU: every op is one more
//! pass over the activation in global memory. Here:
//!
//! 1. **Statistics.** Each group's elements are contiguous in NCHW (`channels/groups` whole
//!    channels). The group is cut into chunks; one workgroup per (group, chunk) computes the
//!    chunk's mean, then the sum of squared deviations from it (two passes over the chunk, reduced
//!    in workgroup memory), and writes `(count, mean, M2)`.
//! 2. **Apply.** One workgroup per (group, chunk) again: every invocation merges the group's chunk
//!    statistics (Chan et al.'s pairwise update, which keeps the variance exact where
//!    `E[x²] − E[x]²` would cancel), then writes `(x − mean)/√(var + ε)·γ + β`, and `y·σ(y)`
//!    when SiLU follows.
//!
//! Statistics, normalisation and the affine are f32 whatever the tensor's dtype; only the output
//! is rounded to it. The variance is the biased one, as PyTorch's `group_norm`.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::DType;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::cube::{from_cube, supported_dtype, to_cube};

/// Invocations per workgroup (a power of two, for the tree reduction).
const THREADS: usize = 256;

/// Elements of a group per chunk, at least: below it a chunk's workgroup has too little to do.
const MIN_CHUNK: usize = 4096;

/// Chunks per group, at most: each apply invocation merges this many statistics.
const MAX_CHUNKS: usize = 64;

/// Sum over the workgroup of each invocation's `value`, in workgroup memory; every invocation
/// gets the total.
#[cube]
fn workgroup_sum(value: f32, scratch: &mut Shared<[f32]>) -> f32 {
    let unit = UNIT_POS_X as usize;
    scratch[unit] = value;
    sync_cube();
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half {
            scratch[unit] += scratch[unit + half];
        }
        sync_cube();
        half /= 2;
    }
    let total = scratch[0];
    sync_cube();
    total
}

#[cube(launch_unchecked)]
fn group_stats_kernel<F: Float>(
    input: &Tensor<F>,
    stats: &mut Tensor<f32>,
    group_len: u32,
    chunk_len: u32,
    #[comptime] threads: usize,
    #[define(F)] _dtype: ElemType,
) {
    let group_len = group_len as usize;
    let chunk_len = chunk_len as usize;
    let chunks = CUBE_COUNT_X as usize;
    let chunk = CUBE_POS_X as usize;
    let group = CUBE_POS_Y as usize;
    let unit = UNIT_POS_X as usize;

    let start = chunk * chunk_len;
    let mut end = start + chunk_len;
    if end > group_len {
        end = group_len;
    }
    let base = group * group_len;
    let mut scratch = Shared::<[f32]>::new_slice(threads);

    let mut sum = 0.0f32;
    let mut i = start + unit;
    while i < end {
        sum += f32::cast_from(input[base + i]);
        i += threads;
    }
    let mut count = 0.0f32;
    if end > start {
        count = f32::cast_from(end - start);
    }
    let mut mean = 0.0f32;
    let total = workgroup_sum(sum, &mut scratch);
    if end > start {
        mean = total / count;
    }

    let mut squares = 0.0f32;
    let mut i = start + unit;
    while i < end {
        let d = f32::cast_from(input[base + i]) - mean;
        squares += d * d;
        i += threads;
    }
    let m2 = workgroup_sum(squares, &mut scratch);

    if unit == 0 {
        let at = (group * chunks + chunk) * 3;
        stats[at] = count;
        stats[at + 1] = mean;
        stats[at + 2] = m2;
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn group_apply_kernel<F: Float>(
    input: &Tensor<F>,
    stats: &Tensor<f32>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    out: &mut Tensor<F>,
    group_len: u32,
    chunk_len: u32,
    channel_len: u32,
    groups: u32,
    epsilon: f32,
    #[comptime] silu: bool,
    #[comptime] threads: usize,
    #[define(F)] _dtype: ElemType,
) {
    let group_len = group_len as usize;
    let chunk_len = chunk_len as usize;
    let channel_len = channel_len as usize;
    let chunk = CUBE_POS_X as usize;
    let group = CUBE_POS_Y as usize;
    let unit = UNIT_POS_X as usize;
    let stat_chunks = CUBE_COUNT_X as usize;

    // Chan's merge of the chunk statistics, in the same order in every invocation.
    let at = group * stat_chunks * 3;
    let mut n = 0.0f32;
    let mut mean = 0.0f32;
    let mut m2 = 0.0f32;
    for c in 0..stat_chunks {
        let nb = stats[at + c * 3];
        if nb > 0.0f32 {
            let mb = stats[at + c * 3 + 1];
            let n_ab = n + nb;
            let delta = mb - mean;
            mean += delta * (nb / n_ab);
            m2 += stats[at + c * 3 + 2] + delta * delta * (n * nb / n_ab);
            n = n_ab;
        }
    }
    let inv_std = 1.0f32 / (m2 / n + epsilon).sqrt();

    let start = chunk * chunk_len;
    let mut end = start + chunk_len;
    if end > group_len {
        end = group_len;
    }
    let base = group * group_len;
    let channels_per_group = group_len / channel_len;
    let first_channel = (group % groups as usize) * channels_per_group;
    let mut i = start + unit;
    while i < end {
        let channel = first_channel + i / channel_len;
        let x = f32::cast_from(input[base + i]);
        let mut y = (x - mean) * inv_std * f32::cast_from(gamma[channel]) + f32::cast_from(beta[channel]);
        if comptime!(silu) {
            y = y / (1.0f32 + (-y).exp());
        }
        out[base + i] = F::cast_from(y);
        i += threads;
    }
}

/// How a group of `group_len` elements is cut: `(chunks, chunk_len)`.
fn chunking(group_len: usize) -> (usize, usize) {
    let chunks = (group_len / MIN_CHUNK).clamp(1, MAX_CHUNKS);
    (chunks, group_len.div_ceil(chunks))
}

/// Group norm (then SiLU if `silu`) of `x` `[batch, channels, ...]`, or `None` where the kernel
/// does not apply (not a cubecl tensor, another dtype, channels not divisible by `groups`).
pub fn group_norm(
    x: &burn::Tensor<4>,
    groups: usize,
    gamma: Option<&burn::Tensor<1>>,
    beta: Option<&burn::Tensor<1>>,
    epsilon: f64,
    silu: bool,
) -> Option<burn::Tensor<4>> {
    let [batch, channels, height, width] = x.dims();
    let dtype = x.dtype();
    let per_channel =
        |t: Option<&burn::Tensor<1>>| t.is_none_or(|t| t.dtype() == dtype && t.dims() == [channels]);
    if !supported_dtype(dtype)
        || !per_channel(gamma)
        || !per_channel(beta)
        || groups == 0
        || channels % groups != 0
        || batch * groups > u16::MAX as usize
        || height * width == 0
    {
        return None;
    }
    let group_len = channels / groups * height * width;
    if group_len > u32::MAX as usize {
        return None;
    }
    let (chunks, chunk_len) = chunking(group_len);
    let device = x.device();
    let gamma = gamma.cloned().unwrap_or_else(|| burn::Tensor::ones([channels], (&device, dtype)));
    let beta = beta.cloned().unwrap_or_else(|| burn::Tensor::zeros([channels], (&device, dtype)));

    let input = into_contiguous(to_cube(x)?);
    let gamma = into_contiguous(to_cube(&gamma)?);
    let beta = into_contiguous(to_cube(&beta)?);
    let client = input.client.clone();
    let stats = empty_device_contiguous_dtype(
        client.clone(),
        input.device.clone(),
        [batch * groups, chunks, 3].into(),
        DType::F32,
    );
    let out = empty_device_contiguous_dtype(
        client.clone(),
        input.device.clone(),
        [batch, channels, height, width].into(),
        dtype,
    );
    let count = CubeCount::Static(chunks as u32, (batch * groups) as u32, 1);
    let dim = CubeDim::new_1d(THREADS as u32);
    // SAFETY: unchecked launches skip cubecl's bounds checks. Every global index is below
    // `(group + 1)·group_len` (the input's length) or a channel below `channels` (γ, β), the
    // statistics index below `batch·groups·chunks·3`, and the workgroup-memory index below
    // `THREADS`; tests/kernels.rs runs odd sizes.
    unsafe {
        group_stats_kernel::launch_unchecked(
            &client,
            count.clone(),
            dim,
            input.clone().into_tensor_arg(),
            stats.clone().into_tensor_arg(),
            group_len as u32,
            chunk_len as u32,
            THREADS,
            dtype_to_storage_type(dtype),
        );
        group_apply_kernel::launch_unchecked(
            &client,
            count,
            dim,
            input.into_tensor_arg(),
            stats.into_tensor_arg(),
            gamma.into_tensor_arg(),
            beta.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            group_len as u32,
            chunk_len as u32,
            (height * width) as u32,
            groups as u32,
            epsilon as f32,
            silu,
            THREADS,
            dtype_to_storage_type(dtype),
        );
    }
    Some(from_cube(out))
}
