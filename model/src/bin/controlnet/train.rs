//! `controlnet train controlnet|base|vae`: the ControlNet recipe, or training a small base model
//! (UNet + text encoder) or its VAE, on a Fill50K-layout folder, with one loop (progress, JSONL
//! log, checkpoints written atomically, exact resume).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use model::image_io;
use model::pipeline::{ControlUnit, Params, Pipeline, from_rgb8, to_rgb8};
use model::save::to_safetensors;
use model::train::checkpoint::{self, RunState};
use model::train::data::{Dataset, fit};
use model::train::{
    BaseTrainer, ControlNetTrainer, Example, LrSchedule, NoiseSchedule, Pairs, Recipe, Sampling, TextExample,
    TrainError, VaeTrainer, batch, micro_batch,
};
use model::vocabulary::training::{self, LogLine, ZeroConv};
use model::vocabulary::{GenerationParams, UnitSettings};
use model::{ControlNet, Precision, weights};

pub const USAGE: &str = "  controlnet train controlnet --model DIR --data DIR --out DIR [--resume]
      [--steps N] [--batch B] [--grad-accum K] [--lr LR] [--prompt-drop P] [--resolution R]
      [--seed S] [--sample-every N] [--checkpoint-every N] [--backend cpu|wgpu]
      [--controlnet DIR] [--max-grad-norm X|none] [--unlock-decoder LR] [--only-mid-control]
      [--lr-schedule constant|constant_with_warmup|linear|cosine] [--lr-warmup N]
      [--lr-decay-steps N (where linear and cosine reach 0; default --steps)]
  controlnet train base|vae --model DIR --data DIR --out DIR [--resume] [the options above but
      --controlnet, --unlock-decoder and --only-mid-control] [--kl-weight W (vae)]
      [--ema-decay D (base: the checkpoint's UNet is the weights' moving average)]";

struct Args {
    model: PathBuf,
    data: PathBuf,
    out: PathBuf,
    start_from: Option<PathBuf>,
    resume: bool,
    steps: u64,
    batch: usize,
    resolution: usize,
    seed: u64,
    sample_every: u64,
    checkpoint_every: u64,
    backend: String,
    recipe: Recipe,
}

impl Args {
    fn sampling(&self) -> Sampling {
        Sampling { seed: self.seed, batch: self.batch, prompt_drop: self.recipe.prompt_drop }
    }
}

fn parse(args: impl Iterator<Item = String>, kind: Kind) -> Result<Args, String> {
    let mut args = args;
    let value = |args: &mut dyn Iterator<Item = String>, flag: &str| -> Result<String, String> {
        args.next().ok_or_else(|| format!("`{flag}` needs a value"))
    };
    fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        text.parse().map_err(|e| format!("`{flag} {text}`: {e}"))
    }
    let (mut model, mut data, mut out) = (None, None, None);
    let mut prompt_drop_given = false;
    let (mut lr_schedule, mut lr_warmup, mut lr_decay_steps) = ("constant".to_owned(), 0u64, None);
    let mut parsed = Args {
        model: PathBuf::new(),
        data: PathBuf::new(),
        out: PathBuf::new(),
        start_from: None,
        resume: false,
        steps: 1000,
        batch: 4,
        resolution: 512,
        seed: 0,
        sample_every: 0,
        checkpoint_every: 500,
        backend: "wgpu".into(),
        recipe: Recipe::default(),
    };
    while let Some(flag) = args.next() {
        let flag = flag.as_str();
        match flag {
            "--resume" => parsed.resume = true,
            "--only-mid-control" => parsed.recipe.only_mid_control = true,
            _ => {
                let v = value(&mut args, flag)?;
                match flag {
                    "--model" => model = Some(PathBuf::from(v)),
                    "--data" => data = Some(PathBuf::from(v)),
                    "--out" => out = Some(PathBuf::from(v)),
                    "--controlnet" => parsed.start_from = Some(PathBuf::from(v)),
                    "--steps" => parsed.steps = number(flag, &v)?,
                    "--batch" => parsed.batch = number(flag, &v)?,
                    "--grad-accum" => parsed.recipe.grad_accum = number(flag, &v)?,
                    "--lr" => parsed.recipe.adamw.lr = number(flag, &v)?,
                    "--prompt-drop" => {
                        parsed.recipe.prompt_drop = number(flag, &v)?;
                        prompt_drop_given = true;
                    }
                    "--resolution" => parsed.resolution = number(flag, &v)?,
                    "--seed" => parsed.seed = number(flag, &v)?,
                    "--sample-every" => parsed.sample_every = number(flag, &v)?,
                    "--checkpoint-every" => parsed.checkpoint_every = number(flag, &v)?,
                    "--backend" => parsed.backend = v,
                    "--max-grad-norm" => {
                        parsed.recipe.max_grad_norm = if v == "none" { None } else { Some(number(flag, &v)?) }
                    }
                    "--unlock-decoder" => parsed.recipe.unlock_decoder = Some(number(flag, &v)?),
                    "--kl-weight" => parsed.recipe.kl_weight = number(flag, &v)?,
                    "--lr-schedule" => lr_schedule = v,
                    "--lr-warmup" => lr_warmup = number(flag, &v)?,
                    "--lr-decay-steps" => lr_decay_steps = Some(number(flag, &v)?),
                    "--ema-decay" => parsed.recipe.ema_decay = Some(number(flag, &v)?),
                    _ => return Err(format!("unknown option `{flag}`\nusage:\n{USAGE}")),
                }
            }
        }
    }
    let missing = |what: &str| format!("`{what}` is required\nusage:\n{USAGE}");
    parsed.model = model.ok_or_else(|| missing("--model"))?;
    parsed.data = data.ok_or_else(|| missing("--data"))?;
    parsed.out = out.ok_or_else(|| missing("--out"))?;
    if parsed.batch == 0 || parsed.steps == 0 {
        return Err("--batch and --steps must be at least 1".into());
    }
    let controlnet_only = parsed.start_from.is_some()
        || parsed.recipe.unlock_decoder.is_some()
        || parsed.recipe.only_mid_control;
    if kind != Kind::ControlNet && controlnet_only {
        return Err("--controlnet, --unlock-decoder and --only-mid-control are for `train controlnet`".into());
    }
    if kind != Kind::Base && parsed.recipe.ema_decay.is_some() {
        return Err("--ema-decay is for `train base`".into());
    }
    // The decay's length is the recipe's, not the run's: a run resumed with more --steps keeps it.
    let total = lr_decay_steps.unwrap_or(parsed.steps);
    parsed.recipe.lr_schedule = LrSchedule::named(&lr_schedule, lr_warmup, total)?;
    if kind == Kind::Base && !prompt_drop_given {
        // Base models learn the unconditional prediction classifier-free guidance needs from
        // 10 % empty captions (Stable Diffusion's figure); the paper's 50 % is for ControlNets.
        parsed.recipe.prompt_drop = 0.1;
    }
    parsed.recipe.validate().map_err(|e| e.to_string())?;
    Ok(parsed)
}

pub fn run(
    mut args: impl Iterator<Item = String>,
    device: fn(&str) -> Result<Device, String>,
) -> Result<(), String> {
    let kind = match args.next().as_deref() {
        Some("controlnet") => Kind::ControlNet,
        Some("base") => Kind::Base,
        Some("vae") => Kind::Vae,
        Some(other) => {
            return Err(format!("unknown training `{other}` (controlnet, base or vae)\nusage:\n{USAGE}"));
        }
        None => return Err(format!("usage:\n{USAGE}")),
    };
    let args = parse(args, kind)?;
    let device = device(&args.backend)?;
    let pipeline = Pipeline::load(&args.model, Precision::F32, &device).map_err(|e| e.to_string())?;
    let scale = pipeline.latent_scale();
    if args.resolution == 0 || !args.resolution.is_multiple_of(scale) {
        return Err(format!(
            "--resolution {} is not a multiple of {scale} (the VAE's scale)",
            args.resolution
        ));
    }
    // Every pair is checked before the first step.
    let data = Dataset::open(&args.data, args.resolution).map_err(text)?;
    let checkpoint_dir = args.out.join("checkpoint");
    let resumed = if args.resume {
        let (state, optimizer) = checkpoint::read_state(&checkpoint_dir).map_err(text)?;
        if state.seed != args.seed || state.recipe != args.recipe {
            return Err(format!(
                "{} was trained with --seed {} and another recipe ({:?}); resume with the same options",
                checkpoint_dir.display(),
                state.seed,
                state.recipe
            ));
        }
        Some((state, optimizer))
    } else {
        None
    };
    let mut session: Box<dyn Session> = match kind {
        Kind::ControlNet => {
            Box::new(ControlNetSession::new(&args, pipeline, resumed.as_ref(), &checkpoint_dir)?)
        }
        Kind::Base => Box::new(BaseSession::new(&args, pipeline, resumed.as_ref(), &checkpoint_dir)?),
        Kind::Vae => Box::new(VaeSession::new(&args, pipeline, resumed.as_ref(), &checkpoint_dir)?),
    };
    if let Some((state, _)) = &resumed {
        eprintln!("resuming {} at step {}", checkpoint_dir.display(), state.step);
    }
    train_loop(&args, session.as_mut(), &data, &checkpoint_dir, resumed.and_then(|(s, _)| s.loss_ema))
}

fn text(e: TrainError) -> String {
    e.to_string()
}

/// Which networks train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ControlNet,
    Base,
    Vae,
}

/// What one step leaves for the log and the progress bar.
struct StepLog {
    loss: f64,
    grad_norm: Option<f64>,
    /// A ControlNet's zero convolutions, and its hint encoder's last.
    zero_convs: Vec<ZeroConv>,
    hint_conv_norm: Option<f64>,
    /// More of the loss's terms, by name.
    terms: BTreeMap<String, f64>,
}

/// What differs between the three trainings, behind the one loop.
trait Session {
    fn step_count(&self) -> u64;
    /// One optimiser step over the micro-batches drawn for it.
    fn step(&mut self, args: &Args, data: &Dataset) -> Result<StepLog, String>;
    /// The checkpoint's files as they stand.
    fn checkpoint_files(&self, state: &RunState) -> Result<Vec<(String, Vec<u8>)>, String>;
    /// A sample image after `step` steps (where the training has one to show).
    fn sample(&self, _args: &Args, _data: &Dataset, _step: u64) -> Result<(), String> {
        Ok(())
    }
}

/// Reads a `[n]` tensor back (natively, blocking on the asynchronous read).
fn values(t: Tensor<1>) -> Vec<f32> {
    model::block_on(t.into_data_async()).ok().and_then(|d| d.try_to_vec::<f32>().ok()).unwrap_or_default()
}

fn scalar(t: Tensor<1>) -> f64 {
    values(t).first().copied().map_or(f64::NAN, f64::from)
}

fn train_loop(
    args: &Args,
    session: &mut dyn Session,
    data: &Dataset,
    checkpoint_dir: &Path,
    mut loss_ema: Option<f64>,
) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let log_path = args.out.join(training::LOG_FILE);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let started = Instant::now();
    let first = session.step_count();
    while session.step_count() < args.steps {
        let report = session.step(args, data)?;
        let done = session.step_count();
        let loss = report.loss;
        if !loss.is_finite() {
            return Err(format!(
                "{}; the last good checkpoint is {}",
                TrainError::Diverged { step: done },
                checkpoint_dir.display()
            ));
        }
        let ema = LogLine::next_ema(loss_ema, loss);
        loss_ema = Some(ema);
        let line = LogLine {
            step: done,
            loss,
            loss_ema: ema,
            lr: args.recipe.lr_at(done - 1),
            grad_norm: report.grad_norm,
            zero_convs: report.zero_convs,
            hint_conv_norm: report.hint_conv_norm,
            terms: report.terms,
        };
        let line = serde_json::to_string(&line).expect("JSON");
        writeln!(log, "{line}").map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
        let elapsed = started.elapsed().as_secs_f64();
        let rate = (done - first) as f64 / elapsed.max(1e-9);
        let left = (args.steps - done) as f64 / rate.max(1e-9);
        eprint!(
            "\rstep {done}/{} loss {loss:.4} (ema {ema:.4}) {rate:.2} it/s, {} left   ",
            args.steps,
            duration(left)
        );
        if args.sample_every > 0 && done.is_multiple_of(args.sample_every) {
            session.sample(args, data, done)?;
        }
        if done.is_multiple_of(args.checkpoint_every.max(1)) || done == args.steps {
            let state = RunState { step: done, seed: args.seed, recipe: args.recipe.clone(), loss_ema };
            let files = session.checkpoint_files(&state)?;
            checkpoint::write(checkpoint_dir, &files).map_err(text)?;
        }
    }
    eprintln!();
    println!("{}", checkpoint_dir.display());
    Ok(())
}

/// The frozen encoders' inputs for one micro-batch: latents, ε and the captions' token ids
/// after the prompt drop.
fn encode(
    pipeline: &Pipeline,
    data: &Dataset,
    args: &Args,
    step: u64,
    micro: usize,
) -> Result<(Example, Vec<Vec<u32>>), String> {
    micro_batch(pipeline, data, &args.sampling(), step, micro).map_err(text)
}

/// `train controlnet`: the paper's recipe.
struct ControlNetSession {
    pipeline: Pipeline,
    trainer: ControlNetTrainer,
}

impl ControlNetSession {
    fn new(
        args: &Args,
        pipeline: Pipeline,
        resumed: Option<&(RunState, Vec<u8>)>,
        checkpoint_dir: &Path,
    ) -> Result<Self, String> {
        let device = pipeline.device();
        let controlnet = match (resumed, &args.start_from) {
            (Some(_), _) => pipeline.load_controlnet(checkpoint_dir).map_err(|e| e.to_string())?,
            (None, Some(dir)) => pipeline.load_controlnet(dir).map_err(|e| e.to_string())?,
            (None, None) => {
                device.seed(args.seed);
                ControlNet::from_unet(&pipeline.unet)
            }
        };
        let unet_dir = checkpoint_dir.join("unet");
        let unet = if resumed.is_some() && args.recipe.unlock_decoder.is_some() {
            weights::load_unet(&unet_dir, Precision::F32, &device).map_err(|e| e.to_string())?
        } else {
            pipeline.unet.clone()
        };
        let schedule = NoiseSchedule::new(&pipeline.scheduler_config).map_err(text)?;
        let mut trainer =
            ControlNetTrainer::new(unet, controlnet, schedule, args.recipe.clone()).map_err(text)?;
        if let Some((state, optimizer)) = resumed {
            let unet_optimizer = std::fs::read(unet_dir.join(checkpoint::OPTIMIZER)).ok();
            trainer = trainer.resume(state.step, optimizer.clone(), unet_optimizer).map_err(text)?;
        }
        Ok(Self { pipeline, trainer })
    }
}

impl Session for ControlNetSession {
    fn step_count(&self) -> u64 {
        self.trainer.step_count()
    }

    fn step(&mut self, args: &Args, data: &Dataset) -> Result<StepLog, String> {
        let step = self.trainer.step_count();
        let examples = (0..args.recipe.grad_accum)
            .map(|micro| encode(&self.pipeline, data, args, step, micro).map(|(example, _)| example))
            .collect::<Result<Vec<_>, _>>()?;
        let read = model::block_on(self.trainer.step(&examples).read()).map_err(text)?;
        Ok(StepLog {
            loss: read.loss,
            grad_norm: read.grad_norm,
            zero_convs: read.zero_convs,
            hint_conv_norm: Some(read.hint_conv_norm),
            terms: BTreeMap::new(),
        })
    }

    fn checkpoint_files(&self, state: &RunState) -> Result<Vec<(String, Vec<u8>)>, String> {
        model::block_on(self.trainer.checkpoint_files(state)).map_err(text)
    }

    fn sample(&self, args: &Args, data: &Dataset, step: u64) -> Result<(), String> {
        sample(
            &self.pipeline,
            self.trainer.controlnet(),
            data,
            args.resolution,
            args.seed,
            &args.out.join("samples"),
            step,
        )
    }
}

/// `train base`: the UNet and the text encoder, jointly, from the folder's weights (for small
/// models trained from scratch: make the folder with fresh weights).
struct BaseSession {
    pipeline: Pipeline,
    trainer: BaseTrainer,
    model: PathBuf,
}

impl BaseSession {
    fn new(
        args: &Args,
        pipeline: Pipeline,
        resumed: Option<&(RunState, Vec<u8>)>,
        checkpoint_dir: &Path,
    ) -> Result<Self, String> {
        let device = pipeline.device();
        let load_unet = |folder: &str| {
            weights::load_unet(&checkpoint_dir.join(folder), Precision::F32, &device)
                .map_err(|e| e.to_string())
        };
        let (unet, text_encoder) = if resumed.is_some() {
            let unet = load_unet(trained_unet_folder(&args.recipe))?;
            let text_encoder =
                model::clip::load_text_encoder(&checkpoint_dir.join("text_encoder"), Precision::F32, &device)
                    .map_err(|e| e.to_string())?;
            (unet, text_encoder)
        } else {
            (pipeline.unet.clone(), pipeline.text_encoder.clone())
        };
        let schedule = NoiseSchedule::new(&pipeline.scheduler_config).map_err(text)?;
        let mut trainer = BaseTrainer::new(
            unet,
            text_encoder,
            schedule,
            args.recipe.adamw.clone(),
            args.recipe.max_grad_norm,
        )
        .with_lr_schedule(args.recipe.lr_schedule);
        if let Some(decay) = args.recipe.ema_decay {
            trainer = trainer.with_ema(decay);
        }
        if let Some((state, optimizer)) = resumed {
            let text_optimizer =
                std::fs::read(checkpoint_dir.join("text_encoder").join(checkpoint::OPTIMIZER))
                    .map_err(|e| format!("the text encoder's optimiser state: {e}"))?;
            trainer = trainer.resume(state.step, [optimizer.clone(), text_optimizer]).map_err(text)?;
            if args.recipe.ema_decay.is_some() {
                trainer = trainer.resume_ema(load_unet("unet")?);
            }
        }
        Ok(Self { pipeline, trainer, model: args.model.clone() })
    }
}

impl Session for BaseSession {
    fn step_count(&self) -> u64 {
        self.trainer.step_count()
    }

    fn step(&mut self, args: &Args, data: &Dataset) -> Result<StepLog, String> {
        let step = self.trainer.step_count();
        let mut examples = Vec::new();
        for micro in 0..args.recipe.grad_accum {
            let (example, ids) = encode(&self.pipeline, data, args, step, micro)?;
            examples.push(TextExample {
                latents: example.latents,
                ids,
                noise: example.noise,
                timesteps: example.timesteps,
            });
        }
        let (loss, grad_norm) = self.trainer.step(&examples);
        Ok(StepLog {
            loss: scalar(loss),
            grad_norm: grad_norm.map(scalar),
            zero_convs: Vec::new(),
            hint_conv_norm: None,
            terms: BTreeMap::new(),
        })
    }

    fn checkpoint_files(&self, state: &RunState) -> Result<Vec<(String, Vec<u8>)>, String> {
        let copy = |from: &str| -> Result<Vec<u8>, String> {
            let path = self.model.join(from);
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let metadata = std::collections::BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        let [unet_optimizer, text_optimizer] = self.trainer.optimizer_bytes().map_err(text)?;
        let trained = model::block_on(to_safetensors(self.trainer.unet(), Precision::F32, &metadata));
        let text_encoder =
            model::block_on(to_safetensors(self.trainer.text_encoder(), Precision::F32, &metadata));
        // The rest of the pipeline as it was, so that the checkpoint is a whole pipeline folder
        // (`controlnet generate --model OUT/checkpoint`, diffusers' `from_pretrained`).
        let mut files = vec![("model_index.json".to_owned(), copy("model_index.json")?)];
        for folder in ["scheduler", "tokenizer", "vae"] {
            let dir = self.model.join(folder);
            let entries =
                std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            for entry in entries.flatten().filter(|e| e.path().is_file()) {
                let name = format!("{folder}/{}", entry.file_name().to_string_lossy());
                files.push((name.clone(), copy(&name)?));
            }
        }
        // With an average, the pipeline's UNet is the average (what is sampled from), and the
        // trained weights, which a resumed run continues from, lie beside it.
        let unet = match self.trainer.ema() {
            Some(ema) => {
                files.extend([
                    (format!("{}/config.json", checkpoint::TRAINED_UNET), copy("unet/config.json")?),
                    (format!("{}/{}", checkpoint::TRAINED_UNET, checkpoint::WEIGHTS), trained),
                ]);
                model::block_on(to_safetensors(ema.module(), Precision::F32, &metadata))
            }
            None => trained,
        };
        files.extend([
            ("unet/config.json".into(), copy("unet/config.json")?),
            (format!("unet/{}", checkpoint::WEIGHTS), unet),
            ("text_encoder/config.json".into(), copy("text_encoder/config.json")?),
            ("text_encoder/model.safetensors".into(), text_encoder),
            (format!("text_encoder/{}", checkpoint::OPTIMIZER), text_optimizer),
            (checkpoint::OPTIMIZER.into(), unet_optimizer),
            (checkpoint::STATE.into(), serde_json::to_vec_pretty(state).expect("JSON")),
        ]);
        Ok(files)
    }
}

/// The folder of a base checkpoint that holds the trained UNet: `unet`, or with an average
/// (which `unet` then holds) [`checkpoint::TRAINED_UNET`].
fn trained_unet_folder(recipe: &Recipe) -> &'static str {
    if recipe.ema_decay.is_some() { checkpoint::TRAINED_UNET } else { "unet" }
}

/// `train vae`: the VAE on its own, reconstruction + KL.
struct VaeSession {
    trainer: VaeTrainer,
    device: Device,
    latent: [usize; 4],
    model: PathBuf,
}

impl VaeSession {
    fn new(
        args: &Args,
        pipeline: Pipeline,
        resumed: Option<&(RunState, Vec<u8>)>,
        checkpoint_dir: &Path,
    ) -> Result<Self, String> {
        let device = pipeline.device();
        let latent = pipeline.latent_shape(args.resolution, args.resolution);
        let vae = if resumed.is_some() {
            model::vae::load_vae(checkpoint_dir, Precision::F32, &device).map_err(|e| e.to_string())?
        } else {
            pipeline.vae.clone()
        };
        let mut trainer =
            VaeTrainer::new(vae, args.recipe.adamw.clone(), args.recipe.kl_weight, args.recipe.max_grad_norm)
                .with_lr_schedule(args.recipe.lr_schedule);
        if let Some((state, optimizer)) = resumed {
            trainer = trainer.resume(state.step, optimizer.clone()).map_err(text)?;
        }
        Ok(Self { trainer, device, latent, model: args.model.clone() })
    }
}

impl Session for VaeSession {
    fn step_count(&self) -> u64 {
        self.trainer.step_count()
    }

    fn step(&mut self, args: &Args, data: &Dataset) -> Result<StepLog, String> {
        let [_, channels, h, w] = self.latent;
        let step = self.trainer.step_count();
        let mut micro_batches = Vec::new();
        for micro in 0..args.recipe.grad_accum {
            let (indices, draws) = args.sampling().draw(data.count(), step, micro, channels * h * w, 1);
            let (images, _, _) = batch(data, &indices, &self.device).map_err(text)?;
            let noise = Tensor::<1>::from_data(
                TensorData::new(draws.vae_noise, [args.batch * channels * h * w]),
                &self.device,
            )
            .reshape([args.batch, channels, h, w]);
            micro_batches.push((images, noise));
        }
        let (terms, grad_norm) = self.trainer.step(&micro_batches);
        let terms_by_name = BTreeMap::from([
            ("reconstruction".to_owned(), scalar(terms.reconstruction)),
            ("kl".to_owned(), scalar(terms.kl)),
        ]);
        Ok(StepLog {
            loss: scalar(terms.loss),
            grad_norm: grad_norm.map(scalar),
            zero_convs: Vec::new(),
            hint_conv_norm: None,
            terms: terms_by_name,
        })
    }

    fn checkpoint_files(&self, state: &RunState) -> Result<Vec<(String, Vec<u8>)>, String> {
        let path = self.model.join("vae/config.json");
        let config = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let metadata = std::collections::BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        Ok(vec![
            (checkpoint::CONFIG.into(), config),
            (
                checkpoint::WEIGHTS.into(),
                model::block_on(to_safetensors(self.trainer.vae(), Precision::F32, &metadata)),
            ),
            (checkpoint::OPTIMIZER.into(), self.trainer.optimizer_bytes().map_err(text)?),
            (checkpoint::STATE.into(), serde_json::to_vec_pretty(state).expect("JSON")),
        ])
    }
}

/// A sample: the first pair's condition and prompt through the pipeline with the ControlNet as
/// it stands (20 steps of the default sampler, the run's seed).
fn sample(
    pipeline: &Pipeline,
    controlnet: &ControlNet,
    data: &Dataset,
    resolution: usize,
    seed: u64,
    dir: &Path,
    step: u64,
) -> Result<(), String> {
    let (_, source) = data.load(0).map_err(|e| e.to_string())?;
    let source = fit(&source, resolution);
    let controlnet = controlnet.valid();
    let settings = GenerationParams {
        prompt: data.line(0).prompt.clone(),
        steps: 20,
        width: resolution as u32,
        height: resolution as u32,
        seed: seed as u32,
        ..GenerationParams::default()
    };
    let unit = ControlUnit {
        controlnet: &controlnet,
        image: from_rgb8(source.width, source.height, &source.pixels, &pipeline.device()),
        settings: UnitSettings::default(),
    };
    let image = pipeline
        .generate(&Params::from(settings), &[unit], |_| std::ops::ControlFlow::Continue(()))
        .map_err(|e| e.to_string())?;
    let (width, height, pixels) = model::block_on(to_rgb8(image)).map_err(|e| e.to_string())?;
    let png =
        image_io::encode_png(&image_io::Rgb8 { width, height, pixels }, &[]).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(training::sample_file(step));
    std::fs::write(&path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s / 60 % 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}
