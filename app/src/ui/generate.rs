//! The prompt and the generation's settings, Generate and Cancel, the progress with a live
//! preview, and the result.
//!
//! The settings are signals owned by the page ([`GenSettings`]): the control units follow its
//! size, and the gallery's "use these parameters again" writes them. They are kept in
//! localStorage (keys `controlnet.generate.*`), so that a reload loses nothing typed.

use leptos::ev;
use leptos::html::Canvas;
use leptos::prelude::*;
use serde::Serialize;
use wasm_bindgen::{Clamped, JsCast, JsValue};
use web::protocol::vocabulary::a1111::Parameters;
use web::protocol::vocabulary::memory::{self, MemoryEstimate};
use web::protocol::{GenerationParams, Limits, Request, Response, SchedulerKind};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, ImageData, KeyboardEvent};

use self::run::{Run, with_advice};
use super::condition::MapState;
use super::gallery::{GalleryState, blob_url, revoke};
use super::units::UnitList;
use super::widgets::NamedSelect;
use crate::gpu::{AdapterInfo, describe_js_error};
use crate::session::GpuSession;
use crate::settings::GENERATE;

mod run;

/// The generation's settings. Cheap to copy.
#[derive(Clone, Copy)]
pub struct GenSettings {
    pub prompt: RwSignal<String>,
    pub negative: RwSignal<String>,
    pub seed: RwSignal<u32>,
    /// Draw a fresh seed for every run.
    pub seed_random: RwSignal<bool>,
    pub steps: RwSignal<u32>,
    pub guidance: RwSignal<f64>,
    pub scheduler: RwSignal<SchedulerKind>,
    pub width: RwSignal<u32>,
    pub height: RwSignal<u32>,
    /// A preview every this many steps; 0 for none.
    pub preview_every: RwSignal<u32>,
}

impl GenSettings {
    /// The settings kept from the last visit (defaults where none), saved again on every change.
    pub fn load() -> Self {
        let size = |name| GENERATE.load::<f64>(name).map_or(512, Limits::snap_side);
        let settings = Self {
            prompt: RwSignal::new(GENERATE.load("prompt").unwrap_or_default()),
            negative: RwSignal::new(GENERATE.load("negative").unwrap_or_default()),
            seed: RwSignal::new(GENERATE.load("seed").unwrap_or(0)),
            seed_random: RwSignal::new(GENERATE.load("seed-random").unwrap_or(true)),
            steps: RwSignal::new(
                GENERATE.load("steps").map_or(20, |steps: u32| steps.clamp(1, Limits::MAX_STEPS)),
            ),
            guidance: RwSignal::new(
                GENERATE
                    .load("guidance")
                    .filter(|g: &f64| (0.0..=Limits::MAX_GUIDANCE).contains(g))
                    .unwrap_or(7.5),
            ),
            scheduler: RwSignal::new(GENERATE.load("scheduler").unwrap_or_default()),
            width: RwSignal::new(size("width")),
            height: RwSignal::new(size("height")),
            // The latents are read back after every step for the progress anyway, and a preview
            // is an eighth of the image: one per step costs next to nothing.
            preview_every: RwSignal::new(GENERATE.load("preview-every").unwrap_or(1)),
        };
        settings.keep();
        settings
    }

    fn keep(self) {
        fn keep<T: Serialize + Clone + Send + Sync + 'static>(name: &'static str, signal: RwSignal<T>) {
            Effect::new(move || GENERATE.save(name, &signal.get()));
        }
        keep("prompt", self.prompt);
        keep("negative", self.negative);
        keep("seed", self.seed);
        keep("seed-random", self.seed_random);
        keep("steps", self.steps);
        keep("guidance", self.guidance);
        keep("scheduler", self.scheduler);
        keep("width", self.width);
        keep("height", self.height);
        keep("preview-every", self.preview_every);
    }

    /// The parameters of a run with `seed`.
    fn params(&self, seed: u32) -> GenerationParams {
        GenerationParams {
            prompt: self.prompt.get_untracked(),
            negative_prompt: self.negative.get_untracked(),
            steps: self.steps.get_untracked(),
            guidance: self.guidance.get_untracked(),
            scheduler: self.scheduler.get_untracked(),
            width: self.width.get_untracked(),
            height: self.height.get_untracked(),
            seed,
        }
    }

    /// Puts an earlier run's parameters back ("use these parameters again"), its seed fixed;
    /// values outside the page's limits are brought within them.
    pub fn apply(&self, parameters: &Parameters) {
        let params = &parameters.params;
        self.prompt.set(params.prompt.clone());
        self.negative.set(params.negative_prompt.clone());
        if parameters.has_seed {
            self.seed.set(params.seed);
            self.seed_random.set(false);
        }
        self.steps.set(params.steps.clamp(1, Limits::MAX_STEPS));
        self.guidance.set(params.guidance.clamp(0.0, Limits::MAX_GUIDANCE));
        self.scheduler.set(params.scheduler);
        self.width.set(Limits::snap_side(f64::from(params.width)));
        self.height.set(Limits::snap_side(f64::from(params.height)));
    }
}

/// A fresh seed, uniformly over `u32`.
fn random_seed() -> u32 {
    (js_sys::Math::random() * 4_294_967_296.0).floor().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The image of the last run.
#[derive(Clone, Debug, PartialEq)]
struct Finished {
    url: String,
    seed: u32,
    width: u32,
    height: u32,
    elapsed_ms: f64,
    step_ms: f64,
    parameters: String,
}

/// The prompt, the settings and the run: Generate, Cancel, progress, preview and result.
#[component]
pub fn GeneratePanel(
    settings: GenSettings,
    units: UnitList,
    gallery: GalleryState,
    info: AdapterInfo,
) -> impl IntoView {
    let session = GpuSession::use_session();
    let (estimate, refusal) = memory_estimate(session, settings, units, &info);
    let blocked = why_blocked(session, settings, units, refusal);
    let generation = Generation {
        session,
        settings,
        units,
        gallery,
        blocked,
        run: RwSignal::new(Run::idle()),
        last_seed: RwSignal::new(None),
        pending: StoredValue::new(None),
        finished: RwSignal::new(None),
        preview_step: RwSignal::new(None),
        preview_canvas: NodeRef::new(),
    };
    session.listen(move |response| generation.answer(response));
    // The worker crashed or could not start: the run in progress will never answer.
    Effect::new(move || {
        if let Some(message) = session.failure.get() {
            generation.fail_running(format!("The GPU worker failed: {message}"));
        }
    });
    on_cleanup(move || {
        if let Some(finished) = generation.finished.try_get_untracked().flatten() {
            revoke(&finished.url);
        }
    });
    // Ctrl+Enter (⌘+Enter) anywhere on the page.
    let keys = window_event_listener(ev::keydown, move |event: KeyboardEvent| {
        if (event.ctrl_key() || event.meta_key()) && event.key() == "Enter" && !event.repeat() {
            event.prevent_default();
            generation.generate();
        }
    });
    on_cleanup(move || keys.remove());

    view! {
        <section class="panel generate" data-testid="generate-panel">
            <h2>"Prompt and settings"</h2>
            <PromptFields settings />
            <SettingsFields
                settings
                last_seed=generation.last_seed
                on_reuse_seed=Callback::new(move |()| generation.reuse_seed())
            />
            {move || estimate.with(|estimate| estimate.as_ref().map(|estimate| view! {
                <p class="memory" data-testid="memory-estimate" title="The loaded models at this size, roughly">
                    {estimate.summary()}
                </p>
            }))}
            {move || refusal.get().map(|message| view! {
                <p class="warning" data-testid="memory-refusal" role="alert">{message}</p>
            })}
            <RunControls generation />
        </section>
        <ResultView generation />
    }
}

/// What the loaded models need at the chosen size (nothing before they load), and why the
/// adapter cannot hold it, if it cannot.
fn memory_estimate(
    session: GpuSession,
    settings: GenSettings,
    units: UnitList,
    info: &AdapterInfo,
) -> (Memo<Option<MemoryEstimate>>, Memo<Option<String>>) {
    let estimate = Memo::new(move |_| {
        let (width, height) = (settings.width.get(), settings.height.get());
        session.models.with(|models| {
            let profile = models.as_ref()?.memory.as_ref()?;
            Some(memory::estimate(profile, width, height, units.enabled_count()))
        })
    });
    let (max_buffer, max_binding) = (info.max_buffer_size, info.max_storage_buffer_binding_size);
    let refusal = Memo::new(move |_| {
        estimate
            .with(|estimate| estimate.as_ref().and_then(|e| memory::check(e, max_buffer, max_binding).err()))
    });
    (estimate, refusal)
}

/// Why Generate cannot run now, if it cannot: the worker gone, no models, too little memory, an
/// enabled unit without a ControlNet or a map.
fn why_blocked(
    session: GpuSession,
    settings: GenSettings,
    units: UnitList,
    refusal: Memo<Option<String>>,
) -> Memo<Option<String>> {
    Memo::new(move |_| -> Option<String> {
        if let Some(message) = session.failure.get() {
            return Some(with_advice(format!("The GPU worker stopped: {message}")));
        }
        let Some(models) = session.models.get() else {
            return Some("Load the models first (Models panel above).".into());
        };
        if let Some(refusal) = refusal.get() {
            return Some(refusal);
        }
        let (width, height) = (settings.width.get(), settings.height.get());
        let controlnets = !models.controlnets.is_empty();
        units.units.with(|list| {
            list.iter().enumerate().filter(|(_, unit)| unit.enabled.get()).find_map(|(index, unit)| {
                let state = if controlnets { unit.condition.state(width, height) } else { MapState::Ready };
                unit_blocked(index + 1, controlnets, state)
            })
        })
    })
}

/// Why enabled unit `n` keeps Generate from running, if it does.
fn unit_blocked(n: usize, controlnets_loaded: bool, map: MapState) -> Option<String> {
    if !controlnets_loaded {
        return Some(format!(
            "Unit {n} is enabled, but no ControlNet is loaded: load one, or untick “Enabled”."
        ));
    }
    match map {
        MapState::Empty => Some(format!(
            "Unit {n} is enabled but has no control map: drop an image on it or draw on it, or untick “Enabled”."
        )),
        MapState::Pending => Some(format!("Unit {n}'s control map is being computed…")),
        MapState::Failed(message) => Some(format!("Unit {n}'s control map failed: {message}")),
        MapState::Ready => None,
    }
}

/// The generation panel's state — the run, its result, the seed — and what it does with the
/// worker. Cheap to copy.
#[derive(Clone, Copy)]
struct Generation {
    session: GpuSession,
    settings: GenSettings,
    units: UnitList,
    gallery: GalleryState,
    /// Why Generate cannot run now ([`why_blocked`]).
    blocked: Memo<Option<String>>,
    run: RwSignal<Run>,
    last_seed: RwSignal<Option<u32>>,
    /// The id and seed of the run in progress.
    pending: StoredValue<Option<(u32, u32)>>,
    finished: RwSignal<Option<Finished>>,
    preview_step: RwSignal<Option<u32>>,
    preview_canvas: NodeRef<Canvas>,
}

impl Generation {
    fn running(self) -> bool {
        self.run.with(Run::running)
    }

    /// Generate: the enabled units' maps and the settings to the worker, unless a run is in
    /// progress or something blocks it.
    fn generate(self) {
        if self.run.with_untracked(Run::running) || self.blocked.get_untracked().is_some() {
            return;
        }
        let Some(models) = self.session.models.get_untracked() else { return };
        let (width, height) = (self.settings.width.get_untracked(), self.settings.height.get_untracked());
        let mut unit_params = Vec::new();
        let list = self.units.units.get_untracked();
        for (index, unit) in list.iter().enumerate().filter(|(_, unit)| unit.enabled.get_untracked()) {
            match unit.params(index, &models, width, height) {
                Ok(params) => unit_params.push(params),
                Err(message) => {
                    self.run.set(Run::refused(format!("Unit {}: {message}.", index + 1)));
                    return;
                }
            }
        }
        let settings = self.settings;
        let seed =
            if settings.seed_random.get_untracked() { random_seed() } else { settings.seed.get_untracked() };
        self.last_seed.set(Some(seed));
        let params = settings.params(seed);
        let id = self.session.next_id();
        self.pending.set_value(Some((id, seed)));
        self.run.set(Run::start(id, params.steps));
        let preview_every = settings.preview_every.get_untracked();
        self.session.send(Request::Generate { id, params, preview_every, units: unit_params });
    }

    fn cancel(self) {
        if let Some(id) = self.run.try_update(Run::cancel).flatten() {
            self.session.send(Request::Cancel { id });
        }
    }

    /// Puts the last run's seed in the field.
    fn reuse_seed(self) {
        if let Some(seed) = self.last_seed.get_untracked() {
            self.settings.seed.set(seed);
            self.settings.seed_random.set(false);
        }
    }

    /// Ends the run in progress, if any, on `message`.
    fn fail_running(self, message: String) {
        if self.run.with_untracked(Run::running) {
            self.run.update(|run| run.fail(message));
        }
    }

    /// The worker's answers to the run in progress (those to older runs are ignored).
    fn answer(self, response: &Response) {
        let current = |id: &u32| self.run.with_untracked(|run| run.is_current(*id));
        match response {
            Response::GenerateProgress { id, step, total, elapsed_ms } if current(id) => {
                let now = js_sys::Date::now();
                self.run.update(|run| run.progress(*step, *total, *elapsed_ms, now));
            }
            Response::Preview { id, step, width, height, rgb } if current(id) => {
                self.show_preview(*step, *width, *height, rgb)
            }
            Response::Generated { id, width, height, png, thumbnail, parameters, elapsed_ms, step_ms }
                if current(id) =>
            {
                let seed = self
                    .pending
                    .try_update_value(Option::take)
                    .flatten()
                    .filter(|(pending, _)| pending == id);
                let (stored, seed) = (seed.is_some(), seed.map_or(0, |(_, seed)| seed));
                let png = js_sys::Uint8Array::from(png.as_slice());
                let url = match blob_url(&png) {
                    Ok(url) => url,
                    Err(message) => {
                        self.run.update(|run| run.fail(format!("Could not show the image: {message}")));
                        return;
                    }
                };
                self.show_image(Finished {
                    url,
                    seed,
                    width: *width,
                    height: *height,
                    elapsed_ms: *elapsed_ms,
                    step_ms: *step_ms,
                    parameters: parameters.clone(),
                });
                if stored {
                    let thumbnail = js_sys::Uint8Array::from(thumbnail.as_slice());
                    self.gallery.add(png, thumbnail, parameters.clone());
                }
                self.run.update(|run| run.done(*elapsed_ms));
            }
            Response::Cancelled { id, step } if current(id) => self.run.update(|run| run.cancelled(*step)),
            Response::Error { id: Some(id), message } if current(id) => {
                self.run.update(|run| run.fail(message.clone()))
            }
            // An error of the worker itself ends the run in progress.
            Response::Error { id: None, message } => self.fail_running(message.clone()),
            _ => {}
        }
    }

    fn show_preview(self, step: u32, width: u32, height: u32, rgb: &[u8]) {
        let Some(canvas) = self.preview_canvas.get_untracked() else { return };
        match draw_rgb(&canvas, width, height, rgb) {
            Ok(()) => self.preview_step.set(Some(step)),
            Err(e) => web_sys::console::warn_1(
                &format!("could not show the preview: {}", describe_js_error(&e)).into(),
            ),
        }
    }

    /// Shows `shown` as the result, letting the last one's URL go.
    fn show_image(self, shown: Finished) {
        if let Some(old) = self.finished.try_update(|finished| finished.replace(shown)).flatten() {
            revoke(&old.url);
        }
    }
}

/// The prompt and the negative prompt.
#[component]
fn PromptFields(settings: GenSettings) -> impl IntoView {
    view! {
        <label class="prompt">
            "Prompt"
            <textarea
                data-testid="prompt"
                rows="3"
                placeholder="a photo of an astronaut riding a horse, best quality"
                prop:value=move || settings.prompt.get()
                on:input=move |event| settings.prompt.set(event_target_value(&event))
            ></textarea>
        </label>
        <label class="prompt">
            "Negative prompt"
            <textarea
                data-testid="negative-prompt"
                rows="2"
                placeholder="lowres, bad anatomy, worst quality"
                prop:value=move || settings.negative.get()
                on:input=move |event| settings.negative.set(event_target_value(&event))
            ></textarea>
        </label>
    }
}

/// Generate and Cancel, why Generate is blocked, the progress and the run's error.
#[component]
fn RunControls(generation: Generation) -> impl IntoView {
    let Generation { run, blocked, .. } = generation;
    let running = move || generation.running();
    view! {
        <div class="generate-actions">
            <button
                data-testid="generate"
                title="Ctrl+Enter"
                disabled=move || running() || blocked.with(Option::is_some)
                on:click=move |_| generation.generate()
            >
                "Generate"
            </button>
            <button
                class="secondary"
                data-testid="cancel"
                disabled=move || !running() || run.with(|run| run.cancelling)
                on:click=move |_| generation.cancel()
            >
                "Cancel"
            </button>
            <span class="hint">"Ctrl+Enter"</span>
        </div>
        {move || (!running()).then(|| blocked.get()).flatten().map(|reason| view! {
            <p class="hint" data-testid="generate-blocked">{reason}</p>
        })}
        <p
            class="progress"
            data-testid="generate-progress"
            data-step=move || run.with(|run| run.step.to_string())
            data-total=move || run.with(|run| run.total.to_string())
            data-state=move || run.with(|run| run.phase.name())
        >
            <progress
                max=move || run.with(|run| run.total.max(1).to_string())
                value=move || run.with(|run| run.step.to_string())
            ></progress>
            <span>{move || run.with(Run::text)}</span>
        </p>
        {move || run.with(|run| run.error.clone()).map(|message| view! {
            <p class="warning" data-testid="generate-error" role="alert">{message}</p>
        })}
    }
}

/// The live preview and the last image, with its download link.
#[component]
fn ResultView(generation: Generation) -> impl IntoView {
    let Generation { preview_step, preview_canvas, finished, .. } = generation;
    view! {
        <section class="panel result" data-testid="result">
            <h2>"Result"</h2>
            <div class="result-images">
                <figure class="preview-figure" class:empty=move || preview_step.with(Option::is_none)>
                    <canvas
                        class="generate-preview"
                        data-testid="generate-preview"
                        data-step=move || preview_step.get().map(|step| step.to_string())
                        node_ref=preview_canvas
                    ></canvas>
                    <figcaption>
                        {move || match preview_step.get() {
                            Some(step) => format!("Preview at step {step} (latents, no VAE)"),
                            None => "The preview appears here while the image is made.".into(),
                        }}
                    </figcaption>
                </figure>
                {move || finished.get().map(|finished| view! { <FinishedImage finished /> })}
            </div>
        </section>
    }
}

/// The image of the last run and what made it.
#[component]
fn FinishedImage(finished: Finished) -> impl IntoView {
    let name = format!("controlnet-{}.png", finished.seed);
    view! {
        <figure class="result-figure">
            <img
                data-testid="result-image"
                data-seed=finished.seed.to_string()
                data-elapsed-ms=finished.elapsed_ms.to_string()
                data-step-ms=finished.step_ms.to_string()
                src=finished.url.clone()
                width=finished.width
                height=finished.height
                alt=finished.parameters.clone()
                title=finished.parameters.clone()
            />
            <figcaption data-testid="result-info">
                {format!(
                    "Seed {} · {}×{} · {:.1} s ({:.2} s per step) ",
                    finished.seed,
                    finished.width,
                    finished.height,
                    finished.elapsed_ms / 1000.0,
                    finished.step_ms / 1000.0
                )}
                <a data-testid="result-download" href=finished.url download=name>"Download"</a>
            </figcaption>
        </figure>
    }
}

/// The numeric settings and the seed.
#[component]
fn SettingsFields(
    settings: GenSettings,
    last_seed: RwSignal<Option<u32>>,
    on_reuse_seed: Callback<()>,
) -> impl IntoView {
    let max_steps = f64::from(Limits::MAX_STEPS);
    let steps =
        |typed: f64| typed.is_finite().then(|| typed.round().clamp(1.0, f64::from(Limits::MAX_STEPS)) as u32);
    let side = |typed: f64| Some(Limits::snap_side(typed));
    let preview_every =
        |typed: f64| typed.is_finite().then(|| typed.round().clamp(0.0, f64::from(Limits::MAX_STEPS)) as u32);
    let seed = |typed: f64| typed.is_finite().then(|| typed.round().clamp(0.0, f64::from(u32::MAX)) as u32);
    let seed_field = number_field(settings.seed, ("seed", "Seed "), (0.0, f64::from(u32::MAX), 1.0), seed);
    let (min_side, max_side, multiple) =
        (f64::from(Limits::MIN_SIDE), f64::from(Limits::MAX_SIDE), f64::from(Limits::MULTIPLE));

    view! {
        <div class="settings">
            <div class="seed" on:change=move |_| settings.seed_random.set(false)>{seed_field}</div>
            <label>
                <input
                    type="checkbox"
                    data-testid="seed-random"
                    prop:checked=move || settings.seed_random.get()
                    on:change=move |event| settings.seed_random.set(event_target_checked(&event))
                />
                " Random"
            </label>
            <button
                class="secondary"
                data-testid="seed-reuse"
                title="Put the last run's seed in the field"
                disabled=move || last_seed.with(Option::is_none)
                on:click=move |_| on_reuse_seed.run(())
            >
                {move || match last_seed.get() {
                    Some(seed) => format!("Reuse {seed}"),
                    None => "Reuse the last seed".into(),
                }}
            </button>
            {number_field(settings.steps, ("steps", "Steps "), (1.0, max_steps, 1.0), steps)}
            <label>
                "Guidance "
                <input
                    type="number"
                    data-testid="guidance"
                    min="0"
                    max=Limits::MAX_GUIDANCE.to_string()
                    step="0.5"
                    prop:value=move || settings.guidance.get().to_string()
                    on:change=move |event| {
                        if let Ok(value) = event_target_value(&event).trim().parse::<f64>()
                            && value.is_finite()
                        {
                            settings.guidance.set(value.clamp(0.0, Limits::MAX_GUIDANCE));
                        }
                        event_target::<web_sys::HtmlInputElement>(&event)
                            .set_value(&settings.guidance.get_untracked().to_string());
                    }
                />
            </label>
            <label>
                "Sampler "
                <NamedSelect value=settings.scheduler testid="scheduler" />
            </label>
            {number_field(settings.width, ("width", "Width "), (min_side, max_side, multiple), side)}
            {number_field(settings.height, ("height", "Height "), (min_side, max_side, multiple), side)}
            {number_field(
                settings.preview_every,
                ("preview-every", "Preview every "),
                (0.0, max_steps, 1.0),
                preview_every,
            )}
        </div>
    }
}

/// A whole-number field (`testid`, label; min, max, step) that writes `signal` on change (typing
/// and leaving, arrows), with what `keep` makes of the typed value, and shows what was kept.
fn number_field(
    signal: RwSignal<u32>,
    (testid, name): (&'static str, &'static str),
    (min, max, step): (f64, f64, f64),
    keep: fn(f64) -> Option<u32>,
) -> impl IntoView {
    view! {
        <label>
            {name}
            <input
                type="number"
                data-testid=testid
                min=min.to_string()
                max=max.to_string()
                step=step.to_string()
                prop:value=move || signal.get().to_string()
                on:change=move |event| {
                    let typed = event_target_value(&event).trim().parse::<f64>().unwrap_or(f64::NAN);
                    // Only a new value notifies: the browser sends `change` again when the field
                    // loses focus, and that blur comes from the mouse-down of a click on Generate —
                    // a size set again would make the control maps pending (Generate disabled)
                    // between its mouse-down and mouse-up, and the click would be lost.
                    if let Some(value) = keep(typed).filter(|&value| value != signal.get_untracked()) {
                        signal.set(value);
                    }
                    // Show what was kept even when the signal did not change.
                    event_target::<web_sys::HtmlInputElement>(&event).set_value(&signal.get_untracked().to_string());
                }
            />
        </label>
    }
}

fn context(canvas: &HtmlCanvasElement) -> Result<CanvasRenderingContext2d, JsValue> {
    canvas.get_context("2d")?.ok_or("no 2D context")?.dyn_into().map_err(JsValue::from)
}

/// Shows an RGB image on `canvas`, which takes its size (CSS scales it up).
fn draw_rgb(canvas: &HtmlCanvasElement, width: u32, height: u32, rgb: &[u8]) -> Result<(), JsValue> {
    if rgb.len() != width as usize * height as usize * 3 {
        return Err(format!("a {width}×{height} preview of {} bytes", rgb.len()).into());
    }
    let rgba: Vec<u8> = rgb.chunks_exact(3).flat_map(|pixel| [pixel[0], pixel[1], pixel[2], 255]).collect();
    let image = ImageData::new_with_u8_clamped_array_and_sh(Clamped(&rgba), width, height)?;
    canvas.set_width(width);
    canvas.set_height(height);
    context(canvas)?.put_image_data(&image, 0.0, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enabled_unit_blocks_without_a_controlnet_or_a_ready_map() {
        assert!(
            unit_blocked(2, false, MapState::Ready)
                .unwrap()
                .starts_with("Unit 2 is enabled, but no ControlNet")
        );
        assert!(unit_blocked(1, true, MapState::Empty).unwrap().contains("has no control map"));
        assert_eq!(
            unit_blocked(1, true, MapState::Pending).unwrap(),
            "Unit 1's control map is being computed…"
        );
        assert_eq!(
            unit_blocked(3, true, MapState::Failed("too big".into())).unwrap(),
            "Unit 3's control map failed: too big"
        );
        assert_eq!(unit_blocked(1, true, MapState::Ready), None);
    }
}
