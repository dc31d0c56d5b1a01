//! Convolution as an implicit GEMM: `out[o, pixel] = Σₖ W[o, k] · patch[k, pixel]`, where
//! `k = (channel, ky, kx)` runs over the `C·kh·kw` taps and the patch matrix is never stored: each
//! tile of it is gathered from the NCHW input (zero outside the padding) straight into workgroup
//! memory.
//!
//! A workgroup computes a `BLOCK_M` (output channels) × `BLOCK_N` (output pixels of one image)
//! tile, its `(BLOCK_M/MICRO)·(BLOCK_N/MICRO)` invocations a `MICRO`×`MICRO` register block each,
//! stepping through `k` `BLOCK_K` at a time: the weight tile (rows of the `[O, C·kh·kw]` weight
//! as stored) and the gathered patch tile go to workgroup memory as f32, and every invocation
//! does `MICRO²` multiply-adds per `2·MICRO` workgroup-memory reads. Accumulation is f32 for f16
//! tensors too. Core WGSL only.
//!
//! The tile sizes are a parameter ([`ConvTiles`]): [`ConvTiles::DEFAULT`] is a first choice made
//! without a GPU to measure on, and the benchmark (`examples/kernels_bench.rs`) times every one
//! of [`ConvTiles::ALL`] so that a GPU run can pick the winner.

use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::cube::{from_cube, supported_dtype, to_cube};

/// A tiling of the implicit GEMM: a workgroup computes `block_m` output channels × `block_n`
/// output pixels, stepping `block_k` taps at a time, and each of its
/// `(block_m/micro)·(block_n/micro)` invocations a `micro`×`micro` register block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTiles {
    pub block_m: usize,
    pub block_n: usize,
    pub block_k: usize,
    pub micro: usize,
}

impl ConvTiles {
    /// 64×64 tiles, 4×4 per invocation, 256 invocations.
    pub const DEFAULT: ConvTiles = ConvTiles { block_m: 64, block_n: 64, block_k: 16, micro: 4 };

    /// The tilings the benchmark compares: more work per invocation (8×8: 4 multiply-adds per
    /// workgroup-memory read instead of 2) against more workgroups for small layers.
    pub const ALL: [ConvTiles; 4] = [
        ConvTiles::DEFAULT,
        ConvTiles { block_m: 64, block_n: 64, block_k: 16, micro: 8 },
        ConvTiles { block_m: 128, block_n: 64, block_k: 16, micro: 8 },
        ConvTiles { block_m: 128, block_n: 128, block_k: 8, micro: 8 },
    ];

    /// `64x64x16/4`: block_m × block_n × block_k / micro.
    pub fn name(self) -> String {
        format!("{}x{}x{}/{}", self.block_m, self.block_n, self.block_k, self.micro)
    }

    /// Invocations per workgroup.
    fn threads(self) -> usize {
        (self.block_m / self.micro) * (self.block_n / self.micro)
    }

    /// Whether every adapter runs it: at most WebGPU's guaranteed 256 invocations and 16 KiB of
    /// workgroup memory, and blocks the register blocks divide.
    fn valid(self) -> bool {
        self.micro > 0
            && self.block_k > 0
            && self.block_m.is_multiple_of(self.micro)
            && self.block_n.is_multiple_of(self.micro)
            && self.threads() <= 256
            && (self.block_m + self.block_n) * self.block_k * 4 <= 16 << 10
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn conv2d_kernel<F: Float>(
    input: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    out: &mut Tensor<F>,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    #[comptime] kernel_h: usize,
    #[comptime] kernel_w: usize,
    #[comptime] block_m: usize,
    #[comptime] block_n: usize,
    #[comptime] block_k: usize,
    #[comptime] micro: usize,
    #[define(F)] _dtype: ElemType,
) {
    let threads_x = comptime!(block_n / micro);
    let threads_y = comptime!(block_m / micro);
    let threads = comptime!(threads_x * threads_y);
    let taps = comptime!(kernel_h * kernel_w);
    let a_len = comptime!(block_m * block_k);
    let b_len = comptime!(block_k * block_n);
    let accumulators = comptime!(micro * micro);

    let channels = input.shape(1);
    let height = input.shape(2);
    let width = input.shape(3);
    let out_channels = out.shape(1);
    let out_w = out.shape(3);
    let pixels = out.shape(2) * out_w;
    let k_total = channels * taps;
    let stride = stride as usize;
    let pad_top = pad_top as usize;
    let pad_left = pad_left as usize;

    let batch = CUBE_POS_Z as usize;
    let p0 = CUBE_POS_X as usize * block_n;
    let o0 = CUBE_POS_Y as usize * block_m;
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let tid = ty * threads_x + tx;

    let in_base = batch * input.stride(0);
    let in_channel = input.stride(1);
    let in_row = input.stride(2);
    let w_row = weight.stride(0);

    let mut a_tile = Shared::<[f32]>::new_slice(a_len);
    let mut b_tile = Shared::<[f32]>::new_slice(b_len);
    let mut acc = Array::<f32>::new(accumulators);
    #[unroll]
    for i in 0..accumulators {
        acc[i] = 0.0f32;
    }
    let mut a = Array::<f32>::new(micro);
    let mut b = Array::<f32>::new(micro);

    let mut k0 = 0usize;
    while k0 < k_total {
        // Weight tile, stored k-major: a_tile[kl·BLOCK_M + ol] = W[o0 + ol, k0 + kl].
        let mut idx = tid;
        while idx < a_len {
            let kl = idx % block_k;
            let ol = idx / block_k;
            let o = o0 + ol;
            let kk = k0 + kl;
            let mut value = 0.0f32;
            if o < out_channels && kk < k_total {
                value = f32::cast_from(weight[o * w_row + kk]);
            }
            a_tile[kl * block_m + ol] = value;
            idx += threads;
        }
        // Patch tile: b_tile[kl·BLOCK_N + pl] = input under tap k0 + kl for pixel p0 + pl.
        let mut idx = tid;
        while idx < b_len {
            let pl = idx % block_n;
            let kl = idx / block_n;
            let p = p0 + pl;
            let kk = k0 + kl;
            let mut value = 0.0f32;
            if p < pixels && kk < k_total {
                let c = kk / taps;
                let tap = kk % taps;
                // Coordinates in the padded input, never negative.
                let iy = (p / out_w) * stride + tap / kernel_w;
                let ix = (p % out_w) * stride + tap % kernel_w;
                if iy >= pad_top && ix >= pad_left && iy - pad_top < height && ix - pad_left < width {
                    value = f32::cast_from(
                        input[in_base + c * in_channel + (iy - pad_top) * in_row + ix - pad_left],
                    );
                }
            }
            b_tile[kl * block_n + pl] = value;
            idx += threads;
        }
        sync_cube();

        #[unroll]
        for kl in 0..block_k {
            #[unroll]
            for i in 0..micro {
                a[i] = a_tile[kl * block_m + ty + i * threads_y];
                b[i] = b_tile[kl * block_n + tx + i * threads_x];
            }
            #[unroll]
            for i in 0..micro {
                #[unroll]
                for j in 0..micro {
                    acc[i * micro + j] += a[i] * b[j];
                }
            }
        }
        sync_cube();
        k0 += block_k;
    }

    let out_base = batch * out.stride(0);
    let out_channel = out.stride(1);
    #[unroll]
    for i in 0..micro {
        let o = o0 + ty + i * threads_y;
        if o < out_channels {
            let shift = f32::cast_from(bias[o]);
            #[unroll]
            for j in 0..micro {
                let p = p0 + tx + j * threads_x;
                if p < pixels {
                    out[out_base + o * out_channel + p] = F::cast_from(acc[i * micro + j] + shift);
                }
            }
        }
    }
}

/// The implicit-GEMM convolution, or `None` where it does not apply (not a cubecl tensor, another
/// dtype, groups or dilation, a grid too large). `padding`: `[(top, bottom), (left, right)]`.
pub fn conv2d(
    x: &burn::Tensor<4>,
    weight: &burn::Tensor<4>,
    bias: Option<&burn::Tensor<1>>,
    stride: usize,
    padding: [(usize, usize); 2],
    tiles: ConvTiles,
) -> Option<burn::Tensor<4>> {
    let [(top, bottom), (left, right)] = padding;
    let [batch, channels, height, width] = x.dims();
    let [out_channels, weight_channels, kernel_h, kernel_w] = weight.dims();
    let dtype = x.dtype();
    if !supported_dtype(dtype)
        || weight.dtype() != dtype
        || bias.is_some_and(|b| b.dtype() != dtype || b.dims() != [out_channels])
        || weight_channels != channels
        || stride == 0
        || kernel_h == 0
        || kernel_w == 0
        || height + top + bottom < kernel_h
        || width + left + right < kernel_w
        || batch == 0
        || batch > u16::MAX as usize
        || channels == 0
        || !tiles.valid()
    {
        return None;
    }
    let out_h = (height + top + bottom - kernel_h) / stride + 1;
    let out_w = (width + left + right - kernel_w) / stride + 1;
    let (tiles_n, tiles_m) = ((out_h * out_w).div_ceil(tiles.block_n), out_channels.div_ceil(tiles.block_m));
    if tiles_n > u16::MAX as usize || tiles_m > u16::MAX as usize || out_channels == 0 {
        return None;
    }
    let bias = match bias {
        Some(bias) => bias.clone(),
        None => burn::Tensor::zeros([out_channels], (&x.device(), dtype)),
    };
    let input = into_contiguous(to_cube(x)?);
    let weight = into_contiguous(to_cube(weight)?);
    let bias = into_contiguous(to_cube(&bias)?);
    let client = input.client.clone();
    let out = empty_device_contiguous_dtype(
        client.clone(),
        input.device.clone(),
        [batch, out_channels, out_h, out_w].into(),
        input.dtype,
    );
    // SAFETY: unchecked launches skip cubecl's bounds checks on every access. Every read and
    // write of a tensor above is guarded by explicit bounds tests, and workgroup-memory and
    // register indices are below their compile-time lengths by construction (tested at odd
    // sizes in tests/kernels.rs).
    unsafe {
        conv2d_kernel::launch_unchecked(
            &client,
            CubeCount::Static(tiles_n as u32, tiles_m as u32, batch as u32),
            CubeDim::new_2d((tiles.block_n / tiles.micro) as u32, (tiles.block_m / tiles.micro) as u32),
            input.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            stride as u32,
            top as u32,
            left as u32,
            kernel_h,
            kernel_w,
            tiles.block_m,
            tiles.block_n,
            tiles.block_k,
            tiles.micro,
            dtype_to_storage_type(dtype),
        );
    }
    Some(from_cube(out))
}
