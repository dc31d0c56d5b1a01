//! `controlnet world recipe`: the shapes models from nothing, in one command.
//!
//! The recipe is a list of ordinary `controlnet` commands — the world's data, a fresh pipeline,
//! the VAE, its latents' scale, the UNet and text encoder, two ControlNets, the fp16 export — each
//! run as a child process of this executable and printed as the command line that does the same
//! by hand, so the recipe is also its own documentation. Commands that do not depend on each
//! other (the two datasets, the two ControlNets) run side by side: burn's CPU backend keeps
//! about one core busy per process. Every stage writes its own folder under
//! `OUT`; a finished stage is skipped and a training stage continues from its checkpoint, so a
//! killed recipe run again picks up where it stopped, with the same result (training resumes bit
//! for bit, `model/tests/cli_train.rs`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use model::vocabulary::{Preprocessor, shapes, training};

use crate::Options;
use crate::world::USAGE;

/// How big each stage is. `full` is what the shipped models were trained with; `smoke` runs every
/// stage for a step or two (CI's check that the recipe still runs end to end).
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    pub name: &'static str,
    /// Examples of each condition, and their size in pixels.
    pub count: u64,
    pub size: usize,
    pub batch: usize,
    /// The VAE's batch: it works on whole images, the rest on latents 64 times smaller, and
    /// more small steps beat fewer large ones for it here (issue 17's experiments: batch 2 at
    /// 3e-4 reaches batch 8's reconstruction in 40 % of the time).
    pub vae_batch: usize,
    pub vae_steps: u64,
    pub vae_lr: f64,
    pub base_steps: u64,
    pub base_lr: f64,
    /// The base model's learning-rate schedule (`--lr-schedule`) and its warmup steps.
    pub base_lr_schedule: (&'static str, u64),
    /// The base model's weights averaged with this decay (`--ema-decay`), if at all.
    pub base_ema: Option<f64>,
    pub controlnet_steps: u64,
    pub controlnet_lr: f64,
    /// Checkpoints (and, for ControlNets, sample images) every this many steps.
    pub every: u64,
    /// The export's contact sheet: held-out examples, and sampling steps for each image.
    pub sheet: (u64, u32),
}

pub const FULL: Preset = Preset {
    name: "full",
    count: shapes::recipe::EXAMPLES,
    size: shapes::SIDE as usize,
    batch: shapes::recipe::BATCH,
    vae_batch: 2,
    vae_steps: 6000,
    vae_lr: 3e-4,
    base_steps: 3000,
    base_lr: 5e-4,
    // As the shipped v2 models were trained: no schedule, no average.
    base_lr_schedule: ("constant", 0),
    base_ema: None,
    controlnet_steps: shapes::recipe::CONTROLNET_STEPS,
    controlnet_lr: shapes::recipe::CONTROLNET_LR,
    every: shapes::recipe::EVERY,
    sheet: (8, 20),
};

pub const SMOKE: Preset = Preset {
    name: "smoke",
    count: 8,
    size: 64,
    batch: 2,
    vae_batch: 1,
    vae_steps: 2,
    vae_lr: 1e-3,
    base_steps: 2,
    base_lr: 5e-4,
    // The smoke runs the options the full preset may take: a warmup, a cosine decay, an average.
    base_lr_schedule: ("cosine", 1),
    base_ema: Some(0.99),
    controlnet_steps: 2,
    controlnet_lr: 2e-4,
    every: 1,
    sheet: (1, 2),
};

/// One stage: a `controlnet` command line and the folder it leaves.
struct Stage {
    args: Vec<String>,
    /// What the stage makes; it is done when this exists.
    out: PathBuf,
    /// A training stage: continued with `--resume` from its checkpoint instead of skipped.
    training: bool,
}

fn stage(out: &Path, args: &[&str], training: bool) -> Stage {
    Stage { args: args.iter().map(|a| a.to_string()).collect(), out: out.to_owned(), training }
}

/// The recipe's commands for `preset`, seed `seed`, writing under `out`: groups run one after
/// the other, the commands of a group side by side.
fn stages(out: &Path, preset: &Preset, seed: u64, backend: &str) -> Vec<Vec<Stage>> {
    let p = |name: &str| out.join(name);
    let s = |path: &PathBuf| path.display().to_string();
    let (canny, scribble, init) = (p("data/canny"), p("data/scribble"), p("init"));
    let (vae, pipeline, base) = (p("vae"), p("pipeline"), p("base"));
    // Named as the export names the ControlNets: their logs go beside them by these names.
    let net = |preprocessor| p(shapes::controlnet_for(preprocessor).expect("a ControlNet of the world"));
    let (canny_net, scribble_net, export) =
        (net(Preprocessor::Canny), net(Preprocessor::Scribble), p("shapes"));
    let (count, size, batch, every) = (
        preset.count.to_string(),
        preset.size.to_string(),
        preset.batch.to_string(),
        preset.every.to_string(),
    );
    let seed = seed.to_string();
    let (examples, sheet_steps) = (preset.sheet.0.to_string(), preset.sheet.1.to_string());
    let train =
        |kind: &str, model: &PathBuf, data: &PathBuf, dir: &PathBuf, steps: u64, lr: f64, batch: &str| {
            let (steps, lr) = (steps.to_string(), lr.to_string());
            let args = [
                "train",
                kind,
                "--model",
                &s(model),
                "--data",
                &s(data),
                "--out",
                &s(dir),
                "--steps",
                &steps,
                "--batch",
                batch,
                "--lr",
                &lr,
                "--resolution",
                &size,
                "--seed",
                &seed,
                "--checkpoint-every",
                &every,
                "--backend",
                backend,
            ];
            let mut args: Vec<&str> = args.to_vec();
            if kind == "controlnet" {
                args.extend(["--sample-every", &every]);
            }
            stage(dir, &args, true)
        };
    let make = |dir: &PathBuf, condition: &str| {
        let args = [
            "world",
            "make",
            "--out",
            &s(dir),
            "--count",
            &count,
            "--seed",
            &seed,
            "--size",
            &size,
            "--condition",
            condition,
        ];
        stage(dir, &args, false)
    };
    let base_model = base.join("checkpoint");
    let controlnet = |data: &PathBuf, dir: &PathBuf| {
        train("controlnet", &base_model, data, dir, preset.controlnet_steps, preset.controlnet_lr, &batch)
    };
    let vae_batch = preset.vae_batch.to_string();
    vec![
        vec![
            make(&canny, "canny"),
            make(&scribble, "scribble"),
            stage(&init, &["world", "init", "--out", &s(&init), "--seed", &seed], false),
        ],
        vec![train("vae", &init, &canny, &vae, preset.vae_steps, preset.vae_lr, &vae_batch)],
        vec![stage(
            &pipeline,
            &[
                "world",
                "assemble",
                "--model",
                &s(&init),
                "--vae",
                &s(&vae.join("checkpoint")),
                "--data",
                &s(&canny),
                "--out",
                &s(&pipeline),
            ],
            false,
        )],
        vec![{
            let mut base = train("base", &pipeline, &canny, &base, preset.base_steps, preset.base_lr, &batch);
            let (schedule, warmup) = preset.base_lr_schedule;
            base.args.extend([
                "--lr-schedule".into(),
                schedule.into(),
                "--lr-warmup".into(),
                warmup.to_string(),
            ]);
            if let Some(decay) = preset.base_ema {
                base.args.extend(["--ema-decay".into(), decay.to_string()]);
            }
            base
        }],
        vec![controlnet(&canny, &canny_net), controlnet(&scribble, &scribble_net)],
        vec![stage(
            &export,
            &[
                "world",
                "export",
                "--model",
                &s(&base_model),
                "--canny",
                &s(&canny_net.join("checkpoint")),
                "--scribble",
                &s(&scribble_net.join("checkpoint")),
                "--out",
                &s(&export),
                "--examples",
                &examples,
                "--steps",
                &sheet_steps,
            ],
            false,
        )],
    ]
}

pub fn run(options: Options) -> Result<(), String> {
    let out =
        PathBuf::from(options.path("--out").ok_or_else(|| format!("`--out` is required\nusage:\n{USAGE}"))?);
    let seed: u64 = options.get("--seed", 0)?;
    let backend: String = options.get("--backend", "cpu".to_owned())?;
    let preset = match options.get("--preset", "full".to_owned())?.as_str() {
        "full" => FULL,
        "smoke" => SMOKE,
        other => return Err(format!("unknown preset `{other}` (full or smoke)")),
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let groups = stages(&out, &preset, seed, &backend);
    let total: usize = groups.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut timings = Vec::new();
    let mut number = 0;
    for group in &groups {
        let clock = Instant::now();
        let mut running = Vec::new();
        for stage in group {
            number += 1;
            let mut args = stage.args.clone();
            if stage.training {
                if stage.out.join("checkpoint").join(model::train::checkpoint::STATE).is_file() {
                    args.push("--resume".into());
                }
            } else if stage.out.exists() {
                eprintln!("[{number}/{total}] done already: controlnet {}", args.join(" "));
                continue;
            }
            let line = format!("controlnet {}", args.join(" "));
            eprintln!("[{number}/{total}] {line}");
            // A stage that is not training writes into a partial folder renamed when it
            // completes, so an interrupted one is made again rather than trusted.
            let partial = stage.out.with_extension("partial");
            if !stage.training {
                if partial.exists() {
                    std::fs::remove_dir_all(&partial)
                        .map_err(|e| format!("cannot remove {}: {e}", partial.display()))?;
                }
                let flag = args.iter().position(|a| a == "--out").expect("every stage has --out") + 1;
                args[flag] = partial.display().to_string();
            }
            if let Some(parent) = stage.out.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let mut command = std::process::Command::new(&exe);
            command.args(&args);
            if group.len() > 1 {
                // Side by side, each command's progress goes to its own file.
                let log = stage.out.with_extension("log");
                let file = std::fs::File::create(&log)
                    .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
                eprintln!("    (its progress in {})", log.display());
                command.stderr(file);
            }
            let child = command.spawn().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
            running.push((stage, partial, line, child));
        }
        for (stage, partial, line, mut child) in running {
            let status = child.wait().map_err(|e| format!("{line}: {e}"))?;
            if !status.success() {
                return Err(format!("{line} failed ({status})"));
            }
            if !stage.training {
                std::fs::rename(&partial, &stage.out).map_err(|e| {
                    format!("cannot rename {} to {}: {e}", partial.display(), stage.out.display())
                })?;
            }
            timings.push(
                serde_json::json!({ "stage": line, "seconds_with_its_group": clock.elapsed().as_secs_f64() }),
            );
        }
    }
    // The runs' logs and sample images beside the models they made.
    let export = &groups.last().and_then(|g| g.last()).expect("stages").out;
    for run in groups.iter().flatten().filter(|stage| stage.training) {
        let from = &run.out;
        let to = export.join(shapes::LOGS).join(from.file_name().expect("a named folder"));
        std::fs::create_dir_all(&to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
        let log = from.join(training::LOG_FILE);
        std::fs::copy(&log, to.join(training::LOG_FILE))
            .map_err(|e| format!("cannot copy {}: {e}", log.display()))?;
        if let Ok(samples) = std::fs::read_dir(from.join("samples")) {
            for sample in samples.flatten() {
                std::fs::copy(sample.path(), to.join(sample.file_name()))
                    .map_err(|e| format!("cannot copy {}: {e}", sample.path().display()))?;
            }
        }
    }
    let summary = serde_json::json!({
        "kind": "world_recipe", "preset": preset.name, "seed": seed, "backend": backend,
        "seconds": started.elapsed().as_secs_f64(), "stages": timings,
    });
    let path = out.join("recipe.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary).expect("JSON"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("{summary}");
    Ok(())
}
