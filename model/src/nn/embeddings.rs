//! Timestep embeddings, and token embeddings too large for one buffer.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::module::embedding;

/// A token embedding table held as row blocks, each small enough for one GPU buffer: SD1.5's
/// 49408 × 768 table is 145 MiB in f32, over WebGPU's 128 MiB binding limit (and lavapipe's),
/// so it lives as two blocks of 24704 rows. Checkpoints hold it as one `weight`: the loader
/// routes the rows into the blocks and the saver joins them back (the rule is
/// [`crate::save::torch_path`]'s: a parameter held in a list is that list's rows, in order).
#[derive(Module, Debug)]
pub struct TokenEmbedding {
    pub weight: Vec<Param<Tensor<2>>>,
}

impl TokenEmbedding {
    /// `rows` × `dim`, N(0, 1) as `nn.Embedding` initialises (made when first used), in equal
    /// blocks of at most `max_block_bytes` each in f32.
    pub fn new(rows: usize, dim: usize, max_block_bytes: u64, device: &Device) -> Self {
        let weight = block_rows(rows, dim, max_block_bytes)
            .into_iter()
            .map(|r| Initializer::Normal { mean: 0.0, std: 1.0 }.init([r, dim], device))
            .collect();
        Self { weight }
    }

    /// `ids` `[b, n]` → `[b, n, dim]`. With one block, burn's embedding; with several, each
    /// block looks up the ids it holds (the others masked to exact zeros) and the lookups add.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        if let [whole] = self.weight.as_slice() {
            return embedding(whole.val(), ids);
        }
        let mut start = 0;
        let mut sum: Option<Tensor<3>> = None;
        for block in &self.weight {
            let rows = block.dims()[0];
            let held = ids
                .clone()
                .greater_equal_elem(start as i64)
                .bool_and(ids.clone().lower_elem((start + rows) as i64));
            let local = ids.clone().sub_scalar(start as i64).clamp(0, rows as i64 - 1);
            let found =
                embedding(block.val(), local) * held.float().cast(block.val().dtype()).unsqueeze_dim::<3>(2);
            sum = Some(match sum {
                Some(sum) => sum + found,
                None => found,
            });
            start += rows;
        }
        sum.expect("a table has rows")
    }
}

/// The rows of each block of a `rows` × `dim` table split into equal blocks of at most
/// `max_block_bytes` in f32 (the last block may be shorter).
pub fn block_rows(rows: usize, dim: usize, max_block_bytes: u64) -> Vec<usize> {
    let row_bytes = dim as u64 * 4;
    let mut blocks = (rows as u64 * row_bytes).div_ceil(max_block_bytes.max(1)).max(1) as usize;
    // Rounding the rows up may overshoot the limit by a row: one more block then.
    while rows.div_ceil(blocks) > 1 && rows.div_ceil(blocks) as u64 * row_bytes > max_block_bytes {
        blocks += 1;
    }
    let per_block = rows.div_ceil(blocks).max(1);
    let mut sizes = vec![];
    let mut left = rows;
    while left > 0 {
        sizes.push(per_block.min(left));
        left -= sizes[sizes.len() - 1];
    }
    if sizes.is_empty() {
        sizes.push(0);
    }
    sizes
}

/// diffusers' `get_timestep_embedding`: sinusoids of the timestep at geometric frequencies,
/// computed on the host the way torch computes them (f32 frequencies and products).
///
/// Returns `[timesteps.len(), dim]` values, row-major: `[cos | sin]` when `flip_sin_to_cos`.
pub fn timestep_features(
    timesteps: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: usize,
) -> Vec<f32> {
    let half = dim / 2;
    let log_period = -(10000f32.ln());
    let frequencies: Vec<f32> =
        (0..half).map(|i| (log_period * i as f32 / (half as f32 - freq_shift as f32)).exp()).collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args = frequencies.iter().map(|&f| t * f);
        let sin: Vec<f32> = args.clone().map(|a| (a as f64).sin() as f32).collect();
        let cos: Vec<f32> = args.map(|a| (a as f64).cos() as f32).collect();
        let (first, second) = if flip_sin_to_cos { (cos, sin) } else { (sin, cos) };
        out.extend(first);
        out.extend(second);
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}

/// `TimestepEmbedding`: linear → SiLU → linear, from the sinusoidal features to the width the
/// ResNets take.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(in_features: usize, dim: usize, device: &Device) -> Self {
        Self {
            linear_1: LinearConfig::new(in_features, dim).init(device),
            linear_2: LinearConfig::new(dim, dim).init(device),
        }
    }

    /// # Shapes
    /// `[batch, in_features]` → `[batch, dim]`
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.linear_2.forward(silu(self.linear_1.forward(features)))
    }
}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_equal_and_within_the_limit() {
        // SD1.5's table: 145 MiB in f32, two blocks under 128 MiB.
        assert_eq!(block_rows(49408, 768, 128 << 20), vec![24704, 24704]);
        assert_eq!(block_rows(1000, 16, 128 << 20), vec![1000]);
        assert_eq!(block_rows(1000, 16, 25_000), vec![334, 334, 332]);
        // Three blocks of 4 rows would overshoot 14 bytes: one more block.
        assert_eq!(block_rows(10, 1, 14), vec![3, 3, 3, 1]);
        // A row over the limit alone: one row per block (nothing smaller exists).
        assert_eq!(block_rows(3, 100, 8), vec![1, 1, 1]);
    }

    #[test]
    fn blocks_look_up_what_the_whole_table_does() {
        let device = Device::flex();
        let split = TokenEmbedding::new(10, 4, 3 * 4 * 4, &device);
        assert_eq!(split.weight.iter().map(|w| w.dims()[0]).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        let whole = Tensor::cat(split.weight.iter().map(|w| w.val()).collect(), 0);
        let ids = Tensor::<2, Int>::from_data(TensorData::from([[0i64, 2, 3, 5, 6, 8, 9, 9]]), &device);
        let read = |t: Tensor<3>| crate::block_on(t.into_data_async()).unwrap().try_to_vec::<f32>().unwrap();
        assert_eq!(read(split.forward(ids.clone())), read(embedding(whole, ids)));
    }
}
