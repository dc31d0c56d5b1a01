//! `LoadPipeline`: Stable Diffusion and its ControlNets from Hub-style servers onto the GPU.
//!
//! The loading itself is the model's ([`model::loader`]: the same order, the same compatibility
//! rules and the same streaming parser as the CLI's); this module is its source of files
//! ([`WebFiles`]): every file goes through [`fetch_file`] (the weights cache, the network where
//! the cache lacks it, progress messages). Configurations and tokenizer files are small and read
//! whole; weights stream tensor by tensor onto the device, so the wasm heap never holds a weights
//! file, and a wrong combination is refused before its weights are downloaded where the order
//! allows, never reaching the GPU as a shape mismatch (which would panic and kill the worker).

use std::collections::HashMap;

use model::burn::prelude::Device;
use model::loader::{self, ModelFiles};
use model::pipeline::Pipeline;
use model::{ControlNet, Precision};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::{JsFuture, future_to_promise};

use crate::cache::{Cache, FileKey};
use crate::download::{self, CacheProblem, DEFAULT_CHUNK_BYTES, DownloadError, Job, Progress, RemoteFile};
use crate::idb::IdbError;
use crate::protocol::{FileLoaded, ModelRef, ModelSet, ModelSource, PlannedFile, Response, Verified};
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

/// A ControlNet folder's `config.json` (none for a single file) and weights.
fn controlnet_files(controlnet: &ModelRef) -> (Option<String>, String) {
    let config = controlnet.file.is_none().then(|| controlnet.path("config.json"));
    (config, controlnet.path(&controlnet.weights_name("diffusion_pytorch_model")))
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
        if let Some(config) = config {
            planned.push(file(controlnet, config, false, false));
        }
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
    let cache = if sources.clone().any(|m| m.source.cache) { open_cache(id).await } else { None };
    let remote = remote_files(sources).await;
    post(&Response::LoadPlan { id, files: plan(cache.as_ref(), set, &remote).await });

    let mut loaded = Vec::new();
    let p = &set.pipeline;
    let known = |model: &ModelRef| remote.get(&(model.source.repo.clone(), model.source.revision.clone()));
    let mut files = WebFiles { id, cache: cache.as_ref(), model: p, remote: known(p), loaded: &mut loaded };
    let pipeline =
        loader::load_pipeline(&mut files, &p.name(), precision, device).await.map_err(|e| e.to_string())?;
    let mut controlnets = Vec::with_capacity(set.controlnets.len());
    for c in &set.controlnets {
        let mut files =
            WebFiles { id, cache: cache.as_ref(), model: c, remote: known(c), loaded: &mut loaded };
        let name = c.name();
        let controlnet = match &c.file {
            Some(file) => {
                let stem = file.strip_suffix(".safetensors").unwrap_or(file);
                loader::load_single_file_controlnet(&mut files, stem, &name, &pipeline).await
            }
            None => loader::load_controlnet(&mut files, &name, &pipeline).await,
        }
        .map_err(|e| e.to_string())?;
        controlnets.push(controlnet);
    }
    let models = Models {
        pipeline,
        controlnets,
        pipeline_name: p.source.repo.clone(),
        controlnet_names: set.controlnets.iter().map(ModelRef::name).collect(),
    };
    Ok((models, loaded))
}

/// What the Hub's API says of each repository's files (sizes, LFS hashes), by repository and
/// revision; repositories whose server has no API (an imported folder, a plain mirror) are absent.
type RemoteFiles = HashMap<(String, String), HashMap<String, RemoteFile>>;

async fn remote_files<'a>(sources: impl Iterator<Item = &'a ModelRef>) -> RemoteFiles {
    let mut known = RemoteFiles::new();
    for model in sources {
        let source = &model.source;
        let key = (source.repo.clone(), source.revision.clone());
        if known.contains_key(&key) {
            continue;
        }
        if let Some(files) = repo_listing(source).await {
            known.insert(key, files);
        }
    }
    known
}

/// What the Hub's API says of a repository's files at the source's revision (sizes, LFS hashes);
/// `None` where its server has no API (an imported folder, a plain mirror).
pub async fn repo_listing(source: &ModelSource) -> Option<HashMap<String, RemoteFile>> {
    if source.is_local() {
        return None;
    }
    download::repo_files(&source.base_url, &source.repo, &source.revision).await
}

/// The plan: each file's size from the cache's manifest where it has one, else from the Hub's
/// API, else (weights only, all at once) from a `HEAD` request; small files stay `None`.
async fn plan(cache: Option<&Cache>, set: &ModelSet, remote: &RemoteFiles) -> Vec<PlannedFile> {
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
        let repo = (model.source.repo.clone(), model.source.revision.clone());
        let api = remote.get(&repo).and_then(|files| files.get(path));
        planned.push(PlannedFile {
            file: file_label(model, path),
            size: manifest.as_ref().map(|m| m.size).or(api.map(|f| f.size)),
            // A manifest of another chunk size is dropped and the file fetched again.
            cached: manifest.as_ref().is_some_and(|m| m.complete && m.chunk_bytes == chunk_bytes),
        });
        if manifest.is_none() && api.is_none() && *weights {
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

/// One model's files from its server and the cache, keeping how each was loaded.
struct WebFiles<'a> {
    id: u32,
    cache: Option<&'a Cache>,
    model: &'a ModelRef,
    /// What the Hub's API said of the repository's files, where it has an API.
    remote: Option<&'a HashMap<String, RemoteFile>>,
    loaded: &'a mut Vec<FileLoaded>,
}

impl WebFiles<'_> {
    /// `path` (in the repository) through the cache into `consume`. A downloaded weights file
    /// that could not be checked against a hash from its server is listed as unverified.
    async fn fetch(
        &mut self,
        path: &str,
        weights: bool,
        consume: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), DownloadError> {
        let label = file_label(self.model, path);
        let source = &self.model.source;
        let remote = self.remote.and_then(|files| files.get(path));
        let cache = cache_for(self.cache, source);
        let mut loaded = fetch_file(self.id, source, cache, path, &label, remote, consume).await?;
        // A folder imported from the visitor's disk has no server to name a hash.
        if loaded.verified == Verified::Unchecked && (!weights || source.is_local()) {
            loaded.verified = Verified::NotExpected;
        }
        self.loaded.push(loaded);
        Ok(())
    }
}

impl ModelFiles for WebFiles<'_> {
    fn label(&self, path: &str) -> String {
        file_label(self.model, &self.model.path(path))
    }

    async fn read(&mut self, path: &str, optional: bool) -> Result<Option<Vec<u8>>, String> {
        let path = self.model.path(path);
        let label = file_label(self.model, &path);
        let mut bytes = Vec::new();
        let fetched = self
            .fetch(&path, false, &mut |chunk| {
                if bytes.len() + chunk.len() > MAX_SMALL_FILE {
                    return Err(format!(
                        "{label} is over {} MiB: not a configuration or tokenizer file",
                        MAX_SMALL_FILE >> 20
                    ));
                }
                bytes.extend_from_slice(chunk);
                Ok(())
            })
            .await;
        match fetched {
            Ok(()) => Ok(Some(bytes)),
            Err(DownloadError::Http { status: 404, .. }) if optional => Ok(None),
            Err(e) => Err(download_error(self.model, &path, e)),
        }
    }

    async fn stream_weights(
        &mut self,
        folder: &str,
        stem: &str,
        consume: &mut dyn FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let name = self.model.weights_name(stem);
        let path = self.model.path(&if folder.is_empty() { name } else { format!("{folder}/{name}") });
        self.fetch(&path, true, consume).await.map_err(|e| download_error(self.model, &path, e))
    }
}

/// A download error as the user should read it: what is missing or refused, and what to check.
fn download_error(model: &ModelRef, path: &str, error: DownloadError) -> String {
    let label = file_label(model, path);
    let name = model.name();
    let revision = &model.source.revision;
    match error {
        DownloadError::Http { status: 404, .. } if path.ends_with("model_index.json") => format!(
            "{name} has no model_index.json at revision {revision}: it is not a diffusers Stable Diffusion \
             pipeline (a ControlNet goes in the ControlNet list, as a folder or as one .safetensors file)"
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

/// The weights cache, or `None` when the browser has none (IndexedDB blocked, private mode):
/// request `id`'s models then load from the network only, and a `CacheUnavailable` for no one
/// file says why.
pub async fn open_cache(id: u32) -> Option<Cache> {
    match Cache::open().await {
        Ok(cache) => Some(cache),
        Err(e) => {
            post(&Response::CacheUnavailable {
                id,
                file: String::new(),
                needed: 0,
                available: None,
                quota_exceeded: matches!(e, IdbError::QuotaExceeded(_)),
                message: format!("The weights cache cannot be opened ({e}): nothing will be cached."),
            });
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
    remote: Option<&RemoteFile>,
    consume: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<FileLoaded, DownloadError> {
    let url = source.url(path);
    let key = file_key(source, path);
    if source.is_local() {
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
    let job = Job {
        url: &url,
        label,
        key: &key,
        cache,
        chunk_bytes: source.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES),
        remote,
    };
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
            quota_exceeded: matches!(p.error, IdbError::QuotaExceeded(_)),
            // Space is named only where space is the problem.
            message: if matches!(p.error, IdbError::QuotaExceeded(_)) {
                format!(
                    "{label} will load without being cached ({:.1} MiB needed{}): {}",
                    p.needed as f64 / MIB,
                    p.available
                        .map(|free| format!(", {:.1} MiB free", free as f64 / MIB))
                        .unwrap_or_default(),
                    p.error
                )
            } else {
                format!("{label} will load without being cached: {}", p.error)
            },
        })
    };
    download::load_file(job, &mut on_progress, &mut on_cache_problem, consume).await
}

const MIB: f64 = (1 << 20) as f64;

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
            file: None,
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
        assert_eq!(set.controlnets[0].name(), "test/tiny/controlnet");
        assert_eq!(set.controlnets[1].name(), "lllyasviel/canny");
    }

    #[test]
    fn a_single_file_controlnet_is_its_one_file() {
        let single = ModelRef {
            file: Some("control_v11p_sd15_tiny.safetensors".into()),
            ..model("test/tiny", "", None)
        };
        let set = ModelSet { pipeline: model("test/tiny", "", None), controlnets: vec![single] };
        let planned = planned_paths(&set);
        let last = planned.last().unwrap();
        assert_eq!((last.path.as_str(), last.weights), ("control_v11p_sd15_tiny.safetensors", true));
        assert_eq!(planned.len(), 13, "the pipeline's twelve files, then the ControlNet's one");
        assert_eq!(set.controlnets[0].name(), "test/tiny/control_v11p_sd15_tiny.safetensors");
    }
}
