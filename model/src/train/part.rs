//! What every trainer does with each module it trains: gradients collected over micro-batches,
//! one global norm over all of them, AdamW, and the optimiser state for checkpoints.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Gradients;

use super::grads::{clip_factor, scale_by, squared_norm};
use super::{AdamW, TrainError};

/// One trained module with its optimiser and learning rate.
pub(crate) struct Part<M: Module> {
    pub module: M,
    optim: ModuleOptimizer,
    lr: f64,
    accumulated: GradientsAccumulator<M>,
    pending: Option<GradientsParams>,
}

impl<M: Module + Clone> Part<M> {
    pub fn new(module: M, adamw: &AdamW, lr: f64) -> Self {
        Self { module, optim: adamw.optimizer(), lr, accumulated: GradientsAccumulator::new(), pending: None }
    }
}

/// The trainer-facing side of a [`Part`], without its module type.
pub(crate) trait Trained {
    /// Takes this module's gradients out of `grads` and adds them to the step's.
    fn collect(&mut self, grads: &mut Gradients);
    /// `[1]`: the sum of squares of the step's gradients.
    fn squared_norm(&mut self, device: &Device) -> Tensor<1>;
    /// Scales the step's gradients by `factor` (when clipping) and takes the AdamW step at the
    /// learning rate times `lr_factor` (the schedule's).
    fn apply(&mut self, factor: Option<Tensor<1>>, lr_factor: f64);
    /// The optimiser state (burnpack bytes).
    fn optimizer_bytes(&self) -> Result<Vec<u8>, TrainError>;
    /// Restores the optimiser state.
    fn load_optimizer(&mut self, bytes: Vec<u8>) -> Result<(), TrainError>;
}

impl<M: Module + Clone> Trained for Part<M> {
    fn collect(&mut self, grads: &mut Gradients) {
        let params = GradientsParams::from_module(grads, &self.module);
        self.accumulated.accumulate(&self.module, params);
    }

    fn squared_norm(&mut self, device: &Device) -> Tensor<1> {
        let grads = self.pending.get_or_insert_with(|| self.accumulated.grads());
        squared_norm(&self.module, grads, device)
    }

    fn apply(&mut self, factor: Option<Tensor<1>>, lr_factor: f64) {
        let mut grads = self.pending.take().unwrap_or_else(|| self.accumulated.grads());
        if let Some(factor) = factor {
            scale_by(&self.module, &mut grads, factor);
        }
        self.module = self.optim.step(self.lr * lr_factor, self.module.clone(), grads);
    }

    fn optimizer_bytes(&self) -> Result<Vec<u8>, TrainError> {
        Ok(self
            .optim
            .into_bytes()
            .map_err(|e| TrainError::Checkpoint(format!("optimiser state: {e:?}")))?
            .to_vec())
    }

    fn load_optimizer(&mut self, bytes: Vec<u8>) -> Result<(), TrainError> {
        let optim = std::mem::replace(&mut self.optim, AdamW::default().optimizer());
        self.optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| TrainError::Checkpoint(format!("optimiser state: {e:?}")))?;
        Ok(())
    }
}

/// The end of a step over `parts`: one global gradient norm over all of them, clipped to
/// `max_norm` when given (as `clip_grad_norm_` over the optimiser's parameters), then AdamW on
/// each at its learning rate times `lr_factor`. Returns the norm before clipping.
pub(crate) fn finish_step(
    parts: &mut [&mut dyn Trained],
    max_norm: Option<f64>,
    lr_factor: f64,
    device: &Device,
) -> Option<Tensor<1>> {
    let Some(max_norm) = max_norm else {
        for part in parts.iter_mut() {
            part.apply(None, lr_factor);
        }
        return None;
    };
    let total = parts.iter_mut().map(|p| p.squared_norm(device)).reduce(|a, b| a + b)?;
    let norm = total.sqrt();
    let factor = clip_factor(norm.clone(), max_norm);
    for part in parts.iter_mut() {
        part.apply(Some(factor.clone()), lr_factor);
    }
    Some(norm)
}
