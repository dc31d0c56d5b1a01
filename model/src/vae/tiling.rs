//! Tiled decoding, and the policy that decides when to tile.
//!
//! WebGPU refuses a storage buffer larger than its binding limit (128 MiB by default), and the
//! decoder's activations at full resolution exceed it from 512² up in f32. Tiling decodes
//! overlapping latent tiles separately and cross-fades the overlaps, as diffusers'
//! `AutoencoderKL.tiled_decode` does; the result differs slightly from a whole decode (each tile's
//! group norms see only the tile) but has no visible seams.

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use super::{AutoencoderKL, VaeConfig};

/// WebGPU's default `maxStorageBufferBindingSize`: 128 MiB (the page's estimate reads the same
/// constant).
pub const MAX_BUFFER_BYTES: usize = vocabulary::memory::MAX_BUFFER_BYTES as usize;

/// diffusers' `tile_overlap_factor`: neighbouring tiles share a quarter of their size.
pub const TILE_OVERLAP_FACTOR: f64 = 0.25;

/// Tiles are a multiple of this many latents, so that a tile's stride in pixels equals the part
/// diffusers keeps of it (`int(t·0.75)·f = t·f − int(t·f·0.25)`); other sizes stitch wrongly,
/// in diffusers too.
pub const TILE_MULTIPLE: usize = 4;

/// How a decode runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodePlan {
    /// In one piece.
    Whole,
    /// In overlapping square tiles of this many latents.
    Tiled { tile_latent: usize },
}

/// The largest single buffer a whole decode of one `latent_h × latent_w` latent image allocates,
/// in bytes, for activations of `dtype_bytes` each.
///
/// The candidates are every activation of the decoder (the widest is usually an upsampler's
/// output: SD1.5 upsamples 256 channels to full resolution, `[1, 256, 8h, 8w]`) and the
/// mid-block attention's `[1, hw, hw]` scores, which are f32 whatever the dtype and computed in
/// chunks of at most [`crate::nn::attention::MAX_SCORE_BYTES`] (see
/// [`crate::nn::attention::attention`]). Convolution and group-norm temporaries are assumed no
/// larger than the activations they produce.
pub fn decode_peak_bytes(config: &VaeConfig, latent_h: usize, latent_w: usize, dtype_bytes: usize) -> usize {
    peak_bytes(config, 1, latent_h, latent_w, dtype_bytes)
}

/// The decoder's widest activation, in elements per latent pixel: every activation's channels
/// times the pixels one latent becomes at its level (SD1.5: 256 channels at 8 × 8, 16 384).
pub fn decoder_elements_per_latent(config: &VaeConfig) -> usize {
    let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
    let mut pixels = 1;
    // conv_in's input and output, the mid block's activations.
    let mut elements = config.latent_channels.max(reversed[0]);
    for (i, &out) in reversed.iter().enumerate() {
        let input = if i == 0 { out } else { reversed[i - 1] };
        elements = elements.max(input.max(out) * pixels);
        if i + 1 < reversed.len() {
            pixels *= 4;
            elements = elements.max(out * pixels);
        }
    }
    elements.max(config.out_channels * pixels)
}

fn peak_bytes(
    config: &VaeConfig,
    batch: usize,
    latent_h: usize,
    latent_w: usize,
    dtype_bytes: usize,
) -> usize {
    let activations = batch * decoder_elements_per_latent(config) * latent_h * latent_w * dtype_bytes;
    let scores = if config.mid_block_add_attention {
        let pixels = (latent_h * latent_w) as u64;
        vocabulary::memory::attention_chunk_bytes(batch as u64, pixels, pixels) as usize
    } else {
        0
    };
    activations.max(scores)
}

/// Whole when a whole decode's largest buffer fits `max_buffer_bytes`; otherwise tiles of the
/// largest multiple of [`TILE_MULTIPLE`] latents that fits (the smallest, 4, when none does).
pub fn plan_decode(
    config: &VaeConfig,
    latent_h: usize,
    latent_w: usize,
    dtype_bytes: usize,
    max_buffer_bytes: usize,
) -> DecodePlan {
    if decode_peak_bytes(config, latent_h, latent_w, dtype_bytes) <= max_buffer_bytes {
        return DecodePlan::Whole;
    }
    // Edge tiles and thin images use less than a full tile in a dimension.
    let fits = |t: usize| {
        decode_peak_bytes(config, t.min(latent_h), t.min(latent_w), dtype_bytes) <= max_buffer_bytes
    };
    let largest = latent_h.max(latent_w);
    let tile_latent = (TILE_MULTIPLE..=largest)
        .step_by(TILE_MULTIPLE)
        .take_while(|&t| fits(t))
        .last()
        .unwrap_or(TILE_MULTIPLE);
    DecodePlan::Tiled { tile_latent }
}

impl AutoencoderKL {
    /// Bytes per activation in the VAE's dtype.
    fn dtype_bytes(&self) -> usize {
        DType::from(self.dtype()).size()
    }

    /// Decodes whole when the largest buffer of a whole decode fits `max_buffer_bytes`
    /// ([`MAX_BUFFER_BYTES`] on WebGPU's defaults), else in the largest tiles that fit
    /// ([`plan_decode`]). A batch that does not fit whole is decoded one image at a time.
    ///
    /// # Shapes
    /// As [`AutoencoderKL::decode`].
    pub fn decode_within(&self, z: Tensor<4>, max_buffer_bytes: usize) -> Tensor<4> {
        let [batch, _, h, w] = z.dims();
        let bytes = self.dtype_bytes();
        let plan = plan_decode(&self.config, h, w, bytes, max_buffer_bytes);
        if plan == DecodePlan::Whole && peak_bytes(&self.config, batch, h, w, bytes) <= max_buffer_bytes {
            return self.decode(z);
        }
        let images = (0..batch)
            .map(|i| {
                let image = z.clone().narrow(0, i, 1);
                match plan {
                    DecodePlan::Whole => self.decode(image),
                    DecodePlan::Tiled { tile_latent } => self.tiled_decode(image, tile_latent),
                }
            })
            .collect();
        Tensor::cat(images, 0)
    }

    /// diffusers' `tiled_decode` with `tile_latent_min_size = tile_latent`,
    /// `tile_sample_min_size = tile_latent · f` and `tile_overlap_factor = 0.25`: tiles start
    /// every `⌊0.75·tile_latent⌋` latents, each is decoded whole, cross-faded linearly with the
    /// (already blended) tiles above and to its left over `⌊0.25·tile_sample⌋` pixels, and
    /// cropped to its first `tile_sample − blend` pixels.
    ///
    /// # Panics
    /// When `tile_latent` is not a positive multiple of [`TILE_MULTIPLE`] (the tiles would not
    /// line up; this is the caller's constant or [`plan_decode`]'s choice, never user input).
    ///
    /// # Shapes
    /// As [`AutoencoderKL::decode`].
    pub fn tiled_decode(&self, z: Tensor<4>, tile_latent: usize) -> Tensor<4> {
        assert!(
            tile_latent > 0 && tile_latent.is_multiple_of(TILE_MULTIPLE),
            "tile of {tile_latent} latents: not a positive multiple of {TILE_MULTIPLE}"
        );
        let tile_sample = tile_latent * self.scale_factor();
        // Python's int(): truncation.
        let overlap = (tile_latent as f64 * (1.0 - TILE_OVERLAP_FACTOR)) as usize;
        let blend_extent = (tile_sample as f64 * TILE_OVERLAP_FACTOR) as usize;
        let row_limit = tile_sample - blend_extent;
        let [_, _, h, w] = z.dims();

        // diffusers decodes every tile, then blends in row-major order, in place: a tile is
        // blended with its upper and left neighbours as they are after their own blending. One
        // pass in the same order gives the same values and keeps only the row above.
        let mut above: Vec<Tensor<4>> = Vec::new();
        let mut result_rows = Vec::new();
        for i in (0..h).step_by(overlap) {
            let mut row: Vec<Tensor<4>> = Vec::new();
            let mut cropped = Vec::new();
            for (column, j) in (0..w).step_by(overlap).enumerate() {
                let tile =
                    z.clone().narrow(2, i, tile_latent.min(h - i)).narrow(3, j, tile_latent.min(w - j));
                let mut tile = self.decode(tile);
                if let Some(up) = above.get(column) {
                    tile = blend(up, tile, blend_extent, 2);
                }
                if let Some(left) = row.last() {
                    tile = blend(left, tile, blend_extent, 3);
                }
                let [_, _, th, tw] = tile.dims();
                cropped.push(tile.clone().narrow(2, 0, row_limit.min(th)).narrow(3, 0, row_limit.min(tw)));
                row.push(tile);
            }
            result_rows.push(Tensor::cat(cropped, 3));
            above = row;
        }
        Tensor::cat(result_rows, 2)
    }
}

/// diffusers' `blend_v` (`dim` 2) and `blend_h` (`dim` 3): the first `e` rows (columns) of `b`
/// become `a`'s last `e` · (1 − y/e) + `b`'s · y/e, with `e = min(a's size, b's size, extent)`.
fn blend(a: &Tensor<4>, b: Tensor<4>, extent: usize, dim: usize) -> Tensor<4> {
    let (a_len, b_len) = (a.dims()[dim], b.dims()[dim]);
    let e = extent.min(a_len).min(b_len);
    if e == 0 {
        return b;
    }
    let mut shape = [1, 1, 1, 1];
    shape[dim] = e;
    let dtype: FloatDType = b.dtype().into();
    let device = b.device();
    let weights = |f: &dyn Fn(f64) -> f64| {
        // The ratio in f64 as Python computes it, then rounded once to the tensor's dtype.
        let values: Vec<f32> = (0..e).map(|y| f(y as f64 / e as f64) as f32).collect();
        Tensor::<4>::from_data(TensorData::new(values, shape), &device).cast(dtype)
    };
    let mixed = a.clone().narrow(dim, a_len - e, e) * weights(&|r| 1.0 - r)
        + b.clone().narrow(dim, 0, e) * weights(&|r| r);
    if e == b_len { mixed } else { Tensor::cat(vec![mixed, b.narrow(dim, e, b_len - e)], dim) }
}
