//! Flash attention: `softmax(q·kᵀ/√d)·v` in one kernel, without a score buffer.
//!
//! One workgroup takes `BLOCK_Q · rows` consecutive queries of one head, `rows` per invocation.
//! The invocation keeps its query rows (pre-scaled by `1/√d`) and their output accumulators in
//! registers (the head size is a compile-time constant, so the loops over it unroll), and walks
//! the keys in
//! tiles that the whole workgroup first copies into workgroup memory as f32. Each key updates the
//! running maximum `m`, the running sum `l` and the accumulator the online-softmax way: when a
//! score exceeds `m`, `l` and the accumulator are rescaled by `exp(m_old − m_new)`. Every
//! intermediate is f32 whatever the tensors' dtype, as in the reference (diffusers upcasts too).
//!
//! Only core WGSL is used: no subgroups, no cooperative matrices, no f16 arithmetic (f16 tensors
//! need `shader-f16` for their storage, which the f16 precision already requires).
//!
//! Each key costs `2·dim` workgroup-memory reads (key and value rows) for `2·dim·rows`
//! multiply-adds: more rows per invocation means fewer reads per multiply-add but more registers
//! (`2·rows·dim` floats). [`default_rows`] is a choice made without a GPU to measure on; the
//! benchmark times 1, 2 and 4.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::ops::AttentionModuleOptions;
use burn_cubecl::kernel::attention::{AttentionStrategy, attention as burn_attention};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::cube::{from_cube, supported_dtype, to_cube};

/// Queries per workgroup (one invocation each).
const BLOCK_Q: usize = 64;

/// Workgroup memory for the key and value tiles, in bytes: WebGPU's guaranteed minimum of
/// `maxComputeWorkgroupStorageSize`, so that no adapter refuses the kernel.
const TILE_BYTES: usize = 16 << 10;

/// The largest head size handled: the query row and the accumulator live in registers.
const MAX_DIM: usize = 256;

/// Keys per tile for head size `dim`: the largest power of two whose f32 key and value tiles fit
/// in [`TILE_BYTES`] (32 for SD's head size 40, 16 for 80, 8 for 160).
fn block_keys(dim: usize) -> usize {
    let keys = TILE_BYTES / (2 * 4 * dim.max(1));
    if keys == 0 { 0 } else { (1usize << keys.ilog2()).min(64) }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn flash_attention_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    scale: f32,
    #[comptime] dim: usize,
    #[comptime] block_q: usize,
    #[comptime] rows: usize,
    #[comptime] block_k: usize,
    #[define(F)] _dtype: ElemType,
) {
    let queries = q.shape(1);
    let keys = k.shape(1);
    let head = CUBE_POS_Y as usize;
    let unit = UNIT_POS_X as usize;
    // This invocation's queries: `rows` of them, `block_q` apart.
    let first_row = CUBE_POS_X as usize * block_q * rows + unit;

    let k_base = head * k.stride(0);
    let k_row = k.stride(1);
    let v_base = head * v.stride(0);
    let v_row = v.stride(1);

    let mut q_reg = Array::<f32>::new(rows * dim);
    let mut acc = Array::<f32>::new(rows * dim);
    // Finite: WGSL has no infinity literal. exp(−1e30 − s) is 0 for any real score.
    let mut m = Array::<f32>::new(rows);
    let mut l = Array::<f32>::new(rows);
    let mut s = Array::<f32>::new(rows);
    let mut p = Array::<f32>::new(rows);
    #[unroll]
    for r in 0..rows {
        let row = first_row + r * block_q;
        let q_base = head * q.stride(0) + row * q.stride(1);
        #[unroll]
        for d in 0..dim {
            let mut x = 0.0f32;
            if row < queries {
                x = f32::cast_from(q[q_base + d]) * scale;
            }
            q_reg[r * dim + d] = x;
            acc[r * dim + d] = 0.0f32;
        }
        m[r] = f32::new(-1.0e30);
        l[r] = 0.0f32;
    }

    let tile = comptime!(block_k * dim);
    let mut k_tile = Shared::<[f32]>::new_slice(tile);
    let mut v_tile = Shared::<[f32]>::new_slice(tile);

    let mut start = 0usize;
    while start < keys {
        // The whole workgroup copies the tile, out-of-range queries included (they must reach
        // the barriers); keys past the end are zeros and are never scored.
        let mut i = unit;
        while i < tile {
            let key = start + i / dim;
            let d = i % dim;
            let mut kx = 0.0f32;
            let mut vx = 0.0f32;
            if key < keys {
                kx = f32::cast_from(k[k_base + key * k_row + d]);
                vx = f32::cast_from(v[v_base + key * v_row + d]);
            }
            k_tile[i] = kx;
            v_tile[i] = vx;
            i += block_q;
        }
        sync_cube();

        let mut count = keys - start;
        if count > block_k {
            count = block_k;
        }
        for j in 0..count {
            let base = j * dim;
            // Each key element read from workgroup memory serves all `rows` queries.
            #[unroll]
            for r in 0..rows {
                s[r] = 0.0f32;
            }
            #[unroll]
            for d in 0..dim {
                let kd = k_tile[base + d];
                #[unroll]
                for r in 0..rows {
                    s[r] += q_reg[r * dim + d] * kd;
                }
            }
            #[unroll]
            for r in 0..rows {
                let score = s[r];
                if score > m[r] {
                    let correction = (m[r] - score).exp();
                    l[r] *= correction;
                    #[unroll]
                    for d in 0..dim {
                        acc[r * dim + d] *= correction;
                    }
                    m[r] = score;
                }
                let weight = (score - m[r]).exp();
                l[r] += weight;
                p[r] = weight;
            }
            #[unroll]
            for d in 0..dim {
                let vd = v_tile[base + d];
                #[unroll]
                for r in 0..rows {
                    acc[r * dim + d] += p[r] * vd;
                }
            }
        }
        sync_cube();
        start += block_k;
    }

    #[unroll]
    for r in 0..rows {
        let row = first_row + r * block_q;
        if row < queries {
            let inv = 1.0f32 / l[r];
            let o_base = head * out.stride(0) + row * out.stride(1);
            #[unroll]
            for d in 0..dim {
                out[o_base + d] = F::cast_from(acc[r * dim + d] * inv);
            }
        }
    }
}

/// Queries per invocation for head size `dim` unless told otherwise: 2 while the query rows and
/// accumulators stay within 160 registers (head size ≤ 40, SD's first level, which dominates the
/// cost), else 1.
pub fn default_rows(dim: usize) -> usize {
    if dim <= 40 { 2 } else { 1 }
}

/// Whether [`flash_attention`] runs its kernel on these inputs (else the caller's fallback).
pub fn flash_applies(q: &burn::Tensor<3>, k: &burn::Tensor<3>) -> bool {
    let ([bh, queries, dim], keys) = (q.dims(), k.dims()[1]);
    to_cube(q).is_some()
        && supported_dtype(q.dtype())
        && k.dtype() == q.dtype()
        && bh > 0
        && bh <= u16::MAX as usize
        && queries > 0
        && keys > 0
        && dim > 0
        && dim <= MAX_DIM
        && block_keys(dim) > 0
}

/// This crate's flash attention, `rows` queries per invocation (1 to 4), or `None` where it does
/// not apply.
pub fn flash_attention(
    q: &burn::Tensor<3>,
    k: &burn::Tensor<3>,
    v: &burn::Tensor<3>,
    rows: usize,
) -> Option<burn::Tensor<3>> {
    if !flash_applies(q, k) || v.dtype() != q.dtype() || v.dims() != k.dims() || !(1..=4).contains(&rows) {
        return None;
    }
    let [bh, queries, dim] = q.dims();
    // The kernel reads rows with the tensors' strides but each row's elements at unit stride.
    let q = into_contiguous(to_cube(q)?);
    let k = into_contiguous(to_cube(k)?);
    let v = into_contiguous(to_cube(v)?);
    let dtype = q.dtype;
    let client = q.client.clone();
    let out =
        empty_device_contiguous_dtype(client.clone(), q.device.clone(), [bh, queries, dim].into(), dtype);

    let block_k = block_keys(dim);
    let cube_count = CubeCount::Static(queries.div_ceil(BLOCK_Q * rows) as u32, bh as u32, 1);
    let cube_dim = CubeDim::new_1d(BLOCK_Q as u32);
    // SAFETY: unchecked launches skip cubecl's bounds checks on every access. Every read and
    // write of a tensor above is guarded by explicit bounds tests, and workgroup-memory and
    // register indices are below their compile-time lengths by construction (tested at odd
    // sizes in tests/kernels.rs).
    unsafe {
        flash_attention_kernel::launch_unchecked(
            &client,
            cube_count,
            cube_dim,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            1.0 / (dim as f32).sqrt(),
            dim,
            BLOCK_Q,
            rows,
            block_k,
            dtype_to_storage_type(dtype),
        );
    }
    Some(from_cube(out))
}

/// burn's own flash attention (cubek's unit routine), or `None` where burn refuses it (CPU
/// tensors; devices without subgroups).
pub fn burn_flash_attention(
    q: &burn::Tensor<3>,
    k: &burn::Tensor<3>,
    v: &burn::Tensor<3>,
) -> Option<burn::Tensor<3>> {
    if !flash_applies(q, k) {
        return None;
    }
    let [bh, queries, dim] = q.dims();
    let [_, keys, value_dim] = v.dims();
    let heads = |t: &burn::Tensor<3>, n: usize, d: usize| to_cube(&t.clone().reshape([1, bh, n, d]));
    let out = burn_attention(
        heads(q, queries, dim)?,
        heads(k, keys, dim)?,
        heads(v, keys, value_dim)?,
        None,
        None,
        AttentionModuleOptions::default(),
        AttentionStrategy::FlashUnit,
    )
    .ok()?;
    Some(from_cube::<4>(out).reshape([bh, queries, value_dim]))
}
