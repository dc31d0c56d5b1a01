//! The full-size SD1.5 module trees against the key lists diffusers writes for them
//! (`tests/fixtures/sd15_*_keys.json`): every key, every shape, nothing more. Parameters are
//! lazy, so building the 860M-parameter tree allocates nothing.

mod common;

use std::collections::BTreeMap;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use common::fixtures;
use model::config::{ControlNetConfig, UNetConfig};
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

/// Our module's parameters as PyTorch names and shapes them, read without initialising them.
fn tree<M: Module>(module: &M) -> BTreeMap<String, Vec<usize>> {
    #[derive(Default)]
    struct Shapes {
        path: Vec<(String, String)>,
        found: BTreeMap<String, Vec<usize>>,
    }
    impl ModuleVisitor for Shapes {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push((name.to_owned(), container_type.to_owned()));
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let mut shape = param.lazy_shape().to_vec();
            // The last entry is the parameter, with the type of the module that holds it.
            let (name, parent) = self.path.last().expect("a parameter has a name").clone();
            let parent = parent.as_str();
            // burn stores linear weights as [in, out] and calls norm affines gamma/beta.
            let name = match (parent, name.as_str()) {
                (p, "weight") if p.ends_with("Linear") => {
                    shape.reverse();
                    name
                }
                (p, "gamma") if p.ends_with("Norm") => "weight".to_owned(),
                (p, "beta") if p.ends_with("Norm") => "bias".to_owned(),
                _ => name,
            };
            let mut path: Vec<String> =
                self.path[..self.path.len() - 1].iter().map(|(n, _)| n.clone()).collect();
            path.push(name);
            self.found.insert(path.join("."), shape);
        }
    }
    let mut shapes = Shapes::default();
    module.visit(&mut shapes);
    shapes.found
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
