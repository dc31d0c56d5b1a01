//! `LoadPipeline`: Stable Diffusion and its ControlNets from Hub-style servers onto the GPU.
//!
//! Every file goes through [`fetch_file`] (the IndexedDB cache, the network where the cache lacks
//! it, progress messages). Configurations and tokenizer files are small and read whole; weights
//! stream tensor by tensor onto the device ([`StreamLoader`]), so the wasm heap never holds a
//! weights file. Configurations are checked against each other as they arrive, so that a wrong
//! combination (an SD2.x ControlNet, an inpainting UNet, an SDXL repository) is refused before
//! its weights are downloaded where the order allows, and never reaches the GPU as a shape
//! mismatch (which would panic, and a panic kills the worker).

use model::burn::module::Module;
use model::burn::prelude::Device;
use model::clip::{self, ClipTextConfig, ClipTextModel};
use model::config::{ControlNetConfig, UNetConfig};
use model::pipeline::Pipeline;
use model::scheduler::SchedulerConfig;
use model::streaming::StreamLoader;
use model::tokenizer::ClipTokenizer;
use model::vae::{self, AutoencoderKL, VaeConfig};
use model::{ControlNet, Precision, UNet};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::{JsFuture, future_to_promise};

use crate::cache::{Cache, CacheError, FileKey};
use crate::download::{self, CacheProblem, DEFAULT_CHUNK_BYTES, DownloadError, Job, Loaded, Progress};
use crate::protocol::{FileLoaded, ModelRef, ModelSet, ModelSource, PlannedFile, Response};
use crate::worker::{post, wasm_memory};

/// Configurations and tokenizer files are read whole into the heap; anything larger than this is
/// not one (a weights file under the wrong name, an HTML page) and is refused before it fills it.
const MAX_SMALL_FILE: usize = 16 << 20;

/// What `LoadPipeline` keeps on the device between generations.
pub struct Models {
    pub pipeline: Pipeline,
    /// In the order of `ModelSet::controlnets` (`UnitParams::controlnet` indexes them).
    pub controlnets: Vec<ControlNet>,
    /// The names the PNG's parameters use: the pipeline's repository, and each ControlNet's
    /// repository and folder.
    pub pipeline_name: String,
    pub controlnet_names: Vec<String>,
}

/// A model folder's name for the user: its repository, and its folder inside it if any.
pub fn model_name(model: &ModelRef) -> String {
    if model.subfolder.is_empty() {
        model.source.repo.clone()
    } else {
        format!("{}/{}", model.source.repo, model.subfolder)
    }
}

/// How progress messages, the plan and errors name a file: `{repo}/{path}`.
pub fn file_label(model: &ModelRef, path: &str) -> String {
    format!("{}/{path}", model.source.repo)
}

/// The paths (in the repository) of a pipeline folder's files.
struct PipelineFiles {
    index: String,
    scheduler: String,
    vocab: String,
    merges: String,
    tokenizer_config: String,
    special_tokens: String,
    text_config: String,
    text_weights: String,
    unet_config: String,
    unet_weights: String,
    vae_config: String,
    vae_weights: String,
}

impl PipelineFiles {
    fn new(pipeline: &ModelRef) -> Self {
        let path = |file: &str| pipeline.path(file);
        let weights =
            |folder: &str, stem: &str| pipeline.path(&format!("{folder}/{}", pipeline.weights_name(stem)));
        Self {
            index: path("model_index.json"),
            scheduler: path("scheduler/scheduler_config.json"),
            vocab: path("tokenizer/vocab.json"),
            merges: path("tokenizer/merges.txt"),
            tokenizer_config: path("tokenizer/tokenizer_config.json"),
            special_tokens: path("tokenizer/special_tokens_map.json"),
            text_config: path("text_encoder/config.json"),
            text_weights: weights("text_encoder", "model"),
            unet_config: path("unet/config.json"),
            unet_weights: weights("unet", "diffusion_pytorch_model"),
            vae_config: path("vae/config.json"),
            vae_weights: weights("vae", "diffusion_pytorch_model"),
        }
    }
}

/// A ControlNet folder's `config.json` and weights.
fn controlnet_files(controlnet: &ModelRef) -> (String, String) {
    (controlnet.path("config.json"), controlnet.path(&controlnet.weights_name("diffusion_pytorch_model")))
}

/// One file a load reads, in the order it reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedPath<'a> {
    pub model: &'a ModelRef,
    pub path: String,
    /// A safetensors file (the sizes worth asking the server for).
    pub weights: bool,
    /// Read when the repository has it (the tokenizer's configuration files).
    pub optional: bool,
}

/// Every file [`load_pipeline`] reads, in order.
pub fn planned_paths(set: &ModelSet) -> Vec<PlannedPath<'_>> {
    let p = &set.pipeline;
    let files = PipelineFiles::new(p);
    let file = |model, path: String, weights, optional| PlannedPath { model, path, weights, optional };
    let mut planned = vec![
        file(p, files.index, false, false),
        file(p, files.scheduler, false, false),
        file(p, files.vocab, false, false),
        file(p, files.merges, false, false),
        file(p, files.tokenizer_config, false, true),
        file(p, files.special_tokens, false, true),
        file(p, files.text_config, false, false),
        file(p, files.text_weights, true, false),
        file(p, files.unet_config, false, false),
        file(p, files.unet_weights, true, false),
        file(p, files.vae_config, false, false),
        file(p, files.vae_weights, true, false),
    ];
    for controlnet in &set.controlnets {
        let (config, weights) = controlnet_files(controlnet);
        planned.push(file(controlnet, config, false, false));
        planned.push(file(controlnet, weights, true, false));
    }
    planned
}

/// Loads `set` in `precision`: `LoadPlan` first, then the files in [`planned_paths`]' order, with
/// progress messages. Returns the models and how each file was loaded (a missing optional file
/// is not listed).
pub async fn load_pipeline(
    id: u32,
    set: &ModelSet,
    precision: Precision,
    device: &Device,
) -> Result<(Models, Vec<FileLoaded>), String> {
    let sources = std::iter::once(&set.pipeline).chain(&set.controlnets);
    let cache = if sources.clone().any(|m| m.source.cache) { open_cache().await } else { None };
    post(&Response::LoadPlan { id, files: plan(cache.as_ref(), set).await });

    let mut fetch = Fetcher { id, cache: cache.as_ref(), files: Vec::new() };
    let p = &set.pipeline;
    let files = PipelineFiles::new(p);
    let error_in = |path: &str, e: &dyn std::fmt::Display| format!("{}: {e}", file_label(p, path));

    // 1. What the repository is.
    let index = fetch.text(p, &files.index).await?;
    check_model_index(p, &files.index, &index)?;

    // 2. The scheduler's configuration (the sampler itself is chosen per generation).
    let scheduler = fetch.text(p, &files.scheduler).await?;
    let scheduler_config =
        SchedulerConfig::from_json(&scheduler).map_err(|e| error_in(&files.scheduler, &e))?;

    // 3. The tokenizer.
    let vocab = fetch.text(p, &files.vocab).await?;
    let merges = fetch.text(p, &files.merges).await?;
    let tokenizer_config = fetch.optional_text(p, &files.tokenizer_config).await?;
    let special_tokens = fetch.optional_text(p, &files.special_tokens).await?;
    let tokenizer =
        ClipTokenizer::from_files(&vocab, &merges, tokenizer_config.as_deref(), special_tokens.as_deref())
            .map_err(|e| format!("{}: {e}", file_label(p, &p.path("tokenizer"))))?;
    drop((vocab, merges));

    // 4. The text encoder.
    let text_json = fetch.text(p, &files.text_config).await?;
    let text_config = ClipTextConfig::from_json(&text_json).map_err(|e| error_in(&files.text_config, &e))?;
    if tokenizer.max_length() > text_config.max_position_embeddings {
        return Err(format!(
            "{}: the tokenizer pads prompts to {} tokens, but the text encoder has {} positions",
            model_name(p),
            tokenizer.max_length(),
            text_config.max_position_embeddings
        ));
    }
    let loader = StreamLoader::new(device, precision, clip::REMAPS, clip::IGNORED);
    let text_encoder =
        fetch.weights(p, &files.text_weights, loader, || ClipTextModel::new(&text_config, device)).await?;

    // 5. The UNet.
    let unet_json = fetch.text(p, &files.unet_config).await?;
    let unet_config = UNetConfig::from_json(&unet_json).map_err(|e| error_in(&files.unet_config, &e))?;
    check_unet(&file_label(p, &files.unet_config), &unet_config, &text_config)?;
    let loader = StreamLoader::new(device, precision, &[], &[]);
    let unet = fetch.weights(p, &files.unet_weights, loader, || UNet::new(&unet_config, device)).await?;

    // 6. The VAE, in f32 when its configuration says so (SD1.5's overflows in f16), exactly as
    //    `Pipeline::load` does; checkpoints with the old attention names load too.
    let vae_json = fetch.text(p, &files.vae_config).await?;
    let vae_config = VaeConfig::from_json(&vae_json).map_err(|e| error_in(&files.vae_config, &e))?;
    check_vae(&file_label(p, &files.vae_config), &vae_config, &unet_config)?;
    let vae_precision = if vae_config.force_upcast { Precision::F32 } else { precision };
    let loader = StreamLoader::new(device, vae_precision, vae::OLD_ATTENTION_REMAPS, &[]);
    let vae =
        fetch.weights(p, &files.vae_weights, loader, || AutoencoderKL::new(&vae_config, device)).await?;

    // 7. The ControlNets.
    let mut controlnets = Vec::with_capacity(set.controlnets.len());
    for c in &set.controlnets {
        let (config_path, weights_path) = controlnet_files(c);
        let json = fetch.text(c, &config_path).await?;
        let config = ControlNetConfig::from_json(&json)
            .map_err(|e| format!("{}: {e}", file_label(c, &config_path)))?;
        check_controlnet(&model_name(c), &config, &unet_config)?;
        let loader = StreamLoader::new(device, precision, &[], &[]);
        controlnets.push(fetch.weights(c, &weights_path, loader, || ControlNet::new(&config, device)).await?);
    }

    let pipeline = Pipeline { tokenizer, text_encoder, unet, vae, scheduler_config, precision };
    let models = Models {
        pipeline,
        controlnets,
        pipeline_name: p.source.repo.clone(),
        controlnet_names: set.controlnets.iter().map(model_name).collect(),
    };
    Ok((models, fetch.files))
}

/// The plan: each file's size from the cache's manifest where it has one, else (weights only,
/// all at once) from a `HEAD` request; small files stay `None`.
async fn plan(cache: Option<&Cache>, set: &ModelSet) -> Vec<PlannedFile> {
    let paths = planned_paths(set);
    let mut planned = Vec::with_capacity(paths.len());
    let mut unknown = Vec::new();
    for (i, planned_path) in paths.iter().enumerate() {
        let PlannedPath { model, path, weights, .. } = planned_path;
        let manifest = match cache_for(cache, &model.source) {
            Some(cache) => cache.manifest(&file_key(&model.source, path)).await.ok().flatten(),
            None => None,
        };
        let chunk_bytes = model.source.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES);
        planned.push(PlannedFile {
            file: file_label(model, path),
            size: manifest.as_ref().map(|m| m.size),
            // A manifest of another chunk size is dropped and the file fetched again.
            cached: manifest.as_ref().is_some_and(|m| m.complete && m.chunk_bytes == chunk_bytes),
        });
        if manifest.is_none() && *weights {
            unknown.push((i, model.source.url(path)));
        }
    }
    let sizes = remote_sizes(unknown.iter().map(|(_, url)| url.clone()).collect()).await;
    for ((i, _), size) in unknown.iter().zip(sizes) {
        planned[*i].size = size;
    }
    planned
}

/// `HEAD` requests for `urls`, all at once (they are round trips, not downloads).
async fn remote_sizes(urls: Vec<String>) -> Vec<Option<u64>> {
    if urls.is_empty() {
        return Vec::new();
    }
    let count = urls.len();
    let promises = js_sys::Array::new();
    for url in urls {
        promises.push(&future_to_promise(async move {
            Ok(download::remote_size(&url)
                .await
                .map_or(JsValue::UNDEFINED, |size| JsValue::from_f64(size as f64)))
        }));
    }
    match JsFuture::from(js_sys::Promise::all(&promises)).await {
        Ok(sizes) => js_sys::Array::from(&sizes).iter().map(|s| s.as_f64().map(|s| s as u64)).collect(),
        Err(_) => vec![None; count],
    }
}

/// Checks that `model_index.json` describes a Stable Diffusion 1.x pipeline.
pub fn check_model_index(pipeline: &ModelRef, path: &str, json: &str) -> Result<(), String> {
    let name = model_name(pipeline);
    let not_pipeline = |why: String| format!("{name} is not a diffusers Stable Diffusion pipeline: {why}");
    let index: serde_json::Value =
        serde_json::from_str(json).map_err(|e| not_pipeline(format!("{path} is not JSON ({e})")))?;
    let index = index.as_object().ok_or_else(|| not_pipeline(format!("{path} is not a JSON object")))?;
    let class = index.get("_class_name").and_then(|c| c.as_str()).unwrap_or_default();
    if class.contains("XL") || index.contains_key("text_encoder_2") {
        return Err(format!(
            "{name} is a Stable Diffusion XL pipeline ({class}); only Stable Diffusion 1.x models run here"
        ));
    }
    // `"safety_checker": [null, null]` is how diffusers writes a component that is absent.
    let present = |component: &str| {
        index
            .get(component)
            .is_some_and(|v| !v.is_null() && !v.as_array().is_some_and(|a| a.iter().all(|x| x.is_null())))
    };
    let missing: Vec<&str> = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
        .into_iter()
        .filter(|component| !present(component))
        .collect();
    if !missing.is_empty() {
        return Err(not_pipeline(format!("{path} lists no {}", missing.join(", "))));
    }
    Ok(())
}

/// The UNet must denoise SD1.x's 4-channel latents and attend to this text encoder.
pub fn check_unet(label: &str, unet: &UNetConfig, text: &ClipTextConfig) -> Result<(), String> {
    if unet.encoder.in_channels != 4 || unet.out_channels != 4 {
        return Err(format!(
            "{label}: a UNet with {} input and {} output channels (an inpainting or other special UNet?); \
             only text-to-image UNets with 4 latent channels are supported",
            unet.encoder.in_channels, unet.out_channels
        ));
    }
    if unet.encoder.cross_attention_dim != text.hidden_size {
        return Err(format!(
            "{label}: the UNet attends to {}-wide text embeddings, but the text encoder makes {}-wide ones",
            unet.encoder.cross_attention_dim, text.hidden_size
        ));
    }
    Ok(())
}

/// The VAE must decode the UNet's latents at the pipeline's 8× scale.
pub fn check_vae(label: &str, vae: &VaeConfig, unet: &UNetConfig) -> Result<(), String> {
    if vae.latent_channels != unet.out_channels {
        return Err(format!(
            "{label}: the VAE has {} latent channels, the UNet makes {}",
            vae.latent_channels, unet.out_channels
        ));
    }
    if vae.scale_factor() != 8 {
        return Err(format!(
            "{label}: the VAE scales by {}, not 8 as Stable Diffusion 1.x does",
            vae.scale_factor()
        ));
    }
    Ok(())
}

/// A ControlNet must be a trainable copy of this UNet's encoder: same inputs, same text width,
/// same blocks (its residuals are added to the UNet's, shape for shape).
pub fn check_controlnet(name: &str, controlnet: &ControlNetConfig, unet: &UNetConfig) -> Result<(), String> {
    let (c, u) = (&controlnet.encoder, &unet.encoder);
    let differ = |what: &str, theirs: &dyn std::fmt::Debug, ours: &dyn std::fmt::Debug| {
        Err(format!(
            "{name} is a ControlNet for another model: its {what} is {theirs:?}, the UNet's {ours:?} \
             (a ControlNet for SD2.x or SDXL?)"
        ))
    };
    if c.cross_attention_dim != u.cross_attention_dim {
        return differ("cross_attention_dim", &c.cross_attention_dim, &u.cross_attention_dim);
    }
    if c.in_channels != u.in_channels {
        return differ("in_channels", &c.in_channels, &u.in_channels);
    }
    if c.block_out_channels != u.block_out_channels {
        return differ("block_out_channels", &c.block_out_channels, &u.block_out_channels);
    }
    if c.layers_per_block != u.layers_per_block {
        return differ("layers_per_block", &c.layers_per_block, &u.layers_per_block);
    }
    if c.down_block_types != u.down_block_types {
        return differ("down_block_types", &c.down_block_types, &u.down_block_types);
    }
    if controlnet.conditioning_channels != 3 {
        return Err(format!(
            "{name} takes {}-channel condition images; only RGB (3) control maps are supported",
            controlnet.conditioning_channels
        ));
    }
    Ok(())
}

/// Reads files of a load, keeping how each was loaded.
struct Fetcher<'a> {
    id: u32,
    cache: Option<&'a Cache>,
    files: Vec<FileLoaded>,
}

impl Fetcher<'_> {
    /// A small text file, whole.
    async fn text(&mut self, model: &ModelRef, path: &str) -> Result<String, String> {
        let label = file_label(model, path);
        let mut bytes = Vec::new();
        let loaded = fetch_file(
            self.id,
            &model.source,
            cache_for(self.cache, &model.source),
            path,
            &label,
            &mut |chunk| {
                if bytes.len() + chunk.len() > MAX_SMALL_FILE {
                    return Err(format!(
                        "{label} is over {} MiB: not a configuration or tokenizer file",
                        MAX_SMALL_FILE >> 20
                    ));
                }
                bytes.extend_from_slice(chunk);
                Ok(())
            },
        )
        .await
        .map_err(|e| download_error(model, path, e))?;
        self.files.push(file_loaded(&label, loaded));
        String::from_utf8(bytes).map_err(|_| format!("{label} is not UTF-8 text"))
    }

    /// A small text file the repository may lack (the server answers 404): `None` then.
    async fn optional_text(&mut self, model: &ModelRef, path: &str) -> Result<Option<String>, String> {
        let label = file_label(model, path);
        let mut bytes = Vec::new();
        let result = fetch_file(
            self.id,
            &model.source,
            cache_for(self.cache, &model.source),
            path,
            &label,
            &mut |chunk| {
                if bytes.len() + chunk.len() > MAX_SMALL_FILE {
                    return Err(format!(
                        "{label} is over {} MiB: not a tokenizer file",
                        MAX_SMALL_FILE >> 20
                    ));
                }
                bytes.extend_from_slice(chunk);
                Ok(())
            },
        )
        .await;
        match result {
            Ok(loaded) => {
                self.files.push(file_loaded(&label, loaded));
                String::from_utf8(bytes).map(Some).map_err(|_| format!("{label} is not UTF-8 text"))
            }
            Err(DownloadError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(download_error(model, path, e)),
        }
    }

    /// A safetensors file streamed onto the device, then assigned to the module `build` makes
    /// (built only once the file is complete: burn's parameters are lazy until then).
    async fn weights<M: Module>(
        &mut self,
        model: &ModelRef,
        path: &str,
        mut loader: StreamLoader,
        build: impl FnOnce() -> M,
    ) -> Result<M, String> {
        let label = file_label(model, path);
        let loaded = fetch_file(
            self.id,
            &model.source,
            cache_for(self.cache, &model.source),
            path,
            &label,
            &mut |chunk| loader.push(chunk).map_err(|e| format!("{label}: {e}")),
        )
        .await
        .map_err(|e| download_error(model, path, e))?;
        let module = loader.apply(build()).map_err(|e| format!("{label}: {e}"))?;
        self.files.push(file_loaded(&label, loaded));
        Ok(module)
    }
}

/// A download error as the user should read it: what is missing or refused, and what to check.
fn download_error(model: &ModelRef, path: &str, error: DownloadError) -> String {
    let label = file_label(model, path);
    let name = model_name(model);
    let revision = &model.source.revision;
    match error {
        DownloadError::Http { status: 404, .. } if path.ends_with("model_index.json") => format!(
            "{name} has no model_index.json at revision {revision}: it is not a diffusers Stable Diffusion \
             pipeline (a ControlNet goes in the ControlNet list; single-file checkpoints are not supported)"
        ),
        DownloadError::Http { status: 404, .. }
            if path.ends_with(".safetensors") && model.variant.is_some() =>
        {
            format!(
                "{label} does not exist: {name} has no `{}` variant of these weights at revision {revision}",
                model.variant.as_deref().unwrap_or_default()
            )
        }
        DownloadError::Http { status: 404, .. } => format!(
            "{label} does not exist at revision {revision} (the server answered 404): is {name} the right \
             repository and folder?"
        ),
        DownloadError::Http { status: status @ (401 | 403), .. } => format!(
            "{label}: the server refused access ({status}): {} does not exist, is private, or is gated \
             (accept its terms on the Hub first)",
            model.source.repo
        ),
        DownloadError::Consumer(message) => message,
        other => other.to_string(),
    }
}

/// The cache for files of `source`, unless the source says not to use it.
fn cache_for<'a>(cache: Option<&'a Cache>, source: &ModelSource) -> Option<&'a Cache> {
    cache.filter(|_| source.cache)
}

fn file_key(source: &ModelSource, path: &str) -> FileKey {
    FileKey { repo: source.repo.clone(), revision: source.revision.clone(), file: path.to_owned() }
}

/// The weights cache, or `None` when the browser has none (the models then load from the
/// network only; the console says why).
pub async fn open_cache() -> Option<Cache> {
    match Cache::open().await {
        Ok(cache) => Some(cache),
        Err(e) => {
            web_sys::console::warn_1(&format!("weights will not be cached: {e}").into());
            None
        }
    }
}

/// One file of `source`, through the cache, into `consume`, posting progress under `label`.
pub async fn fetch_file(
    id: u32,
    source: &ModelSource,
    cache: Option<&Cache>,
    path: &str,
    label: &str,
    consume: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<Loaded, DownloadError> {
    let url = source.url(path);
    let key = file_key(source, path);
    if source.base_url == crate::models::LOCAL_BASE_URL {
        // An imported folder has no server: a file the import did not store (or a deleted one)
        // is absent, which optional files may be, and which the caller words for required ones.
        let complete = match cache {
            Some(cache) => cache.manifest(&key).await.ok().flatten().is_some_and(|m| m.complete),
            None => false,
        };
        if !complete {
            return Err(DownloadError::Http { url, status: 404 });
        }
    }
    let job =
        Job { url: &url, key: &key, cache, chunk_bytes: source.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES) };
    let mut on_progress = |p: Progress| {
        post(&Response::DownloadProgress {
            id,
            file: label.to_owned(),
            bytes: p.bytes,
            total: p.total,
            from_cache: p.from_cache,
            wasm_memory: wasm_memory(),
        })
    };
    let mut on_cache_problem = |p: &CacheProblem| {
        post(&Response::CacheUnavailable {
            id,
            file: label.to_owned(),
            needed: p.needed,
            available: p.available,
            quota_exceeded: matches!(p.error, CacheError::QuotaExceeded(_)),
            message: format!(
                "{label} will load without being cached ({:.1} MiB needed{}): {}",
                p.needed as f64 / MIB,
                p.available.map(|free| format!(", {:.1} MiB free", free as f64 / MIB)).unwrap_or_default(),
                p.error
            ),
        })
    };
    download::load_file(job, &mut on_progress, &mut on_cache_problem, consume).await
}

const MIB: f64 = (1 << 20) as f64;

pub fn file_loaded(file: &str, loaded: Loaded) -> FileLoaded {
    FileLoaded {
        file: file.to_owned(),
        size: loaded.size,
        fetched_bytes: loaded.fetched_bytes,
        cached_bytes: loaded.cached_bytes,
        corrupt_chunks: loaded.corrupt_chunks,
        retries: loaded.retries,
        stored: loaded.stored,
        sha256: loaded.sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(repo: &str, subfolder: &str, variant: Option<&str>) -> ModelRef {
        ModelRef {
            source: ModelSource {
                base_url: "http://hub".into(),
                repo: repo.into(),
                revision: "main".into(),
                chunk_bytes: None,
                cache: true,
            },
            subfolder: subfolder.into(),
            variant: variant.map(str::to_owned),
        }
    }

    #[test]
    fn the_plan_lists_every_file_in_order() {
        let set = ModelSet {
            pipeline: model("test/tiny", "", None),
            controlnets: vec![
                model("test/tiny", "controlnet", None),
                model("lllyasviel/canny", "", Some("fp16")),
            ],
        };
        let planned: Vec<String> = planned_paths(&set).iter().map(|p| file_label(p.model, &p.path)).collect();
        assert_eq!(
            planned,
            [
                "test/tiny/model_index.json",
                "test/tiny/scheduler/scheduler_config.json",
                "test/tiny/tokenizer/vocab.json",
                "test/tiny/tokenizer/merges.txt",
                "test/tiny/tokenizer/tokenizer_config.json",
                "test/tiny/tokenizer/special_tokens_map.json",
                "test/tiny/text_encoder/config.json",
                "test/tiny/text_encoder/model.safetensors",
                "test/tiny/unet/config.json",
                "test/tiny/unet/diffusion_pytorch_model.safetensors",
                "test/tiny/vae/config.json",
                "test/tiny/vae/diffusion_pytorch_model.safetensors",
                "test/tiny/controlnet/config.json",
                "test/tiny/controlnet/diffusion_pytorch_model.safetensors",
                "lllyasviel/canny/config.json",
                "lllyasviel/canny/diffusion_pytorch_model.fp16.safetensors",
            ]
        );
        let weights = planned_paths(&set).iter().filter(|p| p.weights).count();
        assert_eq!(weights, 5);
        assert_eq!(model_name(&set.controlnets[0]), "test/tiny/controlnet");
        assert_eq!(model_name(&set.controlnets[1]), "lllyasviel/canny");
    }

    #[test]
    fn model_index_must_name_an_sd_pipeline() {
        let p = model("test/tiny", "", None);
        let fixture = include_str!("../../tests/fixtures/tiny/model_index.json");
        assert_eq!(check_model_index(&p, "model_index.json", fixture), Ok(()));
        let controlnet = r#"{"_class_name": "ControlNetModel", "unet": null}"#;
        let message = check_model_index(&p, "model_index.json", controlnet).unwrap_err();
        assert!(message.contains("lists no unet, vae, text_encoder, tokenizer, scheduler"), "{message}");
        let xl =
            r#"{"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}"#;
        assert!(check_model_index(&p, "model_index.json", xl).unwrap_err().contains("XL"));
        let message = check_model_index(&p, "model_index.json", "<html>").unwrap_err();
        assert!(message.contains("is not JSON"), "{message}");
    }

    #[test]
    fn configurations_must_fit_together() {
        let unet = UNetConfig::sd15();
        let text = ClipTextConfig::sd15();
        assert_eq!(check_unet("unet", &unet, &text), Ok(()));
        assert_eq!(check_vae("vae", &VaeConfig::sd15(), &unet), Ok(()));
        assert_eq!(check_controlnet("canny", &ControlNetConfig::sd15(), &unet), Ok(()));

        let sd2_text = ClipTextConfig { hidden_size: 1024, ..ClipTextConfig::sd15() };
        assert!(check_unet("unet", &unet, &sd2_text).unwrap_err().contains("1024"));
        let mut inpainting = UNetConfig::sd15();
        inpainting.encoder.in_channels = 9;
        assert!(check_unet("unet", &inpainting, &text).unwrap_err().contains("9 input"));
        let mut sd2_controlnet = ControlNetConfig::sd15();
        sd2_controlnet.encoder.cross_attention_dim = 1024;
        let message = check_controlnet("sd2 canny", &sd2_controlnet, &unet).unwrap_err();
        assert!(message.starts_with("sd2 canny is a ControlNet for another model"), "{message}");
    }
}
