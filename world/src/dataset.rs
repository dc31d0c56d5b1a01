//! A world written to a folder in the layout of the official tutorial's Fill50K, which
//! `controlnet train` reads and diffusers' `train_controlnet.py` (with the tutorial's loading
//! script) reads too:
//!
//! ```text
//! DIR/prompt.json   {"source": "source/0.png", "target": "target/0.png", "prompt": "a red star …"}
//! DIR/source/N.png  the condition map (RGB, white on black)
//! DIR/target/N.png  the image
//! DIR/world.json    how the folder was made (seed, count, size, condition): enough to make it again
//! ```
//!
//! `prompt.json` is written last, under a temporary name renamed into place, so a folder whose
//! making was interrupted has no index and cannot be trained on by mistake.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vocabulary::Limits;

use crate::{Condition, Example};

/// What a folder holds: examples `0..count` of the world with `seed`, at `size`, with one
/// condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub seed: u64,
    pub count: u64,
    pub size: usize,
    pub condition: Condition,
}

/// One line of `prompt.json`.
#[derive(Serialize)]
struct Line<'a> {
    source: &'a str,
    target: &'a str,
    prompt: &'a str,
}

/// Writes the examples of `spec` to `dir` (created if missing), calling `progress(done)` after
/// each.
pub fn write(dir: &Path, spec: Spec, mut progress: impl FnMut(u64)) -> std::io::Result<()> {
    let largest = Limits::MAX_SIDE as usize;
    if !(8..=largest).contains(&spec.size) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("size {} is outside 8..={largest}", spec.size),
        ));
    }
    std::fs::create_dir_all(dir.join("source"))?;
    std::fs::create_dir_all(dir.join("target"))?;
    let mut index = String::new();
    for i in 0..spec.count {
        let example = Example::make(spec.seed, i, spec.size);
        let map = example.condition(spec.condition, spec.seed, i);
        let (source, target) = (format!("source/{i}.png"), format!("target/{i}.png"));
        std::fs::write(dir.join(&source), preprocess::encode_png(&map.to_rgb()))?;
        std::fs::write(dir.join(&target), preprocess::encode_png(&example.image))?;
        let line = Line { source: &source, target: &target, prompt: &example.caption };
        index.push_str(&serde_json::to_string(&line).map_err(std::io::Error::other)?);
        index.push('\n');
        progress(i + 1);
    }
    std::fs::write(
        dir.join("world.json"),
        serde_json::to_string_pretty(&spec).map_err(std::io::Error::other)?,
    )?;
    let partial = dir.join("prompt.json.partial");
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(index.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(partial, dir.join("prompt.json"))
}
