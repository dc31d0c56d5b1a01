//! Checkpoints: the trained ControlNet in diffusers' layout, and what resuming needs beside it.
//!
//! A checkpoint folder is a diffusers `ControlNetModel` folder (`config.json`,
//! `diffusion_pytorch_model.safetensors` in f32 and the `.fp16` variant), so
//! `ControlNetModel.from_pretrained(folder)` loads it, plus `optimizer.bpk` (the optimiser
//! states, burn's burnpack, keyed by [`stable_ids`]) and `state.json` (the step, the seed and the
//! recipe). Writing goes to a temporary folder renamed over the old one only once complete, so an
//! interrupted or failed save never destroys the last good checkpoint.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use burn::module::{ModuleMapper, Param, ParamId};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Recipe, TrainError};
use crate::config::to_diffusers_json;
use crate::save::to_safetensors;
use crate::{ControlNet, Precision};

/// A base checkpoint's folder of the trained UNet when its `unet/` holds their moving average
/// (`Recipe::ema_decay`): what a resumed run continues from, never part of an exported pipeline.
pub const TRAINED_UNET: &str = "unet_trained";
/// The files of a checkpoint's weights, by name.
pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";
pub const WEIGHTS_FP16: &str = "diffusion_pytorch_model.fp16.safetensors";
pub const OPTIMIZER: &str = "optimizer.bpk";
pub const STATE: &str = "state.json";

/// What a run needs, beside the weights, to continue exactly where it stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps taken.
    pub step: u64,
    /// The run's seed: with the step, it fixes every later draw (see [`super::Draws::rng`]).
    pub seed: u64,
    pub recipe: Recipe,
    /// The smoothed loss the progress bar shows, carried over.
    pub loss_ema: Option<f64>,
}

/// `module` with every float parameter's id derived from its module path (and `namespace`), so
/// that optimiser states saved by one process find their parameters in another, and its values
/// in row-major memory.
pub fn stable_ids<M: Module>(module: M, namespace: &str) -> M {
    module.map(&mut StableIds { path: vec![namespace.to_owned()] })
}

struct StableIds {
    path: Vec<String>,
}

impl ModuleMapper for StableIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // Also in row-major memory: a loaded linear weight is a transposed view of the file's
        // layout, which a backend may multiply in another summation order than the contiguous
        // result of an optimiser step, and a resumed run must compute what an uninterrupted
        // one does, to the bit. Flattening a view copies it.
        let param = param.map(|tensor| {
            let shape = tensor.shape();
            tensor.reshape([-1]).reshape(shape)
        });
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.path.join(".").hash(&mut hasher);
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(ParamId::from(hasher.finish()), tensor, mapper)
    }
}

/// The ControlNet's checkpoint files: `config.json` and the weights in f32 and f16.
pub async fn controlnet_files(controlnet: &ControlNet) -> Vec<(&'static str, Vec<u8>)> {
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    vec![
        (CONFIG, to_diffusers_json(&controlnet.config, "ControlNetModel").into_bytes()),
        (WEIGHTS, to_safetensors(controlnet, Precision::F32, &metadata).await),
        (WEIGHTS_FP16, to_safetensors(controlnet, Precision::F16, &metadata).await),
    ]
}

/// Writes a checkpoint to `dir`, replacing the one there only once every file is written.
pub fn write(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), TrainError> {
    let error = |what: &str, path: &Path, e: std::io::Error| {
        TrainError::Checkpoint(format!("cannot {what} {}: {e}", path.display()))
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| error("create", parent, e))?;
    let name =
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into());
    let temporary = parent.join(format!(".{name}.partial"));
    let old = parent.join(format!(".{name}.old"));
    for stale in [&temporary, &old] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(|e| error("remove", stale, e))?;
        }
    }
    std::fs::create_dir_all(&temporary).map_err(|e| error("create", &temporary, e))?;
    for (file, bytes) in files {
        let path = temporary.join(file);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(|e| error("create", folder, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| error("write", &path, e))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| error("move aside", dir, e))?;
    }
    std::fs::rename(&temporary, dir).map_err(|e| error("rename", &temporary, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| error("remove", &old, e))?;
    }
    Ok(())
}

/// A checkpoint folder's run state and optimiser bytes.
pub fn read_state(dir: &Path) -> Result<(RunState, Vec<u8>), TrainError> {
    let read = |file: &str| -> Result<Vec<u8>, TrainError> {
        let path: PathBuf = dir.join(file);
        std::fs::read(&path)
            .map_err(|e| TrainError::Checkpoint(format!("cannot read {}: {e}", path.display())))
    };
    let state = serde_json::from_slice(&read(STATE)?)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", dir.join(STATE).display())))?;
    Ok((state, read(OPTIMIZER)?))
}
