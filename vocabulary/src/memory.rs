//! How much GPU memory a generation needs, before asking for it.
//!
//! WebGPU tells a page nothing about the GPU's memory, only the largest buffer it may create
//! (`maxBufferSize`) and bind (`maxStorageBufferBindingSize`). A buffer over either limit fails
//! deep inside the worker, after the models are loaded; the page checks the largest buffer of a
//! generation against both first, and shows a rough total so that a 4 GB GPU's owner can judge.
//!
//! The figures are those of the models actually loaded: the worker measures their weights and
//! reads their shapes from their configs (`model::memory::profile`) into a [`Profile`], which
//! crosses to the page with the load; [`estimate`] turns it into bytes for a size. The caps are
//! the model's chunking and tiling policies, declared here once: [`MAX_SCORE_BYTES`] and
//! [`MAX_BUFFER_BYTES`].

use serde::{Deserialize, Serialize};

/// The most bytes one chunk of attention scores may take: the model computes the `[batch·heads,
/// queries, keys]` f32 scores in chunks of queries no larger than this. WebGPU's default storage
/// binding is 128 MiB; half of it leaves room for the softmax's temporaries.
pub const MAX_SCORE_BYTES: u64 = 64 << 20;

/// WebGPU's default `maxStorageBufferBindingSize`, 128 MiB: the VAE decodes in tiles when a whole
/// decode's largest buffer would exceed it.
pub const MAX_BUFFER_BYTES: u64 = 128 << 20;

/// Classifier-free guidance runs the UNet on the prompt and the negative prompt together.
const BATCH: u64 = 2;

/// The loaded models, as far as memory goes: what their weights take, and the shapes of their
/// activations per latent pixel (they grow with the image's area).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The UNet, the text encoder and the VAE, in the dtypes they were loaded in.
    pub pipeline_weight_bytes: u64,
    /// Each ControlNet, in the order they were loaded.
    pub controlnet_weight_bytes: Vec<u64>,
    /// The largest single weight.
    pub largest_weight: Weight,
    /// Bytes of one element of the UNet's (and the ControlNets') activations: 2 in f16, 4 in f32.
    pub element_bytes: u64,
    /// Bytes of one element of the VAE decoder's activations (4 where `force_upcast` keeps it in
    /// f32).
    pub vae_element_bytes: u64,
    /// Image pixels per latent pixel along a side (the VAE's scale factor: 8 for SD1.5).
    pub latent_scale: u32,
    pub unet: UNetShape,
    /// The VAE decoder's widest activation, in elements per latent pixel (SD1.5: 256 channels at
    /// 8 × 8 pixels per latent, 16 384).
    pub vae_decoder_elements: u64,
    /// Whether the VAE's mid block has attention over all latent pixels whose scores are kept in
    /// memory (false where flash attention runs it).
    pub vae_mid_attention: bool,
}

/// A weight: its size and what it is, for the message when it does not fit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weight {
    pub bytes: u64,
    /// "the text encoder's token embedding".
    pub name: String,
}

/// The UNet's activations, in elements per latent pixel of one batch element (a quarter for
/// each halving of the sides: SD1.5's 1280 channels two levels down count 80).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetShape {
    /// The skip connections kept for the up path: `conv_in`, every down resnet and every
    /// downsampler (SD1.5: 1620).
    pub skip_elements: f64,
    /// The first resnet's output (SD1.5: 320).
    pub first_resnet: f64,
    /// The last up block's concatenation of its input and a skip (SD1.5: 640 + 320).
    pub concat: f64,
    /// The first transformer's feed-forward projection (GEGLU: 8 × its channels; SD1.5: 2560).
    pub feed_forward: f64,
    /// The first (largest) self-attention, where its scores are kept in memory: `None` where
    /// there is none, or where flash attention (the GPU kernels') runs it without scores.
    pub attention: Option<AttentionShape>,
}

/// A self-attention's scores: `heads` per batch element over every token of its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionShape {
    pub heads: u64,
    /// Latent pixels per token along a side: 1 at the latent size, 2 one level down.
    pub downscale: u64,
}

/// What a generation needs, in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// The loaded models.
    pub weights_bytes: u64,
    /// Activations at their peak: a rough figure (see [`estimate`]).
    pub activations_bytes: u64,
    /// The largest single buffer, which must fit WebGPU's buffer limits.
    pub largest_buffer_bytes: u64,
    /// What that buffer holds, for the message when it does not fit.
    pub largest_buffer: String,
    /// Whether a smaller image makes that buffer smaller (a weight does not shrink).
    pub largest_depends_on_size: bool,
}

impl MemoryEstimate {
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes + self.activations_bytes
    }

    /// One line for the page: "≈ 3.4 GB of GPU memory; largest buffer 128 MiB".
    pub fn summary(&self) -> String {
        let total = self.total_bytes() as f64;
        let total = if total >= 1e9 {
            format!("{:.1} GB", total / 1e9)
        } else {
            format!("{:.0} MB", (total / 1e6).max(1.0))
        };
        format!("≈ {total} of GPU memory; largest buffer {}", mebibytes(self.largest_buffer_bytes as f64))
    }
}

/// The estimate for one `width × height` image with `running` of the loaded ControlNets steering
/// it (all of them stay loaded: their weights count whether they run or not).
///
/// The largest buffer is the biggest of: the UNet's feed-forward projection (the first
/// transformer's), the last up block's concatenation, the first resnet's output, one chunk of the
/// first self-attention's f32 scores (capped by chunking), the VAE decoder's widest activation
/// (capped by tiling), and the largest weight.
///
/// The activations are a rough figure, meant to tell 4 GB from 8 GB, not to budget bytes: the
/// UNet's skip connections (and as many again for the ControlNets' summed residuals, and again
/// for the ControlNet running), three of the largest UNet activation alive at once (an op's
/// input, output and one temporary), and two attention score chunks (scores and softmax); or the
/// VAE decoder's three largest buffers, whichever is more, since the decoder runs after the UNet
/// has freed its activations. Convolution temporaries are assumed no larger than their outputs,
/// as the model's tiling assumes.
pub fn estimate(profile: &Profile, width: u32, height: u32, running: usize) -> MemoryEstimate {
    let weights = profile.pipeline_weight_bytes + profile.controlnet_weight_bytes.iter().sum::<u64>();
    let scale = u64::from(profile.latent_scale.max(1));
    let (width, height) = (u64::from(width), u64::from(height));
    let area = (width / scale).max(1) * (height / scale).max(1);
    let unet = &profile.unet;
    let bytes =
        |per_latent: f64| (BATCH as f64 * per_latent * area as f64).ceil() as u64 * profile.element_bytes;
    let feed_forward = bytes(unet.feed_forward);
    let concat = bytes(unet.concat);
    let first_resnet = bytes(unet.first_resnet);
    let scores = unet.attention.map_or(0, |attention| {
        let tokens = (area / (attention.downscale * attention.downscale)).max(1);
        attention_chunk_bytes(BATCH * attention.heads, tokens, tokens)
    });
    let vae = (profile.vae_decoder_elements * area * profile.vae_element_bytes).min(MAX_BUFFER_BYTES);
    let vae_scores = if profile.vae_mid_attention { attention_chunk_bytes(1, area, area) } else { 0 };

    let weight = &profile.largest_weight;
    let candidates = [
        (feed_forward, "the UNet's feed-forward projection".to_owned(), true),
        (concat, "the UNet's last up block".to_owned(), true),
        (first_resnet, "the UNet's first resnet".to_owned(), true),
        (scores.max(vae_scores), "a chunk of attention scores".to_owned(), true),
        (vae, "the VAE decoder".to_owned(), true),
        (weight.bytes, weight.name.clone(), false),
    ];
    // The first of equals: the size-dependent buffers come first.
    let (largest, name, depends) = candidates
        .iter()
        .fold(&candidates[0], |best, candidate| if candidate.0 > best.0 { candidate } else { best })
        .clone();

    let skips = bytes(unet.skip_elements);
    let skip_sets = if running > 0 { 3 } else { 1 };
    let unet_largest = feed_forward.max(concat).max(first_resnet);
    let unet = skips * skip_sets + 3 * unet_largest + 2 * scores;
    let decoder = 3 * vae + 2 * vae_scores;

    MemoryEstimate {
        weights_bytes: weights,
        activations_bytes: unet.max(decoder),
        largest_buffer_bytes: largest,
        largest_buffer: name,
        largest_depends_on_size: depends,
    }
}

/// One chunk of f32 attention scores `[batch·heads, queries, keys]`, as the model sizes it: as
/// many query rows as fit [`MAX_SCORE_BYTES`], at least one.
pub fn attention_chunk_bytes(batch_heads: u64, queries: u64, keys: u64) -> u64 {
    let row_bytes = batch_heads * keys * 4;
    let rows = (MAX_SCORE_BYTES / row_bytes.max(1)).clamp(1, queries.max(1));
    rows * row_bytes
}

/// Refuses a generation whose largest buffer exceeds the adapter's `maxBufferSize` or
/// `maxStorageBufferBindingSize` (every activation is bound as a storage buffer). A limit of 0 or
/// less, or not a number, is unknown and not checked.
pub fn check(
    estimate: &MemoryEstimate,
    max_buffer_size: f64,
    max_storage_buffer_binding_size: f64,
) -> Result<(), String> {
    let known = |limit: f64| limit.is_finite() && limit > 0.0;
    let limits = [
        (max_buffer_size, "maxBufferSize"),
        (max_storage_buffer_binding_size, "maxStorageBufferBindingSize"),
    ];
    let Some((limit, limit_name)) =
        limits.into_iter().filter(|(limit, _)| known(*limit)).min_by(|a, b| a.0.total_cmp(&b.0))
    else {
        return Ok(());
    };
    let needed = estimate.largest_buffer_bytes as f64;
    if needed <= limit {
        return Ok(());
    }
    let advice = if estimate.largest_depends_on_size {
        "try a smaller size"
    } else {
        "it does not depend on the image size: this GPU cannot run the model in this precision"
    };
    Err(format!(
        "{} needs a {} buffer, more than this GPU allows ({}, its {limit_name}); {advice}.",
        capitalised(&estimate.largest_buffer),
        mebibytes(needed),
        mebibytes(limit),
    ))
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Bytes as MiB, or GiB from 1 GiB up.
pub fn mebibytes(bytes: f64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes >= 1024.0 * MIB {
        format!("{:.1} GiB", bytes / (1024.0 * MIB))
    } else if bytes >= 10.0 * MIB {
        format!("{:.0} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn attention_scores_are_chunked() {
        // 512²: 16 heads × 4096 keys × 4 bytes per query row; 256 rows fit 64 MiB.
        assert_eq!(attention_chunk_bytes(16, 4096, 4096), 64 * MIB);
        // 64²: all 64 rows, far below the cap.
        assert_eq!(attention_chunk_bytes(16, 64, 64), 16 * 64 * 64 * 4);
        // Rows wider than the budget: one row at a time.
        assert_eq!(attention_chunk_bytes(16, 1 << 21, 1 << 21), 16 * (1 << 21) * 4);
    }

    #[test]
    fn sizes_read_as_mebibytes() {
        assert_eq!(mebibytes(84.0 * MIB as f64), "84 MiB");
        assert_eq!(mebibytes(4.0 * MIB as f64), "4.0 MiB");
        assert_eq!(mebibytes(1.5 * 1024.0 * MIB as f64), "1.5 GiB");
    }
}
