//! The shapes pipeline's architecture: the diffusers configs of the models the project trains on
//! the world (`world/shapes/`), sized so the pipeline and its two ControlNets fit the 20 MB the
//! site can carry in fp16 (parameters as diffusers counts them):
//!
//! | model | config | parameters | fp16 |
//! |---|---|---|---|
//! | VAE | 4 levels (32, 64, 64, 64), 1 layer each: 64² images ↔ 8² × 4 latents | 1.25 M | 2.5 MB |
//! | text encoder | CLIP, 3 layers, width 64, 4 heads, 32 positions, the world's 608 tokens | 0.19 M | 0.4 MB |
//! | UNet | levels (32, 64, 96, 96), 1 layer each, cross-attention 64 | 3.71 M | 7.4 MB |
//! | ControlNet ×2 | `from_unet` | 1.92 M each | 7.7 MB |
//!
//! `controlnet world init` writes this folder with fresh weights and the world's tokenizer; the
//! training recipe starts from it. The VAE's `scaling_factor` is SD1.5's until the recipe measures
//! the trained VAE's latents.

/// `(path in the pipeline folder, contents)` for every config.
pub const CONFIGS: [(&str, &str); 5] = [
    ("model_index.json", include_str!("../shapes/model_index.json")),
    ("scheduler/scheduler_config.json", include_str!("../shapes/scheduler/scheduler_config.json")),
    ("text_encoder/config.json", include_str!("../shapes/text_encoder/config.json")),
    ("unet/config.json", include_str!("../shapes/unet/config.json")),
    ("vae/config.json", include_str!("../shapes/vae/config.json")),
];

/// The config at `path` (one of [`CONFIGS`]).
pub fn config(path: &str) -> &'static str {
    CONFIGS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no config {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_encoder_fits_the_vocabulary() {
        let text: serde_json::Value = serde_json::from_str(config("text_encoder/config.json")).unwrap();
        let max_length = text["max_position_embeddings"].as_u64().unwrap() as usize;
        let files = crate::vocab::files(max_length);
        let vocab: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&files.vocab_json).unwrap();
        assert_eq!(files.vocab_size, vocab.len());
        assert_eq!(text["vocab_size"].as_u64().unwrap() as usize, files.vocab_size);
        assert_eq!(text["bos_token_id"], vocab[crate::vocab::BOS]);
        assert_eq!(text["eos_token_id"], vocab[crate::vocab::EOS]);
        let unet: serde_json::Value = serde_json::from_str(config("unet/config.json")).unwrap();
        assert_eq!(unet["cross_attention_dim"], text["hidden_size"]);
    }
}
