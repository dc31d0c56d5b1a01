//! Scaled dot-product attention.

use burn::prelude::*;
use burn::tensor::activation::softmax;

/// `softmax(q·kᵀ / √d) · v`, as `torch.nn.functional.scaled_dot_product_attention` without a mask.
///
/// This is the plain formulation: it materialises the `[batch·heads, queries, keys]` score
/// matrix, which is fine for small inputs. Full-size self-attention at 512×512 needs the chunked
/// form, which bounds that buffer below WebGPU's binding limit.
///
/// # Shapes
/// - `q`: `[batch·heads, queries, dim]`
/// - `k`, `v`: `[batch·heads, keys, dim]`
/// - output: `[batch·heads, queries, dim]`
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
    let [_, _, dim] = q.dims();
    let scale = 1.0 / (dim as f64).sqrt();
    let scores = q.matmul(k.swap_dims(1, 2)) * scale; // [bh, queries, keys]
    softmax(scores, 2).matmul(v)
}
