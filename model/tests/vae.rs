//! The VAE against diffusers: the tiny `AutoencoderKL` (SD1.5's layout at toy widths, made by
//! `tests/fixtures/make_pipeline_fixtures.py`), on the CPU backend and on burn-wgpu; the
//! memory policy at SD1.5 sizes; loading old key names and refusing bad files.

mod common;

use std::path::PathBuf;

use burn::prelude::*;
use common::{HostTensor, devices, fixtures, read, relative_l2};
use model::Precision;
use model::PrecisionExt;
use model::vae::{
    AutoencoderKL, DecodePlan, MAX_BUFFER_BYTES, VaeConfig, decode_peak_bytes, load_vae, plan_decode,
    vae_from_bytes,
};
use model::weights::WeightsError;

/// Relative L2 error allowed computing in f32.
const F32: f64 = 1e-5;
/// Computing in f16 (fp16 weights) against diffusers' f32 run of the same fp16 file: every
/// activation is rounded to 11 bits (measured 4.6e-3 on the CPU backend).
const F16: f64 = 1e-2;
/// The same on lavapipe, whose WGSL convolutions also accumulate in f16: each 3×3 convolution
/// then adds ~2× the CPU's error (stage by stage: conv_in 9.0e-4 vs 3.7e-4), and the decoder
/// chains ~30 of them; measured 1.83e-2. (SD1.5's VAE runs in f32 anyway: `force_upcast`.)
const F16_WGPU: f64 = 2.5e-2;

fn vae_dir() -> PathBuf {
    fixtures().join("tiny/vae")
}

fn fixture(name: &str) -> &'static HostTensor {
    common::pipeline_expected()
        .get(name)
        .unwrap_or_else(|| panic!("no fixture tensor `{name}` in tiny/pipeline.safetensors"))
}

fn assert_close(tensor: Tensor<4>, name: &str, tolerance: f64, label: &str) {
    let (shape, values) = read(tensor);
    let expected = fixture(name);
    assert_eq!(shape, expected.shape, "{label}: shape of {name}");
    let error = relative_l2(&values, &expected.values);
    println!("{label}: {name}: relative L2 error {error:.2e}");
    assert!(error <= tolerance, "{label}: {name}: relative L2 error {error:.3e} > {tolerance:.0e}");
}

/// A safetensors file's JSON header and its data section.
fn split_safetensors(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), &bytes[8 + n..])
}

/// The same file with its entries renamed or dropped by `edit`; the data section is rebuilt to
/// hold exactly the remaining tensors (safetensors refuses uncovered bytes).
fn rewrite_entries(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let (mut header, data) = split_safetensors(bytes);
    let entries = header.as_object_mut().unwrap();
    edit(entries);
    let mut names: Vec<String> = entries.keys().filter(|k| *k != "__metadata__").cloned().collect();
    let offsets = |info: &serde_json::Value| -> (usize, usize) {
        let o = info["data_offsets"].as_array().unwrap();
        (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize)
    };
    names.sort_by_key(|name| offsets(&entries[name]).0);
    let mut packed = Vec::with_capacity(data.len());
    for name in names {
        let (start, end) = offsets(&entries[&name]);
        let new_start = packed.len();
        packed.extend_from_slice(&data[start..end]);
        entries[&name]["data_offsets"] = serde_json::json!([new_start, packed.len()]);
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&packed);
    out
}

fn config_json() -> String {
    std::fs::read_to_string(vae_dir().join("config.json")).unwrap()
}

fn weights(file: &str) -> Vec<u8> {
    std::fs::read(vae_dir().join(file)).unwrap()
}

fn vae(device: &Device) -> AutoencoderKL {
    load_vae(&vae_dir(), Precision::F32, device).expect("the tiny VAE loads")
}

#[test]
fn config_defaults_and_refusals() {
    let sd15 = VaeConfig::sd15();
    assert_eq!(sd15.block_out_channels, [128, 256, 512, 512]);
    assert_eq!((sd15.scaling_factor, sd15.force_upcast, sd15.shift_factor), (0.18215, true, None));
    assert!(sd15.use_quant_conv && sd15.use_post_quant_conv && sd15.mid_block_add_attention);
    assert_eq!((sd15.scale_factor(), sd15.tile_latent_min_size()), (8, 64));

    let tiny = VaeConfig::from_json(&config_json()).unwrap();
    assert_eq!((tiny.norm_num_groups, tiny.tile_latent_min_size()), (4, 8));

    let refused = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut json: serde_json::Value = serde_json::from_str(&config_json()).unwrap();
        edit(&mut json);
        let error = VaeConfig::from_json(&json.to_string()).expect_err(needle).to_string();
        println!("refused: {error}");
        assert!(error.contains(needle), "`{error}` does not name `{needle}`");
    };
    refused(&|j| j["up_block_types"][1] = "AttnUpDecoderBlock2D".into(), "up_block_types");
    refused(&|j| j["down_block_types"] = serde_json::json!(["DownEncoderBlock2D"]), "down_block_types");
    refused(&|j| j["act_fn"] = "gelu".into(), "act_fn");
    refused(&|j| j["shift_factor"] = 0.1159.into(), "shift_factor");
    refused(&|j| j["latents_mean"] = serde_json::json!([0.0, 0.0, 0.0, 0.0]), "latents_mean");
    refused(&|j| j["norm_num_groups"] = 3.into(), "groups");
    refused(&|j| j["block_out_channels"] = "wide".into(), "invalid vae config.json");
}

#[test]
fn decode_matches_diffusers() {
    for (device_name, device) in devices() {
        let vae = vae(&device);
        let out = vae.decode(fixture("vae.decode.z").to_device(&device));
        assert_close(out, "vae.decode.out", F32, &format!("{device_name} f32"));
    }
}

#[test]
fn encode_matches_diffusers() {
    for (device_name, device) in devices() {
        let vae = vae(&device);
        let (mean, logvar) = vae.encode(fixture("vae.encode.image").to_device(&device));
        let label = format!("{device_name} f32");
        assert_close(mean, "vae.encode.mean", F32, &label);
        assert_close(logvar, "vae.encode.logvar", F32, &label);
    }
}

/// diffusers' `tiled_decode` with 8-latent tiles, directly and through the memory policy.
#[test]
fn tiled_decode_matches_diffusers() {
    let config = VaeConfig::from_json(&config_json()).unwrap();
    // The tiny decoder's widest activation is 16 channels at 8× the tile: 4096·t² bytes in f32.
    assert_eq!(decode_peak_bytes(&config, 8, 8, 4), 4096 * 64);
    let budget = decode_peak_bytes(&config, 8, 8, 4) + 1000;
    assert_eq!(plan_decode(&config, 12, 20, 4, budget), DecodePlan::Tiled { tile_latent: 8 });
    assert_eq!(plan_decode(&config, 12, 20, 4, MAX_BUFFER_BYTES), DecodePlan::Whole);
    for (device_name, device) in devices() {
        let vae = vae(&device);
        let z = fixture("vae.tiled.z").to_device::<4>(&device);
        let label = format!("{device_name} f32");
        assert_close(vae.tiled_decode(z.clone(), 8), "vae.tiled.out", F32, &label);
        assert_close(vae.decode_within(z.clone(), budget), "vae.tiled.out", F32, &format!("{label} within"));

        // With room to spare, decode_within is the whole decode; tiling changes the result.
        let (_, whole) = read(vae.decode(z.clone()));
        let (_, within) = read(vae.decode_within(z.clone(), MAX_BUFFER_BYTES));
        assert_eq!(whole, within, "{label}: a decode that fits is not tiled");
        let difference = relative_l2(&whole, &fixture("vae.tiled.out").values);
        assert!(difference > 1e-3, "{label}: tiled and whole decodes should differ ({difference:.2e})");

        // A batch that does not fit whole is decoded image by image, each as the single one.
        let two = Tensor::cat(vec![z.clone(), z.clone() * 0.5], 0);
        let (shape, both) = read(vae.decode_within(two, budget));
        assert_eq!(shape, [2, 3, 96, 160]);
        let (_, half) = read(vae.tiled_decode(z * 0.5, 8));
        let n = half.len();
        assert!(relative_l2(&both[..n], &fixture("vae.tiled.out").values) <= F32, "{label}: batch image 0");
        assert!(relative_l2(&both[n..], &half) <= F32, "{label}: batch image 1");
    }
}

/// The fp16 file: loaded into f32 it matches diffusers' f32 run of it; computing in f16 (where
/// the device has it) stays within the f16 tolerance.
#[test]
fn fp16_weights_match_diffusers() {
    for (device_name, device) in devices() {
        let vae = vae_from_bytes(
            &config_json(),
            weights("diffusion_pytorch_model.fp16.safetensors"),
            Precision::F32,
            &device,
        )
        .unwrap();
        let z = fixture("vae.decode.z").to_device::<4>(&device);
        assert_close(vae.decode(z.clone()), "vae.decode_fp16w.out", F32, &format!("{device_name} fp16w f32"));

        if !Precision::F16.is_supported_on(&device) {
            println!("{device_name}: no f16 compute on this device, f16 check skipped");
            continue;
        }
        let vae = load_vae(&vae_dir(), Precision::F16, &device).unwrap();
        assert_eq!(vae.dtype(), Precision::F16.dtype());
        let tolerance = if device_name == "wgpu" { F16_WGPU } else { F16 };
        assert_close(vae.decode(z), "vae.decode_fp16w.out", tolerance, &format!("{device_name} fp16w f16"));
    }
}

/// The published SD1.5 VAE names the mid-block attention's projections `query`, `key`,
/// `value`, `proj_attn`; they load as `to_q`, `to_k`, `to_v`, `to_out.0`.
#[test]
fn old_attention_key_names_load() {
    let old = rewrite_entries(&weights("diffusion_pytorch_model.safetensors"), |header| {
        let renames = [
            (".to_q.", ".query."),
            (".to_k.", ".key."),
            (".to_v.", ".value."),
            (".to_out.0.", ".proj_attn."),
        ];
        let keys: Vec<String> = header.keys().filter(|k| k.contains("attentions.")).cloned().collect();
        assert_eq!(keys.len(), 20, "two attentions with group norm and four biased projections");
        for key in keys {
            let value = header.remove(&key).unwrap();
            let renamed = renames.iter().fold(key, |k, (new, old)| k.replace(new, old));
            header.insert(renamed, value);
        }
        assert!(header.contains_key("decoder.mid_block.attentions.0.proj_attn.weight"));
    });
    let device = Device::flex();
    let vae = vae_from_bytes(&config_json(), old, Precision::F32, &device).expect("old key names load");
    assert_close(vae.decode(fixture("vae.decode.z").to_device(&device)), "vae.decode.out", F32, "old keys");
}

#[test]
fn corrupt_or_mismatched_weights_are_errors() {
    let device = Device::flex();
    let full = weights("diffusion_pytorch_model.safetensors");

    let truncated = full[..full.len() / 2].to_vec();
    let error = vae_from_bytes(&config_json(), truncated, Precision::F32, &device).unwrap_err();
    println!("truncated: {error}");
    assert!(matches!(error, WeightsError::Format(_)), "{error}");

    let missing = rewrite_entries(&full, |header| {
        header.remove("decoder.conv_out.weight").unwrap();
    });
    let error = vae_from_bytes(&config_json(), missing, Precision::F32, &device).unwrap_err();
    println!("missing: {error}");
    match &error {
        WeightsError::Mismatch { missing, .. } => {
            assert!(missing.iter().any(|k| k.contains("decoder.conv_out.weight")), "{error}")
        }
        other => panic!("expected a mismatch, got {other}"),
    }

    // Old single-file exports stored the attention projections as 1×1 convolutions.
    let conv_shaped = rewrite_entries(&full, |header| {
        header["encoder.mid_block.attentions.0.to_q.weight"]["shape"] = serde_json::json!([32, 32, 1, 1]);
    });
    let error = vae_from_bytes(&config_json(), conv_shaped, Precision::F32, &device).unwrap_err();
    println!("conv-shaped projection: {error}");
    match &error {
        WeightsError::Mismatch { errors, .. } => {
            assert!(errors.iter().any(|e| e.contains("to_q")), "{error}")
        }
        other => panic!("expected a mismatch, got {other}"),
    }

    let mut wider: serde_json::Value = serde_json::from_str(&config_json()).unwrap();
    wider["block_out_channels"] = serde_json::json!([8, 16, 32, 64]);
    let error = vae_from_bytes(&wider.to_string(), full, Precision::F32, &device).unwrap_err();
    println!("wrong config: {error}");
    assert!(matches!(error, WeightsError::Mismatch { .. }), "{error}");

    let unet = std::fs::read(fixtures().join("tiny/unet/diffusion_pytorch_model.safetensors")).unwrap();
    let error = vae_from_bytes(&config_json(), unet, Precision::F32, &device).unwrap_err();
    assert!(matches!(error, WeightsError::Mismatch { .. }), "{error}");

    let error = load_vae(&fixtures().join("tiny/tokenizer"), Precision::F32, &device).unwrap_err();
    println!("not a model folder: {error}");
    assert!(matches!(error, WeightsError::Io { .. }), "{error}");
}

/// SD1.5's decoder against WebGPU's default 128 MiB binding: whole decodes do not fit at 512²
/// and up in f32 (the upsampled `[1, 256, H, W]` activation), tiles of 44 latents do.
#[test]
fn decode_memory_at_sd15_sizes() {
    let config = VaeConfig::sd15();
    const MIB: usize = 1 << 20;
    assert_eq!(MAX_BUFFER_BYTES, 128 * MIB);
    for (pixels, whole_mib) in [(512, 256), (768, 576), (1024, 1024)] {
        let latent = pixels / 8;
        let untiled = decode_peak_bytes(&config, latent, latent, 4);
        assert_eq!(untiled, whole_mib * MIB, "{pixels}²: [1, 256, {pixels}, {pixels}] f32");
        assert!(untiled > MAX_BUFFER_BYTES);
        let DecodePlan::Tiled { tile_latent } = plan_decode(&config, latent, latent, 4, MAX_BUFFER_BYTES)
        else {
            panic!("{pixels}² f32 must tile");
        };
        let tiled = decode_peak_bytes(&config, tile_latent, tile_latent, 4);
        println!(
            "{pixels}² f32: whole {} MiB, tiles of {tile_latent} latents ({} px) {:.1} MiB",
            untiled / MIB,
            tile_latent * 8,
            tiled as f64 / MIB as f64
        );
        assert_eq!(tile_latent, 44);
        assert!(tiled <= MAX_BUFFER_BYTES && decode_peak_bytes(&config, 48, 48, 4) > MAX_BUFFER_BYTES);
    }
    // f16 halves the activations: 512² fits exactly; larger sizes tile at diffusers' 64.
    assert_eq!(decode_peak_bytes(&config, 64, 64, 2), 128 * MIB);
    assert_eq!(plan_decode(&config, 64, 64, 2, MAX_BUFFER_BYTES), DecodePlan::Whole);
    assert_eq!(plan_decode(&config, 96, 96, 2, MAX_BUFFER_BYTES), DecodePlan::Tiled { tile_latent: 64 });
    // 256² fits whole in f32 (64 MiB), and the attention scores never exceed their 64 MiB chunk.
    assert_eq!(plan_decode(&config, 32, 32, 4, MAX_BUFFER_BYTES), DecodePlan::Whole);
    // A thin image's tiles may be as long as it allows in the other dimension.
    assert_eq!(plan_decode(&config, 16, 256, 4, MAX_BUFFER_BYTES), DecodePlan::Tiled { tile_latent: 128 });
}
