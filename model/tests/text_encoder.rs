//! The CLIP text encoder against transformers' `CLIPTextModel`: the tiny pipeline's text encoder
//! (hidden 16, 2 layers, 2 heads, quick_gelu, perturbed layer norms), fed the tiny tokenizer's
//! ids for the prompts of `tests/fixtures/tiny/pipeline_cases.json`.

mod common;

use common::{devices, fixtures, pipeline_expected, read, relative_l2};
use model::Precision;
use model::PrecisionExt;
use model::clip::{ClipTextModel, load_text_encoder, text_encoder_from_bytes};
use model::tokenizer::ClipTokenizer;
use model::weights::WeightsError;

/// f32 weights computing in f32 (what the fixtures hold): measured ≤ 3.5e-7 on both devices.
const F32: f64 = 1e-5;
/// f16 weights computing in f16, against transformers' f32 run of the same fp16 file: every
/// activation rounded to 11 bits; measured ≤ 8.1e-4 on the CPU backend and on lavapipe.
const F16: f64 = 1e-2;

struct Case {
    prompt: String,
    ids: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let path = fixtures().join("tiny/pipeline_cases.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).expect("pipeline_cases.json parses");
    json["text"]
        .as_array()
        .expect("pipeline_cases.json has `text` cases")
        .iter()
        .map(|case| Case {
            prompt: case["prompt"].as_str().unwrap().to_owned(),
            ids: case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
        })
        .collect()
}

fn text_dir() -> std::path::PathBuf {
    fixtures().join("tiny/text_encoder")
}

/// Each case's embedding, compared with the fixture `text.{i}.{suffix}`.
fn check(encoder: &ClipTextModel, device: &burn::prelude::Device, suffix: &str, tolerance: f64, label: &str) {
    for (i, case) in cases().iter().enumerate() {
        let (shape, values) = read(encoder.encode_ids(std::slice::from_ref(&case.ids), device));
        let name = format!("text.{i}.{suffix}");
        let expected = pipeline_expected().get(&name).unwrap_or_else(|| panic!("no fixture tensor `{name}`"));
        assert_eq!(shape, expected.shape, "{label}: shape of {name}");
        let error = relative_l2(&values, &expected.values);
        println!("{label}: {name} ({:?}): relative L2 error {error:.2e}", truncate(&case.prompt));
        assert!(error <= tolerance, "{label}: {name}: relative L2 error {error:.3e} > {tolerance:.0e}");
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(24).collect()
}

#[test]
fn tokenizer_gives_the_pipeline_ids() {
    let tokenizer =
        ClipTokenizer::load(&fixtures().join("tiny/tokenizer")).expect("the tiny tokenizer loads");
    let cases = cases();
    assert!(!cases.is_empty());
    for case in &cases {
        assert_eq!(tokenizer.encode(&case.prompt), case.ids, "{:?}", case.prompt);
    }
    println!("{} prompts tokenized as transformers does", cases.len());
}

#[test]
fn text_encoder_matches_transformers_in_f32() {
    for (device_name, device) in devices() {
        let encoder =
            load_text_encoder(&text_dir(), Precision::F32, &device).expect("the tiny text encoder loads");
        check(&encoder, &device, "embeds", F32, &format!("{device_name} f32"));
    }
}

#[test]
fn fp16_weights_computed_in_f32_match() {
    // The fp16 file, widened to f32 on load: transformers' `embeds_fp16w` exactly.
    let bytes = std::fs::read(text_dir().join("model.fp16.safetensors")).unwrap();
    let config = std::fs::read_to_string(text_dir().join("config.json")).unwrap();
    for (device_name, device) in devices() {
        let encoder = text_encoder_from_bytes(&config, bytes.clone(), Precision::F32, &device).unwrap();
        check(&encoder, &device, "embeds_fp16w", F32, &format!("{device_name} fp16 weights in f32"));
    }
}

#[test]
fn text_encoder_matches_transformers_in_f16() {
    for (device_name, device) in devices() {
        if !Precision::F16.is_supported_on(&device) {
            println!("{device_name}: skipped, the device does not compute in f16");
            continue;
        }
        let encoder =
            load_text_encoder(&text_dir(), Precision::F16, &device).expect("the fp16 variant loads");
        check(&encoder, &device, "embeds_fp16w", F16, &format!("{device_name} f16"));
    }
}

#[test]
fn batches_are_rows_of_the_same_encodings() {
    let device = burn::prelude::Device::flex();
    let encoder = load_text_encoder(&text_dir(), Precision::F32, &device).unwrap();
    let cases = cases();
    let rows: Vec<Vec<u32>> = cases.iter().map(|c| c.ids.clone()).collect();
    let (shape, batch) = read(encoder.encode_ids(&rows, &device));
    assert_eq!(shape, [rows.len(), 77, 16]);
    for (i, row) in rows.iter().enumerate() {
        let (_, single) = read(encoder.encode_ids(std::slice::from_ref(row), &device));
        let part = &batch[i * 77 * 16..(i + 1) * 77 * 16];
        let error = relative_l2(part, &single);
        assert!(error <= 1e-6, "row {i}: {error:e}");
    }
}

#[test]
fn wrong_weights_are_a_mismatch() {
    let device = burn::prelude::Device::flex();
    let config = std::fs::read_to_string(text_dir().join("config.json")).unwrap();
    let unet = std::fs::read(fixtures().join("tiny/unet/diffusion_pytorch_model.safetensors")).unwrap();
    match text_encoder_from_bytes(&config, unet, Precision::F32, &device) {
        Err(e @ WeightsError::Mismatch { .. }) => println!("UNet weights as a text encoder: {e}"),
        Err(e) => panic!("expected a mismatch, got {e}"),
        Ok(_) => panic!("the UNet's weights loaded as a text encoder"),
    }
    // A config that disagrees with the weights' shapes is a mismatch too.
    let wider = config.replace("\"hidden_size\": 16", "\"hidden_size\": 32");
    assert_ne!(wider, config);
    let weights = std::fs::read(text_dir().join("model.safetensors")).unwrap();
    match text_encoder_from_bytes(&wider, weights, Precision::F32, &device) {
        Err(WeightsError::Mismatch { errors, .. }) => assert!(!errors.is_empty()),
        Err(e) => panic!("expected a mismatch, got {e}"),
        Ok(_) => panic!("16-wide weights loaded into a 32-wide model"),
    }
    assert!(matches!(
        load_text_encoder(&fixtures().join("tiny/unet"), Precision::F32, &device),
        Err(WeightsError::Io { .. } | WeightsError::Config(_))
    ));
}

#[test]
fn published_key_layout_loads() {
    // transformers 4 (the published SD1.5 files) writes `text_model.`-prefixed keys and the
    // `position_ids` buffer; transformers 5 writes neither. Rewrite the fixture the old way.
    let bytes = std::fs::read(text_dir().join("model.safetensors")).unwrap();
    let config = std::fs::read_to_string(text_dir().join("config.json")).unwrap();
    let old_style = prefixed_with_position_ids(&bytes);
    let device = burn::prelude::Device::flex();
    let encoder =
        text_encoder_from_bytes(&config, old_style, Precision::F32, &device).expect("old-style keys load");
    check(&encoder, &device, "embeds", F32, "cpu f32, text_model.* keys");
}

/// The same safetensors file with `text_model.` before every key and an I64 `position_ids`.
fn prefixed_with_position_ids(bytes: &[u8]) -> Vec<u8> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut new_header = serde_json::Map::new();
    let mut new_data = data.to_vec();
    for (name, info) in header {
        if name == "__metadata__" {
            new_header.insert(name, info);
        } else {
            new_header.insert(format!("text_model.{name}"), info);
        }
    }
    let start = new_data.len();
    new_data.extend((0..77i64).flat_map(i64::to_le_bytes));
    new_header.insert(
        "text_model.embeddings.position_ids".into(),
        serde_json::json!({"dtype": "I64", "shape": [1, 77], "data_offsets": [start, new_data.len()]}),
    );
    let header = serde_json::to_vec(&serde_json::Value::Object(new_header)).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(new_data);
    out
}
