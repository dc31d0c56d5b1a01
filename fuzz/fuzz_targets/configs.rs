//! Every `config.json` the loaders read (UNet, ControlNet, VAE, CLIP text encoder, scheduler) and
//! `model_index.json`: any text. What parses is validated and cross-checked as a load would, and
//! a scheduler is built from it for any step count; none of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::clip::ClipTextConfig;
use model::config::{ControlNetConfig, UNetConfig};
use model::scheduler::{Scheduler, SchedulerConfig};
use model::vae::VaeConfig;
use model::vocabulary::{Named, SchedulerKind};

fuzz_target!(|data: &[u8]| {
    let Some((&steps, text)) = data.split_first() else { return };
    let Ok(json) = std::str::from_utf8(text) else { return };
    let _ = model::compat::check_model_index("fuzz", json);
    let unet = UNetConfig::from_json(json).ok();
    let controlnet = ControlNetConfig::from_json(json).ok();
    let vae = VaeConfig::from_json(json).ok();
    let text_encoder = ClipTextConfig::from_json(json).ok();
    if let Some(unet) = &unet {
        let _ = unet.validate();
        let _ = unet.up_block_kinds();
        let _ = unet.encoder.down_block_kinds();
        let _ = ControlNetConfig::from_unet(unet).validate();
        let clip = text_encoder.clone().unwrap_or_else(ClipTextConfig::sd15);
        let _ = model::compat::check_unet("fuzz", unet, &clip);
        let _ = model::compat::check_vae("fuzz", vae.as_ref().unwrap_or(&VaeConfig::sd15()), unet);
        let _ = model::compat::check_controlnet("fuzz", &ControlNetConfig::sd15(), unet, 8);
    }
    if let Some(controlnet) = &controlnet {
        let _ = controlnet.validate();
        let _ = controlnet.hint_scale();
        let _ = model::compat::check_controlnet("fuzz", controlnet, &UNetConfig::sd15(), 8);
    }
    if let Some(text_encoder) = &text_encoder {
        let _ = model::compat::check_tokenizer("fuzz", 77, text_encoder);
    }
    if let Ok(config) = SchedulerConfig::from_json(json) {
        let _ = model::scheduler::training_alphas_cumprod(&config);
        for &kind in SchedulerKind::ALL {
            if let Ok(scheduler) = Scheduler::new(kind, &config, usize::from(steps)) {
                assert!(scheduler.timesteps().iter().all(|t| t.is_finite()));
            }
        }
    }
});
