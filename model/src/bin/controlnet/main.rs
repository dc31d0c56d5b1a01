//! `controlnet`: the command-line tool.
//!
//! ```text
//! controlnet generate --model DIR [--controlnet DIR --control IMAGE [--scale S] …]… --prompt TEXT
//!     … --out OUT.png          (see `controlnet --help`)
//! controlnet preprocess canny|scribble|xdog IN OUT.png [--low L --high H]
//!     [--resize-mode just|crop|fill --width W --height H] [--invert]
//! controlnet train controlnet --model DIR --data DIR --out DIR [--resume] [--steps N] …
//! controlnet world make --out DIR [--count N] [--seed S] [--size PX] [--condition canny|scribble]
//! controlnet world vocab --out DIR [--max-length N]
//! controlnet probe [--backend cpu|wgpu] [--precision f32|f16]
//! controlnet bench-train [--backend cpu|wgpu] --unet-config FILE [--latent L] [--batch B] …
//! controlnet bench-step [--backend wgpu|cpu] [--precision f16|f32] [--width W] [--height H]
//!     [--batch B] [--iterations N] [--unet-config FILE] [--controlnet-config FILE]
//!     [--kernels fast|reference]
//! ```
//! `generate` runs the whole pipeline on a diffusers folder and writes a PNG that carries its
//! parameters. `preprocess` turns a picture into a control map (Canny edges, scribble from line
//! art, XDoG sketch), optionally fitted to a size first. `train controlnet` trains a ControlNet
//! on a Fill50K-layout folder with the paper's recipe (`model::train`). `world make` writes such a
//! folder from the shapes world (the `world` crate), `world vocab` its tokenizer. `probe` runs the device probe (see `model::probe`) and prints its results as one JSON object.
//! `bench-step` times one ControlNet + UNet step (SD1.5-sized models with random weights unless
//! other configs are given) and prints the figures as one JSON object per line.

mod bench_train;
mod generate;
mod preprocess;
mod recipe;
mod train;
mod world;

use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::*;
use model::config::{ControlNetConfig, UNetConfig};
use model::precision::cast_module;
use model::{ControlNet, Precision, PrecisionExt, UNet, bench, probe};

fn usage() -> String {
    format!(
        "usage:\n{}\n{}\n{}\n{}\n{USAGE}\n{}",
        generate::USAGE,
        preprocess::USAGE,
        train::USAGE,
        world::USAGE,
        bench_train::USAGE
    )
}

const USAGE: &str = "  controlnet probe [--backend cpu|wgpu] [--precision f32|f16]
  controlnet bench-step [--backend wgpu|cpu] [--precision f16|f32] [--width W] [--height H]
      [--batch B] [--iterations N] [--unet-config FILE] [--controlnet-config FILE]
      [--kernels fast|reference]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("controlnet: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `--flag value` pairs after the command.
struct Options(Vec<(String, String)>);

impl Options {
    fn parse(args: impl Iterator<Item = String>, known: &[&str]) -> Result<Self, String> {
        let mut args = args;
        let mut pairs = Vec::new();
        while let Some(flag) = args.next() {
            if !known.contains(&flag.as_str()) {
                return Err(format!("unknown option `{flag}`\n{}", usage()));
            }
            let value = args.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
            pairs.push((flag, value));
        }
        Ok(Self(pairs))
    }

    fn get<T: std::str::FromStr>(&self, flag: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.iter().rev().find(|(f, _)| f == flag) {
            Some((_, value)) => value.parse().map_err(|e| format!("`{flag} {value}`: {e}")),
            None => Ok(default),
        }
    }

    fn path(&self, flag: &str) -> Option<&str> {
        self.0.iter().rev().find(|(f, _)| f == flag).map(|(_, v)| v.as_str())
    }
}

fn device(backend: &str) -> Result<Device, String> {
    match backend {
        "cpu" => Ok(Device::flex()),
        "wgpu" => Device::wgpu_options().init().map_err(|e| format!("no wgpu device: {e}")),
        other => Err(format!("unknown backend `{other}` (expected cpu or wgpu)")),
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut args = args.into_iter();
    match args.next().as_deref() {
        Some("generate") => generate::run(args, device),
        Some("preprocess") => preprocess::run(args),
        Some("train") => train::run(args, device),
        Some("world") => world::run(args, device),
        Some("probe") => probe_command(Options::parse(args, &["--backend", "--precision"])?),
        Some("bench-step") => bench_command(Options::parse(
            args,
            &[
                "--backend",
                "--precision",
                "--width",
                "--height",
                "--batch",
                "--iterations",
                "--unet-config",
                "--controlnet-config",
                "--kernels",
            ],
        )?),
        Some("bench-train") => bench_train::run(
            Options::parse(args, &["--backend", "--unet-config", "--latent", "--batch", "--iterations"])?,
            device,
        ),
        Some("-h" | "--help") => {
            println!("{}", usage());
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n{}", usage())),
        None => Err(usage()),
    }
}

fn probe_command(options: Options) -> Result<(), String> {
    let backend: String = options.get("--backend", "cpu".to_owned())?;
    let precision: Precision = options.get("--precision", Precision::F32)?;
    let device = device(&backend)?;
    let started = Instant::now();
    let outputs = model::block_on(probe::run(&device, precision)).map_err(|e| e.to_string())?;
    let report = serde_json::json!({
        "backend": backend,
        "precision": precision,
        "elapsed_ms": started.elapsed().as_secs_f64() * 1e3,
        "outputs": outputs,
    });
    println!("{report}");
    Ok(())
}

fn bench_command(options: Options) -> Result<(), String> {
    let backend: String = options.get("--backend", "wgpu".to_owned())?;
    let precision: Precision = options.get("--precision", Precision::F16)?;
    let width: usize = options.get("--width", 512)?;
    let height: usize = options.get("--height", 512)?;
    let batch: usize = options.get("--batch", 2)?;
    let iterations: usize = options.get("--iterations", 3)?;
    let kernels_name: String = options.get("--kernels", "fast".to_owned())?;
    let kernels = model::kernels::Kernels::parse(&kernels_name)
        .ok_or_else(|| format!("--kernels {kernels_name}: expected fast or reference"))?;
    model::kernels::select(kernels);
    if !width.is_multiple_of(8) || !height.is_multiple_of(8) || width == 0 || height == 0 {
        return Err(format!("{width}×{height}: width and height must be positive multiples of 8"));
    }
    let read = |flag: &str| -> Result<Option<String>, String> {
        options.path(flag).map(|p| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))).transpose()
    };
    let unet_config = match read("--unet-config")? {
        Some(json) => UNetConfig::from_json(&json).map_err(|e| e.to_string())?,
        None => UNetConfig::sd15(),
    };
    let controlnet_config = match read("--controlnet-config")? {
        Some(json) => ControlNetConfig::from_json(&json).map_err(|e| e.to_string())?,
        None => ControlNetConfig::sd15(),
    };
    let device = device(&backend)?;
    if !precision.is_supported_on(&device) {
        return Err(format!("the {backend} device cannot compute in {precision}"));
    }
    let unet = cast_module(UNet::new(&unet_config, &device), precision);
    let controlnet = cast_module(ControlNet::new(&controlnet_config, &device), precision);
    let clock = Instant::now();
    let report =
        model::block_on(bench::run_steps(&unet, &controlnet, width, height, batch, iterations, || {
            clock.elapsed().as_secs_f64() * 1e3
        }));
    let mut json = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    json["kind"] = "controlnet_unet_step".into();
    // On the CPU backend burn's ops run whatever is selected.
    json["kernels"] = if backend == "cpu" { "reference".into() } else { kernels.name().into() };
    json["backend"] = backend.into();
    println!("{json}");
    Ok(())
}
