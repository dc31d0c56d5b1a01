//! `controlnet world` as the shapes recipe uses it: a folder the trainer reads, and a tokenizer
//! folder that the CLIP tokenizer reads, with every word of the world one token.
#![cfg(feature = "cli")]

use std::process::Command;

use model::tokenizer::ClipTokenizer;
use model::train::data::Dataset;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("controlnet-world-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn controlnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_controlnet")).args(args).output().expect("the binary runs")
}

#[test]
fn a_made_world_trains() {
    let dir = scratch("make");
    let out = controlnet(&[
        "world",
        "make",
        "--out",
        dir.to_str().unwrap(),
        "--count",
        "6",
        "--seed",
        "3",
        "--size",
        "64",
        "--condition",
        "scribble",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data = Dataset::open(&dir, 64).expect("the trainer reads the folder");
    assert_eq!(data.len(), 6);
    let (target, source) = data.load(2).unwrap();
    let example = world::Example::make(3, 2, 64);
    assert_eq!(target.pixels, example.image.pixels);
    assert_eq!(source.pixels, example.condition(world::Condition::Scribble, 3, 2).to_rgb().pixels);
    assert_eq!(data.pair(2).prompt, example.caption);

    let bad = controlnet(&["world", "make", "--out", dir.to_str().unwrap(), "--condition", "depth"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown condition `depth`"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_world_vocabulary_makes_every_word_one_token() {
    let dir = scratch("vocab");
    let out = controlnet(&["world", "vocab", "--out", dir.to_str().unwrap(), "--max-length", "32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tokenizer = ClipTokenizer::load(&dir).expect("the CLIP tokenizer reads the world's files");
    assert_eq!(tokenizer.max_length(), 32);
    for word in world::scene::words() {
        assert_eq!(tokenizer.tokenize(word).len(), 1, "`{word}` is not one token");
    }
    let mut longest = 0;
    for index in 0..300 {
        let caption = world::Example::make(1, index, 8).caption;
        let tokens = tokenizer.tokenize(&caption);
        let words =
            caption.split([' ', ',']).filter(|w| !w.is_empty()).count() + caption.matches(',').count();
        assert_eq!(tokens.len(), words, "`{caption}`");
        longest = longest.max(tokens.len() + 2);
        let ids = tokenizer.encode(&caption);
        assert_eq!(ids.len(), 32);
    }
    assert!(longest <= 32, "a caption takes {longest} tokens");
    // Words from outside the world still tokenize, a byte at a time where they must.
    assert!(!tokenizer.tokenize("a zebra!").is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fresh_shapes_pipeline_generates_and_trains() {
    let dir = scratch("init");
    let out = controlnet(&["world", "init", "--out", dir.to_str().unwrap(), "--seed", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A pipeline folder the loader takes whole, at the world's resolution.
    let png = dir.join("out.png");
    let out = controlnet(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "a red star on a navy background",
        "--steps",
        "2",
        "--width",
        "128",
        "--height",
        "128",
        "--backend",
        "cpu",
        "--out",
        png.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let image = model::image_io::decode(&std::fs::read(&png).unwrap()).unwrap();
    assert_eq!((image.width, image.height), (128, 128));
    // The same seed makes the same weights.
    let again = scratch("init-again");
    assert!(controlnet(&["world", "init", "--out", again.to_str().unwrap(), "--seed", "1"]).status.success());
    for file in [
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file}"
        );
    }
    // And `train base` takes it as its starting point, on a world folder, for a step.
    let data = scratch("init-data");
    assert!(
        controlnet(&["world", "make", "--out", data.to_str().unwrap(), "--count", "2", "--size", "64"])
            .status
            .success()
    );
    let run = scratch("init-run");
    let out = controlnet(&[
        "train",
        "base",
        "--model",
        dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "1",
        "--batch",
        "2",
        "--resolution",
        "64",
        "--backend",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(run.join("checkpoint/unet/diffusion_pytorch_model.safetensors").is_file());
    // `world eval` runs the held-out set through it and reports the three measures.
    let out = controlnet(&[
        "world",
        "eval",
        "--model",
        dir.to_str().unwrap(),
        "--count",
        "2",
        "--steps",
        "2",
        "--size",
        "64",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(report["examples"], 2);
    for measure in ["edge_f1", "coverage_iou", "colour_accuracy"] {
        let value = report[measure].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value), "{measure} {value}");
    }
    assert!(stdout.contains("| base model alone | 2 |"), "{stdout}");
    for d in [dir, again, data, run] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
