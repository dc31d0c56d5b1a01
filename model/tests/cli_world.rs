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
    assert_eq!(data.line(2).prompt, example.caption);

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

/// The recipe end to end at its smoke size (every stage, a step or two; the base model with a
/// warmup, a cosine decay and a moving average of its UNet): the exported folders are what the
/// site serves (fp16 weights beside their configs), the logs and the contact sheet come with
/// them, and a second run finds every stage done.
#[test]
fn the_recipe_runs_every_stage() {
    let dir = scratch("recipe");
    let out =
        controlnet(&["world", "recipe", "--out", dir.to_str().unwrap(), "--preset", "smoke", "--seed", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for stage in [
        "world make",
        "world init",
        "train vae",
        "world assemble",
        "train base",
        "train controlnet",
        "world export",
    ] {
        assert!(stderr.contains(&format!("controlnet {stage} ")), "no `{stage}` in:\n{stderr}");
    }
    let shapes = dir.join("shapes");
    for file in [
        "pipeline/model_index.json",
        "pipeline/unet/diffusion_pytorch_model.fp16.safetensors",
        "pipeline/text_encoder/model.fp16.safetensors",
        "pipeline/vae/diffusion_pytorch_model.fp16.safetensors",
        "pipeline/tokenizer/vocab.json",
        "controlnet-canny/diffusion_pytorch_model.fp16.safetensors",
        "controlnet-scribble/config.json",
        "logs/base/log.jsonl",
        "logs/controlnet-scribble/log.jsonl",
        "sheet.png",
    ] {
        assert!(shapes.join(file).is_file(), "{file} missing");
    }
    for unwanted in [
        "pipeline/unet/diffusion_pytorch_model.safetensors",
        "pipeline/unet_trained",
        "pipeline/optimizer.bpk",
        "pipeline/state.json",
    ] {
        assert!(!shapes.join(unwanted).exists(), "{unwanted} is not for the site");
    }
    // The assembled VAE's scale was measured, not SD1.5's.
    let vae: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shapes.join("pipeline/vae/config.json")).unwrap()).unwrap();
    assert_ne!(vae["scaling_factor"].as_f64().unwrap(), 0.18215);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("recipe.json")).unwrap()).unwrap();
    assert_eq!(summary["preset"], "smoke");

    let again =
        controlnet(&["world", "recipe", "--out", dir.to_str().unwrap(), "--preset", "smoke", "--seed", "5"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("done already: controlnet world export"), "{stderr}");
    assert!(stderr.contains("--resume"), "training stages continue from their checkpoints: {stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With no `--model`, `generate` uses the built-in shapes models from the source tree: a
/// `--control` alone steers with their Canny ControlNet, `--controlnet scribble` with the
/// scribble one, and the image is the world's size.
#[test]
fn generate_defaults_to_the_built_in_models() {
    let dir = scratch("built-in");
    std::fs::create_dir_all(&dir).unwrap();
    let example = world::Example::make(1_000_000, 0, 64);
    let map = dir.join("map.png");
    std::fs::write(
        &map,
        preprocess::encode_png(&example.condition(world::Condition::Canny, 1_000_000, 0).to_rgb()),
    )
    .unwrap();
    let mut images = Vec::new();
    for named in [None, Some("canny"), Some("scribble")] {
        let out = dir.join(format!("{}.png", named.unwrap_or("implied")));
        let mut args = Vec::new();
        if let Some(name) = named {
            args.extend(["--controlnet", name]);
        }
        let (map, out_text) = (map.to_str().unwrap(), out.to_str().unwrap());
        args.extend(["--control", map, "--prompt", &example.caption, "--steps", "2", "--seed", "1"]);
        args.extend(["--backend", "cpu", "--quiet", "--out", out_text]);
        let run = controlnet(&[&["generate"][..], &args].concat());
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let image = image::open(&out).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (64, 64));
        images.push(image.into_raw());
    }
    assert_eq!(images[0], images[1], "a --control alone is the Canny ControlNet's");
    assert_ne!(images[1], images[2], "scribble is another ControlNet");

    let refused = controlnet(&[
        "generate",
        "--model",
        "tests/fixtures/tiny",
        "--control",
        map.to_str().unwrap(),
        "--prompt",
        "x",
        "--out",
        "x.png",
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("must follow a `--controlnet DIR`"));
    std::fs::remove_dir_all(&dir).unwrap();
}
