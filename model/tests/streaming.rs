//! Weights streamed in chunks of any size load exactly like the whole file, buffering at most
//! one tensor; truncated and corrupt streams are errors.

mod common;

use burn::prelude::*;
use common::{fixture, fixtures, read};
use model::PrecisionExt;
use model::nn::embeddings::TokenEmbedding;
use model::save::to_safetensors;
use model::streaming::StreamLoader;
use model::weights::{self, WeightsError};
use model::{Precision, UNet, clip, vae};

fn stream<M: Module>(
    module: M,
    bytes: &[u8],
    chunk: usize,
    precision: Precision,
    remaps: &[(&str, &str)],
    ignored: &[&str],
) -> (Result<M, WeightsError>, usize) {
    let device = Device::flex();
    let mut loader = StreamLoader::new(&device, precision, remaps, ignored);
    for part in bytes.chunks(chunk) {
        if let Err(e) = loader.push(part) {
            return (Err(e), loader.max_buffered());
        }
    }
    let buffered = loader.max_buffered();
    (loader.apply(module), buffered)
}

/// The largest tensor of a safetensors file, in bytes.
fn largest_tensor(bytes: &[u8]) -> usize {
    let mut s = model::streaming::SafetensorsStream::new();
    s.push(&bytes[..bytes.len().min(1 << 20)], |_| Ok(())).unwrap();
    s.tensors().unwrap().iter().map(|t| (t.end - t.start) as usize).max().unwrap()
}

fn unet_output(unet: &UNet) -> Vec<f32> {
    let device = Device::flex();
    let sample = fixture("sq.input.sample").to_device(&device);
    let context = fixture("sq.input.encoder_hidden_states").to_device(&device);
    read(unet.forward(sample, &[999.0, 999.0], context, None)).1
}

#[test]
fn unet_streams_in_any_chunking() {
    let device = Device::flex();
    let dir = fixtures().join("tiny/unet");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let unet_config = model::config::UNetConfig::from_json(&config).unwrap();
    for (file, precision) in [
        ("diffusion_pytorch_model.safetensors", Precision::F32),
        ("diffusion_pytorch_model.fp16.safetensors", Precision::F32),
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let whole = weights::unet_from_bytes(&config, bytes.clone(), precision, &device).unwrap();
        let expected = unet_output(&whole);
        let largest = largest_tensor(&bytes);
        for chunk in [1, 7, 4096, 65536, bytes.len()] {
            let (loaded, buffered) =
                stream(UNet::new(&unet_config, &device), &bytes, chunk, precision, &[], &[]);
            let loaded = loaded.unwrap();
            // Not bit-exact: the whole-file loader transposes linear weights into contiguous
            // memory, we keep a transposed view, and the CPU's matmul rounds the two layouts
            // differently (one ulp here and there).
            let error = common::relative_l2(&unet_output(&loaded), &expected);
            assert!(error < 1e-6, "{file}, chunks of {chunk}: relative L2 {error:.1e}: not the same model");
            assert!(
                buffered <= largest,
                "{file}, chunks of {chunk}: buffered {buffered} > largest tensor {largest}"
            );
            println!(
                "{file}: chunks of {chunk} bytes: output rel. L2 {error:.1e}; at most {buffered} bytes buffered \
                 (largest tensor {largest})"
            );
        }
    }
}

#[test]
fn vae_and_text_encoder_stream_with_their_remaps() {
    let device = Device::flex();
    let tiny = fixtures().join("tiny");
    let vae_bytes = std::fs::read(tiny.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let vae_config =
        vae::VaeConfig::from_json(&std::fs::read_to_string(tiny.join("vae/config.json")).unwrap()).unwrap();
    let (loaded, _) = stream(
        vae::AutoencoderKL::new(&vae_config, &device),
        &vae_bytes,
        10_000,
        Precision::F32,
        vae::OLD_ATTENTION_REMAPS,
        &[],
    );
    let loaded = loaded.unwrap();
    let z = common::pipeline_expected()["vae.decode.z"].to_device(&device);
    let (_, out) = read(loaded.decode(z));
    let error = common::relative_l2(&out, &common::pipeline_expected()["vae.decode.out"].values);
    println!("vae streamed: decode relative L2 {error:.1e}");
    assert!(error < 1e-5);

    let te_bytes = std::fs::read(tiny.join("text_encoder/model.safetensors")).unwrap();
    let te_config = clip::ClipTextConfig::from_json(
        &std::fs::read_to_string(tiny.join("text_encoder/config.json")).unwrap(),
    )
    .unwrap();
    let (loaded, _) = stream(
        clip::ClipTextModel::new(&te_config, &device),
        &te_bytes,
        3_000,
        Precision::F32,
        clip::REMAPS,
        clip::IGNORED,
    );
    let loaded = loaded.unwrap();
    let text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("pipeline_cases.json")).unwrap()).unwrap();
    let ids: Vec<u32> =
        text["text"][0]["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let (_, out) = read(loaded.encode_ids(std::slice::from_ref(&ids), &device));
    let error = common::relative_l2(&out, &common::pipeline_expected()["text.0.embeds"].values);
    println!("text encoder streamed: relative L2 {error:.1e}");
    assert!(error < 1e-5);

    // As transformers 4 saved it (SD1.5's published file): `text_model.` keys and the I64
    // `position_ids` buffer, which is passed over unread in any chunking.
    let tf4 = std::fs::read(tiny.join("text_encoder_tf4/model.safetensors")).unwrap();
    for chunk in [1, 7, 3_000, tf4.len()] {
        let (loaded, _) = stream(
            clip::ClipTextModel::new(&te_config, &device),
            &tf4,
            chunk,
            Precision::F32,
            clip::REMAPS,
            clip::IGNORED,
        );
        let loaded = loaded.unwrap_or_else(|e| panic!("transformers 4 layout, chunks of {chunk}: {e}"));
        let (_, out) = read(loaded.encode_ids(std::slice::from_ref(&ids), &device));
        let error = common::relative_l2(&out, &common::pipeline_expected()["text.0.embeds"].values);
        assert!(error < 1e-5, "transformers 4 layout, chunks of {chunk}: relative L2 {error:.1e}");
    }
    // The token embedding held as row blocks (SD1.5's is, being over one buffer's limit): here
    // three blocks of the tiny vocabulary (334, 334, 332 rows). Any chunking, either file dtype,
    // the same output; saved, the same file as the one-block model's.
    let blocked = || {
        let mut model = clip::ClipTextModel::new(&te_config, &device);
        model.text_model.embeddings.token_embedding =
            TokenEmbedding::new(te_config.vocab_size, te_config.hidden_size, 25_000, &device);
        model
    };
    assert_eq!(blocked().text_model.embeddings.token_embedding.weight.len(), 3);
    let te_half = std::fs::read(tiny.join("text_encoder/model.fp16.safetensors")).unwrap();
    for (file, chunk, precision, tolerance) in [
        (&tf4, 7, Precision::F32, 1e-5),
        (&te_bytes, 3_000, Precision::F32, 1e-5),
        (&te_half, 4096, Precision::F16, 5e-3),
    ] {
        let (loaded, _) = stream(blocked(), file, chunk, precision, clip::REMAPS, clip::IGNORED);
        let loaded = loaded.unwrap_or_else(|e| panic!("blocks, chunks of {chunk}: {e}"));
        let (_, out) = read(loaded.encode_ids(std::slice::from_ref(&ids), &device));
        let error = common::relative_l2(&out, &common::pipeline_expected()["text.0.embeds"].values);
        assert!(error < tolerance, "blocks, {precision:?}, chunks of {chunk}: relative L2 {error:.1e}");
    }
    let (one_block, _) = stream(
        clip::ClipTextModel::new(&te_config, &device),
        &te_bytes,
        4096,
        Precision::F32,
        clip::REMAPS,
        clip::IGNORED,
    );
    let (three_blocks, _) = stream(blocked(), &te_bytes, 4096, Precision::F32, clip::REMAPS, clip::IGNORED);
    let metadata = Default::default();
    let save = |m: &clip::ClipTextModel| model::block_on(to_safetensors(m, Precision::F32, &metadata));
    assert_eq!(save(&three_blocks.unwrap()), save(&one_block.unwrap()), "blocks are saved as one tensor");
    // A vocabulary the file does not have: the rows that do not fit are named.
    for vocab_size in [999, 1001] {
        let config = clip::ClipTextConfig { vocab_size, ..te_config.clone() };
        let mut model = clip::ClipTextModel::new(&config, &device);
        model.text_model.embeddings.token_embedding =
            TokenEmbedding::new(vocab_size, config.hidden_size, 25_000, &device);
        let (refused, _) = stream(model, &te_bytes, 4096, Precision::F32, clip::REMAPS, clip::IGNORED);
        let message = refused.expect_err("another vocabulary").to_string();
        assert!(
            message.contains("text_model.embeddings.token_embedding.weight: the file has [1000, 16]"),
            "{message}"
        );
    }

    // Not ignored, an integer tensor is refused by name.
    let (refused, _) =
        stream(clip::ClipTextModel::new(&te_config, &device), &tf4, 4096, Precision::F32, clip::REMAPS, &[]);
    let message = refused.expect_err("an I64 tensor is not a weight").to_string();
    assert!(message.contains("text_model.embeddings.position_ids") && message.contains("I64"), "{message}");
}

#[test]
fn truncated_corrupt_and_wrong_streams_are_errors() {
    let device = Device::flex();
    let dir = fixtures().join("tiny/unet");
    let config =
        model::config::UNetConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
            .unwrap();
    let bytes = std::fs::read(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let fresh = || UNet::new(&config, &device);

    let (result, _) = stream(fresh(), &bytes[..bytes.len() - 100], 4096, Precision::F32, &[], &[]);
    let message = result.err().unwrap().to_string();
    assert!(message.contains("truncated"), "{message}");

    let mut extra = bytes.clone();
    extra.extend_from_slice(b"trailing garbage");
    assert!(stream(fresh(), &extra, 4096, Precision::F32, &[], &[]).0.is_err());

    let mut corrupt = bytes.clone();
    corrupt[8..16].copy_from_slice(b"\x00\x01\x02\x03\x04\x05\x06\x07");
    assert!(matches!(
        stream(fresh(), &corrupt, 4096, Precision::F32, &[], &[]).0,
        Err(WeightsError::Format(_))
    ));

    let huge_header = [u64::MAX.to_le_bytes().to_vec(), bytes[8..].to_vec()].concat();
    assert!(matches!(
        stream(fresh(), &huge_header, 4096, Precision::F32, &[], &[]).0,
        Err(WeightsError::Format(_))
    ));

    // The ControlNet's file into a UNet: missing and unused keys, named.
    let cn = std::fs::read(fixtures().join("tiny/controlnet/diffusion_pytorch_model.safetensors")).unwrap();
    match stream(fresh(), &cn, 65536, Precision::F32, &[], &[]).0 {
        Err(WeightsError::Mismatch { missing, unused, .. }) => {
            assert!(missing.iter().any(|k| k.starts_with("up_blocks")), "{missing:?}");
            assert!(unused.iter().any(|k| k.starts_with("controlnet_down_blocks")), "{unused:?}");
        }
        other => panic!("expected a mismatch, got {:?}", other.err()),
    }
}

#[test]
fn f16_files_stay_f16_when_computing_in_f16() {
    let device = common::wgpu().clone();
    if !Precision::F16.is_supported_on(&device) {
        println!("skipped: no shader-f16");
        return;
    }
    let dir = fixtures().join("tiny/unet");
    let config =
        model::config::UNetConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
            .unwrap();
    let bytes = std::fs::read(dir.join("diffusion_pytorch_model.fp16.safetensors")).unwrap();
    let mut loader = StreamLoader::new(&device, Precision::F16, &[], &[]);
    for part in bytes.chunks(50_000) {
        loader.push(part).unwrap();
    }
    let unet = loader.apply(UNet::new(&config, &device)).unwrap();
    assert_eq!(unet.dtype(), burn::tensor::FloatDType::F16);
    let whole = weights::unet_from_bytes(
        &std::fs::read_to_string(dir.join("config.json")).unwrap(),
        bytes,
        Precision::F16,
        &device,
    )
    .unwrap();
    let sample = fixture("sq.input.sample").to_device(&device);
    let context = fixture("sq.input.encoder_hidden_states").to_device(&device);
    let a = read(unet.forward(sample.clone(), &[999.0; 2], context.clone(), None)).1;
    let b = read(whole.forward(sample, &[999.0; 2], context, None)).1;
    let error = common::relative_l2(&a, &b);
    println!("f16 streamed vs whole file: relative L2 {error:.1e}");
    assert!(error < 1e-3, "streamed and whole-file f16 loads differ: {error:.1e}");
}

/// SD1.5's token embedding (49408 × 768, 145 MiB in f32) is over lavapipe's 128 MiB buffer limit
/// (and WebGPU's default binding limit): streamed into row blocks, it loads on the GPU and every
/// looked-up row is the file's, on either side of the blocks' boundary.
#[test]
fn a_table_over_one_buffer_loads_into_row_blocks_on_the_gpu() {
    let device = common::wgpu().clone();
    let (rows, dim) = (49408usize, 768usize);
    let value = |r: usize, c: usize| (r * 7 + c) as f32 * 0.001 - 1.0;
    let header = format!(
        r#"{{"weight":{{"dtype":"F32","shape":[{rows},{dim}],"data_offsets":[0,{}]}}}}"#,
        rows * dim * 4
    );
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.reserve(rows * dim * 4);
    for r in 0..rows {
        for c in 0..dim {
            file.extend_from_slice(&value(r, c).to_le_bytes());
        }
    }
    let table = TokenEmbedding::new(rows, dim, vocabulary::memory::MAX_BUFFER_BYTES, &device);
    assert_eq!(table.weight.len(), 2);
    let mut loader = StreamLoader::new(&device, Precision::F32, &[], &[]);
    for part in file.chunks(1 << 20) {
        loader.push(part).unwrap();
    }
    drop(file);
    let table = loader.apply(table).unwrap();
    let ids = [0usize, 1, 24703, 24704, 30000, 49407];
    let input = Tensor::<2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, ids.len()]),
        &device,
    );
    let (shape, got) = read(table.forward(input));
    assert_eq!(shape, vec![1, ids.len(), dim]);
    let expected: Vec<f32> = ids.iter().flat_map(|&r| (0..dim).map(move |c| value(r, c))).collect();
    assert_eq!(got, expected);
}
