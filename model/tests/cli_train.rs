//! `controlnet train controlnet` as a user runs it, on the tiny pipeline and a small
//! Fill50K-layout folder made here: the log, the checkpoint in diffusers' layout, resuming equal
//! to not stopping, and the data errors named before the first step.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixtures;
use model::image_io::{self, Rgb8};
use model::save::named_tensors;
use model::{Precision, weights};

fn controlnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_controlnet")).args(args).output().expect("the binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("controlnet-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fill50K in small: outlined circles (sources) and filled ones (targets), with prompts.
fn fill_dataset(dir: &Path, pairs: usize, size: usize) {
    std::fs::create_dir_all(dir.join("source")).unwrap();
    std::fs::create_dir_all(dir.join("target")).unwrap();
    let mut index = String::new();
    for i in 0..pairs {
        let (cx, cy, r) = (20.0 + 6.0 * i as f64, 30.0, 12.0 + i as f64);
        let mut source = vec![0u8; size * size * 3];
        let mut target = vec![0u8; size * size * 3];
        for y in 0..size {
            for x in 0..size {
                let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
                let p = (y * size + x) * 3;
                if (d - r).abs() < 1.0 {
                    source[p..p + 3].copy_from_slice(&[255, 255, 255]);
                }
                let colour = if d <= r { [200, 40 * i as u8, 30] } else { [20, 60, 180] };
                target[p..p + 3].copy_from_slice(&colour);
            }
        }
        for (folder, pixels) in [("source", source), ("target", target)] {
            let png = image_io::encode_png(&Rgb8 { width: size, height: size, pixels }, &[]).unwrap();
            std::fs::write(dir.join(folder).join(format!("{i}.png")), png).unwrap();
        }
        index += &format!(
            "{{\"source\": \"source/{i}.png\", \"target\": \"target/{i}.png\", \"prompt\": \"red circle with blue background\"}}\n"
        );
    }
    std::fs::write(dir.join("prompt.json"), index).unwrap();
}

fn train(data: &Path, out: &Path, steps: u32, extra: &[&str]) -> Output {
    train_kind("controlnet", data, out, steps, extra)
}

fn train_kind(kind: &str, data: &Path, out: &Path, steps: u32, extra: &[&str]) -> Output {
    let model = fixtures().join("tiny");
    let steps = steps.to_string();
    let mut args = vec![
        "train",
        kind,
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        &steps,
        "--batch",
        "2",
        "--resolution",
        "64",
        "--seed",
        "7",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "2",
        "--backend",
        "cpu",
    ];
    args.extend_from_slice(extra);
    controlnet(&args)
}

fn assert_ok(output: &Output, what: &str) {
    assert!(output.status.success(), "{what} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Four steps in one run equal two steps, a stop and two resumed steps, bit for bit (weights
/// and optimiser state); the checkpoint is a diffusers ControlNet folder with diffusers' keys;
/// the log has a line per step with every zero convolution's statistics, and the zero
/// convolutions have grown from zero.
#[test]
fn trains_checkpoints_and_resumes_exactly() {
    let root = scratch("resume");
    let data = root.join("data");
    fill_dataset(&data, 4, 64);

    let straight = root.join("straight");
    assert_ok(&train(&data, &straight, 4, &["--sample-every", "4"]), "4 steps");
    let stopped = root.join("stopped");
    assert_ok(&train(&data, &stopped, 2, &[]), "2 steps");
    let refused = train(&data, &stopped, 4, &["--resume", "--seed", "8"]);
    assert!(!refused.status.success(), "resuming with another seed must be refused");
    assert_ok(&train(&data, &stopped, 4, &["--resume"]), "resumed to 4 steps");

    // The optimiser state is restored exactly too: steps 3 and 4 read its moments, so weights
    // equal to the bit prove them equal (burnpack's byte order itself varies from run to run).
    for file in ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"] {
        let a = std::fs::read(straight.join("checkpoint").join(file)).unwrap();
        let b = std::fs::read(stopped.join("checkpoint").join(file)).unwrap();
        assert!(a == b, "{file}: the resumed run differs from the uninterrupted one");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(straight.join("checkpoint/state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 4);

    // diffusers' layout: the same keys and shapes as a ControlNetModel.from_unet saved by diffusers.
    let ours = weights::load_controlnet(
        &straight.join("checkpoint"),
        Precision::F32,
        &burn::prelude::Device::flex(),
    )
    .expect("our checkpoint loads");
    let diffusers = weights::load_controlnet(
        &fixtures().join("train/controlnet_init"),
        Precision::F32,
        &burn::prelude::Device::flex(),
    )
    .unwrap();
    let keys = |m: &model::ControlNet| {
        let mut k: Vec<(String, Vec<usize>)> =
            named_tensors(m).into_iter().map(|t| (t.key, t.shape)).collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ours), keys(&diffusers));
    let header = safetensors_keys(&straight.join("checkpoint/diffusion_pytorch_model.safetensors"));
    let expected =
        safetensors_keys(&fixtures().join("train/controlnet_init/diffusion_pytorch_model.safetensors"));
    assert_eq!(header, expected, "the file's keys are diffusers' own");

    let log = std::fs::read_to_string(straight.join("log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["step"], i + 1);
        assert!(line["loss"].as_f64().unwrap().is_finite());
        let zero_convs = line["zero_convs"].as_array().unwrap();
        assert_eq!(zero_convs.len(), 13, "12 skip connections and the mid block");
        assert!(
            zero_convs.iter().all(|z| z["weight_norm"].as_f64().unwrap() > 0.0),
            "zero convolutions grow"
        );
    }
    assert!(lines[0]["zero_convs"][0]["output_mean"].as_f64().unwrap() == 0.0, "they start at zero");
    assert!(straight.join("samples/step-000004.png").is_file(), "a sample at step 4");
    let _ = std::fs::remove_dir_all(&root);
}

fn safetensors_keys(path: &Path) -> Vec<(String, serde_json::Value)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut keys: Vec<(String, serde_json::Value)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (k.clone(), serde_json::json!([v["dtype"], v["shape"]])))
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys
}

/// What a case does to a good data folder.
type Damage = fn(&Path);

/// A missing file, a non-image and mismatched sizes are named before the first step, and no
/// checkpoint is written.
#[test]
fn bad_data_is_named_before_the_first_step() {
    let root = scratch("bad");
    let cases: [(&str, Damage); 3] = [
        ("target/1.png", |d| std::fs::remove_file(d.join("target/1.png")).unwrap()),
        ("source/2.png", |d| std::fs::write(d.join("source/2.png"), b"not an image").unwrap()),
        ("source/0.png", |d| {
            let png =
                image_io::encode_png(&Rgb8 { width: 32, height: 32, pixels: vec![0; 32 * 32 * 3] }, &[])
                    .unwrap();
            std::fs::write(d.join("source/0.png"), png).unwrap();
        }),
    ];
    for (i, (named, damage)) in cases.into_iter().enumerate() {
        let data = root.join(format!("data{i}"));
        fill_dataset(&data, 3, 64);
        damage(&data);
        let out = root.join(format!("out{i}"));
        let output = train(&data, &out, 2, &[]);
        assert!(!output.status.success(), "case {named} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "the error names {named}: {stderr}");
        assert!(!out.join("checkpoint").exists(), "no checkpoint after a refused start");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// `train base` (UNet + text encoder, with a warmup and a cosine decay of the learning rate, and
/// a moving average of the UNet's weights) and `train vae` (a linear decay): two steps in one run
/// equal one step, a stop and one resumed step, bit for bit — the average and the trained weights
/// both; the base checkpoint is a whole pipeline folder whose UNet is the average, and that
/// `controlnet generate` runs; the VAE's log carries both loss terms; ControlNet-only options
/// and an average for the VAE are refused.
#[test]
fn base_and_vae_train_and_resume_exactly() {
    let root = scratch("base-vae");
    let data = root.join("data");
    fill_dataset(&data, 3, 64);
    let base_options =
        ["--lr-schedule", "cosine", "--lr-warmup", "1", "--lr-decay-steps", "2", "--ema-decay", "0.99"];
    for (kind, weights, options) in [
        (
            "base",
            vec![
                "unet/diffusion_pytorch_model.safetensors",
                "unet_trained/diffusion_pytorch_model.safetensors",
                "text_encoder/model.safetensors",
            ],
            &base_options[..],
        ),
        (
            "vae",
            vec!["diffusion_pytorch_model.safetensors"],
            &["--lr-schedule", "linear", "--lr-decay-steps", "2"][..],
        ),
    ] {
        let straight = root.join(format!("{kind}-straight"));
        assert_ok(&train_kind(kind, &data, &straight, 2, options), kind);
        let stopped = root.join(format!("{kind}-stopped"));
        let once = [options, &["--checkpoint-every", "1"]].concat();
        assert_ok(&train_kind(kind, &data, &stopped, 1, &once), kind);
        let resumed = [&once[..], &["--resume"]].concat();
        assert_ok(&train_kind(kind, &data, &stopped, 2, &resumed), kind);
        for file in weights {
            let a = std::fs::read(straight.join("checkpoint").join(file)).unwrap();
            let b = std::fs::read(stopped.join("checkpoint").join(file)).unwrap();
            assert!(a == b, "{kind}: {file}: the resumed run differs from the uninterrupted one");
        }
        let log = std::fs::read_to_string(straight.join("log.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let last = lines.last().unwrap();
        assert_eq!(last["step"], 2);
        // Each line names the rate its step took (--lr 1e-3): the base run warms up from 0 for
        // one step, then starts its decay at the full rate; the VAE's linear decay halves it.
        let rates: Vec<f64> = lines.iter().map(|l| l["lr"].as_f64().unwrap()).collect();
        let expected = if kind == "base" { [0.0, 1e-3] } else { [1e-3, 5e-4] };
        assert!(
            rates.iter().zip(expected).all(|(r, e)| (r - e).abs() <= 1e-12),
            "{kind}: the log's rates {rates:?}, the schedule's {expected:?}"
        );
        if kind == "vae" {
            assert!(last["reconstruction"].as_f64().unwrap() > 0.0 && last["kl"].as_f64().unwrap() > 0.0);
        }
        let refused = train_kind(kind, &data, &root.join("refused"), 1, &["--only-mid-control"]);
        assert!(!refused.status.success(), "{kind}: --only-mid-control must be refused");
    }
    let checkpoint = root.join("base-straight/checkpoint");
    let read =
        |folder: &str| std::fs::read(checkpoint.join(folder).join("diffusion_pytorch_model.safetensors"));
    assert!(read("unet").unwrap() != read("unet_trained").unwrap(), "the checkpoint's UNet is the average");
    let refused = train_kind("vae", &data, &root.join("refused"), 1, &["--ema-decay", "0.99"]);
    assert!(!refused.status.success(), "an average is for base models");
    let checkpoint = root.join("base-straight/checkpoint");
    let out = root.join("base.png");
    let generated = controlnet(&[
        "generate",
        "--model",
        checkpoint.to_str().unwrap(),
        "--prompt",
        "red circle",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--backend",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ok(&generated, "generate with the trained base model");
    assert!(out.is_file());
    let _ = std::fs::remove_dir_all(&root);
}

/// A step whose loss is not finite stops the run with an error and leaves the last good
/// checkpoint as it was (a learning rate of 1e30 wrecks the weights in one step).
#[test]
fn a_diverging_run_keeps_the_last_good_checkpoint() {
    let root = scratch("diverge");
    let data = root.join("data");
    fill_dataset(&data, 2, 64);
    let out = root.join("out");
    let output = train_kind("controlnet", &data, &out, 4, &["--lr", "1e30", "--checkpoint-every", "1"]);
    assert!(!output.status.success(), "a non-finite loss must stop the run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not finite"), "{stderr}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoint/state.json")).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap();
    assert!((1..4).contains(&step), "the checkpoint is the last good step's, not a later one ({step})");
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count() as u64, step, "the log stops at the last finite step");
    weights::load_controlnet(&out.join("checkpoint"), Precision::F32, &burn::prelude::Device::flex())
        .expect("the last good checkpoint loads");
    let _ = std::fs::remove_dir_all(&root);
}
