//! The full-size SD1.5 module trees against the key lists diffusers writes for them
//! (`tests/fixtures/sd15_*_keys.json`): every key, every shape, nothing more. Parameters are
//! lazy, so building the 860M-parameter tree allocates nothing.

mod common;

use std::collections::BTreeMap;

use burn::module::Param;
use burn::prelude::*;
use common::fixtures;
use model::config::{ControlNetConfig, UNetConfig};
use model::save::{TorchVisitor, visit_torch};
use model::weights::module_path;
use model::{ControlNet, UNet};

/// `{"config": …, "tensors": {key: shape}}`, keys mapped to our module paths.
fn key_list(file: &str) -> (serde_json::Value, BTreeMap<String, Vec<usize>>) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(file)).unwrap()).unwrap();
    let tensors = json["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, shape)| {
            let shape = shape.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (module_path(key), shape)
        })
        .collect();
    (json["config"].clone(), tensors)
}

/// Our module's parameters as PyTorch names and shapes them (the loader's own naming rule,
/// `model::save::visit_torch`; a tensor held as row blocks is their rows together), read without
/// initialising them.
fn tree<M: Module>(module: &M) -> BTreeMap<String, Vec<usize>> {
    #[derive(Default)]
    struct Shapes(BTreeMap<String, Vec<usize>>);
    impl TorchVisitor for Shapes {
        fn visit<const D: usize>(&mut self, path: String, transpose: bool, param: &Param<Tensor<D>>) {
            let mut shape = param.lazy_shape().to_vec();
            if transpose {
                shape.reverse();
            }
            match self.0.get_mut(&path) {
                Some(rows) => rows[0] += shape[0],
                None => {
                    self.0.insert(path, shape);
                }
            }
        }
    }
    let mut shapes = Shapes::default();
    visit_torch(module, &mut shapes);
    shapes.0
}

fn assert_same_tree(ours: &BTreeMap<String, Vec<usize>>, theirs: &BTreeMap<String, Vec<usize>>) {
    let missing: Vec<&String> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<&String> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    let shapes: Vec<String> = theirs
        .iter()
        .filter_map(|(k, s)| {
            ours.get(k).filter(|o| *o != s).map(|o| format!("{k}: ours {o:?}, diffusers {s:?}"))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && shapes.is_empty(),
        "missing {missing:?}\nextra {extra:?}\nshapes {shapes:?}"
    );
    let parameters: usize = ours.values().map(|s| s.iter().product::<usize>()).sum();
    println!("{} tensors, {parameters} parameters", ours.len());
}

#[test]
fn sd15_unet_tree_matches_diffusers() {
    let (config, keys) = key_list("sd15_unet_keys.json");
    let config: UNetConfig = serde_json::from_value(config).unwrap();
    config.validate().unwrap();
    let unet = UNet::new(&config, &Device::flex());
    assert_same_tree(&tree(&unet), &keys);
    assert_eq!(keys.len(), 686);
}

#[test]
fn sd15_controlnet_tree_matches_diffusers() {
    let (config, keys) = key_list("sd15_controlnet_keys.json");
    let config: ControlNetConfig = serde_json::from_value(config).unwrap();
    config.validate().unwrap();
    let controlnet = ControlNet::new(&config, &Device::flex());
    assert_same_tree(&tree(&controlnet), &keys);
    assert_eq!(keys.len(), 340);
}

#[test]
fn sd15_vae_tree_matches_diffusers() {
    let (config, keys) = key_list("sd15_vae_keys.json");
    let config = model::vae::VaeConfig::from_json(&config.to_string()).unwrap();
    let vae = model::vae::AutoencoderKL::new(&config, &Device::flex());
    assert_same_tree(&tree(&vae), &keys);
    assert_eq!(keys.len(), 248);
}

#[test]
fn sd15_text_encoder_tree_matches_transformers() {
    // transformers 5 names the keys without the `text_model.` prefix that the published SD1.5
    // file has; the loader accepts both (see clip.rs).
    let (config, keys) = key_list("sd15_text_encoder_keys.json");
    let keys = keys.into_iter().map(|(k, shape)| (format!("text_model.{k}"), shape)).collect();
    let config = model::clip::ClipTextConfig::from_json(&config.to_string()).unwrap();
    let text_encoder = model::clip::ClipTextModel::new(&config, &Device::flex());
    assert_same_tree(&tree(&text_encoder), &keys);
}

#[test]
fn sd15_configs_parse_as_published() {
    let unet =
        UNetConfig::from_json(&std::fs::read_to_string(fixtures().join("sd15/unet_config.json")).unwrap())
            .expect("SD1.5's unet/config.json");
    assert_eq!(unet.encoder.block_out_channels, [320, 640, 1280, 1280]);
    assert_eq!(unet.encoder.heads(0), 8, "attention_head_dim is the number of heads in SD1.x");
    assert_eq!(unet.encoder.cross_attention_dim, 768);
    let controlnet = ControlNetConfig::from_json(
        &std::fs::read_to_string(fixtures().join("sd15/controlnet_config.json")).unwrap(),
    )
    .expect("ControlNet v1.1's config.json");
    assert_eq!(controlnet.conditioning_embedding_out_channels, [16, 32, 96, 256]);
}

#[test]
fn unsupported_configs_are_refused_by_name() {
    let json = std::fs::read_to_string(fixtures().join("sd15/unet_config.json")).unwrap();
    let sd2 = json.replace(
        "\"cross_attention_dim\": 768",
        "\"cross_attention_dim\": 1024, \"use_linear_projection\": true",
    );
    let error = UNetConfig::from_json(&sd2).unwrap_err().to_string();
    assert!(error.contains("use_linear_projection"), "{error}");
    let odd = json.replace("\"norm_num_groups\": 32", "\"norm_num_groups\": 7");
    let error = UNetConfig::from_json(&odd).unwrap_err().to_string();
    assert!(error.contains("7 groups"), "{error}");
}

/// SD1.5's memory profile, read from its modules and configs, gives SD1.5's figures: the weights
/// diffusers' checkpoints hold, and the largest buffers the model allocates at common sizes.
#[test]
fn sd15_memory_profile_gives_sd15s_figures() {
    use model::Precision;
    use model::memory::{estimate, profile};
    use vocabulary::memory::check;

    const MIB: u64 = 1 << 20;
    let device = Device::flex();
    let unet_config: UNetConfig = serde_json::from_value(key_list("sd15_unet_keys.json").0).unwrap();
    let controlnet_config: ControlNetConfig =
        serde_json::from_value(key_list("sd15_controlnet_keys.json").0).unwrap();
    let vae_config = model::vae::VaeConfig::from_json(&key_list("sd15_vae_keys.json").0.to_string()).unwrap();
    let text_config =
        model::clip::ClipTextConfig::from_json(&key_list("sd15_text_encoder_keys.json").0.to_string())
            .unwrap();
    let unet = UNet::new(&unet_config, &device);
    let controlnet = ControlNet::new(&controlnet_config, &device);
    let vae = model::vae::AutoencoderKL::new(&vae_config, &device);
    let text_encoder = model::clip::ClipTextModel::new(&text_config, &device);
    let sd15 = |precision, controlnets: &[&ControlNet]| {
        profile(&unet, &text_encoder, &vae, controlnets, precision, Precision::F32)
    };
    let f16 = sd15(Precision::F16, &[&controlnet]);

    // Weights: (859.5 + 123.1 + 361.3) M × 2 bytes + the VAE's 83.7 M × 4 bytes, within 0.1 %.
    let near = |bytes: u64, expected: f64| ((bytes as f64 - expected) / expected).abs() < 1e-3;
    let weights = estimate(&f16, 512, 512, 1).weights_bytes;
    assert!(near(weights, 3.0226e9), "{weights}");
    let f32 = estimate(&sd15(Precision::F32, &[&controlnet]), 512, 512, 1).weights_bytes;
    assert!(near(f32, 1343.9e6 * 4.0 + 334.8e6), "{f32}");
    let two = estimate(&sd15(Precision::F16, &[&controlnet, &controlnet]), 512, 512, 1).weights_bytes;
    assert!(near(two - weights, 722.6e6), "a second ControlNet adds 361.3 M × 2 bytes: {}", two - weights);

    // 512² f16: the VAE decoder's [1, 256, 512, 512] f32 activation is tiled down to 128 MiB.
    let e = estimate(&f16, 512, 512, 1);
    assert_eq!((e.largest_buffer_bytes, e.largest_buffer.as_str()), (128 * MIB, "the VAE decoder"));
    assert_eq!(model::vae::decoder_elements_per_latent(&vae_config), 256 * 64);
    // 64²: the UNet's widest convolution (2560 → 1280, 3×3) outweighs every activation and the
    // token embedding, which is held as two blocks of 24704 rows (36 MiB in f16, 72 MiB in f32:
    // one table of 49408 rows would be 145 MiB in f32, over WebGPU's 128 MiB); in f32 it does at
    // every size, and fits.
    let conv = "the UNet's weight `up_blocks.0.resnets.0.conv1.weight`";
    let small = estimate(&f16, 64, 64, 1);
    assert_eq!((small.largest_buffer_bytes, small.largest_buffer.as_str()), (2560 * 1280 * 9 * 2, conv));
    let f32_small = estimate(&sd15(Precision::F32, &[&controlnet]), 64, 64, 1);
    assert_eq!(
        (f32_small.largest_buffer_bytes, f32_small.largest_buffer.as_str()),
        (2560 * 1280 * 9 * 4, conv)
    );
    assert!(!f32_small.largest_depends_on_size);
    // 2048² f16: the GEGLU projection [2, 65536, 2560] × 2 bytes = 640 MiB.
    let big = estimate(&f16, 2048, 2048, 1);
    assert_eq!(
        (big.largest_buffer_bytes, big.largest_buffer.as_str()),
        (640 * MIB, "the UNet's feed-forward projection")
    );

    // The total grows with the size; 512² f16 with one ControlNet needs 3–4 GB, as SD1.5 does.
    let totals: Vec<u64> =
        [64, 256, 512, 768, 1024, 2048].iter().map(|&s| estimate(&f16, s, s, 1).total_bytes()).collect();
    assert!(totals.windows(2).all(|w| w[0] < w[1]), "{totals:?}");
    assert!((3.0e9..4.0e9).contains(&(totals[2] as f64)), "{}", totals[2]);
    assert_eq!(
        e.summary(),
        format!("≈ {:.1} GB of GPU memory; largest buffer 128 MiB", totals[2] as f64 / 1e9)
    );

    // The check names the buffer and the smaller limit, and says whether a smaller size helps.
    let (defaults, gib) = ((256 * MIB) as f64, (1u64 << 30) as f64);
    assert!(check(&e, defaults, (128 * MIB) as f64).is_ok());
    let refused = check(&estimate(&f16, 1024, 1024, 1), defaults, (128 * MIB) as f64).unwrap_err();
    for part in
        ["feed-forward projection", "160 MiB", "128 MiB", "maxStorageBufferBindingSize", "try a smaller size"]
    {
        assert!(refused.contains(part), "{refused}");
    }
    let by_buffer = check(&estimate(&f16, 1024, 1024, 1), (100 * MIB) as f64, 2.0 * gib).unwrap_err();
    assert!(by_buffer.contains("maxBufferSize"), "{by_buffer}");
    assert!(check(&f32_small, (128 * MIB) as f64, (128 * MIB) as f64).is_ok(), "SD1.5 in f32 fits 128 MiB");
    let weight = check(&f32_small, (100 * MIB) as f64, (100 * MIB) as f64).unwrap_err();
    assert!(weight.contains("conv1.weight") && weight.contains("precision"), "{weight}");
    assert!(check(&estimate(&f16, 2048, 2048, 4), 0.0, f64::NAN).is_ok(), "unknown limits are not checked");
    assert!(check(&big, gib, gib).is_ok(), "SwiftShader's 1 GiB allows 2048² in f16");
}

/// The shapes world's models need megabytes, not SD1.5's gigabytes: the estimate follows the
/// loaded configs (the page showed "≈ 7.2 GB" for them when it used SD1.5's constants).
#[cfg(feature = "world")]
#[test]
fn the_shapes_worlds_memory_profile_is_its_own() {
    use model::Precision;
    use model::memory::{estimate, profile};

    let config = world::shapes::config;
    let device = Device::flex();
    let unet = UNet::new(&UNetConfig::from_json(config("unet/config.json")).unwrap(), &device);
    let vae = model::vae::AutoencoderKL::new(
        &model::vae::VaeConfig::from_json(config("vae/config.json")).unwrap(),
        &device,
    );
    let text_encoder = model::clip::ClipTextModel::new(
        &model::clip::ClipTextConfig::from_json(config("text_encoder/config.json")).unwrap(),
        &device,
    );
    let controlnet = ControlNet::from_unet(&unet);
    let memory = profile(&unet, &text_encoder, &vae, &[&controlnet], Precision::F32, Precision::F32);
    let e = estimate(&memory, 64, 64, 1);
    let parameters =
        (unet.num_params() + text_encoder.num_params() + vae.num_params() + controlnet.num_params()) as u64;
    assert_eq!(e.weights_bytes, parameters * 4);
    assert!(e.total_bytes() < 100_000_000, "{}", e.summary());
    assert_eq!(memory.latent_scale, 8);
    assert!(e.summary().contains(" MB of GPU memory"), "{}", e.summary());
    // Its largest weight is no token embedding (608 × 64 elements): a convolution's.
    assert!(e.largest_buffer_bytes < 2 << 20, "{} {}", e.largest_buffer, e.largest_buffer_bytes);
}
