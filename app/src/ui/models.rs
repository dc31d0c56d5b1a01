//! The models panel: which Stable Diffusion and ControlNets to load into the GPU worker, from
//! where, and the load's progress; what this browser has stored; and the way back from a crashed
//! worker.
//!
//! The shapes models (part of the site, 18 MB) load on their own when the page opens with them
//! chosen, as it does the first time; nothing else does: Stable Diffusion is a download of
//! several gigabytes, so it is the user's choice. The settings survive a reload (in
//! `localStorage`), and a load that completed is offered again with one click (it then comes
//! from the cache).

mod cache;
mod format;
mod progress;

use leptos::prelude::*;
use web::models::{CANNY, HUB, Pinned, SCRIBBLE, SD15, SHAPES, parse_base_url, parse_spec};
use web::protocol::vocabulary::memory::Profile;
use web::protocol::vocabulary::{Named, shapes};
use web::protocol::{FileLoaded, ModelRef, ModelSet, Precision, Request, Response};

use super::import::{FolderKind, ImportedFolder, LocalImport};
use super::site_hub;
use crate::session::{GpuSession, LoadedModels, is_device_lost};
use crate::settings::MODELS;
use cache::CacheView;
use progress::{Progress, ProgressView};

/// What the preset select offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preset {
    Shapes,
    Canny,
    Scribble,
    Both,
    Custom,
}

impl Preset {
    const ALL: [Preset; 5] = [Preset::Shapes, Preset::Canny, Preset::Scribble, Preset::Both, Preset::Custom];

    fn value(self) -> &'static str {
        match self {
            Preset::Shapes => "shapes",
            Preset::Canny => "canny",
            Preset::Scribble => "scribble",
            Preset::Both => "both",
            Preset::Custom => "custom",
        }
    }

    fn from_value(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|preset| preset.value() == value)
    }

    fn label(self) -> &'static str {
        match self {
            Preset::Shapes => "Shapes world, built in (18 MB): Canny and Scribble ControlNets",
            Preset::Canny => "SD 1.5 + Canny ControlNet",
            Preset::Scribble => "SD 1.5 + Scribble ControlNet",
            Preset::Both => "SD 1.5 + Canny and Scribble ControlNets",
            Preset::Custom => "Custom models…",
        }
    }

    /// The pinned ControlNets, in the order generation indexes them; `None` for custom and
    /// for the shapes models (one repository of folders).
    fn controlnets(self) -> Option<&'static [Pinned]> {
        match self {
            Preset::Shapes => None,
            Preset::Canny => Some(&[CANNY]),
            Preset::Scribble => Some(&[SCRIBBLE]),
            Preset::Both => Some(&[CANNY, SCRIBBLE]),
            Preset::Custom => None,
        }
    }

    /// Which of its models follow a branch rather than a revision, as a warning; `None` when all
    /// are pinned.
    fn unpinned(self) -> Option<String> {
        let unpinned: Vec<&str> = self
            .controlnets()
            .unwrap_or_default()
            .iter()
            .filter(|model| !model.is_pinned())
            .map(|model| model.label)
            .collect();
        (!unpinned.is_empty()).then(|| {
            format!(
                "{} is not pinned to a revision: it follows `main`, so what downloads may change.",
                unpinned.join(", ")
            )
        })
    }
}

/// The panel's settings, each a signal its control writes; all of them persist.
#[derive(Clone, Copy)]
struct Settings {
    preset: RwSignal<Preset>,
    base_url: RwSignal<String>,
    /// Custom only: the pipeline's spec, `owner/name[@revision][:subfolder]`.
    pipeline: RwSignal<String>,
    /// Custom only: one ControlNet spec per line.
    controlnets: RwSignal<String>,
    /// Custom only: the weights variant, `fp16` or `none`.
    variant: RwSignal<String>,
    cache: RwSignal<bool>,
}

impl Settings {
    /// The saved settings, or the defaults: the shapes models from the site; for the other
    /// presets, the Hub, cached.
    fn restore() -> Self {
        let preset =
            MODELS.load_text("preset").and_then(|v| Preset::from_value(&v)).unwrap_or(Preset::Shapes);
        let variant = MODELS.load_text("variant").filter(|v| v == "fp16" || v == "none");
        Self {
            preset: RwSignal::new(preset),
            base_url: RwSignal::new(MODELS.load_text("base-url").unwrap_or_else(|| HUB.to_owned())),
            // The custom fields start from the default preset, to be edited rather than typed.
            pipeline: RwSignal::new(MODELS.load_text("pipeline").unwrap_or_else(|| SD15.spec())),
            controlnets: RwSignal::new(MODELS.load_text("controlnets").unwrap_or_else(|| CANNY.spec())),
            variant: RwSignal::new(variant.unwrap_or_else(|| "fp16".to_owned())),
            cache: RwSignal::new(MODELS.load("cache").unwrap_or(true)),
        }
    }

    /// Writes each setting to `localStorage` whenever it changes.
    /// A folder imported from disk becomes the custom choice: the pipeline, or one more
    /// ControlNet line (once).
    fn imported(self, folder: &ImportedFolder) {
        self.preset.set(Preset::Custom);
        self.variant.set(folder.variant.clone().unwrap_or_else(|| "none".to_owned()));
        match folder.kind {
            FolderKind::Pipeline => self.pipeline.set(folder.repo.clone()),
            FolderKind::Model => self.controlnets.update(|lines| {
                if !lines.lines().any(|line| line.trim() == folder.repo) {
                    if !lines.trim().is_empty() {
                        lines.push('\n');
                    }
                    lines.push_str(&folder.repo);
                }
            }),
        }
    }

    fn persist(self) {
        Effect::new(move || MODELS.save("preset", &self.preset.get().value()));
        Effect::new(move || self.base_url.with(|v| MODELS.save("base-url", v)));
        Effect::new(move || self.pipeline.with(|v| MODELS.save("pipeline", v)));
        Effect::new(move || self.controlnets.with(|v| MODELS.save("controlnets", v)));
        Effect::new(move || self.variant.with(|v| MODELS.save("variant", v)));
        Effect::new(move || MODELS.save("cache", &self.cache.get()));
    }

    /// What the settings ask to load, or why they cannot be loaded.
    fn choice(&self) -> Result<Choice, String> {
        let preset = self.preset.get();
        if preset == Preset::Shapes {
            // From the site itself, which is always at hand: nothing to keep in the cache.
            let base_url = site_hub()?;
            return Ok(Choice {
                models: ModelSet {
                    pipeline: SHAPES.folder_ref(&base_url, shapes::PIPELINE, false),
                    controlnets: shapes::CONTROLNETS
                        .iter()
                        .map(|(folder, _)| SHAPES.folder_ref(&base_url, folder, false))
                        .collect(),
                },
                label: format!("{} + Canny and Scribble ControlNets", SHAPES.label),
                preprocessors: shapes::CONTROLNETS.iter().map(|(_, p)| Some(p.name().to_owned())).collect(),
                approx_bytes: Some(SHAPES.approx_bytes),
            });
        }
        let base_url = self.base_url.with(|url| parse_base_url(url))?;
        let cache = self.cache.get();
        if let Some(controlnets) = preset.controlnets() {
            let labels: Vec<&str> = controlnets.iter().map(|c| c.label).collect();
            return Ok(Choice {
                models: ModelSet {
                    pipeline: SD15.model_ref(&base_url, cache),
                    controlnets: controlnets.iter().map(|c| c.model_ref(&base_url, cache)).collect(),
                },
                label: format!("{} + {}", SD15.label, labels.join(" + ")),
                preprocessors: controlnets.iter().map(|c| c.preprocessor.map(str::to_owned)).collect(),
                approx_bytes: Some(
                    SD15.approx_bytes + controlnets.iter().map(|c| c.approx_bytes).sum::<u64>(),
                ),
            });
        }
        let variant = self.variant.with(|v| (v == "fp16").then_some("fp16"));
        let pipeline = self
            .pipeline
            .with(|spec| parse_spec(spec, &base_url, variant, cache))
            .and_then(|pipeline| match pipeline.file {
                Some(_) => Err("a pipeline is a diffusers folder (model_index.json); only ControlNets are \
                                read from one .safetensors file"
                    .to_owned()),
                None => Ok(pipeline),
            })
            .map_err(|e| format!("Pipeline: {e}"))?;
        let controlnets = self.controlnets.with(|specs| {
            specs
                .lines()
                .map(str::trim)
                .enumerate()
                // Blank lines and `#` comments let a list be kept and switched around.
                .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
                .map(|(n, line)| {
                    parse_spec(line, &base_url, variant, cache)
                        .map_err(|e| format!("ControlNet line {}: {e}", n + 1))
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        let names: Vec<String> = std::iter::once(&pipeline).chain(&controlnets).map(ModelRef::name).collect();
        Ok(Choice {
            preprocessors: vec![None; controlnets.len()],
            models: ModelSet { pipeline, controlnets },
            label: names.join(" + "),
            approx_bytes: None,
        })
    }
}

/// A load the settings describe.
#[derive(Clone, Debug, PartialEq)]
struct Choice {
    models: ModelSet,
    /// What the page calls it: "Stable Diffusion 1.5 + ControlNet 1.1 Canny".
    label: String,
    /// The preprocessor each ControlNet was trained with, where the preset knows it.
    preprocessors: Vec<Option<String>>,
    /// The first download's size, where the preset knows it.
    approx_bytes: Option<u64>,
}

impl Choice {
    fn loaded(&self, precision: Precision, memory: Option<Profile>) -> LoadedModels {
        LoadedModels {
            pipeline: self.models.pipeline.source.repo.clone(),
            controlnets: self.models.controlnets.iter().map(ModelRef::name).collect(),
            preprocessors: self.preprocessors.clone(),
            precision,
            memory,
        }
    }

    /// What identifies the load for "Load again": the models, wherever they come from.
    fn key(&self) -> String {
        serde_json::to_string(&self.models).unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq)]
enum LoadState {
    Idle,
    Loading { id: u32, label: String },
    Loaded { label: String, elapsed_ms: f64, fetched: u64, cached: u64 },
    Failed { message: String },
}

impl LoadState {
    fn name(&self) -> &'static str {
        match self {
            LoadState::Idle => "idle",
            LoadState::Loading { .. } => "loading",
            LoadState::Loaded { .. } => "loaded",
            LoadState::Failed { .. } => "error",
        }
    }

    fn loading(&self) -> bool {
        matches!(self, LoadState::Loading { .. })
    }

    /// Loading or loaded: the worker holds (or is taking) models, which a crash takes away.
    fn on_device(&self) -> bool {
        matches!(self, LoadState::Loading { .. } | LoadState::Loaded { .. })
    }

    /// What a crash of the worker leaves; `automatic`: it came during the reload after a restart.
    fn crashed(&self, automatic: bool) -> LoadState {
        let message = if automatic {
            "The GPU worker stopped again while reloading the models: they may need more memory \
             than this GPU offers."
        } else if matches!(self, LoadState::Loaded { .. }) {
            "The GPU worker stopped, and the models with it."
        } else {
            "The GPU worker stopped while loading the models."
        };
        LoadState::Failed { message: message.to_owned() }
    }

    fn loading_id(&self) -> Option<u32> {
        match self {
            LoadState::Loading { id, .. } => Some(*id),
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            LoadState::Idle => "No models loaded.".to_owned(),
            LoadState::Loading { label, .. } => format!("Loading {label}…"),
            LoadState::Loaded { label, elapsed_ms, fetched, cached } => {
                let source = match (*fetched, *cached) {
                    (0, _) => "all from this browser's cache".to_owned(),
                    (fetched, 0) => format!("{} downloaded", format::bytes(fetched)),
                    (fetched, cached) => {
                        format!(
                            "{} downloaded, {} from the cache",
                            format::bytes(fetched),
                            format::bytes(cached)
                        )
                    }
                };
                format!("Loaded {label} in {:.1} s ({source}).", elapsed_ms / 1000.0)
            }
            LoadState::Failed { .. } => "No models are loaded.".to_owned(),
        }
    }
}

/// The models panel. Needs [`GpuSession::provide`] above it.
#[component]
pub fn ModelsPanel(
    /// Whether the adapter offers `shader-f16`: the models then load and compute in f16.
    f16: bool,
) -> impl IntoView {
    let session = GpuSession::use_session();
    let settings = Settings::restore();
    settings.persist();
    let loader = Loader::new(session, if f16 { Precision::F16 } else { Precision::F32 });
    session.listen(move |response| loader.answer(response));
    // A worker that dies mid-load never answers; one that dies afterwards takes the models along.
    Effect::watch(
        move || session.failure.get(),
        move |failure, _, _| {
            if failure.is_some() && loader.state.with_untracked(LoadState::on_device) {
                loader.crashed();
            }
        },
        false,
    );
    // After a restart (from here or from the generation panel), load again what was wanted.
    Effect::watch(move || session.restarts().get(), move |_, _, _| loader.restarted(), false);

    // The shapes models are part of the site: with them chosen (the first visit's default), the
    // page opens ready to generate. Requests wait for the worker to start.
    if settings.preset.get_untracked() == Preset::Shapes {
        loader.load(settings);
    }
    let choice = Memo::new(move |_| settings.choice());
    // Open from the start for a visitor who chose other models before.
    let folded_open = settings.preset.get_untracked() != Preset::Shapes;
    view! {
        <section class="panel models" data-testid="models-panel">
            <h2>"Models"</h2>
            <Recovery loader />
            <LoadAgain loader settings choice />
            <LoadStatus loader />
            // The built-in models need no choice: the rest folds away until asked for.
            <details class="models-details" data-testid="models-details" open=folded_open>
                <summary data-testid="models-summary">"Other models: Stable Diffusion 1.5, a mirror, a folder, the cache"</summary>
                <ModelChoice settings choice />
                {(!f16).then(|| view! {
                    <p class="note" data-testid="models-f32-note">
                        "f32: this adapter has no shader-f16; weights take twice the GPU memory."
                    </p>
                })}
                <button
                    data-testid="models-load"
                    on:click=move |_| loader.load(settings)
                    disabled=move || loader.state.with(LoadState::loading)
                >
                    {move || if session.models.with(Option::is_some) { "Load these models instead" } else { "Load models" }}
                </button>
                <LocalImport on_imported=Callback::new(move |folder: ImportedFolder| {
                    settings.imported(&folder);
                    loader.loads.update(|n| *n += 1);
                }) />
                <CacheView loads=loader.loads />
            </details>
        </section>
    }
}

/// The panel's loads: what is loading or loaded, its progress, and what to load again after a
/// restart of the worker. Cheap to copy.
#[derive(Clone, Copy)]
struct Loader {
    session: GpuSession,
    precision: Precision,
    state: RwSignal<LoadState>,
    /// A mistake in the settings; what the user typed stays as it is.
    form_error: RwSignal<Option<String>>,
    cache_warnings: RwSignal<Vec<String>>,
    progress: Progress,
    /// Completed loads and imports: the cache view lists the cache again after each.
    loads: RwSignal<u32>,
    /// The last load asked for, to load again after a restart of the worker.
    last: StoredValue<Option<Choice>>,
    /// Whether the last load should be on the GPU: it was loading, or loaded, when the worker
    /// died. A load the worker refused (a missing file) is not retried on its own, nor one that
    /// brought the worker down twice in a row.
    wanted: RwSignal<bool>,
    /// Whether the load in flight is the automatic reload after a restart.
    automatic: StoredValue<bool>,
    /// The key of the last load that completed (kept across page loads), for "Load again".
    completed: RwSignal<Option<String>>,
}

impl Loader {
    fn new(session: GpuSession, precision: Precision) -> Self {
        Self {
            session,
            precision,
            state: RwSignal::new(LoadState::Idle),
            form_error: RwSignal::new(None),
            cache_warnings: RwSignal::new(Vec::new()),
            progress: Progress::new(),
            loads: RwSignal::new(0),
            last: StoredValue::new(None),
            wanted: RwSignal::new(false),
            automatic: StoredValue::new(false),
            completed: RwSignal::new(MODELS.load_text("loaded")),
        }
    }

    /// Loads what the settings say, or says what is wrong with them.
    fn load(self, settings: Settings) {
        match settings.choice() {
            Ok(choice) => self.start(choice, false),
            Err(message) => self.form_error.set(Some(message)),
        }
    }

    /// Asks the worker for `choice`; `reload`: the automatic reload after a restart.
    fn start(self, choice: Choice, reload: bool) {
        let id = self.session.next_id();
        self.form_error.set(None);
        self.cache_warnings.set(Vec::new());
        self.progress.reset();
        // The worker drops what it had before loading the new models.
        self.session.models.set(None);
        self.state.set(LoadState::Loading { id, label: choice.label.clone() });
        self.session.send(Request::LoadPipeline {
            id,
            models: choice.models.clone(),
            precision: self.precision,
        });
        self.last.set_value(Some(choice));
        self.wanted.set(true);
        self.automatic.set_value(reload);
    }

    /// The worker died (or lost its GPU) during a load or afterwards; the recovery box says why.
    fn crashed(self) {
        self.progress.stop();
        let automatic = self.automatic.get_value();
        if automatic {
            // Reloading these models after a restart brought the worker down again: the next
            // restart leaves the choice to the user.
            self.wanted.set(false);
        }
        self.state.update(|state| *state = state.crashed(automatic));
    }

    /// After a restart of the worker: the wanted models again, or nothing.
    fn restarted(self) {
        if let Some(choice) = self.last.get_value().filter(|_| self.wanted.get_untracked()) {
            self.start(choice, true);
        } else {
            self.progress.reset();
            self.state.set(LoadState::Idle);
        }
    }

    /// The worker's answers to the load in flight; a lost device, whatever it answers.
    fn answer(self, response: &Response) {
        // A lost device, whichever request (a generation, mostly) hears of it: nothing runs on
        // the worker any more, so offer the restart.
        if let Response::Error { message, .. } = response
            && is_device_lost(message)
            && self.session.failure.with_untracked(Option::is_none)
        {
            self.session.failure.set(Some(message.clone()));
        }
        let Some(current) = self.state.with_untracked(LoadState::loading_id) else { return };
        match response {
            Response::LoadPlan { id, files } if *id == current => self.progress.plan(files),
            Response::DownloadProgress { id, file, bytes, total, from_cache, .. } if *id == current => {
                self.progress.update(file, *bytes, *total, *from_cache, js_sys::Date::now())
            }
            Response::CacheUnavailable { id, message, .. } if *id == current => {
                self.cache_warnings.update(|warnings| {
                    if !warnings.contains(message) {
                        warnings.push(message.clone());
                    }
                })
            }
            Response::ModelLoaded { id, elapsed_ms, files, memory, .. } if *id == current => {
                self.loaded(*elapsed_ms, files, memory.clone())
            }
            // The worker's GPU is gone (the failure is set above): only a restart helps, and it
            // reloads.
            Response::Error { id: Some(id), message } if *id == current && is_device_lost(message) => {
                self.crashed()
            }
            Response::Error { id: Some(id), message } if *id == current => {
                self.progress.stop();
                self.wanted.set(false);
                self.state.set(LoadState::Failed { message: message.clone() });
            }
            _ => {}
        }
    }

    fn loaded(self, elapsed_ms: f64, files: &[FileLoaded], memory: Option<Profile>) {
        self.progress.finish(files);
        self.automatic.set_value(false);
        let Some(choice) = self.last.get_value() else { return };
        self.session.models.set(Some(choice.loaded(self.precision, memory)));
        let (fetched, cached) = sum_sources(files);
        self.state.set(LoadState::Loaded { label: choice.label.clone(), elapsed_ms, fetched, cached });
        let key = choice.key();
        MODELS.save("loaded", &key);
        self.completed.set(Some(key));
        self.loads.update(|n| *n += 1);
    }
}

/// The way back from a stopped worker: why it stopped, and Restart.
#[component]
fn Recovery(loader: Loader) -> impl IntoView {
    let Loader { session, wanted, .. } = loader;
    move || {
        session.failure.get().map(|message| {
            view! {
                <div class="models-recovery" data-testid="gpu-failure" role="alert">
                    <p class="warning">{format!("The GPU worker stopped: {message}")}</p>
                    <button data-testid="gpu-restart" on:click=move |_| session.restart()>
                        {move || if wanted.get() {
                            "Restart the GPU worker and reload the models"
                        } else {
                            "Restart the GPU worker"
                        }}
                    </button>
                </div>
            }
        })
    }
}

/// "Load again", when nothing is loaded and the settings name the last load that completed.
#[component]
fn LoadAgain(loader: Loader, settings: Settings, choice: Memo<Result<Choice, String>>) -> impl IntoView {
    let again = move || {
        let current = choice.with(|c| c.as_ref().ok().map(Choice::key));
        loader.state.with(|s| *s == LoadState::Idle) && current.is_some() && current == loader.completed.get()
    };
    view! {
        <Show when=again>
            <div class="models-again">
                <p>
                    {move || format!(
                        "Last time, {} loaded. It comes from this browser's cache, unless the \
                         browser removed it.",
                        choice.with(|c| c.as_ref().map(|c| c.label.clone()).unwrap_or_default())
                    )}
                </p>
                <button data-testid="models-load-again" on:click=move |_| loader.load(settings)>"Load again"</button>
            </div>
        </Show>
    }
}

/// The load's status, its error or the settings', the cache's warnings and the progress.
#[component]
fn LoadStatus(loader: Loader) -> impl IntoView {
    let Loader { state, form_error, cache_warnings, progress, .. } = loader;
    view! {
        <p class="models-status" data-testid="models-status" data-state=move || state.with(LoadState::name) role="status">
            {move || state.with(LoadState::text)}
        </p>
        {move || {
            let message = form_error.get().or_else(|| match state.get() {
                LoadState::Failed { message } => Some(message),
                _ => None,
            });
            message.map(|message| view! { <p class="warning" data-testid="models-error" role="alert">{message}</p> })
        }}
        {move || {
            let warnings = cache_warnings.get();
            (!warnings.is_empty()).then(|| view! {
                <div class="models-cache-warning" data-testid="models-cache-warning" role="status">
                    {warnings.into_iter().map(|w| view! { <p>{w}</p> }).collect_view()}
                    <p>"The models load anyway, but will be downloaded again next time."</p>
                </div>
            })
        }}
        <Show when=move || state.with(LoadState::loading) || progress.has_files()>
            <ProgressView progress />
        </Show>
    }
}

/// Which models, from where, cached or not, and what that downloads.
#[component]
fn ModelChoice(settings: Settings, choice: Memo<Result<Choice, String>>) -> impl IntoView {
    let custom = move || settings.preset.get() == Preset::Custom;
    let from_hub = move || settings.preset.get() != Preset::Shapes;
    let shown_from_hub = move || if from_hub() { "" } else { "none" };
    view! {
        <div class="models-settings">
            <label>
                "Models "
                <select
                    data-testid="models-preset"
                    prop:value=move || settings.preset.get().value()
                    on:change=move |event| {
                        if let Some(preset) = Preset::from_value(&event_target_value(&event)) {
                            settings.preset.set(preset);
                        }
                    }
                >
                    {Preset::ALL.map(|preset| view! {
                        <option value=preset.value() selected=move || settings.preset.get() == preset>
                            {preset.label()}
                        </option>
                    })}
                </select>
            </label>
            {move || settings.preset.get().unpinned().map(|unpinned| view! {
                <p class="hint" data-testid="models-unpinned">{unpinned}</p>
            })}
            <label style:display=shown_from_hub>
                "From "
                <input
                    type="url"
                    data-testid="models-base-url"
                    spellcheck="false"
                    prop:value=move || settings.base_url.get()
                    on:change=move |event| settings.base_url.set(event_target_value(&event))
                />
            </label>
            <Show when=custom>
                <CustomModels settings />
            </Show>
            <label class="models-cache-choice" style:display=shown_from_hub>
                <input
                    type="checkbox"
                    data-testid="models-cache"
                    prop:checked=move || settings.cache.get()
                    on:change=move |event| settings.cache.set(event_target_checked(&event))
                />
                " Keep a copy in this browser"
            </label>
        </div>
        <p class="hint">
            {move || choice.with(|choice| download_hint(choice.as_ref().ok(), from_hub(), settings.cache.get()))}
        </p>
    }
}

/// What loading `choice` downloads, where the preset knows it.
fn download_hint(choice: Option<&Choice>, from_hub: bool, cache: bool) -> String {
    match choice.and_then(|choice| choice.approx_bytes) {
        Some(bytes) if !from_hub => {
            format!("They come with this page ({} from this site): no other download.", format::bytes(bytes))
        }
        Some(bytes) => format!(
            "About {} to download the first time; {}",
            format::bytes(bytes),
            if cache { "later loads read this browser's copy." } else { "every load downloads it again." }
        ),
        None => "A mirror must keep the Hub's layout: {base URL}/{owner}/{name}/resolve/{revision}/{file}."
            .to_owned(),
    }
}

/// The custom models' fields.
#[component]
fn CustomModels(settings: Settings) -> impl IntoView {
    view! {
        <fieldset class="models-custom">
            <legend>"Custom models: owner/name[@revision][:folder or :file.safetensors]"</legend>
            <label>
                "Stable Diffusion pipeline "
                <input
                    type="text"
                    data-testid="models-pipeline"
                    spellcheck="false"
                    autocomplete="off"
                    placeholder=SD15.spec()
                    prop:value=move || settings.pipeline.get()
                    on:change=move |event| settings.pipeline.set(event_target_value(&event))
                />
            </label>
            <label>
                "ControlNets, one per line: a diffusers folder or one .safetensors file as A1111 keeps it \
                 (none for plain text-to-image) "
                <textarea
                    data-testid="models-controlnets"
                    rows="3"
                    spellcheck="false"
                    placeholder=CANNY.spec()
                    prop:value=move || settings.controlnets.get()
                    on:change=move |event| settings.controlnets.set(event_target_value(&event))
                ></textarea>
            </label>
            <label>
                "Weights "
                <select
                    data-testid="models-variant"
                    prop:value=move || settings.variant.get()
                    on:change=move |event| settings.variant.set(event_target_value(&event))
                >
                    <option value="fp16" selected=move || settings.variant.get() == "fp16">
                        "fp16 (*.fp16.safetensors)"
                    </option>
                    <option value="none" selected=move || settings.variant.get() == "none">
                        "as published (*.safetensors)"
                    </option>
                </select>
            </label>
        </fieldset>
    }
}

/// Bytes that came over the network and from the cache.
fn sum_sources(files: &[FileLoaded]) -> (u64, u64) {
    files.iter().fold((0, 0), |(fetched, cached), f| (fetched + f.fetched_bytes, cached + f.cached_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_says_what_it_took_and_whether_a_reload_brought_it() {
        let loading = LoadState::Loading { id: 3, label: "SD".into() };
        let loaded = LoadState::Loaded { label: "SD".into(), elapsed_ms: 1500.0, fetched: 0, cached: 9 };
        assert!(loading.on_device() && loaded.on_device() && !LoadState::Idle.on_device());
        assert_eq!(loading.loading_id(), Some(3));
        assert_eq!(loaded.loading_id(), None);
        let message = |state: LoadState| match state {
            LoadState::Failed { message } => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(message(loading.crashed(false)), "The GPU worker stopped while loading the models.");
        assert_eq!(message(loaded.crashed(false)), "The GPU worker stopped, and the models with it.");
        assert!(message(loading.crashed(true)).starts_with("The GPU worker stopped again while reloading"));
        assert_eq!(loaded.text(), "Loaded SD in 1.5 s (all from this browser's cache).");
        assert_eq!(loading.name(), "loading");
    }

    #[test]
    fn the_hint_says_what_loading_downloads() {
        let choice = Choice {
            models: ModelSet { pipeline: SD15.model_ref(HUB, true), controlnets: Vec::new() },
            label: "SD".into(),
            preprocessors: Vec::new(),
            approx_bytes: Some(2_000_000_000),
        };
        assert_eq!(
            download_hint(Some(&choice), true, true),
            "About 2.00 GB to download the first time; later loads read this browser's copy."
        );
        assert!(download_hint(Some(&choice), true, false).ends_with("every load downloads it again."));
        assert!(download_hint(Some(&choice), false, true).starts_with("They come with this page"));
        assert!(download_hint(None, true, true).starts_with("A mirror must keep the Hub's layout"));
    }

    #[test]
    fn only_presets_with_a_model_following_a_branch_warn() {
        assert!(Preset::Scribble.unpinned().unwrap().contains("is not pinned to a revision"));
        assert_eq!(Preset::Canny.unpinned(), None);
        assert_eq!(Preset::Shapes.unpinned(), None);
    }
}
