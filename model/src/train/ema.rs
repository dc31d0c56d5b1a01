//! An exponential moving average of a trained module's weights, as diffusers' `EMAModel` keeps
//! it (`training_utils.py`, the defaults of `train_text_to_image.py --use_ema`): diffusion models
//! are sampled from the average, whose weights move less from step to step than the trained ones.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// The average of `M`'s weights, kept on the trained module's inner (non-autodiff) device.
pub struct Ema<M: Module> {
    module: M,
    /// The most the decay grows to (diffusers' `decay`, 0.9999 by default).
    max_decay: f64,
    /// Updates so far (diffusers' `optimization_step`).
    updates: u64,
}

impl<M: Module + Clone> Ema<M> {
    /// An average that starts as `module`'s weights (without autodiff) and grows its decay to
    /// `max_decay`.
    pub fn new(module: &M, max_decay: f64) -> Self {
        Self { module: module.valid(), max_decay, updates: 0 }
    }

    /// The averaged module.
    pub fn module(&self) -> &M {
        &self.module
    }

    /// Updates so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// diffusers' `get_decay` without warmup: 0 at the first update (the average is the weights),
    /// then `(1 + n) / (10 + n)` after `n` updates, at most `max_decay`.
    pub fn decay(&self, update: u64) -> f64 {
        let n = update.saturating_sub(1);
        if n == 0 { 0.0 } else { ((1 + n) as f64 / (10 + n) as f64).min(self.max_decay) }
    }

    /// One update from `trained` (after its optimiser step): `s ← s − (1 − decay)·(s − θ)` for
    /// every float parameter, matched by parameter id.
    pub fn update(&mut self, trained: &M) {
        self.updates += 1;
        let mut weights = Weights(GradientsParams::new());
        trained.visit(&mut weights);
        let keep = self.decay(self.updates);
        let mut blend = Blend { weights: weights.0, keep };
        self.module = self.module.clone().map(&mut blend);
    }

    /// Continues from a checkpoint: the saved average (with the trained module's parameter ids)
    /// and its update count.
    pub fn resume(mut self, module: M, updates: u64) -> Self {
        self.module = module.valid();
        self.updates = updates;
        self
    }
}

/// Every float parameter's current value, without its graph, by id.
struct Weights(GradientsParams);

impl ModuleVisitor for Weights {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.register::<D>(param.id, param.val().without_autodiff());
    }
}

struct Blend {
    weights: GradientsParams,
    keep: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(weight) = self.weights.remove::<D>(param.id) else { return param };
        let keep = self.keep;
        param.map(|average| average.clone() - (average - weight) * (1.0 - keep))
    }
}
