//! Where a run's training pairs come from, and how one micro-batch is drawn from them: one
//! function for the command line (a Fill50K folder) and the browser (the shapes world made on
//! the fly), so that the same seed trains the same way in both.

use burn::prelude::*;
use burn::tensor::DType;

use super::{Draws, Example, NoiseSchedule, TrainError};
use crate::pipeline::{Pipeline, from_rgb8};

/// One training pair at the run's resolution: RGB bytes, rows top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// The image the model learns to make.
    pub target: Vec<u8>,
    /// Its condition map.
    pub source: Vec<u8>,
    pub caption: String,
}

/// A numbered set of training pairs, all `side × side`.
pub trait Pairs {
    /// How many pairs there are (a micro-batch draws indices below it).
    fn count(&self) -> usize;
    /// The side of every pair's images.
    fn side(&self) -> usize;
    /// Pair `index`, fitted to [`Self::side`].
    fn pair(&self, index: usize) -> Result<Pair, TrainError>;
}

/// How a run draws its micro-batches: a pure function of these, the step and the micro-batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub seed: u64,
    pub batch: usize,
    /// The probability that a caption is replaced by "".
    pub prompt_drop: f64,
}

impl Sampling {
    /// The pair indices and the draws of step `step`'s micro-batch `micro`.
    pub fn draw(
        &self,
        count: usize,
        step: u64,
        micro: usize,
        latent_elements: usize,
        timesteps: usize,
    ) -> (Vec<usize>, Draws) {
        let mut rng = Draws::rng(self.seed, step, micro);
        let indices: Vec<usize> = (0..self.batch).map(|_| rng.below(count as u64) as usize).collect();
        let draws = Draws::sample(&mut rng, self.batch, latent_elements, timesteps, self.prompt_drop);
        (indices, draws)
    }
}

/// Pairs `indices` as `[b, 3, R, R]` images in `[-1, 1]`, conditions in `[0, 1]`, and captions.
pub fn batch(
    pairs: &dyn Pairs,
    indices: &[usize],
    device: &Device,
) -> Result<(Tensor<4>, Tensor<4>, Vec<String>), TrainError> {
    let side = pairs.side();
    let (mut images, mut conditions, mut captions) = (Vec::new(), Vec::new(), Vec::new());
    for &index in indices {
        let pair = pairs.pair(index)?;
        images.push(from_rgb8(side, side, &pair.target, device) * 2.0 - 1.0);
        conditions.push(from_rgb8(side, side, &pair.source, device));
        captions.push(pair.caption);
    }
    Ok((Tensor::cat(images, 0), Tensor::cat(conditions, 0), captions))
}

/// Step `step`'s micro-batch `micro` through the pipeline's frozen encoders (the ControlNet
/// recipe's inputs), and the captions' token ids after the prompt drop.
pub fn micro_batch(
    pipeline: &Pipeline,
    pairs: &dyn Pairs,
    sampling: &Sampling,
    step: u64,
    micro: usize,
) -> Result<(Example, Vec<Vec<u32>>), TrainError> {
    let side = pairs.side();
    let [_, channels, h, w] = pipeline.latent_shape(side, side);
    let timesteps = NoiseSchedule::new(&pipeline.scheduler_config)?.len();
    let (indices, draws) = sampling.draw(pairs.count(), step, micro, channels * h * w, timesteps);
    let (images, conditions, captions) = batch(pairs, &indices, &pipeline.device())?;
    let ids = captions
        .iter()
        .zip(&draws.drop)
        .map(|(caption, &drop)| pipeline.tokenizer.encode(if drop { "" } else { caption }))
        .collect();
    let example = Example::encode(
        &pipeline.vae,
        &pipeline.text_encoder,
        &pipeline.tokenizer,
        images,
        conditions,
        &captions,
        &draws,
    );
    // The trainable networks are f32 even where the frozen encoders are not.
    let example = Example {
        latents: example.latents.cast(DType::F32),
        context: example.context.cast(DType::F32),
        ..example
    };
    Ok((example, ids))
}

/// Examples `0..count` of the shapes world made on the fly, as `controlnet world export` writes
/// them to a folder (the same pairs, bit for bit, natively and in wasm).
#[cfg(feature = "world")]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorldPairs {
    pub spec: world::dataset::Spec,
}

#[cfg(feature = "world")]
impl Pairs for WorldPairs {
    fn count(&self) -> usize {
        self.spec.count as usize
    }

    fn side(&self) -> usize {
        self.spec.size
    }

    fn pair(&self, index: usize) -> Result<Pair, TrainError> {
        let (seed, index) = (self.spec.seed, index as u64);
        let example = world::Example::make(seed, index, self.spec.size);
        let source = example.condition(self.spec.condition, seed, index).to_rgb();
        Ok(Pair { target: example.image.pixels, source: source.pixels, caption: example.caption })
    }
}
