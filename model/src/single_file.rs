//! ControlNets in the original repository's single-file format: `control_v11p_sd15_*.safetensors`
//! with the LDM (cldm) key names, as A1111 and ComfyUI users keep them, with or without the
//! `control_model.` prefix of full checkpoints.
//!
//! Such a file carries no config. A ControlNet is a trainable copy of its UNet's encoder, so the
//! config is the pipeline UNet's ([`ControlNetConfig::from_unet`]) with the hint encoder's widths
//! and input channels read from the file's own shapes. The keys load through [`remaps`], which map
//! them as diffusers' `convert_controlnet_checkpoint` (what `ControlNetModel.from_single_file`
//! runs) does; the fixture script checks that the tiny file it writes reads back in diffusers as
//! the very weights of `tests/fixtures/tiny/controlnet`.

use crate::config::{ControlNetConfig, EncoderConfig, UNetConfig};
use crate::streaming::StreamLoader;
use crate::weights::WeightsError;

/// The hint encoder's convolutions in the original format: `input_hint_block.0` (in), pairs up to
/// `input_hint_block.12`, and `input_hint_block.14` (the zero convolution out). diffusers'
/// converter assumes this layout too (SD1.x ControlNets have four hint widths).
const HINT_CONVS: usize = 6;

/// Checkpoint key patterns (original → diffusers module paths), applied in order to each key,
/// for a ControlNet copied from an encoder of this shape.
pub fn remaps(encoder: &EncoderConfig) -> Vec<(String, String)> {
    let layers = encoder.layers_per_block;
    let blocks = encoder.block_out_channels.len();
    let mut rules: Vec<(String, String)> = vec![
        // Full checkpoints keep the ControlNet under `control_model.`.
        (r"^control_model\.".into(), String::new()),
        (r"^time_embed\.0\.".into(), "time_embedding.linear_1.".into()),
        (r"^time_embed\.2\.".into(), "time_embedding.linear_2.".into()),
        (r"^input_blocks\.0\.0\.".into(), "conv_in.".into()),
        (r"^input_hint_block\.0\.".into(), "controlnet_cond_embedding.conv_in.".into()),
        (
            format!(r"^input_hint_block\.{}\.", 2 * (HINT_CONVS + 1)),
            "controlnet_cond_embedding.conv_out.".into(),
        ),
        (r"^middle_block_out\.0\.".into(), "controlnet_mid_block.".into()),
        (r"^middle_block\.0\.".into(), "mid_block.resnets.0.".into()),
        (r"^middle_block\.1\.".into(), "mid_block.attentions.0.".into()),
        (r"^middle_block\.2\.".into(), "mid_block.resnets.1.".into()),
        (r"^zero_convs\.(\d+)\.0\.".into(), "controlnet_down_blocks.$1.".into()),
    ];
    for k in 0..HINT_CONVS {
        rules.push((
            format!(r"^input_hint_block\.{}\.", 2 * (k + 1)),
            format!("controlnet_cond_embedding.blocks.{k}."),
        ));
    }
    for b in 0..blocks {
        for l in 0..layers {
            let k = 1 + b * (layers + 1) + l;
            rules.push((format!(r"^input_blocks\.{k}\.0\."), format!("down_blocks.{b}.resnets.{l}.")));
            rules.push((format!(r"^input_blocks\.{k}\.1\."), format!("down_blocks.{b}.attentions.{l}.")));
        }
        let k = 1 + b * (layers + 1) + layers;
        rules
            .push((format!(r"^input_blocks\.{k}\.0\.op\."), format!("down_blocks.{b}.downsamplers.0.conv.")));
    }
    // The ResNets' own names.
    let resnet = r"^((?:down_blocks\.\d+|mid_block)\.resnets\.\d+)\.";
    for (old, new) in [
        ("in_layers.0", "norm1"),
        ("in_layers.2", "conv1"),
        ("emb_layers.1", "time_emb_proj"),
        ("out_layers.0", "norm2"),
        ("out_layers.3", "conv2"),
        ("skip_connection", "conv_shortcut"),
    ] {
        rules.push((format!(r"{resnet}{}\.", regex::escape(old)), format!("$1.{new}.")));
    }
    rules
}

/// The config of the ControlNet a single file holds, for `unet`: its encoder, and the hint
/// encoder read from the streamed tensors' shapes (`loader` has seen the whole file).
pub fn config(unet: &UNetConfig, loader: &StreamLoader) -> Result<ControlNetConfig, WeightsError> {
    let shape = |path: &str| {
        loader.shape(path).ok_or_else(|| {
            WeightsError::Format(format!("not a ControlNet in the original format: it has no {path}"))
        })
    };
    let conv_in = shape("controlnet_cond_embedding.conv_in.weight")?;
    let mut widths = vec![conv_in[0]];
    // Every second hint convolution changes the width (the strided one of each pair).
    for k in (1..HINT_CONVS).step_by(2) {
        widths.push(shape(&format!("controlnet_cond_embedding.blocks.{k}.weight"))?[0]);
    }
    Ok(ControlNetConfig {
        conditioning_embedding_out_channels: widths,
        conditioning_channels: conv_in[1],
        ..ControlNetConfig::from_unet(unet)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::module_path_with;

    #[test]
    fn original_keys_become_diffusers_paths() {
        let rules = remaps(&UNetConfig::sd15().encoder);
        let path = |key: &str| module_path_with(&rules, key);
        assert_eq!(path("control_model.time_embed.2.bias"), "time_embedding.linear_2.bias");
        assert_eq!(path("input_blocks.4.0.in_layers.2.weight"), "down_blocks.1.resnets.0.conv1.weight");
        assert_eq!(
            path("input_blocks.4.0.skip_connection.weight"),
            "down_blocks.1.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(path("input_blocks.9.0.op.bias"), "down_blocks.2.downsamplers.0.conv.bias");
        assert_eq!(
            path("control_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight"),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.weight"
        );
        assert_eq!(path("middle_block.2.emb_layers.1.weight"), "mid_block.resnets.1.time_emb_proj.weight");
        assert_eq!(path("zero_convs.11.0.weight"), "controlnet_down_blocks.11.conv.weight");
        assert_eq!(path("middle_block_out.0.bias"), "controlnet_mid_block.conv.bias");
        assert_eq!(path("input_hint_block.12.weight"), "controlnet_cond_embedding.blocks.5.weight");
        assert_eq!(path("input_hint_block.14.weight"), "controlnet_cond_embedding.conv_out.conv.weight");
    }
}
