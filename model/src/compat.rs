//! Which models fit together: the rules both the CLI and the browser apply before any weight
//! moves, so that a wrong combination (an SD2.x ControlNet, an inpainting UNet, an SDXL
//! repository) is refused with a message instead of reaching the device as a shape mismatch
//! (which panics, and a panic kills the browser's worker).

use std::fmt;

use crate::clip::ClipTextConfig;
use crate::config::{ControlNetConfig, UNetConfig};
use crate::vae::VaeConfig;

/// A model that does not fit: `model` names it for the user (a folder, or a repository's file).
#[derive(Clone, Debug, PartialEq)]
pub struct Incompatible {
    pub model: String,
    pub problem: Problem,
}

/// What does not fit.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// `model_index.json` does not read as a JSON object.
    IndexNotJson(String),
    /// A Stable Diffusion XL pipeline (its class name).
    Xl(String),
    /// `model_index.json` lacks these components.
    MissingComponents(Vec<&'static str>),
    /// A UNet whose latents are not 4-channel in and out (inpainting, depth-to-image…).
    LatentChannels { input: usize, output: usize },
    /// The UNet attends to text embeddings of another width than the text encoder makes.
    TextWidth { unet: usize, text_encoder: usize },
    /// The tokenizer pads to more tokens than the text encoder has positions.
    TokenizerLength { tokenizer: usize, positions: usize },
    /// The VAE's latents have another number of channels than the UNet's.
    VaeChannels { vae: usize, unet: usize },
    /// A ControlNet that is not a trainable copy of this UNet's encoder.
    ControlNetFor { field: &'static str, theirs: String, ours: String },
    /// A ControlNet whose condition images are not RGB.
    ConditioningChannels(usize),
    /// A ControlNet whose hint encoder does not bring condition images to the latents' size.
    HintScale { controlnet: usize, vae: usize },
}

impl fmt::Display for Incompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let model = &self.model;
        match &self.problem {
            Problem::IndexNotJson(why) => {
                write!(f, "{model} is not a diffusers Stable Diffusion pipeline: model_index.json {why}")
            }
            Problem::Xl(class) => write!(
                f,
                "{model} is a Stable Diffusion XL pipeline ({class}); only Stable Diffusion 1.x models run here"
            ),
            Problem::MissingComponents(missing) => write!(
                f,
                "{model} is not a diffusers Stable Diffusion pipeline: model_index.json lists no {}",
                missing.join(", ")
            ),
            Problem::LatentChannels { input, output } => write!(
                f,
                "{model}: a UNet with {input} input and {output} output channels (an inpainting or other special \
                 UNet?); only text-to-image UNets with 4 latent channels are supported"
            ),
            Problem::TextWidth { unet, text_encoder } => write!(
                f,
                "{model}: the UNet attends to {unet}-wide text embeddings, but the text encoder makes \
                 {text_encoder}-wide ones"
            ),
            Problem::TokenizerLength { tokenizer, positions } => write!(
                f,
                "{model}: the tokenizer pads prompts to {tokenizer} tokens, but the text encoder has {positions} \
                 positions"
            ),
            Problem::VaeChannels { vae, unet } => {
                write!(f, "{model}: the VAE has {vae} latent channels, the UNet makes {unet}")
            }
            Problem::ControlNetFor { field, theirs, ours } => write!(
                f,
                "{model} is a ControlNet for another model: its {field} is {theirs}, the UNet's {ours} \
                 (a ControlNet for SD2.x or SDXL?)"
            ),
            Problem::ConditioningChannels(channels) => write!(
                f,
                "{model} takes {channels}-channel condition images; only RGB (3) control maps are supported"
            ),
            Problem::HintScale { controlnet, vae } => write!(
                f,
                "{model} reads condition images {controlnet} times the latents' size, but this pipeline's VAE \
                 makes latents {vae} times smaller than the image"
            ),
        }
    }
}

impl std::error::Error for Incompatible {}

fn refuse<T>(model: &str, problem: Problem) -> Result<T, Incompatible> {
    Err(Incompatible { model: model.to_owned(), problem })
}

/// `model_index.json` must describe a Stable Diffusion 1.x pipeline.
pub fn check_model_index(model: &str, json: &str) -> Result<(), Incompatible> {
    let index: serde_json::Value = match serde_json::from_str(json) {
        Ok(index) => index,
        Err(e) => return refuse(model, Problem::IndexNotJson(format!("is not JSON ({e})"))),
    };
    let Some(index) = index.as_object() else {
        return refuse(model, Problem::IndexNotJson("is not a JSON object".into()));
    };
    let class = index.get("_class_name").and_then(|c| c.as_str()).unwrap_or_default();
    if class.contains("XL") || index.contains_key("text_encoder_2") {
        return refuse(model, Problem::Xl(class.to_owned()));
    }
    // `"safety_checker": [null, null]` is how diffusers writes a component that is absent.
    let present = |component: &str| {
        index
            .get(component)
            .is_some_and(|v| !v.is_null() && !v.as_array().is_some_and(|a| a.iter().all(|x| x.is_null())))
    };
    let missing: Vec<&'static str> = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
        .into_iter()
        .filter(|component| !present(component))
        .collect();
    if !missing.is_empty() {
        return refuse(model, Problem::MissingComponents(missing));
    }
    Ok(())
}

/// The tokenizer's padded length must fit the text encoder's positions.
pub fn check_tokenizer(model: &str, max_length: usize, text: &ClipTextConfig) -> Result<(), Incompatible> {
    if max_length > text.max_position_embeddings {
        return refuse(
            model,
            Problem::TokenizerLength { tokenizer: max_length, positions: text.max_position_embeddings },
        );
    }
    Ok(())
}

/// The UNet must denoise 4-channel latents and attend to this text encoder.
pub fn check_unet(model: &str, unet: &UNetConfig, text: &ClipTextConfig) -> Result<(), Incompatible> {
    if unet.encoder.in_channels != 4 || unet.out_channels != 4 {
        let (input, output) = (unet.encoder.in_channels, unet.out_channels);
        return refuse(model, Problem::LatentChannels { input, output });
    }
    if unet.encoder.cross_attention_dim != text.hidden_size {
        let (unet, text_encoder) = (unet.encoder.cross_attention_dim, text.hidden_size);
        return refuse(model, Problem::TextWidth { unet, text_encoder });
    }
    Ok(())
}

/// The VAE must decode the UNet's latents. Its scale factor (`2^(levels − 1)`) is its own: the
/// ControlNets must match it ([`check_controlnet`]).
pub fn check_vae(model: &str, vae: &VaeConfig, unet: &UNetConfig) -> Result<(), Incompatible> {
    if vae.latent_channels != unet.out_channels {
        return refuse(model, Problem::VaeChannels { vae: vae.latent_channels, unet: unet.out_channels });
    }
    Ok(())
}

/// A ControlNet must be a trainable copy of this UNet's encoder (same inputs, same text width,
/// same blocks: its residuals are added to the UNet's, shape for shape), take RGB maps, and bring
/// them to the size of this VAE's latents.
pub fn check_controlnet(
    model: &str,
    controlnet: &ControlNetConfig,
    unet: &UNetConfig,
    vae_scale: usize,
) -> Result<(), Incompatible> {
    let (c, u) = (&controlnet.encoder, &unet.encoder);
    let differ = |field: &'static str, theirs: &dyn fmt::Debug, ours: &dyn fmt::Debug| {
        refuse(
            model,
            Problem::ControlNetFor { field, theirs: format!("{theirs:?}"), ours: format!("{ours:?}") },
        )
    };
    if c.cross_attention_dim != u.cross_attention_dim {
        return differ("cross_attention_dim", &c.cross_attention_dim, &u.cross_attention_dim);
    }
    if c.in_channels != u.in_channels {
        return differ("in_channels", &c.in_channels, &u.in_channels);
    }
    if c.block_out_channels != u.block_out_channels {
        return differ("block_out_channels", &c.block_out_channels, &u.block_out_channels);
    }
    if c.layers_per_block != u.layers_per_block {
        return differ("layers_per_block", &c.layers_per_block, &u.layers_per_block);
    }
    if c.down_block_types != u.down_block_types {
        return differ("down_block_types", &c.down_block_types, &u.down_block_types);
    }
    if controlnet.conditioning_channels != 3 {
        return refuse(model, Problem::ConditioningChannels(controlnet.conditioning_channels));
    }
    if controlnet.hint_scale() != vae_scale {
        return refuse(model, Problem::HintScale { controlnet: controlnet.hint_scale(), vae: vae_scale });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_index_must_name_an_sd_pipeline() {
        let fixture = include_str!("../../tests/fixtures/tiny/model_index.json");
        assert_eq!(check_model_index("test/tiny", fixture), Ok(()));
        let controlnet = r#"{"_class_name": "ControlNetModel", "unet": null}"#;
        let message = check_model_index("test/tiny", controlnet).unwrap_err().to_string();
        assert!(message.contains("lists no unet, vae, text_encoder, tokenizer, scheduler"), "{message}");
        let xl =
            r#"{"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}"#;
        assert!(matches!(check_model_index("x", xl).unwrap_err().problem, Problem::Xl(_)));
        let message = check_model_index("x", "<html>").unwrap_err().to_string();
        assert!(message.contains("is not JSON"), "{message}");
    }

    #[test]
    fn configurations_must_fit_together() {
        let unet = UNetConfig::sd15();
        let text = ClipTextConfig::sd15();
        let vae = VaeConfig::sd15();
        assert_eq!(check_unet("unet", &unet, &text), Ok(()));
        assert_eq!(check_vae("vae", &vae, &unet), Ok(()));
        assert_eq!(check_controlnet("canny", &ControlNetConfig::sd15(), &unet, vae.scale_factor()), Ok(()));
        assert_eq!(check_tokenizer("tokenizer", 77, &text), Ok(()));
        assert!(check_tokenizer("tokenizer", 78, &text).is_err());

        let sd2_text = ClipTextConfig { hidden_size: 1024, ..ClipTextConfig::sd15() };
        assert!(check_unet("unet", &unet, &sd2_text).unwrap_err().to_string().contains("1024"));
        let mut inpainting = UNetConfig::sd15();
        inpainting.encoder.in_channels = 9;
        assert!(check_unet("unet", &inpainting, &text).unwrap_err().to_string().contains("9 input"));
        let mut sd2_controlnet = ControlNetConfig::sd15();
        sd2_controlnet.encoder.cross_attention_dim = 1024;
        let message = check_controlnet("sd2 canny", &sd2_controlnet, &unet, 8).unwrap_err().to_string();
        assert!(message.starts_with("sd2 canny is a ControlNet for another model"), "{message}");
        let message = check_controlnet("canny", &ControlNetConfig::sd15(), &unet, 4).unwrap_err().to_string();
        assert!(
            message.contains("8 times the latents' size") && message.contains("4 times smaller"),
            "{message}"
        );
    }
}
