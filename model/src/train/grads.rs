//! Gradients by parameter: named as checkpoints name them, their global norm, clipping.

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::save::{TorchVisitor, checkpoint_key, group_by_key, torch_layout, visit_torch};

/// One parameter's gradient, named and laid out as PyTorch's `param.grad`.
#[derive(Clone, Debug)]
pub struct ParamGradient {
    /// diffusers' key of the parameter.
    pub key: String,
    /// PyTorch's shape.
    pub shape: Vec<usize>,
    /// The gradient, flattened in PyTorch's order (zeros where it has none).
    pub values: Tensor<1>,
}

/// The gradient of every float parameter of `module`, in module order.
pub fn named_gradients<M: Module>(module: &M, grads: &GradientsParams) -> Vec<ParamGradient> {
    struct Named<'a>(&'a GradientsParams, Vec<ParamGradient>);
    impl TorchVisitor for Named<'_> {
        fn visit<const D: usize>(&mut self, path: String, transpose: bool, param: &Param<Tensor<D>>) {
            let grad =
                self.0.get::<D>(param.id).unwrap_or_else(|| param.val().without_autodiff().zeros_like());
            let (shape, values) = torch_layout(grad, transpose);
            self.1.push(ParamGradient { key: checkpoint_key(&path), shape, values });
        }
    }
    let mut named = Named(grads, Vec::new());
    visit_torch(module, &mut named);
    // A tensor held as row blocks has one gradient, its blocks' rows in order.
    group_by_key(named.1, |g| &g.key)
        .into_iter()
        .map(|mut blocks| {
            if blocks.len() == 1 {
                return blocks.pop().expect("one");
            }
            let mut shape = blocks[0].shape.clone();
            shape[0] = blocks.iter().map(|b| b.shape[0]).sum();
            let key = blocks[0].key.clone();
            ParamGradient {
                key,
                shape,
                values: Tensor::cat(blocks.into_iter().map(|b| b.values).collect(), 0),
            }
        })
        .collect()
}

/// The sum of the squares of every gradient `grads` holds for `module`'s parameters, `[1]`.
pub fn squared_norm<M: Module>(module: &M, grads: &GradientsParams, device: &Device) -> Tensor<1> {
    let mut squares = SumSquares { grads, total: Tensor::zeros([1], device) };
    module.visit(&mut squares);
    squares.total
}

/// torch's `clip_grad_norm_` factor for a global `norm`: `max_norm / (norm + 1e-6)`, at most 1,
/// kept on the device (no read-back).
pub fn clip_factor(norm: Tensor<1>, max_norm: f64) -> Tensor<1> {
    (norm.add_scalar(1e-6).recip() * max_norm).clamp_max(1.0)
}

/// Multiplies every gradient `grads` holds for `module`'s parameters by `factor` (`[1]`).
pub fn scale_by<M: Module>(module: &M, grads: &mut GradientsParams, factor: Tensor<1>) {
    let mut scale = Scale { grads, factor };
    module.visit(&mut scale);
}

struct SumSquares<'a> {
    grads: &'a GradientsParams,
    total: Tensor<1>,
}

impl ModuleVisitor for SumSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let square = grad.square().sum().reshape([1]);
            self.total = self.total.clone() + square;
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: Tensor<1>,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            let factor = self.factor.clone().reshape([1; D]);
            self.grads.register::<D>(param.id, grad * factor);
        }
    }
}
