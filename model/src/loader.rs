//! One loader for a diffusers pipeline folder and its ControlNets, over any source of files: a
//! folder on disk (the CLI, the tests) or the browser's fetcher (network and IndexedDB cache).
//!
//! The order is the same for every source, and every configuration is checked against the
//! others ([`crate::compat`]) before the weights it goes with are read: `model_index.json`, the
//! scheduler, the tokenizer, the text encoder, the UNet, the VAE (in f32 when its config says
//! `force_upcast`), then each ControlNet. Weights always stream through [`StreamLoader`], one
//! tensor at a time, whatever the source.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;

use crate::clip::{self, ClipTextConfig, ClipTextModel};
use crate::compat;
use crate::config::{ConfigError, ControlNetConfig, UNetConfig};
use crate::controlnet::ControlNet;
use crate::pipeline::{Pipeline, PipelineError};
use crate::scheduler::SchedulerConfig;
use crate::streaming::StreamLoader;
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNet;
use crate::vae::{self, AutoencoderKL, VaeConfig};
use crate::{Precision, single_file};

/// The files of one model (a pipeline or a ControlNet folder), by their paths inside it.
///
/// Errors are meant for the user, already worded by the source (a missing file, a refused
/// download).
#[allow(async_fn_in_trait, reason = "used through generics only; browsers run it on one thread")]
pub trait ModelFiles {
    /// How messages name the file at `path` (a path on disk, a repository's file).
    fn label(&self, path: &str) -> String;

    /// A small file, whole. An `optional` file the source does not have is `None`; a required
    /// one is an error the source words (it knows best why: a 404, a missing file).
    async fn read(&mut self, path: &str, optional: bool) -> Result<Option<Vec<u8>>, String>;

    /// The weights `{folder}/{stem}[.variant].safetensors` (the source picks the variant), chunk
    /// by chunk into `consume`.
    async fn stream_weights(
        &mut self,
        folder: &str,
        stem: &str,
        consume: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String>;
}

/// A small file that must be there, as UTF-8 text.
async fn text(files: &mut impl ModelFiles, path: &str) -> Result<String, PipelineError> {
    let bytes = files
        .read(path, false)
        .await
        .map_err(PipelineError::Source)?
        .ok_or_else(|| PipelineError::Source(format!("{} does not exist", files.label(path))))?;
    String::from_utf8(bytes)
        .map_err(|_| PipelineError::Source(format!("{} is not UTF-8 text", files.label(path))))
}

/// A small file the model may lack.
async fn optional_text(files: &mut impl ModelFiles, path: &str) -> Result<Option<String>, PipelineError> {
    match files.read(path, true).await.map_err(PipelineError::Source)? {
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PipelineError::Source(format!("{} is not UTF-8 text", files.label(path)))),
        None => Ok(None),
    }
}

fn config_error(files: &impl ModelFiles, path: &str) -> impl FnOnce(ConfigError) -> PipelineError {
    let file = files.label(path);
    move |error| PipelineError::Config { file, error }
}

/// Streams `{folder}/{stem}…safetensors` through `loader`.
async fn stream(
    files: &mut impl ModelFiles,
    component: &'static str,
    (folder, stem): (&str, &str),
    loader: &mut StreamLoader,
) -> Result<(), PipelineError> {
    let mut failed = None;
    let streamed = files
        .stream_weights(folder, stem, &mut |chunk| {
            loader.push(chunk).map_err(|error| {
                let message = error.to_string();
                failed = Some(error);
                message
            })
        })
        .await;
    if let Some(error) = failed {
        return Err(PipelineError::Weights { component, error });
    }
    streamed.map_err(PipelineError::Source)
}

/// Streams `{folder}/{stem}…safetensors` through `loader` into the module `build` makes (built
/// once the file is complete: burn's parameters are lazy until then).
async fn load_weights<M: Module>(
    files: &mut impl ModelFiles,
    component: &'static str,
    file: (&str, &str),
    mut loader: StreamLoader,
    build: impl FnOnce() -> M,
) -> Result<M, PipelineError> {
    stream(files, component, file, &mut loader).await?;
    loader.apply(build()).map_err(|error| PipelineError::Weights { component, error })
}

/// The CLIP tokenizer of a pipeline folder: `vocab.json` and `merges.txt` as SD1.5 publishes
/// them, else `tokenizer.json` (what transformers 5 writes instead); with
/// `tokenizer_config.json` and `special_tokens_map.json` where present. The published layout is
/// asked for first, so that loading SD1.5 asks for no file it lacks (a miss cannot be cached,
/// and would need the network every time).
async fn load_tokenizer(files: &mut impl ModelFiles) -> Result<ClipTokenizer, PipelineError> {
    let vocab = optional_text(files, "tokenizer/vocab.json").await?;
    let merges = match vocab {
        Some(_) => optional_text(files, "tokenizer/merges.txt").await?,
        None => None,
    };
    let tokenizer_config = optional_text(files, "tokenizer/tokenizer_config.json").await?;
    let special_tokens = optional_text(files, "tokenizer/special_tokens_map.json").await?;
    let (config, special) = (tokenizer_config.as_deref(), special_tokens.as_deref());
    Ok(match (vocab, merges) {
        (Some(vocab), Some(merges)) => ClipTokenizer::from_files(&vocab, &merges, config, special)?,
        _ => ClipTokenizer::from_tokenizer_json(
            &text(files, "tokenizer/tokenizer.json").await?,
            config,
            special,
        )?,
    })
}

/// Loads a Stable Diffusion 1.x pipeline computing in `precision`.
pub async fn load_pipeline(
    files: &mut impl ModelFiles,
    name: &str,
    precision: Precision,
    device: &Device,
) -> Result<Pipeline, PipelineError> {
    // 1. What the folder is.
    let index = text(files, "model_index.json").await?;
    compat::check_model_index(name, &index)?;

    // 2. The scheduler's configuration (the sampler itself is chosen per generation).
    let scheduler_config =
        SchedulerConfig::from_json(&text(files, "scheduler/scheduler_config.json").await?)?;

    // 3. The tokenizer.
    let tokenizer = load_tokenizer(files).await?;

    // 4. The text encoder.
    let path = "text_encoder/config.json";
    let text_config =
        ClipTextConfig::from_json(&text(files, path).await?).map_err(config_error(files, path))?;
    compat::check_tokenizer(name, tokenizer.max_length(), &text_config)?;
    let loader = StreamLoader::new(device, precision, clip::REMAPS, clip::IGNORED);
    let text_encoder = load_weights(files, "text_encoder", ("text_encoder", "model"), loader, || {
        ClipTextModel::new(&text_config, device)
    })
    .await?;

    // 5. The UNet.
    let path = "unet/config.json";
    let unet_config = UNetConfig::from_json(&text(files, path).await?).map_err(config_error(files, path))?;
    compat::check_unet(&files.label(path), &unet_config, &text_config)?;
    let loader = StreamLoader::new(device, precision, &[], &[]);
    let unet = load_weights(files, "unet", ("unet", "diffusion_pytorch_model"), loader, || {
        UNet::new(&unet_config, device)
    })
    .await?;

    // 6. The VAE, in f32 when its config says so (SD1.5's overflows in f16); checkpoints with
    //    the old attention names load too.
    let path = "vae/config.json";
    let vae_config = VaeConfig::from_json(&text(files, path).await?).map_err(config_error(files, path))?;
    compat::check_vae(&files.label(path), &vae_config, &unet_config)?;
    let vae_precision = if vae_config.force_upcast { Precision::F32 } else { precision };
    let loader = StreamLoader::new(device, vae_precision, vae::OLD_ATTENTION_REMAPS, &[]);
    let vae = load_weights(files, "vae", ("vae", "diffusion_pytorch_model"), loader, || {
        AutoencoderKL::new(&vae_config, device)
    })
    .await?;

    Ok(Pipeline { tokenizer, text_encoder, unet, vae, scheduler_config, precision })
}

/// Loads a ControlNet folder for `pipeline`'s UNet and VAE, in the pipeline's precision; refused
/// before its weights are read when it was made for another model.
pub async fn load_controlnet(
    files: &mut impl ModelFiles,
    name: &str,
    pipeline: &Pipeline,
) -> Result<ControlNet, PipelineError> {
    let config = ControlNetConfig::from_json(&text(files, "config.json").await?)
        .map_err(config_error(files, "config.json"))?;
    compat::check_controlnet(name, &config, &pipeline.unet.config, pipeline.latent_scale())?;
    let device = pipeline.device();
    let loader = StreamLoader::new(&device, pipeline.precision, &[], &[]);
    load_weights(files, "controlnet", ("", "diffusion_pytorch_model"), loader, || {
        ControlNet::new(&config, &device)
    })
    .await
}

/// Loads a ControlNet kept as one file in the original format (`{stem}.safetensors`, LDM key
/// names; see [`crate::single_file`]) for `pipeline`: its config is the pipeline UNet's encoder
/// with the hint encoder the file's shapes describe, checked like any other before it is built.
pub async fn load_single_file_controlnet(
    files: &mut impl ModelFiles,
    stem: &str,
    name: &str,
    pipeline: &Pipeline,
) -> Result<ControlNet, PipelineError> {
    let unet = &pipeline.unet.config;
    let rules = single_file::remaps(&unet.encoder);
    let rules: Vec<(&str, &str)> =
        rules.iter().map(|(pattern, to)| (pattern.as_str(), to.as_str())).collect();
    let device = pipeline.device();
    let mut loader = StreamLoader::new(&device, pipeline.precision, &rules, &[]);
    stream(files, "controlnet", ("", stem), &mut loader).await?;
    let weights_error = |error| PipelineError::Weights { component: "controlnet", error };
    let config = single_file::config(unet, &loader).map_err(weights_error)?;
    compat::check_controlnet(name, &config, unet, pipeline.latent_scale())?;
    loader.apply(ControlNet::new(&config, &device)).map_err(weights_error)
}

/// A model folder on disk. Weights are read in chunks of [`Folder::CHUNK_BYTES`], never whole;
/// of `name.safetensors` and `name.fp16.safetensors`, the half-precision file is preferred when
/// computing in f16, the full one otherwise, and whichever exists is taken.
pub struct Folder {
    dir: PathBuf,
    precision: Precision,
}

impl Folder {
    /// What each read of a weights file asks for: the browser's cache chunk.
    pub const CHUNK_BYTES: usize = 16 << 20;

    pub fn new(dir: &Path, precision: Precision) -> Self {
        Self { dir: dir.to_owned(), precision }
    }

    fn weights_path(&self, folder: &str, stem: &str) -> Option<PathBuf> {
        let dir = self.dir.join(folder);
        let full = dir.join(format!("{stem}.safetensors"));
        let half = dir.join(format!("{stem}.fp16.safetensors"));
        let candidates = match self.precision {
            Precision::F16 => [half, full],
            Precision::F32 => [full, half],
        };
        candidates.into_iter().find(|p| p.is_file())
    }
}

impl ModelFiles for Folder {
    fn label(&self, path: &str) -> String {
        self.dir.join(path).display().to_string()
    }

    async fn read(&mut self, path: &str, optional: bool) -> Result<Option<Vec<u8>>, String> {
        let path = self.dir.join(path);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{} does not exist", path.display()))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    async fn stream_weights(
        &mut self,
        folder: &str,
        stem: &str,
        consume: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        use std::io::Read;
        let path = self.weights_path(folder, stem).ok_or_else(|| {
            let dir = self.dir.join(folder);
            format!("{} holds neither {stem}.safetensors nor {stem}.fp16.safetensors", dir.display())
        })?;
        let io = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let mut file = std::fs::File::open(&path).map_err(io)?;
        let mut buffer = vec![0; Self::CHUNK_BYTES];
        loop {
            let n = file.read(&mut buffer).map_err(io)?;
            if n == 0 {
                return Ok(());
            }
            consume(&buffer[..n])?;
        }
    }
}

/// Loads a pipeline folder natively (see [`load_pipeline`]).
#[cfg(not(target_family = "wasm"))]
pub fn load_pipeline_dir(
    dir: &Path,
    precision: Precision,
    device: &Device,
) -> Result<Pipeline, PipelineError> {
    let name = dir.display().to_string();
    crate::block_on(load_pipeline(&mut Folder::new(dir, precision), &name, precision, device))
}

/// Loads a ControlNet natively for `pipeline`: a diffusers folder (see [`load_controlnet`]), or
/// one `.safetensors` file in the original format (see [`load_single_file_controlnet`]).
#[cfg(not(target_family = "wasm"))]
pub fn load_controlnet_dir(path: &Path, pipeline: &Pipeline) -> Result<ControlNet, PipelineError> {
    let name = path.display().to_string();
    let single = path.is_file() && path.extension().is_some_and(|e| e == "safetensors");
    match (single, path.parent(), path.file_stem()) {
        (true, Some(dir), Some(stem)) => {
            let mut files = Folder::new(dir, Precision::F32);
            crate::block_on(load_single_file_controlnet(&mut files, &stem.to_string_lossy(), &name, pipeline))
        }
        _ => crate::block_on(load_controlnet(&mut Folder::new(path, pipeline.precision), &name, pipeline)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Files held in memory, by path.
    struct Memory(HashMap<String, Vec<u8>>);

    impl ModelFiles for Memory {
        fn label(&self, path: &str) -> String {
            path.to_owned()
        }

        async fn read(&mut self, path: &str, optional: bool) -> Result<Option<Vec<u8>>, String> {
            match self.0.get(path) {
                Some(bytes) => Ok(Some(bytes.clone())),
                None if optional => Ok(None),
                None => Err(format!("{path} does not exist")),
            }
        }

        async fn stream_weights(
            &mut self,
            _: &str,
            _: &str,
            _: &mut dyn FnMut(&[u8]) -> Result<(), String>,
        ) -> Result<(), String> {
            Err("no weights here".into())
        }
    }

    #[test]
    fn a_tokenizer_json_alone_loads_as_the_published_files_do() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny/tokenizer");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let (vocab, merges) = (read("vocab.json"), read("merges.txt"));
        let configs = ["tokenizer_config.json", "special_tokens_map.json"]
            .map(|name| (format!("tokenizer/{name}"), read(name).into_bytes()));
        let published: HashMap<String, Vec<u8>> = [
            ("tokenizer/vocab.json".to_owned(), vocab.clone().into_bytes()),
            ("tokenizer/merges.txt".to_owned(), merges.clone().into_bytes()),
        ]
        .into_iter()
        .chain(configs.clone())
        .collect();
        // transformers 5's form: the same vocabulary and merges in one tokenizer.json.
        let merge_lines: Vec<&str> =
            merges.lines().filter(|l| !l.starts_with("#version") && !l.is_empty()).collect();
        let vocab_json: serde_json::Value = serde_json::from_str(&vocab).unwrap();
        let json = serde_json::json!({"model": {"type": "BPE", "vocab": vocab_json, "merges": merge_lines}});
        let single: HashMap<String, Vec<u8>> =
            std::iter::once(("tokenizer/tokenizer.json".to_owned(), json.to_string().into_bytes()))
                .chain(configs)
                .collect();

        let a = crate::block_on(load_tokenizer(&mut Memory(published))).unwrap();
        let b = crate::block_on(load_tokenizer(&mut Memory(single))).unwrap();
        for prompt in ["a tiny cat", "A photo of an astronaut, riding a horse!", ""] {
            assert_eq!(a.encode(prompt), b.encode(prompt), "{prompt:?}");
        }
        let missing = crate::block_on(load_tokenizer(&mut Memory(HashMap::new()))).err().unwrap().to_string();
        assert!(missing.contains("tokenizer/tokenizer.json does not exist"), "{missing}");
    }
}
