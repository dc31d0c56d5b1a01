//! The heavy ops of every layer — convolution, group norm (+ SiLU), attention, and the linear
//! layers — in one place, so that the kernels of [`crate::kernels`] replace burn's everywhere at
//! once.
//!
//! Built with the `kernels` feature, each function runs the [`crate::kernels::selected`] kernel
//! where the tensors live on a cubecl (wgpu) device and burn's op elsewhere; without it, burn's
//! op always. Either way the result equals diffusers' within the model tests' tolerances.
//! Natively, `crate::kernels::profile` can attribute a step's time to these ops.

use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::silu;

/// `conv.forward(x)`.
pub fn conv(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [kh, kw] = conv.kernel_size;
    profiled(
        move || format!("conv{kh}x{kw}"),
        x,
        |x| {
            #[cfg(feature = "kernels")]
            if !under_autodiff(&x, &conv.weight.val()) {
                return crate::kernels::conv_module(conv, x);
            }
            conv.forward(x)
        },
    )
}

/// `norm.forward(x)`.
pub fn group_norm(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    profiled(
        || "group_norm".into(),
        x,
        |x| {
            #[cfg(feature = "kernels")]
            if !under_autodiff(&x, &x) {
                return crate::kernels::group_norm_module(norm, x, false);
            }
            norm.forward(x)
        },
    )
}

/// `silu(norm.forward(x))`, the pair that opens every ResNet half: one pass on the GPU.
pub fn group_norm_silu(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    profiled(
        || "group_norm_silu".into(),
        x,
        |x| {
            #[cfg(feature = "kernels")]
            if !under_autodiff(&x, &x) {
                return crate::kernels::group_norm_module(norm, x, true);
            }
            silu(norm.forward(x))
        },
    )
}

/// `linear.forward(x)`: burn's matmul everywhere, here so that a profile counts it.
pub fn linear<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    profiled(|| "linear".into(), x, |x| linear.forward(x))
}

/// `softmax(q·kᵀ/√d)·v` (see [`super::attention::attention`] for shapes and precision).
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
    let kind = if q.dims()[1] == k.dims()[1] { "self" } else { "cross" };
    // Waiting for `v`, the last input computed, waits for the others too.
    profiled(
        move || format!("attention ({kind})"),
        v,
        |v| {
            #[cfg(feature = "kernels")]
            if !under_autodiff(&q, &v) {
                return crate::kernels::attention(q, k, v);
            }
            super::attention::attention(q, k, v)
        },
    )
}

/// `op(input)`, timed under `class` by `crate::kernels::profile` where there is one (native
/// builds with `kernels`) and profiling is on.
fn profiled<const D: usize, const E: usize>(
    class: impl FnOnce() -> String,
    input: Tensor<D>,
    op: impl FnOnce(Tensor<D>) -> Tensor<E>,
) -> Tensor<E> {
    #[cfg(all(feature = "kernels", not(target_family = "wasm")))]
    return crate::kernels::profile::measure(class, input, op);
    #[cfg(not(all(feature = "kernels", not(target_family = "wasm"))))]
    {
        let _ = class;
        op(input)
    }
}

/// Whether a computation is recorded for autodiff (a training step): the hand-written kernels
/// are forward-only, so burn's ops, which have backward passes, run instead. A module's weights
/// on the autodiff device record even where the input does not.
#[cfg(feature = "kernels")]
fn under_autodiff<const A: usize, const B: usize>(x: &Tensor<A>, weight: &Tensor<B>) -> bool {
    x.is_autodiff() || weight.is_autodiff()
}
