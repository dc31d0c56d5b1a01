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

/// A stage running `controlnet` with `words`, then each flag and its value, in order.
fn stage(out: &Path, words: &[&str], flags: &[(&str, String)], training: bool) -> Stage {
    let flags = flags.iter().flat_map(|(flag, value)| [flag.to_string(), value.clone()]);
    let args = words.iter().map(|word| word.to_string()).chain(flags).collect();
    Stage { args, out: out.to_owned(), training }
}

/// The recipe's commands for `preset`, seed `seed`, writing under `out`: groups run one after
/// the other, the commands of a group side by side.
fn stages(out: &Path, preset: &Preset, seed: u64, backend: &str) -> Vec<Vec<Stage>> {
    let p = |name: &str| out.join(name);
    let s = |path: &Path| path.display().to_string();
    let (canny, scribble, init) = (p("data/canny"), p("data/scribble"), p("init"));
    let (vae, pipeline, base) = (p("vae"), p("pipeline"), p("base"));
    // Named as the export names the ControlNets: their logs go beside them by these names.
    let net = |preprocessor| p(shapes::controlnet_for(preprocessor).expect("a ControlNet of the world"));
    let (canny_net, scribble_net, export) =
        (net(Preprocessor::Canny), net(Preprocessor::Scribble), p("shapes"));
    let (size, every, seed) = (preset.size.to_string(), preset.every.to_string(), seed.to_string());
    let train = |kind: &str, model: &Path, data: &Path, dir: &Path, steps: u64, lr: f64, batch: usize| {
        let mut flags = vec![
            ("--model", s(model)),
            ("--data", s(data)),
            ("--out", s(dir)),
            ("--steps", steps.to_string()),
            ("--batch", batch.to_string()),
            ("--lr", lr.to_string()),
            ("--resolution", size.clone()),
            ("--seed", seed.clone()),
            ("--checkpoint-every", every.clone()),
            ("--backend", backend.to_owned()),
        ];
        if kind == "controlnet" {
            flags.push(("--sample-every", every.clone()));
        }
        stage(dir, &["train", kind], &flags, true)
    };
    let make = |dir: &Path, condition: &str| {
        let flags = [
            ("--out", s(dir)),
            ("--count", preset.count.to_string()),
            ("--seed", seed.clone()),
            ("--size", size.clone()),
            ("--condition", condition.to_owned()),
        ];
        stage(dir, &["world", "make"], &flags, false)
    };
    let base_model = base.join("checkpoint");
    let controlnet = |data: &Path, dir: &Path| {
        train(
            "controlnet",
            &base_model,
            data,
            dir,
            preset.controlnet_steps,
            preset.controlnet_lr,
            preset.batch,
        )
    };
    let assemble = [
        ("--model", s(&init)),
        ("--vae", s(&vae.join("checkpoint"))),
        ("--data", s(&canny)),
        ("--out", s(&pipeline)),
    ];
    let exported = [
        ("--model", s(&base_model)),
        ("--canny", s(&canny_net.join("checkpoint"))),
        ("--scribble", s(&scribble_net.join("checkpoint"))),
        ("--out", s(&export)),
        ("--examples", preset.sheet.0.to_string()),
        ("--steps", preset.sheet.1.to_string()),
    ];
    let mut base_stage =
        train("base", &pipeline, &canny, &base, preset.base_steps, preset.base_lr, preset.batch);
    let (schedule, warmup) = preset.base_lr_schedule;
    base_stage.args.extend([
        "--lr-schedule".into(),
        schedule.into(),
        "--lr-warmup".into(),
        warmup.to_string(),
    ]);
    if let Some(decay) = preset.base_ema {
        base_stage.args.extend(["--ema-decay".into(), decay.to_string()]);
    }
    vec![
        vec![
            make(&canny, "canny"),
            make(&scribble, "scribble"),
            stage(&init, &["world", "init"], &[("--out", s(&init)), ("--seed", seed.clone())], false),
        ],
        vec![train("vae", &init, &canny, &vae, preset.vae_steps, preset.vae_lr, preset.vae_batch)],
        vec![stage(&pipeline, &["world", "assemble"], &assemble, false)],
        vec![base_stage],
        vec![controlnet(&canny, &canny_net), controlnet(&scribble, &scribble_net)],
        vec![stage(&export, &["world", "export"], &exported, false)],
    ]
}

/// Starts `stage` (`label` names its place in the recipe), its progress to its own file when it
/// runs `side_by_side` with others: the folder it writes into until it completes, its command
/// line and its process; `None` when it is done already.
fn start(
    stage: &Stage,
    label: &str,
    exe: &Path,
    side_by_side: bool,
) -> Result<Option<(PathBuf, String, std::process::Child)>, String> {
    let mut args = stage.args.clone();
    if stage.training {
        if stage.out.join("checkpoint").join(model::train::checkpoint::STATE).is_file() {
            args.push("--resume".into());
        }
    } else if stage.out.exists() {
        eprintln!("{label} done already: controlnet {}", args.join(" "));
        return Ok(None);
    }
    let line = format!("controlnet {}", args.join(" "));
    eprintln!("{label} {line}");
    // A stage that is not training writes into a partial folder renamed when it completes, so
    // an interrupted one is made again rather than trusted.
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
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut command = std::process::Command::new(exe);
    command.args(&args);
    if side_by_side {
        let log = stage.out.with_extension("log");
        let file =
            std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        eprintln!("    (its progress in {})", log.display());
        command.stderr(file);
    }
    let child = command.spawn().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    Ok(Some((partial, line, child)))
}

/// Copies the training runs' logs and sample images beside the models they made (the last
/// stage's folder, the export).
fn copy_logs(groups: &[Vec<Stage>]) -> Result<(), String> {
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
    Ok(())
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
            let label = format!("[{number}/{total}]");
            if let Some((partial, line, child)) = start(stage, &label, &exe, group.len() > 1)? {
                running.push((stage, partial, line, child));
            }
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
    copy_logs(&groups)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stage names its own folder with one `--out` (which the run swaps for the partial
    /// folder), every flag has a value, and the seed reaches every stage that takes one.
    #[test]
    fn every_stage_writes_where_it_says() {
        let groups = stages(Path::new("/recipe"), &SMOKE, 7, "cpu");
        let kinds: Vec<Vec<String>> = groups
            .iter()
            .map(|group| group.iter().map(|stage| stage.args[..2].join(" ")).collect())
            .collect();
        assert_eq!(
            kinds,
            [
                vec!["world make", "world make", "world init"],
                vec!["train vae"],
                vec!["world assemble"],
                vec!["train base"],
                vec!["train controlnet", "train controlnet"],
                vec!["world export"],
            ]
        );
        for stage in groups.iter().flatten() {
            let args = &stage.args;
            let value = |flag: &str| {
                let at: Vec<usize> = (0..args.len()).filter(|&i| args[i] == flag).collect();
                at.iter().map(|&i| args.get(i + 1).cloned()).collect::<Vec<_>>()
            };
            assert_eq!(value("--out"), [Some(stage.out.display().to_string())], "{args:?}");
            for (i, flag) in args.iter().enumerate().filter(|(_, a)| a.starts_with("--")) {
                assert!(
                    args.get(i + 1).is_some_and(|v| !v.starts_with("--")),
                    "{flag} has no value: {args:?}"
                );
            }
            if !matches!(args[1].as_str(), "assemble" | "export") {
                assert_eq!(value("--seed"), [Some("7".to_owned())], "{args:?}");
            }
            assert_eq!(stage.training, args[0] == "train", "{args:?}");
        }
    }
}
