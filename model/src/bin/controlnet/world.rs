//! `controlnet world`: the shapes world (the `world` crate) from the command line.
//!
//! `world make` writes examples `0..count` of the world with a seed to a Fill50K-layout folder
//! that `controlnet train` (and diffusers' `train_controlnet.py`) reads; `world vocab` writes the
//! tokenizer folder of the world's own BPE vocabulary; `world init` writes the shapes pipeline
//! (`world::shapes`' configs, fresh weights, the world's tokenizer): where the recipe starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use model::clip::{ClipTextConfig, ClipTextModel};
use model::config::UNetConfig;
use model::save::to_safetensors;
use model::scheduler::SchedulerConfig;
use model::vae::{AutoencoderKL, VaeConfig};
use model::{Precision, UNet};

use world::Condition;
use world::dataset::Spec;

use crate::Options;

pub const USAGE: &str =
    "  controlnet world make --out DIR [--count N] [--seed S] [--size PX] [--condition canny|scribble]
  controlnet world vocab --out DIR [--max-length N]
  controlnet world init --out DIR [--seed S]
  controlnet world eval --model DIR [--controlnet DIR --condition canny|scribble [--scale S]]
      [--count N] [--seed S] [--steps N] [--size PX] [--backend cpu|wgpu]";

pub fn run(
    mut args: impl Iterator<Item = String>,
    device: impl Fn(&str) -> Result<burn::prelude::Device, String>,
) -> Result<(), String> {
    match args.next().as_deref() {
        Some("make") => make(Options::parse(args, &["--out", "--count", "--seed", "--size", "--condition"])?),
        Some("vocab") => vocab(Options::parse(args, &["--out", "--max-length"])?),
        Some("init") => init(Options::parse(args, &["--out", "--seed"])?),
        Some("eval") => eval(
            Options::parse(
                args,
                &[
                    "--model",
                    "--controlnet",
                    "--condition",
                    "--scale",
                    "--count",
                    "--seed",
                    "--steps",
                    "--size",
                    "--backend",
                ],
            )?,
            device,
        ),
        Some(other) => {
            Err(format!("unknown world command `{other}` (make, vocab, init or eval)\nusage:\n{USAGE}"))
        }
        None => Err(format!("usage:\n{USAGE}")),
    }
}

fn out(options: &Options) -> Result<PathBuf, String> {
    options.path("--out").map(PathBuf::from).ok_or_else(|| format!("`--out` is required\nusage:\n{USAGE}"))
}

fn make(options: Options) -> Result<(), String> {
    let dir = out(&options)?;
    let spec = Spec {
        seed: options.get("--seed", 0)?,
        count: options.get("--count", 1000)?,
        size: options.get("--size", world::DEFAULT_SIZE)?,
        condition: options.get("--condition", Condition::Canny)?,
    };
    if spec.count == 0 {
        return Err("`--count` must be at least 1".into());
    }
    let started = Instant::now();
    world::dataset::write(&dir, spec, |done| {
        if done % 50 == 0 || done == spec.count {
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprint!("\r{done}/{} examples, {rate:.0}/s   ", spec.count);
        }
    })
    .map_err(|e| format!("{}: {e}", dir.display()))?;
    eprintln!();
    println!(
        "{} {} examples of the world with seed {} at {}² in {}",
        spec.count,
        spec.condition.name(),
        spec.seed,
        spec.size,
        dir.display()
    );
    Ok(())
}

fn vocab(options: Options) -> Result<(), String> {
    let dir = out(&options)?;
    let max_length: usize = options.get("--max-length", 77)?;
    if !(4..=1024).contains(&max_length) {
        return Err(format!("`--max-length {max_length}`: expected 4 to 1024"));
    }
    write_tokenizer(&dir, max_length)?;
    println!("the world's tokenizer ({} merges) in {}", world::vocab::merges().len(), dir.display());
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The world's tokenizer folder, for captions of at most `max_length` tokens.
fn write_tokenizer(dir: &Path, max_length: usize) -> Result<usize, String> {
    let files = world::vocab::files(max_length);
    for (name, text) in [
        ("vocab.json", &files.vocab_json),
        ("merges.txt", &files.merges_txt),
        ("tokenizer_config.json", &files.tokenizer_config_json),
        ("special_tokens_map.json", &files.special_tokens_map_json),
    ] {
        write(&dir.join(name), text.as_bytes())?;
    }
    Ok(files.vocab_size)
}

/// The shapes pipeline with fresh weights (burn's initialisation, seeded), in diffusers' layout.
fn init(options: Options) -> Result<(), String> {
    let dir = out(&options)?;
    let seed: u64 = options.get("--seed", 0)?;
    let config = world::shapes::config;
    let text_config =
        ClipTextConfig::from_json(config("text_encoder/config.json")).map_err(|e| e.to_string())?;
    let unet_config = UNetConfig::from_json(config("unet/config.json")).map_err(|e| e.to_string())?;
    let vae_config = VaeConfig::from_json(config("vae/config.json")).map_err(|e| e.to_string())?;
    SchedulerConfig::from_json(config("scheduler/scheduler_config.json")).map_err(|e| e.to_string())?;
    let vocabulary = write_tokenizer(&dir.join("tokenizer"), text_config.max_position_embeddings)?;
    if vocabulary != text_config.vocab_size {
        return Err(format!(
            "the text encoder's vocab_size is {} but the world's vocabulary has {vocabulary} tokens",
            text_config.vocab_size
        ));
    }
    for (path, text) in world::shapes::CONFIGS {
        write(&dir.join(path), text.as_bytes())?;
    }
    let device = burn::prelude::Device::flex();
    device.seed(seed);
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    let weights = [
        (
            "text_encoder/model.safetensors",
            model::block_on(to_safetensors(
                &ClipTextModel::new(&text_config, &device),
                Precision::F32,
                &metadata,
            )),
        ),
        (
            "unet/diffusion_pytorch_model.safetensors",
            model::block_on(to_safetensors(&UNet::new(&unet_config, &device), Precision::F32, &metadata)),
        ),
        (
            "vae/diffusion_pytorch_model.safetensors",
            model::block_on(to_safetensors(
                &AutoencoderKL::new(&vae_config, &device),
                Precision::F32,
                &metadata,
            )),
        ),
    ];
    for (path, bytes) in &weights {
        write(&dir.join(path), bytes)?;
    }
    println!("the shapes pipeline, fresh (seed {seed}), in {}", dir.display());
    Ok(())
}

/// The world seed of the held-out examples: far from the seeds training folders are made with.
const HELD_OUT_SEED: u64 = 1_000_000;

/// Generates held-out examples of the world (their captions, and their condition maps through the
/// ControlNet) and prints how well the images follow them (`world::eval`): one JSON line and one
/// row of the README's table.
fn eval(
    options: Options,
    device: impl Fn(&str) -> Result<burn::prelude::Device, String>,
) -> Result<(), String> {
    use model::pipeline::{ControlUnit, Params, Pipeline, from_rgb8, to_rgb8};
    use model::vocabulary::{GenerationParams, SchedulerKind, UnitSettings};

    let model = options.path("--model").ok_or_else(|| format!("`--model` is required\nusage:\n{USAGE}"))?;
    let controlnet_dir = options.path("--controlnet");
    let condition: Condition = options.get("--condition", Condition::Canny)?;
    let scale: f64 = options.get("--scale", 1.0)?;
    let count: u64 = options.get("--count", 50)?;
    let seed: u64 = options.get("--seed", HELD_OUT_SEED)?;
    let steps: u32 = options.get("--steps", 20)?;
    let size: usize = options.get("--size", world::DEFAULT_SIZE)?;
    let backend: String = options.get("--backend", "cpu".to_owned())?;
    let device = device(&backend)?;
    let pipeline = Pipeline::load(Path::new(model), Precision::F32, &device).map_err(|e| e.to_string())?;
    let controlnet = controlnet_dir
        .map(|dir| pipeline.load_controlnet(Path::new(dir)))
        .transpose()
        .map_err(|e| e.to_string())?;

    let (mut f1, mut iou, mut right, mut shapes) = (0.0, 0.0, 0usize, 0usize);
    let started = Instant::now();
    for index in 0..count {
        let example = world::Example::make(seed, index, size);
        let map = example.condition(condition, seed, index);
        let settings = GenerationParams {
            prompt: example.caption.clone(),
            steps,
            scheduler: SchedulerKind::UniPc,
            width: size as u32,
            height: size as u32,
            seed: index as u32,
            ..GenerationParams::default()
        };
        let units: Vec<ControlUnit> = controlnet
            .iter()
            .map(|controlnet| {
                let rgb = map.to_rgb();
                ControlUnit {
                    controlnet,
                    image: from_rgb8(rgb.width, rgb.height, &rgb.pixels, &device),
                    settings: UnitSettings { scale, ..UnitSettings::default() },
                }
            })
            .collect();
        let image = pipeline
            .generate(&Params::from(settings), &units, |_| std::ops::ControlFlow::Continue(()))
            .map_err(|e| e.to_string())?;
        let (width, height, pixels) = model::block_on(to_rgb8(image)).map_err(|e| e.to_string())?;
        let output = world::RgbImage { width, height, pixels };
        let canny = example.condition(Condition::Canny, seed, index);
        f1 += world::eval::edge_f1(&output, &canny, 2).f1;
        iou += world::eval::coverage_iou(&output, &example.scene);
        let named = world::eval::colours(&output, &example.scene);
        right += named.iter().zip(&example.scene.shapes).filter(|(got, shape)| **got == shape.colour).count();
        shapes += named.len();
        eprint!(
            "\r{}/{count} images, {:.1} s each   ",
            index + 1,
            started.elapsed().as_secs_f64() / (index + 1) as f64
        );
    }
    eprintln!();
    let n = count.max(1) as f64;
    let what = match controlnet_dir {
        Some(dir) => format!("{} ControlNet {dir}, scale {scale}", condition.name()),
        None => "base model alone".to_owned(),
    };
    let report = serde_json::json!({
        "kind": "world_eval", "what": what, "examples": count, "seed": seed, "steps": steps, "size": size,
        "edge_f1": f1 / n, "coverage_iou": iou / n, "colour_accuracy": right as f64 / shapes.max(1) as f64,
    });
    println!("{report}");
    println!(
        "| {what} | {count} | {:.3} | {:.3} | {:.1} % |",
        f1 / n,
        iou / n,
        100.0 * right as f64 / shapes.max(1) as f64
    );
    Ok(())
}
