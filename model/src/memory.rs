//! The loaded models' memory [`Profile`]: their weights measured, their activations' shapes read
//! from their configs, for `vocabulary::memory::estimate` (which the page runs without burn).

use burn::module::{Module, Param};
use burn::prelude::*;

pub use vocabulary::memory::{AttentionShape, MemoryEstimate, Profile, UNetShape, Weight, estimate};

use crate::clip::ClipTextModel;
use crate::config::{BlockKind, EncoderConfig};
use crate::pipeline::Pipeline;
use crate::save::{TorchVisitor, visit_torch};
use crate::vae::AutoencoderKL;
use crate::{ControlNet, Precision, UNet};

/// A module's parameters: how many elements in all, and its largest tensor (elements, path).
/// Shapes are read without initialising lazy parameters.
fn parameters<M: Module>(module: &M) -> (u64, (u64, String)) {
    #[derive(Default)]
    struct Count {
        total: u64,
        largest: (u64, String),
    }
    impl TorchVisitor for Count {
        fn visit<const D: usize>(&mut self, path: String, _transpose: bool, param: &Param<Tensor<D>>) {
            // One buffer each: a tensor held as row blocks counts block by block.
            let elements = param.lazy_shape().num_elements() as u64;
            self.total += elements;
            if elements > self.largest.0 {
                self.largest = (elements, path);
            }
        }
    }
    let mut count = Count::default();
    visit_torch(module, &mut count);
    (count.total, count.largest)
}

/// A ControlNet's weights, in bytes, in `precision`.
pub fn controlnet_weight_bytes(controlnet: &ControlNet, precision: Precision) -> u64 {
    parameters(controlnet).0 * precision.bytes()
}

/// The profile of a pipeline and its ControlNets: the UNet, the text encoder and the ControlNets
/// in `precision`, the VAE in `vae_precision`.
pub fn profile(
    unet: &UNet,
    text_encoder: &ClipTextModel,
    vae: &AutoencoderKL,
    controlnets: &[&ControlNet],
    precision: Precision,
    vae_precision: Precision,
) -> Profile {
    let (unet_elements, unet_largest) = parameters(unet);
    let (text_elements, text_largest) = parameters(text_encoder);
    let (vae_elements, vae_largest) = parameters(vae);
    let controlnets: Vec<_> = controlnets.iter().map(|c| parameters(*c)).collect();
    // The largest weight of them all (the first of equals, in this order).
    let (bytes, path, part) = [
        (unet_largest, precision, "UNet"),
        (text_largest, precision, "text encoder"),
        (vae_largest, vae_precision, "VAE"),
    ]
    .into_iter()
    .chain(controlnets.iter().map(|(_, largest)| (largest.clone(), precision, "ControlNet")))
    .map(|((elements, path), precision, part)| (elements * precision.bytes(), path, part))
    .reduce(|best, next| if next.0 > best.0 { next } else { best })
    .expect("a pipeline has weights");
    let name = if path.ends_with("token_embedding.weight") {
        format!("the {part}'s token embedding")
    } else {
        format!("the {part}'s weight `{path}`")
    };
    Profile {
        pipeline_weight_bytes: (unet_elements + text_elements) * precision.bytes()
            + vae_elements * vae_precision.bytes(),
        controlnet_weight_bytes: controlnets
            .iter()
            .map(|(elements, _)| elements * precision.bytes())
            .collect(),
        largest_weight: Weight { bytes, name },
        element_bytes: precision.bytes(),
        vae_element_bytes: vae_precision.bytes(),
        latent_scale: vae.scale_factor() as u32,
        unet: unet_shape(&unet.config.encoder, |dim| scores_in_memory(unet, dim, precision)),
        vae_decoder_elements: crate::vae::decoder_elements_per_latent(&vae.config) as u64,
        vae_mid_attention: vae.config.mid_block_add_attention
            && scores_in_memory(unet, *vae.config.block_out_channels.last().unwrap_or(&0), vae_precision),
    }
}

impl Pipeline {
    /// The memory profile of this pipeline with `controlnets`.
    pub fn memory_profile(&self, controlnets: &[&ControlNet]) -> Profile {
        let vae_precision = crate::precision::of_dtype(self.vae.dtype());
        profile(&self.unet, &self.text_encoder, &self.vae, controlnets, self.precision, vae_precision)
    }
}

/// Whether an attention over heads of `dim` keeps its scores in memory on the models' device (burn's
/// chunked scores), or runs as flash attention (the kernels', on a GPU), which keeps none.
fn scores_in_memory(unet: &UNet, dim: usize, precision: Precision) -> bool {
    #[cfg(feature = "kernels")]
    {
        use crate::PrecisionExt;
        !crate::kernels::flash_runs(&unet.conv_in.weight.val().device(), dim, precision.dtype())
    }
    #[cfg(not(feature = "kernels"))]
    {
        let _ = (unet, dim, precision);
        true
    }
}

/// The UNet's activations per latent pixel, from its config (diffusers' `UNet2DConditionModel`):
/// level `i` has `block_out_channels[i]` channels at `1/4^i` of the latent area. `in_memory`
/// tells whether an attention over heads of a width keeps its scores.
fn unet_shape(config: &EncoderConfig, in_memory: impl Fn(usize) -> bool) -> UNetShape {
    let channels = &config.block_out_channels;
    let levels = channels.len();
    let area = |level: usize| 1.0 / 4f64.powi(level as i32);
    // conv_in, then each level's resnets and (but the last) its downsampler, a level down.
    let mut skip_elements = channels[0] as f64;
    for (level, &c) in channels.iter().enumerate() {
        skip_elements += (config.layers_per_block * c) as f64 * area(level);
        if level + 1 < levels {
            skip_elements += c as f64 * area(level + 1);
        }
    }
    let kinds = config.down_block_kinds().unwrap_or_default();
    let first_attention = kinds.iter().position(|kind| *kind == BlockKind::CrossAttn);
    UNetShape {
        skip_elements,
        first_resnet: channels[0] as f64,
        concat: (channels[1.min(levels - 1)] + channels[0]) as f64,
        // GEGLU: the feed-forward's inner width is 4 × the channels, projected to twice that.
        feed_forward: first_attention.map_or(0.0, |level| (8 * channels[level]) as f64 * area(level)),
        attention: first_attention
            .filter(|&level| in_memory(channels[level] / config.heads(level).max(1)))
            .map(|level| AttentionShape { heads: config.heads(level) as u64, downscale: 1 << level }),
    }
}
