//! How much GPU memory a generation needs, before asking for it.
//!
//! WebGPU tells a page nothing about the GPU's memory, only the largest buffer it may create
//! (`maxBufferSize`) and bind (`maxStorageBufferBindingSize`). A buffer over either limit fails
//! deep inside the worker, after the models are loaded; the UI checks the largest buffer of a
//! generation against both first, and shows a rough total so that a 4 GB GPU's owner can judge.
//!
//! The figures are SD1.5's (the only architecture the page loads): the shapes below are those of
//! `model::unet`, `model::controlnet` and `model::vae`, and the caps are the model's chunking and
//! tiling policies (`model::nn::attention::MAX_SCORE_BYTES`, `model::vae::MAX_BUFFER_BYTES`).
//! A tiny test model needs far less; the estimate is an upper bound for it.

/// Parameter counts of SD1.5's parts (diffusers' checkpoints, summed over their tensors).
pub const UNET_PARAMS: f64 = 859.5e6;
pub const CONTROLNET_PARAMS: f64 = 361.3e6;
pub const TEXT_ENCODER_PARAMS: f64 = 123.1e6;
/// The VAE runs in f32 whatever the precision: SD1.5's overflows in f16 (`force_upcast`).
pub const VAE_PARAMS: f64 = 83.7e6;

/// CLIP's token embedding, `[49408, 768]`: the largest single weight of the pipeline.
const TOKEN_EMBEDDING_ELEMENTS: u64 = 49_408 * 768;

/// `model::nn::attention::MAX_SCORE_BYTES`: attention scores are computed in chunks of queries
/// no larger than this.
pub const MAX_SCORE_BYTES: u64 = 64 << 20;
/// `model::vae::MAX_BUFFER_BYTES`: the VAE decodes in tiles when a whole decode's largest buffer
/// would exceed this.
pub const VAE_MAX_BUFFER_BYTES: u64 = 128 << 20;

/// Classifier-free guidance runs the UNet on the prompt and the negative prompt together.
const BATCH: u64 = 2;
/// SD1.5's UNet has 8 attention heads in every transformer block.
const HEADS: u64 = 8;
/// The UNet's skip connections, in channels × latent area, summed: `conv_in` (320 at the latent
/// size), two resnets per down block (320, 640, 1280, 1280 channels) and a downsampler after each
/// but the last (each halving both sides): 1620 channels at the latent size in all.
const SKIP_CHANNELS_AT_LATENT_SIZE: u64 = 1620;

/// What a generation needs, in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// The loaded models: UNet, text encoder and ControlNets in the compute precision, the VAE in
    /// f32.
    pub weights_bytes: u64,
    /// Activations at their peak: a rough figure (see [`estimate`]).
    pub activations_bytes: u64,
    /// The largest single buffer, which must fit WebGPU's buffer limits.
    pub largest_buffer_bytes: u64,
    /// What that buffer holds, for the message when it does not fit.
    pub largest_buffer: &'static str,
    /// Whether a smaller image makes that buffer smaller (a weight does not shrink).
    pub largest_depends_on_size: bool,
}

impl MemoryEstimate {
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes + self.activations_bytes
    }

    /// One line for the page: "≈ 3.4 GB of GPU memory; largest buffer 128 MiB".
    pub fn summary(&self) -> String {
        format!(
            "≈ {:.1} GB of GPU memory; largest buffer {}",
            self.total_bytes() as f64 / 1e9,
            mebibytes(self.largest_buffer_bytes as f64)
        )
    }
}

/// The estimate for one `width × height` image with `controlnets` ControlNets loaded, computing
/// in f16 or f32.
///
/// The largest buffer is the biggest of: the UNet's GEGLU projection `[2, hw/64, 2560]` (the
/// feed-forward of the first transformer block), the last up block's concatenation of its input
/// and a skip `[2, 960, h/8, w/8]` (640 + 320 channels), the first resnet's `[2, 320, h/8, w/8]`,
/// one chunk of the first self-attention's f32 scores (capped by chunking), the VAE decoder's
/// `[1, 256, h, w]` f32 (capped by tiling), and CLIP's token embedding.
///
/// The activations are a rough figure, meant to tell 4 GB from 8 GB, not to budget bytes: the
/// UNet's skip connections (and as many again for the ControlNets' summed residuals, and again
/// for the ControlNet running), three of the largest UNet activation alive at once (an op's
/// input, output and one temporary), and two attention score chunks (scores and softmax); or the
/// VAE decoder's three largest buffers, whichever is more, since the decoder runs after the UNet
/// has freed its activations. Convolution temporaries are assumed no larger than their outputs,
/// as `model::vae::tiling` assumes.
pub fn estimate(width: u32, height: u32, f16: bool, controlnets: usize) -> MemoryEstimate {
    let element = if f16 { 2 } else { 4 };
    let weights = (UNET_PARAMS + TEXT_ENCODER_PARAMS + CONTROLNET_PARAMS * controlnets as f64)
        * element as f64
        + VAE_PARAMS * 4.0;

    let (width, height) = (u64::from(width), u64::from(height));
    let area = (width / 8) * (height / 8);
    let geglu = BATCH * area * 2560 * element;
    let concat = BATCH * 960 * area * element;
    let first_resnet = BATCH * 320 * area * element;
    let scores = attention_chunk_bytes(BATCH * HEADS, area, area);
    let vae = (256 * width * height * 4).min(VAE_MAX_BUFFER_BYTES);
    let embedding = TOKEN_EMBEDDING_ELEMENTS * element;

    let candidates = [
        (geglu, "the UNet's feed-forward projection", true),
        (concat, "the UNet's last up block", true),
        (first_resnet, "the UNet's first resnet", true),
        (scores, "a chunk of attention scores", true),
        (vae, "the VAE decoder", true),
        (embedding, "the text encoder's token embedding", false),
    ];
    // The first of equals: the size-dependent buffers come first.
    let (largest, name, depends) = candidates
        .into_iter()
        .fold(candidates[0], |best, candidate| if candidate.0 > best.0 { candidate } else { best });

    let skips = BATCH * SKIP_CHANNELS_AT_LATENT_SIZE * area * element;
    let skip_sets = if controlnets > 0 { 3 } else { 1 };
    let unet_largest = geglu.max(concat).max(first_resnet);
    let unet = skips * skip_sets + 3 * unet_largest + 2 * scores;
    let decoder = 3 * vae;

    MemoryEstimate {
        weights_bytes: weights.round() as u64,
        activations_bytes: unet.max(decoder),
        largest_buffer_bytes: largest,
        largest_buffer: name,
        largest_depends_on_size: depends,
    }
}

/// One chunk of f32 attention scores `[batch·heads, rows, keys]`, as the model sizes it: as
/// many query rows as fit [`MAX_SCORE_BYTES`], at least one.
fn attention_chunk_bytes(batch_heads: u64, queries: u64, keys: u64) -> u64 {
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
        capitalised(estimate.largest_buffer),
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
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    #[test]
    fn weights_follow_the_precision_and_the_controlnets() {
        let f16 = estimate(512, 512, true, 1).weights_bytes as f64;
        // (859.5 + 123.1 + 361.3) M × 2 bytes + 83.7 M × 4 bytes.
        assert!((f16 - 3.0226e9).abs() < 1e6, "{f16}");
        let f32 = estimate(512, 512, false, 1).weights_bytes as f64;
        assert!((f32 - (1343.9e6 * 4.0 + 334.8e6)).abs() < 1e6, "{f32}");
        let two = estimate(512, 512, true, 2).weights_bytes as f64;
        assert!((two - f16 - 722.6e6).abs() < 1e6, "a second ControlNet adds 361.3 M × 2 bytes");
        assert!(estimate(512, 512, true, 0).weights_bytes < estimate(512, 512, true, 1).weights_bytes);
    }

    #[test]
    fn the_largest_buffer_at_common_sizes() {
        // 512² f16: the VAE decoder's 256 MiB f32 activation is tiled down to 128 MiB.
        let e = estimate(512, 512, true, 1);
        assert_eq!(e.largest_buffer_bytes, 128 * MIB);
        assert_eq!(e.largest_buffer, "the VAE decoder");
        // 64² (the test model's size): the token embedding (49408 × 768 × 2 bytes) outweighs
        // every activation.
        let small = estimate(64, 64, true, 1);
        assert_eq!(small.largest_buffer_bytes, 49_408 * 768 * 2);
        assert_eq!(small.largest_buffer, "the text encoder's token embedding");
        // f32: the token embedding (49408 × 768 × 4 bytes) is the largest, whatever the size.
        let f32 = estimate(64, 64, false, 1);
        assert_eq!(f32.largest_buffer_bytes, 49_408 * 768 * 4);
        assert!(!f32.largest_depends_on_size);
        // 2048² f16: the GEGLU projection [2, 65536, 2560] × 2 bytes = 640 MiB.
        let big = estimate(2048, 2048, true, 1);
        assert_eq!(big.largest_buffer_bytes, 640 * MIB);
        assert_eq!(big.largest_buffer, "the UNet's feed-forward projection");
    }

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
    fn the_total_grows_with_the_size() {
        let sizes = [64, 256, 512, 768, 1024, 2048];
        let totals: Vec<u64> = sizes.iter().map(|&s| estimate(s, s, true, 1).total_bytes()).collect();
        assert!(totals.windows(2).all(|w| w[0] < w[1]), "{totals:?}");
        // 512² f16 with one ControlNet: between 3 and 4 GB, as SD1.5 with ControlNet needs.
        let total = totals[2] as f64;
        assert!((3.0e9..4.0e9).contains(&total), "{total}");
        assert_eq!(
            estimate(512, 512, true, 1).summary(),
            format!("≈ {:.1} GB of GPU memory; largest buffer 128 MiB", total / 1e9)
        );
    }

    #[test]
    fn check_names_the_buffer_and_the_limit() {
        let defaults = (256.0 * MIB as f64, 128.0 * MIB as f64);
        assert!(check(&estimate(512, 512, true, 1), defaults.0, defaults.1).is_ok());
        let refused = check(&estimate(1024, 1024, true, 1), defaults.0, defaults.1).unwrap_err();
        assert!(refused.contains("feed-forward projection"), "{refused}");
        assert!(refused.contains("160 MiB"), "{refused}");
        assert!(refused.contains("128 MiB") && refused.contains("maxStorageBufferBindingSize"), "{refused}");
        assert!(refused.contains("try a smaller size"), "{refused}");
        // The smaller limit is the one named.
        let by_buffer = check(&estimate(1024, 1024, true, 1), 100.0 * MIB as f64, 2.0 * GIB).unwrap_err();
        assert!(by_buffer.contains("maxBufferSize"), "{by_buffer}");
        // f32's embedding: no smaller size helps.
        let embedding = check(&estimate(64, 64, false, 1), defaults.1, defaults.1).unwrap_err();
        assert!(embedding.contains("token embedding") && embedding.contains("precision"), "{embedding}");
        // Unknown limits are not checked; SwiftShader's 1 GiB allows 2048² in f16.
        assert!(check(&estimate(2048, 2048, true, 4), 0.0, f64::NAN).is_ok());
        assert!(check(&estimate(2048, 2048, true, 1), GIB, GIB).is_ok());
    }

    #[test]
    fn sizes_read_as_mebibytes() {
        assert_eq!(mebibytes(84.0 * MIB as f64), "84 MiB");
        assert_eq!(mebibytes(4.0 * MIB as f64), "4.0 MiB");
        assert_eq!(mebibytes(1.5 * GIB), "1.5 GiB");
    }
}
