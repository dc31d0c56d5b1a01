//! The learning rate over a run: diffusers' `get_scheduler` schedules (`optimization.py`), as
//! factors of the base rate. The factor of the `k`-th optimiser step (from 0) is
//! `lr_lambda(k)`: torch's `LambdaLR` steps after the optimiser.

use serde::{Deserialize, Serialize};

/// How the learning rate changes over a run, by diffusers' `--lr_scheduler` names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The base rate throughout (`constant`, `train_controlnet.py`'s default).
    #[default]
    Constant,
    /// Linear from 0 over `warmup` steps, then the base rate (`constant_with_warmup`).
    ConstantWithWarmup { warmup: u64 },
    /// Linear warmup, then linearly down to 0 at step `total` (`linear`).
    Linear { warmup: u64, total: u64 },
    /// Linear warmup, then half a cosine down to 0 at step `total` (`cosine`).
    Cosine { warmup: u64, total: u64 },
}

impl LrSchedule {
    /// The names `named` takes (diffusers' `--lr_scheduler` values).
    pub const NAMES: [&str; 4] = ["constant", "constant_with_warmup", "linear", "cosine"];

    /// The schedule diffusers calls `name`, warming up over `warmup` steps, decaying to 0 at
    /// step `total`.
    pub fn named(name: &str, warmup: u64, total: u64) -> Result<Self, String> {
        Ok(match name {
            "constant" if warmup == 0 => LrSchedule::Constant,
            "constant" => {
                return Err("a constant learning rate has no warmup (constant_with_warmup has)".into());
            }
            "constant_with_warmup" => LrSchedule::ConstantWithWarmup { warmup },
            "linear" => LrSchedule::Linear { warmup, total },
            "cosine" => LrSchedule::Cosine { warmup, total },
            _ => return Err(format!("unknown learning-rate schedule `{name}` ({})", Self::NAMES.join(", "))),
        })
    }

    /// The factor of the base rate at optimiser step `step` (from 0).
    pub fn factor(&self, step: u64) -> f64 {
        let warming = |warmup: u64| (step < warmup).then(|| step as f64 / warmup.max(1) as f64);
        let decay =
            |warmup: u64, total: u64| (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::ConstantWithWarmup { warmup } => warming(warmup).unwrap_or(1.0),
            LrSchedule::Linear { warmup, total } => {
                warming(warmup).unwrap_or_else(|| (1.0 - decay(warmup, total)).max(0.0))
            }
            LrSchedule::Cosine { warmup, total } => warming(warmup).unwrap_or_else(|| {
                (0.5 * (1.0 + (std::f64::consts::PI * decay(warmup, total)).cos())).max(0.0)
            }),
        }
    }
}
