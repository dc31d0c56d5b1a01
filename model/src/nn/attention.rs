//! Scaled dot-product attention, and diffusers' `Attention` module.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::softmax;

use super::ops;

/// The most bytes one chunk of attention scores may take (64 MiB: half WebGPU's default storage
/// binding, leaving room for the softmax's temporaries; the page's estimate reads the same constant).
pub const MAX_SCORE_BYTES: usize = vocabulary::memory::MAX_SCORE_BYTES as usize;

/// `softmax(q·kᵀ / √d) · v`, as `torch.nn.functional.scaled_dot_product_attention` without a mask.
///
/// The `[batch·heads, queries, keys]` score matrix is never materialised whole when it would
/// exceed [`MAX_SCORE_BYTES`]: the queries are processed in chunks (each query's softmax is
/// independent of the others, so chunking changes nothing numerically). At 512×512 the
/// self-attention scores would be 1 GiB in f32 for a CFG batch.
///
/// Scores and softmax are computed in f32 whatever the inputs' dtype, as PyTorch's fused
/// attention does for f16 (and what diffusers' `upcast_attention` asks for): f16 scores lose the
/// small differences that the softmax amplifies.
///
/// # Shapes
/// - `q`: `[batch·heads, queries, dim]`
/// - `k`, `v`: `[batch·heads, keys, dim]`
/// - output: `[batch·heads, queries, dim]`
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
    attention_chunked(q, k, v, MAX_SCORE_BYTES)
}

/// [`attention`] with an explicit budget for one chunk of scores, in bytes.
pub fn attention_chunked(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, max_score_bytes: usize) -> Tensor<3> {
    let [bh, queries, dim] = q.dims();
    let keys = k.dims()[1];
    let dtype: FloatDType = q.dtype().into();
    let (q, k) =
        if dtype != FloatDType::F32 { (q.cast(FloatDType::F32), k.cast(FloatDType::F32)) } else { (q, k) };
    let element_bytes = q.dtype().size();
    let scale = 1.0 / (dim as f64).sqrt();
    let k_t = k.swap_dims(1, 2); // [bh, dim, keys]

    let rows = (max_score_bytes / (bh * keys * element_bytes).max(1)).clamp(1, queries);
    let chunk = |q: Tensor<3>| {
        let probs = softmax(q.matmul(k_t.clone()) * scale, 2); // [bh, rows, keys]
        probs.cast(dtype).matmul(v.clone())
    };
    if rows >= queries {
        return chunk(q);
    }
    let parts: Vec<Tensor<3>> = (0..queries)
        .step_by(rows)
        .map(|start| chunk(q.clone().narrow(1, start, rows.min(queries - start))))
        .collect();
    Tensor::cat(parts, 1)
}

/// diffusers' `Attention` (`attn1`: self-attention, `attn2`: cross-attention on the text).
/// `to_q`, `to_k`, `to_v` have no bias; `to_out` is the checkpoint's `to_out.0`.
#[derive(Module, Debug)]
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
}

impl Attention {
    /// `context_dim`: the width of what is attended to (the query's own for self-attention).
    pub fn new(query_dim: usize, context_dim: usize, heads: usize, device: &Device) -> Self {
        let inner = query_dim;
        Self {
            to_q: LinearConfig::new(query_dim, inner).with_bias(false).init(device),
            to_k: LinearConfig::new(context_dim, inner).with_bias(false).init(device),
            to_v: LinearConfig::new(context_dim, inner).with_bias(false).init(device),
            to_out: LinearConfig::new(inner, query_dim).init(device),
            heads,
        }
    }

    /// # Shapes
    /// - `x`: `[b, n, query_dim]`; `context`: `[b, m, context_dim]` (`None`: self-attention)
    /// - output: `[b, n, query_dim]`
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.split_heads(ops::linear(&self.to_q, x));
        let k = self.split_heads(ops::linear(&self.to_k, context.clone()));
        let v = self.split_heads(ops::linear(&self.to_v, context));
        let out = ops::attention(q, k, v);
        ops::linear(&self.to_out, self.merge_heads(out))
    }

    /// `[b, n, heads·d]` → `[b·heads, n, d]`
    fn split_heads(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, c] = x.dims();
        let d = c / self.heads;
        x.reshape([b, n, self.heads, d]).swap_dims(1, 2).reshape([b * self.heads, n, d])
    }

    /// `[b·heads, n, d]` → `[b, n, heads·d]`
    fn merge_heads(&self, x: Tensor<3>) -> Tensor<3> {
        let [bh, n, d] = x.dims();
        let b = bh / self.heads;
        x.reshape([b, self.heads, n, d]).swap_dims(1, 2).reshape([b, n, self.heads * d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(tensor: Tensor<3>) -> Vec<f32> {
        crate::block_on(tensor.into_data_async()).unwrap().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn chunked_attention_equals_whole_attention() {
        let device = Device::flex();
        let pattern = |shape: [usize; 3], seed: usize| {
            let n = shape.iter().product::<usize>();
            let data: Vec<f32> =
                (0..n).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0) - 1.0).collect();
            Tensor::<3>::from_data(TensorData::new(data, shape), &device)
        };
        let (q, k, v) = (pattern([3, 37, 8], 1), pattern([3, 19, 8], 2), pattern([3, 19, 8], 3));
        let whole = values(attention_chunked(q.clone(), k.clone(), v.clone(), usize::MAX));
        // Room for 5 query rows of f32 scores per chunk: 8 chunks, the last one short.
        let budget = 3 * 19 * 4 * 5;
        let chunked = values(attention_chunked(q, k, v, budget));
        assert_eq!(whole.len(), chunked.len());
        for (a, b) in whole.iter().zip(&chunked) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }
}
