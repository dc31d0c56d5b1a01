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
use serde::de::DeserializeOwned;
use wasm_bindgen::{Clamped, JsCast, JsValue};
use web::protocol::vocabulary::a1111::Parameters;
use web::protocol::vocabulary::memory;
use web::protocol::{GenerationParams, Limits, Request, Response, SchedulerKind};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, ImageData, KeyboardEvent};

use super::gallery::{GalleryState, blob_url, revoke};
use super::units::UnitList;
use super::widgets::NamedSelect;
use crate::gpu::{AdapterInfo, describe_js_error};
use crate::session::{GpuSession, is_device_lost};

/// Where the settings are kept: `controlnet.generate.{name}`, as JSON.
const STORAGE_PREFIX: &str = "controlnet.generate.";

/// A setting kept from an earlier visit, if there is one and it still reads.
pub fn load_setting<T: DeserializeOwned>(name: &str) -> Option<T> {
    let storage = web_sys::window()?.local_storage().ok()??;
    let text = storage.get_item(&format!("{STORAGE_PREFIX}{name}")).ok()??;
    serde_json::from_str(&text).ok()
}

/// Keeps a setting for the next visit. Storage can be full or switched off (some private modes):
/// the page then works as before and forgets on reload, which the console says.
pub fn save_setting<T: Serialize>(name: &str, value: &T) {
    let saved = web_sys::window()
        .ok_or_else(|| "no window".to_owned())
        .and_then(|window| window.local_storage().map_err(|e| describe_js_error(&e)))
        .and_then(|storage| storage.ok_or_else(|| "no localStorage".to_owned()))
        .and_then(|storage| {
            let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
            storage.set_item(&format!("{STORAGE_PREFIX}{name}"), &text).map_err(|e| describe_js_error(&e))
        });
    if let Err(message) = saved {
        web_sys::console::warn_1(&format!("could not keep the setting {name}: {message}").into());
    }
}

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
        let size = |name| load_setting::<f64>(name).map_or(512, Limits::snap_side);
        let settings = Self {
            prompt: RwSignal::new(load_setting("prompt").unwrap_or_default()),
            negative: RwSignal::new(load_setting("negative").unwrap_or_default()),
            seed: RwSignal::new(load_setting("seed").unwrap_or(0)),
            seed_random: RwSignal::new(load_setting("seed-random").unwrap_or(true)),
            steps: RwSignal::new(
                load_setting("steps").map_or(20, |steps: u32| steps.clamp(1, Limits::MAX_STEPS)),
            ),
            guidance: RwSignal::new(
                load_setting("guidance")
                    .filter(|g: &f64| (0.0..=Limits::MAX_GUIDANCE).contains(g))
                    .unwrap_or(7.5),
            ),
            scheduler: RwSignal::new(load_setting("scheduler").unwrap_or_default()),
            width: RwSignal::new(size("width")),
            height: RwSignal::new(size("height")),
            // The latents are read back after every step for the progress anyway, and a preview
            // is an eighth of the image: one per step costs next to nothing.
            preview_every: RwSignal::new(load_setting("preview-every").unwrap_or(1)),
        };
        settings.keep();
        settings
    }

    fn keep(self) {
        fn keep<T: Serialize + Clone + Send + Sync + 'static>(name: &'static str, signal: RwSignal<T>) {
            Effect::new(move || save_setting(name, &signal.get()));
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

/// Where a run stands; `data-state` on the progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Running,
    Done,
    Cancelled,
    Error,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Running => "running",
            Phase::Done => "done",
            Phase::Cancelled => "cancelled",
            Phase::Error => "error",
        }
    }
}

/// The current (or last) run.
#[derive(Clone, Debug, PartialEq)]
struct Run {
    id: Option<u32>,
    phase: Phase,
    step: u32,
    total: u32,
    /// Steps per second, once measured.
    rate: Option<f64>,
    /// Cancel was asked; the worker stops after the step in progress.
    cancelling: bool,
    /// Denoising and decoding, when done.
    elapsed_ms: Option<f64>,
    error: Option<String>,
}

impl Run {
    fn idle() -> Self {
        Run {
            id: None,
            phase: Phase::Idle,
            step: 0,
            total: 0,
            rate: None,
            cancelling: false,
            elapsed_ms: None,
            error: None,
        }
    }

    fn failed(&self, message: String) -> Self {
        Run { phase: Phase::Error, error: Some(message), cancelling: false, ..self.clone() }
    }

    /// "Step i/N · x.x it/s · y s left", or what became of the run.
    fn text(&self) -> String {
        match self.phase {
            Phase::Idle => "Not started.".into(),
            Phase::Running if self.step == 0 => {
                if self.cancelling {
                    "Cancelling…".into()
                } else {
                    "Starting…".into()
                }
            }
            Phase::Running => {
                let mut text = format!("Step {}/{}", self.step, self.total);
                if let Some(rate) = self.rate.filter(|rate| *rate > 0.0) {
                    let left = f64::from(self.total.saturating_sub(self.step)) / rate;
                    text += &format!(" · {rate:.1} it/s · {left:.0} s left");
                }
                if self.cancelling {
                    text += " · cancelling…";
                }
                text
            }
            Phase::Done => match self.elapsed_ms {
                Some(ms) => format!("Done: {} steps in {:.1} s.", self.total, ms / 1000.0),
                None => format!("Done: {} steps.", self.total),
            },
            Phase::Cancelled => format!("Cancelled after step {}/{}.", self.step, self.total),
            Phase::Error => format!("Stopped at step {}/{}.", self.step, self.total),
        }
    }
}

/// When the progress messages of the run arrive, for the rate: the worker's own step time
/// includes nothing of the message's trip, but the first step also compiles shaders.
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    /// The first progress message: its time (ms) and step.
    first: Option<(f64, u32)>,
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

/// Whether an error means the worker or its device is gone, so that only a reload of the models
/// helps.
fn worker_gone(message: &str) -> bool {
    is_device_lost(message) || message.to_lowercase().contains("worker failed")
}

fn with_advice(message: String) -> String {
    if worker_gone(&message) {
        format!("{message} — reload the models (Models panel) to go on; the prompt and settings are kept.")
    } else {
        message
    }
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
    let run = RwSignal::new(Run::idle());
    let timing = StoredValue::new(Timing::default());
    let last_seed = RwSignal::new(None::<u32>);
    // The seed of the run in progress.
    let pending = StoredValue::new(None::<(u32, u32)>);
    let finished = RwSignal::new(None::<Finished>);
    let preview_step = RwSignal::new(None::<u32>);
    let preview_canvas = NodeRef::<Canvas>::new();

    // What the loaded models need at this size (nothing to say before they load).
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

    // Why Generate cannot run now, if it cannot.
    let blocked = Memo::new(move |_| -> Option<String> {
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
        units.units.with(|list| {
            list.iter().enumerate().filter(|(_, unit)| unit.enabled.get()).find_map(|(index, unit)| {
                let n = index + 1;
                if models.controlnets.is_empty() {
                    return Some(format!(
                        "Unit {n} is enabled, but no ControlNet is loaded: load one, or untick “Enabled”."
                    ));
                }
                use super::condition::MapState;
                match unit.condition.state(width, height) {
                    MapState::Empty => Some(format!(
                        "Unit {n} is enabled but has no control map: drop an image on it or draw on it, \
                         or untick “Enabled”."
                    )),
                    MapState::Pending => Some(format!("Unit {n}'s control map is being computed…")),
                    MapState::Failed(message) => Some(format!("Unit {n}'s control map failed: {message}")),
                    MapState::Ready => None,
                }
            })
        })
    });
    let running = move || run.with(|run| run.phase == Phase::Running);

    let generate = move || {
        if run.with_untracked(|run| run.phase == Phase::Running) || blocked.get_untracked().is_some() {
            return;
        }
        let Some(models) = session.models.get_untracked() else { return };
        let (width, height) = (settings.width.get_untracked(), settings.height.get_untracked());
        let mut unit_params = Vec::new();
        let list = units.units.get_untracked();
        for (index, unit) in list.iter().enumerate().filter(|(_, unit)| unit.enabled.get_untracked()) {
            match unit.params(index, &models, width, height) {
                Ok(params) => unit_params.push(params),
                Err(message) => {
                    run.set(Run::idle().failed(format!("Unit {}: {message}.", index + 1)));
                    return;
                }
            }
        }
        let seed =
            if settings.seed_random.get_untracked() { random_seed() } else { settings.seed.get_untracked() };
        last_seed.set(Some(seed));
        let params = settings.params(seed);
        let id = session.next_id();
        pending.set_value(Some((id, seed)));
        timing.set_value(Timing::default());
        run.set(Run { id: Some(id), phase: Phase::Running, total: params.steps, ..Run::idle() });
        let preview_every = settings.preview_every.get_untracked();
        session.send(Request::Generate { id, params, preview_every, units: unit_params });
    };
    let cancel = move || {
        let Some(id) = run.with_untracked(|run| (run.phase == Phase::Running).then_some(run.id).flatten())
        else {
            return;
        };
        run.update(|run| run.cancelling = true);
        session.send(Request::Cancel { id });
    };

    let is_current =
        move |id: u32| run.with_untracked(|run| run.id == Some(id) && run.phase == Phase::Running);
    session.listen(move |response| match response {
        Response::GenerateProgress { id, step, total, elapsed_ms } if is_current(*id) => {
            let now = js_sys::Date::now();
            let first = timing.with_value(|timing| timing.first);
            let rate = match first {
                // Between messages: what the user waits for, shader compilation of step one aside.
                Some((at, first_step)) if *step > first_step && now > at => {
                    Some(f64::from(step - first_step) / ((now - at) / 1000.0))
                }
                Some(_) => None,
                None => {
                    timing.update_value(|timing| timing.first = Some((now, *step)));
                    (*elapsed_ms > 0.0).then(|| f64::from(*step) / (elapsed_ms / 1000.0))
                }
            };
            run.update(|run| {
                run.step = *step;
                run.total = *total;
                run.rate = rate.or(run.rate);
            });
        }
        Response::Preview { id, step, width, height, rgb } if is_current(*id) => {
            if let Some(canvas) = preview_canvas.get_untracked() {
                match draw_rgb(&canvas, *width, *height, rgb) {
                    Ok(()) => preview_step.set(Some(*step)),
                    Err(e) => web_sys::console::warn_1(
                        &format!("could not show the preview: {}", describe_js_error(&e)).into(),
                    ),
                }
            }
        }
        Response::Generated { id, width, height, png, thumbnail, parameters, elapsed_ms, step_ms }
            if is_current(*id) =>
        {
            let png = js_sys::Uint8Array::from(png.as_slice());
            let thumbnail = js_sys::Uint8Array::from(thumbnail.as_slice());
            let seed = pending.try_update_value(Option::take).flatten().filter(|(pending, _)| pending == id);
            let stored = seed.is_some();
            let seed = seed.map_or(0, |(_, seed)| seed);
            match blob_url(&png) {
                Ok(url) => {
                    let shown = Finished {
                        url,
                        seed,
                        width: *width,
                        height: *height,
                        elapsed_ms: *elapsed_ms,
                        step_ms: *step_ms,
                        parameters: parameters.clone(),
                    };
                    if let Some(old) = finished.try_update(|finished| finished.replace(shown)).flatten() {
                        revoke(&old.url);
                    }
                }
                Err(message) => {
                    run.update(|run| *run = run.failed(format!("Could not show the image: {message}")));
                    return;
                }
            }
            if stored {
                gallery.add(png, thumbnail, parameters.clone());
            }
            run.update(|run| {
                run.phase = Phase::Done;
                run.step = run.total;
                run.elapsed_ms = Some(*elapsed_ms);
                run.cancelling = false;
            });
        }
        Response::Cancelled { id, step } if is_current(*id) => run.update(|run| {
            run.phase = Phase::Cancelled;
            run.step = *step;
            run.cancelling = false;
        }),
        Response::Error { id: Some(id), message } if is_current(*id) => {
            run.update(|run| *run = run.failed(with_advice(message.clone())))
        }
        // An error of the worker itself ends the run in progress.
        Response::Error { id: None, message } if run.with_untracked(|run| run.phase == Phase::Running) => {
            run.update(|run| *run = run.failed(with_advice(message.clone())))
        }
        _ => {}
    });
    // The worker crashed or could not start: the run in progress will never answer.
    Effect::new(move || {
        if let Some(message) = session.failure.get()
            && run.with_untracked(|run| run.phase == Phase::Running)
        {
            run.update(|run| {
                *run = run.failed(with_advice(format!("The GPU worker failed: {message}")));
            });
        }
    });
    on_cleanup(move || {
        if let Some(finished) = finished.try_get_untracked().flatten() {
            revoke(&finished.url);
        }
    });

    // Ctrl+Enter (⌘+Enter) anywhere on the page.
    let keys = window_event_listener(ev::keydown, move |event: KeyboardEvent| {
        if (event.ctrl_key() || event.meta_key()) && event.key() == "Enter" && !event.repeat() {
            event.prevent_default();
            generate();
        }
    });
    on_cleanup(move || keys.remove());

    let reuse_seed = move || {
        if let Some(seed) = last_seed.get_untracked() {
            settings.seed.set(seed);
            settings.seed_random.set(false);
        }
    };

    view! {
        <section class="panel generate" data-testid="generate-panel">
            <h2>"Prompt and settings"</h2>
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
            <SettingsFields settings last_seed on_reuse_seed=Callback::new(move |()| reuse_seed()) />
            {move || estimate.with(|estimate| estimate.as_ref().map(|estimate| view! {
                <p class="memory" data-testid="memory-estimate" title="The loaded models at this size, roughly">
                    {estimate.summary()}
                </p>
            }))}
            {move || refusal.get().map(|message| view! {
                <p class="warning" data-testid="memory-refusal" role="alert">{message}</p>
            })}
            <div class="generate-actions">
                <button
                    data-testid="generate"
                    title="Ctrl+Enter"
                    disabled=move || running() || blocked.with(Option::is_some)
                    on:click=move |_| generate()
                >
                    "Generate"
                </button>
                <button
                    class="secondary"
                    data-testid="cancel"
                    disabled=move || !running() || run.with(|run| run.cancelling)
                    on:click=move |_| cancel()
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
        </section>
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
                {move || finished.get().map(|finished| {
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
                })}
            </div>
        </section>
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
    fn the_progress_reads_as_steps_rate_and_time_left() {
        let run = Run { phase: Phase::Running, step: 3, total: 20, rate: Some(1.7), ..Run::idle() };
        assert_eq!(run.text(), "Step 3/20 · 1.7 it/s · 10 s left");
        let first = Run { rate: None, ..run.clone() };
        assert_eq!(first.text(), "Step 3/20");
        let done = Run { phase: Phase::Done, step: 20, elapsed_ms: Some(12_340.0), ..run.clone() };
        assert_eq!(done.text(), "Done: 20 steps in 12.3 s.");
        let cancelled = Run { phase: Phase::Cancelled, step: 5, total: 50, ..Run::idle() };
        assert_eq!(cancelled.text(), "Cancelled after step 5/50.");
        assert_eq!(Phase::Cancelled.name(), "cancelled");
    }

    #[test]
    fn a_lost_device_asks_for_a_reload() {
        assert!(with_advice("GPU device lost: reason unknown".into()).contains("reload the models"));
        assert!(with_advice("the GPU worker failed: out of memory".into()).contains("reload the models"));
        assert_eq!(with_advice("the prompt is too long".into()), "the prompt is too long");
    }
}
