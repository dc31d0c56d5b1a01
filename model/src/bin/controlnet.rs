//! `controlnet`: the command-line tool.
//!
//! ```text
//! controlnet probe [--backend cpu|wgpu] [--precision f32|f16]
//! ```
//! `probe` runs the device probe (see `model::probe`) and prints its results as one JSON object.

use std::process::ExitCode;
use std::time::Instant;

use burn::prelude::*;
use model::{Precision, probe};

const USAGE: &str = "usage: controlnet probe [--backend cpu|wgpu] [--precision f32|f16]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("controlnet: {message}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Cpu,
    Wgpu,
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut args = args.into_iter();
    match args.next().as_deref() {
        Some("probe") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => return Err(format!("unknown command `{other}`\n{USAGE}")),
        None => return Err(USAGE.to_owned()),
    }
    let mut backend = Backend::Cpu;
    let mut precision = Precision::F32;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("`{flag}` needs a value"));
        match flag.as_str() {
            "--backend" => {
                backend = match value()?.as_str() {
                    "cpu" => Backend::Cpu,
                    "wgpu" => Backend::Wgpu,
                    other => return Err(format!("unknown backend `{other}` (expected cpu or wgpu)")),
                }
            }
            "--precision" => precision = value()?.parse()?,
            other => return Err(format!("unknown option `{other}`\n{USAGE}")),
        }
    }

    let (device, backend_name) = match backend {
        Backend::Cpu => (Device::flex(), "cpu"),
        Backend::Wgpu => (Device::wgpu_options().init().map_err(|e| format!("no wgpu device: {e}"))?, "wgpu"),
    };
    let started = Instant::now();
    let outputs = model::block_on(probe::run(&device, precision)).map_err(|e| e.to_string())?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let report = serde_json::json!({
        "backend": backend_name,
        "precision": precision,
        "elapsed_ms": elapsed_ms,
        "outputs": outputs,
    });
    println!("{report}");
    Ok(())
}
