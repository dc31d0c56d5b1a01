//! `controlnet generate`: a prompt and condition images in, a PNG out.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use model::image_io::{self, Rgb8};
use model::pipeline::{ControlUnit, Params, Pipeline};
use model::rng::Rng;
use model::vocabulary::a1111::{Parameters, UnitText};
use model::vocabulary::{GenerationParams, Named, Preprocessor, ResizeMode, UnitSettings};
use model::{ControlNet, Precision, PrecisionExt, npy};

pub const USAGE: &str =
    "  controlnet generate [--model DIR] [[--controlnet DIR|canny|scribble] --control IMAGE [--scale S]
      [--control-start A --control-end B] [--control-mode balanced|prompt|controlnet]]...
      [--guess-mode] --prompt TEXT
      [--negative-prompt TEXT] [--steps N] [--guidance G]
      [--scheduler ddim|euler|euler-a|dpmpp-2m|dpmpp-2m-karras|unipc]
      [--seed N | --noise NOISE.npy] [--width W --height H]
      [--precision f32|f16] [--backend wgpu|cpu] --out OUT.png [--quiet]
      (no --model: the built-in shapes models, whose ControlNets are named canny and scribble;
      a --control with no --controlnet before it uses canny)";

/// The shapes models in the source tree this CLI was built from (`vocabulary::shapes`).
fn shapes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(model::vocabulary::shapes::source_dir())
}

/// One `--controlnet` and the options that follow it.
#[derive(Debug)]
struct UnitArgs {
    dir: PathBuf,
    image: Option<PathBuf>,
    settings: UnitSettings,
}

#[derive(Debug)]
struct Args {
    model: PathBuf,
    units: Vec<UnitArgs>,
    /// Everything but the size and the seed, which are settled once the inputs are read.
    settings: GenerationParams,
    seed: Option<u32>,
    noise: Option<PathBuf>,
    width: Option<u32>,
    height: Option<u32>,
    precision: Option<Precision>,
    backend: String,
    out: PathBuf,
    quiet: bool,
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| format!("`{flag} {value}`: {e}"))
}

/// The unit that options like `--scale` apply to: the last `--controlnet` given.
fn last_unit<'a>(units: &'a mut [UnitArgs], flag: &str) -> Result<&'a mut UnitArgs, String> {
    units.last_mut().ok_or_else(|| format!("`{flag}` must follow a `--controlnet DIR`"))
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = args;
    let (mut model, mut prompt, mut out) = (None, None, None);
    let mut guess_mode = false;
    // A `--control` with no `--controlnet` before it: the built-in Canny ControlNet.
    let mut implied_unit = false;
    let mut parsed = Args {
        model: PathBuf::new(),
        units: Vec::new(),
        settings: GenerationParams::default(),
        seed: None,
        noise: None,
        width: None,
        height: None,
        precision: None,
        backend: "wgpu".into(),
        out: PathBuf::new(),
        quiet: false,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--guess-mode" => {
                guess_mode = true;
                continue;
            }
            "--quiet" => {
                parsed.quiet = true;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("`{flag}` needs a value\nusage:\n{USAGE}"))?;
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value)),
            "--controlnet" => parsed.units.push(UnitArgs {
                dir: PathBuf::from(value),
                image: None,
                settings: UnitSettings::default(),
            }),
            "--control" => {
                if parsed.units.is_empty() {
                    implied_unit = true;
                    parsed.units.push(UnitArgs {
                        dir: PathBuf::from(Preprocessor::Canny.name()),
                        image: None,
                        settings: UnitSettings::default(),
                    });
                }
                last_unit(&mut parsed.units, &flag)?.image = Some(PathBuf::from(value))
            }
            "--scale" => last_unit(&mut parsed.units, &flag)?.settings.scale = parse(&flag, &value)?,
            "--control-start" => last_unit(&mut parsed.units, &flag)?.settings.start = parse(&flag, &value)?,
            "--control-end" => last_unit(&mut parsed.units, &flag)?.settings.end = parse(&flag, &value)?,
            "--control-mode" => last_unit(&mut parsed.units, &flag)?.settings.mode = parse(&flag, &value)?,
            "--prompt" => prompt = Some(value),
            "--negative-prompt" => parsed.settings.negative_prompt = value,
            "--steps" => parsed.settings.steps = parse(&flag, &value)?,
            "--guidance" => parsed.settings.guidance = parse(&flag, &value)?,
            "--scheduler" => parsed.settings.scheduler = parse(&flag, &value)?,
            "--seed" => parsed.seed = Some(parse(&flag, &value)?),
            "--noise" => parsed.noise = Some(PathBuf::from(value)),
            "--width" => parsed.width = Some(parse(&flag, &value)?),
            "--height" => parsed.height = Some(parse(&flag, &value)?),
            "--precision" => parsed.precision = Some(parse(&flag, &value)?),
            "--backend" => parsed.backend = value,
            "--out" => out = Some(PathBuf::from(value)),
            other => return Err(format!("unknown option `{other}`\nusage:\n{USAGE}")),
        }
    }
    parsed.model = match model {
        Some(_) if implied_unit => return Err("`--control` must follow a `--controlnet DIR`".into()),
        Some(model) => model,
        None => use_shapes_models(&mut parsed.units),
    };
    parsed.settings.prompt = prompt.ok_or("`--prompt TEXT` is required")?;
    parsed.out = out.ok_or("`--out OUT.png` is required")?;
    if parsed.seed.is_some() && parsed.noise.is_some() {
        return Err("give `--seed` or `--noise`, not both".into());
    }
    for (i, unit) in parsed.units.iter_mut().enumerate() {
        unit.settings.guess_mode = guess_mode;
        if unit.image.is_none() {
            return Err(format!(
                "`--controlnet {}` (unit {}) has no `--control IMAGE`",
                unit.dir.display(),
                i + 1
            ));
        }
    }
    Ok(parsed)
}

/// The built-in shapes pipeline's folder; each unit named by a preprocessor the shapes models
/// have a ControlNet for (`canny`, `scribble`) and not by an existing folder gets that ControlNet.
fn use_shapes_models(units: &mut [UnitArgs]) -> PathBuf {
    let shapes = shapes_dir();
    for unit in units {
        let name = unit.dir.to_string_lossy();
        let folder = name.parse().ok().and_then(model::vocabulary::shapes::controlnet_for);
        if let Some(folder) = folder.filter(|_| !unit.dir.exists()) {
            unit.dir = shapes.join(folder);
        }
    }
    shapes.join(model::vocabulary::shapes::PIPELINE)
}

fn read_image(path: &Path) -> Result<Rgb8, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    image_io::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// A1111's `parameters` text, which other Stable Diffusion tools read back; models are named by
/// their folders' names, and the condition images, made elsewhere, by the `none` preprocessor.
fn parameters_text(args: &Args, settings: &GenerationParams, has_seed: bool, precision: Precision) -> String {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let units = args
        .units
        .iter()
        .map(|unit| UnitText {
            module: Preprocessor::None,
            model: name(&unit.dir),
            settings: unit.settings,
            resize: ResizeMode::Just,
            thresholds: None,
        })
        .collect();
    Parameters {
        params: settings.clone(),
        has_seed,
        model: name(&args.model),
        precision: Some(precision),
        units,
        other: Vec::new(),
    }
    .to_text()
}

pub fn run(
    args: impl Iterator<Item = String>,
    device_for: impl Fn(&str) -> Result<Device, String>,
) -> Result<(), String> {
    let args = parse_args(args)?;
    let started = Instant::now();
    // Read every input before touching the GPU: a typo fails in milliseconds.
    let inputs = Inputs::read(&args)?;
    let device = device_for(&args.backend)?;
    let precision = precision_for(&args, &device)?;
    let log = |message: String| {
        if !args.quiet {
            eprintln!("{message}");
        }
    };
    log(format!("loading {} ({precision}, {})", args.model.display(), args.backend));
    let pipeline = Pipeline::load(&args.model, precision, &device).map_err(|e| e.to_string())?;
    // Each checked against the pipeline's UNet and VAE before its weights are read: an SD2.x
    // ControlNet is refused with the message the page shows.
    let controlnets: Vec<ControlNet> = args
        .units
        .iter()
        .map(|u| pipeline.load_controlnet(&u.dir).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let Inputs { images, settings, seed, noise } = inputs;
    let (width, height) = (settings.width as usize, settings.height as usize);
    let units = control_units(&args, &controlnets, &images, (width, height), &device, &log);
    let noise = match noise {
        Some((shape, values)) => {
            let expected = pipeline.latent_shape(width, height);
            if shape != expected {
                return Err(format!("the noise is {shape:?}, expected {expected:?} for {width}×{height}"));
            }
            Some(Tensor::from_data(TensorData::new(values, shape), &device))
        }
        None => None,
    };
    let params = Params { settings, noise };
    log(format!(
        "loaded in {:.1} s; generating {width}×{height}, {} steps",
        started.elapsed().as_secs_f64(),
        params.settings.steps
    ));
    let image = denoise(&pipeline, &params, &units, &device, args.quiet)?;
    let (w, h, pixels) = model::block_on(model::pipeline::to_rgb8(image)).map_err(|e| e.to_string())?;
    let parameters = parameters_text(&args, &params.settings, seed.is_some(), precision);
    let png = image_io::encode_png(&Rgb8 { width: w, height: h, pixels }, &[("parameters", &parameters)])
        .map_err(|e| e.to_string())?;
    std::fs::write(&args.out, png).map_err(|e| format!("{}: {e}", args.out.display()))?;
    log(format!(
        "wrote {} in {:.1} s{}",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        seed.map(|s| format!(" (seed {s})")).unwrap_or_default()
    ));
    Ok(())
}

/// What the command line names, read and checked before any device is touched.
struct Inputs {
    /// The units' condition images, as read.
    images: Vec<Rgb8>,
    /// The settings with the size and the seed settled and validated.
    settings: GenerationParams,
    /// The seed, unless `--noise` gives the starting latents.
    seed: Option<u32>,
    /// `--noise`'s shape and values.
    noise: Option<(Vec<usize>, Vec<f32>)>,
}

impl Inputs {
    fn read(args: &Args) -> Result<Self, String> {
        if !args.model.join("model_index.json").is_file() {
            return Err(format!(
                "{} is not a diffusers Stable Diffusion folder: it has no model_index.json",
                args.model.display()
            ));
        }
        let images: Vec<Rgb8> = args
            .units
            .iter()
            .map(|u| read_image(u.image.as_deref().expect("checked")))
            .collect::<Result<_, _>>()?;
        // diffusers' default size: the first condition image's, rounded down to multiples of 8;
        // 512².
        let (default_w, default_h) =
            images.first().map(|i| (i.width / 8 * 8, i.height / 8 * 8)).unwrap_or((512, 512));
        let seed = match (&args.noise, args.seed) {
            (Some(_), _) => None,
            (None, Some(seed)) => Some(seed),
            (None, None) => Some(Rng::fresh_seed()),
        };
        let settings = GenerationParams {
            width: args.width.unwrap_or(default_w as u32),
            height: args.height.unwrap_or(default_h as u32),
            seed: seed.unwrap_or_default(),
            ..args.settings.clone()
        };
        let unit_settings: Vec<UnitSettings> = args.units.iter().map(|unit| unit.settings).collect();
        settings.validate(&unit_settings).map_err(|e| e.to_string())?;
        let noise = match &args.noise {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                Some(npy::read_f32(&bytes).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(format!("{}: the output folder does not exist", parent.display()));
        }
        Ok(Self { images, settings, seed, noise })
    }
}

/// `--precision`, else f16 where wgpu computes in it, else f32; refused where the device cannot.
fn precision_for(args: &Args, device: &Device) -> Result<Precision, String> {
    let precision =
        args.precision.unwrap_or(if Precision::F16.is_supported_on(device) && args.backend == "wgpu" {
            Precision::F16
        } else {
            Precision::F32
        });
    if !precision.is_supported_on(device) {
        return Err(format!("the {} device cannot compute in {precision}", args.backend));
    }
    Ok(precision)
}

/// The pipeline's control units: each ControlNet with its image at the generation's size.
fn control_units<'a>(
    args: &Args,
    controlnets: &'a [ControlNet],
    images: &[Rgb8],
    (width, height): (usize, usize),
    device: &Device,
    log: &dyn Fn(String),
) -> Vec<ControlUnit<'a>> {
    args.units
        .iter()
        .zip(controlnets)
        .zip(images)
        .map(|((unit, controlnet), image)| {
            if (image.width, image.height) != (width, height) {
                log(format!(
                    "{}: {}×{} resized to {width}×{height}",
                    unit.image.as_deref().expect("checked").display(),
                    image.width,
                    image.height
                ));
            }
            let image = image_io::resize(image, width, height);
            ControlUnit {
                controlnet,
                image: model::pipeline::from_rgb8(width, height, &image.pixels, device),
                settings: unit.settings,
            }
        })
        .collect()
}

/// The denoising loop with a progress line (unless `quiet`): the image, before decoding to RGB.
fn denoise(
    pipeline: &Pipeline,
    params: &Params,
    units: &[ControlUnit<'_>],
    device: &Device,
    quiet: bool,
) -> Result<Tensor<4>, String> {
    let started = Instant::now();
    let image = pipeline
        .generate(params, units, |progress| {
            // Wait for the step's GPU work so that the figures mean something.
            let _ = device.sync();
            if !quiet {
                let elapsed = started.elapsed().as_secs_f64();
                let rate = progress.step as f64 / elapsed.max(1e-9);
                let left = (progress.total - progress.step) as f64 / rate.max(1e-9);
                eprint!("\rstep {}/{}  {rate:.2} it/s  {left:.0} s left   ", progress.step, progress.total);
                let _ = std::io::stderr().flush();
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    if !quiet {
        eprintln!();
    }
    Ok(image)
}
