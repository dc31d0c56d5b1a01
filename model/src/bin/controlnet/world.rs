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
  controlnet world assemble --model DIR --vae DIR --data DIR --out DIR [--count N]
  controlnet world export --model DIR --canny DIR --scribble DIR --out DIR [--examples N] [--steps N]
  controlnet world recipe --out DIR [--seed S] [--preset full|smoke] [--backend cpu|wgpu]
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
        Some("assemble") => {
            assemble(Options::parse(args, &["--model", "--vae", "--data", "--out", "--count"])?)
        }
        Some("export") => export(Options::parse(
            args,
            &["--model", "--canny", "--scribble", "--out", "--examples", "--steps"],
        )?),
        Some("recipe") => {
            crate::recipe::run(Options::parse(args, &["--out", "--seed", "--preset", "--backend"])?)
        }
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
        Some(other) => Err(format!(
            "unknown world command `{other}` (make, vocab, init, assemble, export, recipe or eval)\nusage:\n{USAGE}"
        )),
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
    use model::pipeline::Pipeline;

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
        let rgb = map.to_rgb();
        let control = controlnet.as_ref().map(|controlnet| (controlnet, &rgb, scale));
        let output = generate(&pipeline, &example.caption, control, size, index as u32, steps)?;
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

/// One image of the world's size from a caption (and a control map through a ControlNet at a
/// scale): `steps` UniPC steps, guidance as the page's default, `seed`.
fn generate(
    pipeline: &model::pipeline::Pipeline,
    caption: &str,
    control: Option<(&model::ControlNet, &world::RgbImage, f64)>,
    size: usize,
    seed: u32,
    steps: u32,
) -> Result<world::RgbImage, String> {
    use model::pipeline::{ControlUnit, Params, from_rgb8, to_rgb8};
    use model::vocabulary::{GenerationParams, SchedulerKind, UnitSettings};

    let device = pipeline.device();
    let settings = GenerationParams {
        prompt: caption.to_owned(),
        steps,
        scheduler: SchedulerKind::UniPc,
        width: size as u32,
        height: size as u32,
        seed,
        ..GenerationParams::default()
    };
    let units: Vec<ControlUnit> = control
        .iter()
        .map(|(controlnet, map, scale)| ControlUnit {
            controlnet,
            image: from_rgb8(map.width, map.height, &map.pixels, &device),
            settings: UnitSettings { scale: *scale, ..UnitSettings::default() },
        })
        .collect();
    let image = pipeline
        .generate(&Params::from(settings), &units, |_| std::ops::ControlFlow::Continue(()))
        .map_err(|e| e.to_string())?;
    let (width, height, pixels) = model::block_on(to_rgb8(image)).map_err(|e| e.to_string())?;
    Ok(world::RgbImage { width, height, pixels })
}

fn required<'a>(options: &'a Options, flag: &str) -> Result<&'a Path, String> {
    options.path(flag).map(Path::new).ok_or_else(|| format!("`{flag}` is required\nusage:\n{USAGE}"))
}

/// Every file under `from`, copied to `to` with the same relative paths.
fn copy_tree(from: &Path, to: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<(), String> {
    let entries = std::fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot read {}: {e}", from.display()))?.path();
        let target = to.join(path.file_name().expect("a named entry"));
        if path.is_dir() {
            copy_tree(&path, &target, keep)?;
        } else if keep(&path) {
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            write(&target, &bytes)?;
        }
    }
    Ok(())
}

/// How many training images `world assemble` encodes to measure the latents' spread.
const SCALE_IMAGES: usize = 256;

/// A pipeline folder from `--model` with the VAE trained in `--vae`, its `scaling_factor` set to
/// 1 / the standard deviation of the latents of the first training images (what Stable
/// Diffusion's 0.18215 is, measured on its VAE): the UNet then learns latents of unit variance.
fn assemble(options: Options) -> Result<(), String> {
    use model::vae::vae_from_bytes;

    let (model, vae_dir, data) =
        (required(&options, "--model")?, required(&options, "--vae")?, required(&options, "--data")?);
    let dir = out(&options)?;
    let count: usize = options.get("--count", SCALE_IMAGES)?;
    // Training state (optimiser moments, step) stays behind: the folder is a model.
    let model_files = |path: &Path| {
        path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.ends_with(".bpk") && n != "state.json")
    };
    copy_tree(model, &dir, &model_files)?;
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let weights = read(&vae_dir.join(model::train::checkpoint::WEIGHTS))?;
    let config_text = String::from_utf8(read(&vae_dir.join(model::train::checkpoint::CONFIG))?)
        .map_err(|e| format!("{}: {e}", vae_dir.display()))?;
    let device = burn::prelude::Device::flex();
    let vae =
        vae_from_bytes(&config_text, weights.clone(), Precision::F32, &device).map_err(|e| e.to_string())?;
    let spec: serde_json::Value = serde_json::from_slice(&read(&data.join("world.json"))?)
        .map_err(|e| format!("{}: {e}", data.join("world.json").display()))?;
    let size = spec["size"].as_u64().ok_or_else(|| format!("{}: no size", data.display()))? as usize;
    let dataset = model::train::data::Dataset::open(data, size).map_err(|e| e.to_string())?;
    let count = count.min(dataset.len());
    let (mut sum, mut squares, mut n) = (0.0f64, 0.0f64, 0usize);
    for start in (0..count).step_by(16) {
        let indices: Vec<usize> = (start..(start + 16).min(count)).collect();
        let (images, _, _) = model::train::batch(&dataset, &indices, &device).map_err(|e| e.to_string())?;
        let (mean, _) = vae.encode(images);
        let values: Vec<f32> = mean.into_data().try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        sum += values.iter().map(|&v| v as f64).sum::<f64>();
        squares += values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
        n += values.len();
    }
    let variance = squares / n as f64 - (sum / n as f64).powi(2);
    let scaling_factor = 1.0 / variance.sqrt();
    if !scaling_factor.is_finite() {
        return Err(format!("the latents of {} do not vary: the VAE is degenerate", data.display()));
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&config_text).map_err(|e| format!("{}: {e}", vae_dir.display()))?;
    config["scaling_factor"] = scaling_factor.into();
    write(
        &dir.join("vae").join(model::train::checkpoint::CONFIG),
        &serde_json::to_vec_pretty(&config).expect("JSON"),
    )?;
    write(&dir.join("vae").join(model::train::checkpoint::WEIGHTS), &weights)?;
    println!(
        "{}: the VAE of {} with scaling_factor {scaling_factor:.5} (latent std {:.4} over {count} images)",
        dir.display(),
        vae_dir.display(),
        variance.sqrt()
    );
    Ok(())
}

/// The trained models as the site serves them: fp16 weights only, beside their configs and the
/// tokenizer — `OUT/pipeline/` (a diffusers pipeline folder, variant `fp16`),
/// `OUT/controlnet-canny/` and `OUT/controlnet-scribble/` — and `OUT/sheet.png`, held-out
/// examples generated with the exported files (columns: one example each; rows: the Canny map,
/// the Canny ControlNet's image, the scribble, the scribble ControlNet's image, the caption
/// alone; `--examples` of them, `--steps` each).
fn export(options: Options) -> Result<(), String> {
    use model::pipeline::Pipeline;
    use model::vocabulary::{Preprocessor, shapes};

    // The folders the page and the CLI load, by the names they load them by.
    let folder = |p: Preprocessor| shapes::controlnet_for(p).expect("a shapes ControlNet");
    let (canny_folder, scribble_folder) = (folder(Preprocessor::Canny), folder(Preprocessor::Scribble));
    let (model, canny, scribble) =
        (required(&options, "--model")?, required(&options, "--canny")?, required(&options, "--scribble")?);
    let dir = out(&options)?;
    let examples: u64 = options.get("--examples", 8)?;
    let steps: u32 = options.get("--steps", 20)?;
    let device = burn::prelude::Device::flex();
    let pipeline = Pipeline::load(model, Precision::F32, &device).map_err(|e| e.to_string())?;
    // The configs and the tokenizer; not the trained UNet a checkpoint keeps beside its average.
    let configs = |path: &Path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let trained = path.components().any(|c| c.as_os_str() == model::train::checkpoint::TRAINED_UNET);
        (name.ends_with(".json") && name != "state.json" || name.ends_with(".txt")) && !trained
    };
    copy_tree(model, &dir.join(shapes::PIPELINE), &configs)?;
    let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
    let half =
        |module_bytes: Vec<u8>, path: &str| write(&dir.join(shapes::PIPELINE).join(path), &module_bytes);
    half(
        model::block_on(to_safetensors(&pipeline.unet, Precision::F16, &metadata)),
        "unet/diffusion_pytorch_model.fp16.safetensors",
    )?;
    half(
        model::block_on(to_safetensors(&pipeline.text_encoder, Precision::F16, &metadata)),
        "text_encoder/model.fp16.safetensors",
    )?;
    half(
        model::block_on(to_safetensors(&pipeline.vae, Precision::F16, &metadata)),
        "vae/diffusion_pytorch_model.fp16.safetensors",
    )?;
    let controlnet_files = |path: &Path| {
        path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n == model::train::checkpoint::CONFIG || n == model::train::checkpoint::WEIGHTS_FP16
        })
    };
    copy_tree(canny, &dir.join(canny_folder), &controlnet_files)?;
    copy_tree(scribble, &dir.join(scribble_folder), &controlnet_files)?;

    // The contact sheet, from what was just written (fp16 weights, computed in f32).
    let pipeline =
        Pipeline::load(&dir.join(shapes::PIPELINE), Precision::F32, &device).map_err(|e| e.to_string())?;
    let nets = [
        pipeline.load_controlnet(&dir.join(canny_folder)).map_err(|e| e.to_string())?,
        pipeline.load_controlnet(&dir.join(scribble_folder)).map_err(|e| e.to_string())?,
    ];
    let size = pipeline.unet.config.sample_size.unwrap_or(8) * pipeline.latent_scale();
    const GAP: usize = 2;
    let columns = examples.max(1) as usize;
    let mut sheet = world::RgbImage::filled(columns * (size + GAP) - GAP, 5 * (size + GAP) - GAP, [255; 3]);
    for index in 0..examples {
        let example = world::Example::make(HELD_OUT_SEED, index, size);
        let x = index as usize * (size + GAP);
        for (row, (condition, net)) in
            [Condition::Canny, Condition::Scribble].into_iter().zip(&nets).enumerate()
        {
            let map = example.condition(condition, HELD_OUT_SEED, index).to_rgb();
            let image =
                generate(&pipeline, &example.caption, Some((net, &map, 1.0)), size, index as u32, steps)?;
            sheet.paste(&map, x, 2 * row * (size + GAP));
            sheet.paste(&image, x, (2 * row + 1) * (size + GAP));
        }
        let alone = generate(&pipeline, &example.caption, None, size, index as u32, steps)?;
        sheet.paste(&alone, x, 4 * (size + GAP));
        println!("{index}: {}", example.caption);
    }
    write(&dir.join("sheet.png"), &::preprocess::encode_png(&sheet))?;
    println!("the shapes models (fp16) and their contact sheet in {}", dir.display());
    Ok(())
}
