//! Training a ControlNet in the tab (the Learn view's second half): a fresh ControlNet on the
//! loaded shapes pipeline, trained by the recipe in the GPU worker on the shapes world's pairs
//! made there, drawn live in the replay's charts with a probe grid every few steps.

use js_sys::Uint8Array;
use leptos::prelude::*;
use web::protocol::vocabulary::training::LogLine;
use web::protocol::vocabulary::{Named, Preprocessor, shapes};
use web::protocol::{ConvInit, Request, Response, TrainSettings};

use super::gallery::{blob_url, revoke};
use super::learn::{Chart, Diagram, Series, load, log_series, short};
use crate::session::GpuSession;

/// Where a run stands.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    /// No run (or it was reset).
    Idle,
    /// Started: the fresh ControlNet and the probes' base images are being made.
    Starting,
    Running,
    Paused,
    Finished,
    Failed(String),
}

impl Status {
    /// `data-status` of the status line.
    fn name(&self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Finished => "finished",
            Status::Failed(_) => "failed",
        }
    }

    /// Starting or stepping: Train is off, and leaving the view pauses it.
    fn busy(&self) -> bool {
        matches!(self, Status::Starting | Status::Running)
    }

    /// The status line at `step` of `planned`, `rate` steps a second.
    fn text(&self, step: u64, planned: u64, rate: f64) -> String {
        let word = match self {
            Status::Idle => return String::new(),
            Status::Starting => return "Starting: a fresh ControlNet, the probes' base images…".to_owned(),
            Status::Failed(message) => return message.clone(),
            Status::Paused => "paused",
            Status::Finished => "finished",
            Status::Running => "training",
        };
        format!("{word}: step {step} / {planned}, {rate:.2} steps/s")
    }
}

/// A probe grid the run sent.
#[derive(Clone, Debug, PartialEq)]
struct Shot {
    step: u64,
    scale: f64,
    url: String,
    differing: Vec<u32>,
    adherence: f64,
}

impl Shot {
    /// The pixels of each probe image that differ from the locked model's, as a list.
    fn counts(&self) -> String {
        self.differing.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
    }

    /// Whether the grid equals the locked model's images, or how far it is from them.
    fn caption(&self) -> String {
        if self.differing.iter().all(|&d| d == 0) {
            "Identical to the locked model's images, pixel for pixel.".to_owned()
        } else {
            let pixels = (shapes::SIDE * shapes::SIDE) as usize;
            format!(
                "Pixels differing from the locked model's: {} of {pixels} each. Shape IoU {}.",
                self.counts(),
                short(self.adherence)
            )
        }
    }
}

/// The run before the current one, kept for comparison (zero against Gaussian, one learning rate
/// against another): its smoothed loss, its adherence curve and its latest probe grid.
#[derive(Clone, Debug, PartialEq)]
struct Previous {
    label: String,
    loss_ema: Vec<(f64, f64)>,
    adherence: Vec<(f64, f64)>,
    shot: Option<Shot>,
}

impl Previous {
    /// Its smoothed loss and its adherence, up to `steps`, drawn beside the current run's.
    fn series(&self, steps: u64) -> [Series; 2] {
        let clip = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
            points.iter().copied().filter(|p| p.0 <= steps as f64).collect()
        };
        let grey =
            |label: String, points| Series { label, colour: "hsl(0 0% 55%)".into(), width: 1.6, points };
        [
            grey(format!("previous run ({}), smoothed", self.label), clip(&self.loss_ema)),
            grey(format!("previous run ({})", self.label), clip(&self.adherence)),
        ]
    }
}

/// How a run is named beside another.
fn run_label(settings: &TrainSettings) -> String {
    let init = match settings.init {
        ConvInit::Zero => "zero convs",
        ConvInit::Gaussian => "Gaussian convs",
    };
    format!("{}, {init}, lr {}, batch {}", settings.condition.name(), settings.lr, settings.batch)
}

/// The step after which adherence rose the most between two probe grids: where the control
/// "snapped in", and the scores before and after.
fn jump(shots: &[Shot]) -> Option<(u64, f64, f64)> {
    shots
        .windows(2)
        .map(|w| (w[1].step, w[0].adherence, w[1].adherence))
        .filter(|(_, before, after)| after > before)
        .max_by(|a, b| (a.2 - a.1).total_cmp(&(b.2 - b.1)))
}

/// A number input bound to `value`, kept when it parses.
#[component]
fn NumberInput<T>(
    label: &'static str,
    value: RwSignal<T>,
    testid: &'static str,
    step: &'static str,
) -> impl IntoView
where
    T: std::str::FromStr + ToString + Clone + Send + Sync + 'static,
{
    view! {
        <label>
            {label}" "
            <input
                type="number"
                step=step
                data-testid=testid
                prop:value=move || value.get().to_string()
                on:change=move |event| {
                    if let Ok(parsed) = event_target_value(&event).parse::<T>() {
                        value.set(parsed);
                    }
                }
            />
        </label>
    }
}

/// "Train one here": the settings, the buttons, the live charts and the probe grids.
#[component]
pub fn TrainHere(
    session: GpuSession,
    /// Whether the Learn view is shown: leaving it pauses the run (image making waits for a
    /// running one), and Resume goes on.
    learning: ReadSignal<bool>,
) -> impl IntoView {
    let form = TrainForm::new(TrainSettings::for_backend(session.backend));
    let run = TrainRun::new(session, form.steps.get_untracked());
    session.listen(move |response| run.answer(response));
    // A restarted worker has lost the run.
    Effect::watch(move || session.restarts().get(), move |_, _, _| run.lost(), false);
    Effect::watch(
        move || learning.get(),
        move |shown, _, _| {
            if !shown {
                run.pause_now();
            }
        },
        false,
    );
    on_cleanup(move || run.pause_now());
    let shapes_loaded = Signal::derive(move || {
        session.models.with(|m| m.as_ref().is_some_and(|m| m.pipeline == shapes::REPO))
    });
    view! {
        <section class="train-here" data-testid="train">
            <h3>"Train one here"</h3>
            <p>
                "A fresh ControlNet — the shapes model's encoder copied, every zero convolution at zero — \
                 trained in this tab by the same recipe, on pairs of the shapes world made as it goes. \
                 Each probe row shows a held-out condition, the locked model's image alone, and the image \
                 with the ControlNet as it stands: at step 0 the two images are the same, pixel for pixel. \
                 Choose Gaussian convolutions to see the paper's ablation: they damage the image from the \
                 start. While it trains, image making waits: pause to make images."
            </p>
            <Show when=move || !shapes_loaded.get()>
                <p class="notice" data-testid="train-needs-shapes">
                    "Training here uses the built-in shapes models: load the Shapes preset in the \
                     generator's models panel (it loads on first open)."
                </p>
            </Show>
            <TrainSettingsForm form />
            <TrainControls run form shapes_loaded />
            <div class="learn-grid">
                <TrainCharts run condition=form.condition />
                <div class="learn-side">
                    <ProbeShots run />
                    <UseControlNet run shapes_loaded />
                    <Diagram line=Signal::derive(move || run.lines.with(|l| l.last().cloned())) />
                </div>
            </div>
        </section>
    }
}

/// The run's settings, each a signal its field writes. Cheap to copy.
#[derive(Clone, Copy)]
struct TrainForm {
    condition: RwSignal<Preprocessor>,
    init: RwSignal<ConvInit>,
    lr: RwSignal<f64>,
    batch: RwSignal<u32>,
    prompt_drop: RwSignal<f64>,
    steps: RwSignal<u64>,
    probe_every: RwSignal<u64>,
    seed: RwSignal<u64>,
    examples: RwSignal<u64>,
}

impl TrainForm {
    fn new(defaults: TrainSettings) -> Self {
        Self {
            condition: RwSignal::new(defaults.condition),
            init: RwSignal::new(defaults.init),
            lr: RwSignal::new(defaults.lr),
            batch: RwSignal::new(defaults.batch),
            prompt_drop: RwSignal::new(defaults.prompt_drop),
            steps: RwSignal::new(defaults.steps),
            probe_every: RwSignal::new(defaults.probe_every),
            seed: RwSignal::new(defaults.seed),
            examples: RwSignal::new(defaults.examples),
        }
    }

    /// What the fields say (untracked).
    fn settings(self) -> TrainSettings {
        TrainSettings {
            condition: self.condition.get_untracked(),
            init: self.init.get_untracked(),
            lr: self.lr.get_untracked(),
            batch: self.batch.get_untracked(),
            prompt_drop: self.prompt_drop.get_untracked(),
            seed: self.seed.get_untracked(),
            examples: self.examples.get_untracked(),
            steps: self.steps.get_untracked(),
            probe_every: self.probe_every.get_untracked(),
        }
    }
}

/// The run in the worker and what it sent: its log, its probe grids, the run before it. Cheap
/// to copy.
#[derive(Clone, Copy)]
struct TrainRun {
    session: GpuSession,
    id: RwSignal<Option<u32>>,
    status: RwSignal<Status>,
    lines: RwSignal<Vec<LogLine>>,
    /// Steps per second, as the worker measured the last.
    rate: RwSignal<f64>,
    shots: RwSignal<Vec<Shot>>,
    /// The log as a JSONL file, for the download link.
    log_url: RwSignal<Option<String>>,
    planned: RwSignal<u64>,
    /// The probe grid at a conditioning scale other than 1.
    rescaled: RwSignal<Option<Shot>>,
    scale: RwSignal<f64>,
    /// The name under which the ControlNet was given to the generator.
    added: RwSignal<Option<String>>,
    label: RwSignal<String>,
    previous: RwSignal<Option<Previous>>,
}

impl TrainRun {
    fn new(session: GpuSession, planned: u64) -> Self {
        Self {
            session,
            id: RwSignal::new(None),
            status: RwSignal::new(Status::Idle),
            lines: RwSignal::new(Vec::new()),
            rate: RwSignal::new(0.0),
            shots: RwSignal::new(Vec::new()),
            log_url: RwSignal::new(None),
            planned: RwSignal::new(planned),
            rescaled: RwSignal::new(None),
            scale: RwSignal::new(1.0),
            added: RwSignal::new(None),
            label: RwSignal::new(String::new()),
            previous: RwSignal::new(None),
        }
    }

    /// Sends `request(id)` for the current run, if there is one.
    fn send(self, request: impl FnOnce(u32) -> Request) -> bool {
        let Some(id) = self.id.get_untracked() else { return false };
        self.session.send(request(id));
        true
    }

    fn start(self, settings: TrainSettings) {
        self.keep_as_previous();
        self.clear();
        let id = self.session.next_id();
        self.id.set(Some(id));
        self.planned.set(settings.steps);
        self.status.set(Status::Starting);
        self.label.set(run_label(&settings));
        self.session.send(Request::TrainStart { id, settings });
    }

    /// The run so far becomes the one to compare with; its latest grid is kept, not revoked.
    fn keep_as_previous(self) {
        if self.lines.with_untracked(Vec::is_empty) {
            return;
        }
        let shot = self.shots.try_update(Vec::pop).flatten();
        let kept = Previous {
            label: self.label.get_untracked(),
            loss_ema: self.lines.with_untracked(|l| l.iter().map(|l| (l.step as f64, l.loss_ema)).collect()),
            adherence: self
                .shots
                .with_untracked(|s| s.iter().map(|s| (s.step as f64, s.adherence)).collect()),
            shot,
        };
        self.forget_previous();
        self.previous.set(Some(kept));
    }

    fn forget_previous(self) {
        if let Some(Previous { shot: Some(old), .. }) = self.previous.get_untracked() {
            revoke(&old.url);
        }
        self.previous.set(None);
    }

    /// The current run's pictures and log, gone (their URLs let go).
    fn clear(self) {
        self.shots.update(|shots| shots.drain(..).for_each(|s| revoke(&s.url)));
        if let Some(url) = self.log_url.get_untracked() {
            revoke(&url);
        }
        self.log_url.set(None);
        if let Some(shot) = self.rescaled.get_untracked() {
            revoke(&shot.url);
        }
        self.rescaled.set(None);
        self.scale.set(1.0);
        self.added.set(None);
        self.lines.set(Vec::new());
        self.rate.set(0.0);
    }

    fn pause(self) {
        self.send(|id| Request::TrainPause { id });
    }

    fn resume(self) {
        if self.send(|id| Request::TrainResume { id }) {
            self.status.set(Status::Running);
        }
    }

    /// Reset: the run discarded in the worker, and every picture here with it.
    fn reset(self) {
        self.send(|id| Request::TrainPause { id });
        self.send(|id| Request::TrainDiscard { id });
        self.id.set(None);
        self.status.set(Status::Idle);
        self.clear();
        self.forget_previous();
    }

    /// Leaving the view pauses a run that is stepping.
    fn pause_now(self) {
        if self.status.with_untracked(Status::busy) {
            self.pause();
        }
    }

    /// The worker restarted: a run it held is lost.
    fn lost(self) {
        if matches!(self.status.get_untracked(), Status::Starting | Status::Running | Status::Paused) {
            self.status.set(Status::Failed("the worker restarted: the run is lost; start again".into()));
        }
    }

    /// The probe again at conditioning scale `scale`.
    fn rescale(self, scale: f64) {
        self.scale.set(scale);
        self.send(|id| Request::TrainProbe { id, scale });
    }

    /// The log as JSONL, the format `controlnet train` writes, for the download link.
    fn publish_log(self) {
        let text: String = self.lines.with_untracked(|lines| {
            lines.iter().map(|l| serde_json::to_string(l).expect("JSON") + "\n").collect()
        });
        if let Some(url) = self.log_url.get_untracked() {
            revoke(&url);
        }
        let blob = web_sys::Blob::new_with_str_sequence(&js_sys::Array::of1(&text.into()));
        self.log_url.set(blob.ok().and_then(|b| web_sys::Url::create_object_url_with_blob(&b).ok()));
    }

    /// The worker's answers to the current run.
    fn answer(self, response: &Response) {
        let Some(current) = self.id.get_untracked() else { return };
        match response {
            Response::TrainStep { id, line, steps_per_second } if *id == current => {
                self.status.set(Status::Running);
                self.lines.update(|lines| lines.push(line.clone()));
                self.rate.set(*steps_per_second);
            }
            Response::TrainProbe { id, step, scale, png, differing, adherence, .. } if *id == current => {
                if self.status.get_untracked() == Status::Starting {
                    self.status.set(Status::Running);
                }
                match blob_url(&Uint8Array::from(&png[..])) {
                    Ok(url) => {
                        let shot = Shot {
                            step: *step,
                            scale: *scale,
                            url,
                            differing: differing.clone(),
                            adherence: *adherence,
                        };
                        self.add_shot(shot);
                    }
                    Err(message) => self.status.set(Status::Failed(message)),
                }
            }
            Response::ControlNetAdded { id, name, preprocessor, weight_bytes } if *id == current => {
                self.session.models.update(|models| {
                    if let Some(models) = models {
                        models.controlnets.push(name.clone());
                        models.preprocessors.push(preprocessor.control_kind().map(str::to_owned));
                        if let Some(memory) = &mut models.memory {
                            memory.controlnet_weight_bytes.push(*weight_bytes);
                        }
                    }
                });
                self.added.set(Some(name.clone()));
            }
            Response::TrainStopped { id, finished, .. } if *id == current => {
                self.status.set(if *finished { Status::Finished } else { Status::Paused });
                self.publish_log();
            }
            Response::Error { id: Some(id), message } if *id == current => {
                self.status.set(Status::Failed(message.clone()));
                self.publish_log();
            }
            _ => {}
        }
    }

    /// A probe grid: at scale 1 a point of the run's curve; at another scale a look, replacing the
    /// last look.
    fn add_shot(self, shot: Shot) {
        if shot.scale != 1.0 {
            if let Some(old) = self.rescaled.get_untracked() {
                revoke(&old.url);
            }
            self.rescaled.set(Some(shot));
        } else {
            self.shots.update(|shots| shots.push(shot));
        }
    }
}

/// The run's fields: condition, convolutions, learning rate, batch, prompt drop, steps, and more.
#[component]
fn TrainSettingsForm(form: TrainForm) -> impl IntoView {
    let TrainForm { condition, init, lr, batch, prompt_drop, steps, probe_every, seed, examples } = form;
    let conditions: Vec<Preprocessor> = shapes::CONTROLNETS.iter().map(|(_, p)| *p).collect();
    view! {
        <div class="train-settings">
            <label>
                "Condition "
                <select
                    data-testid="train-condition"
                    on:change=move |event| {
                        if let Some(p) = Preprocessor::from_name(&event_target_value(&event)) {
                            condition.set(p);
                        }
                    }
                >
                    {conditions.into_iter().map(|p| view! {
                        <option value=p.name() selected=move || condition.get() == p>{p.label()}</option>
                    }).collect_view()}
                </select>
            </label>
            <label>
                "Convolutions start "
                <select
                    data-testid="train-init"
                    on:change=move |event| {
                        init.set(if event_target_value(&event) == "gaussian" { ConvInit::Gaussian } else { ConvInit::Zero });
                    }
                >
                    <option value="zero" selected=move || init.get() == ConvInit::Zero>"at zero (the paper)"</option>
                    <option value="gaussian" selected=move || init.get() == ConvInit::Gaussian>"Gaussian (the ablation)"</option>
                </select>
            </label>
            <NumberInput label="Learning rate" value=lr testid="train-lr" step="any" />
            <NumberInput label="Batch" value=batch testid="train-batch" step="1" />
            <NumberInput label="Prompt drop" value=prompt_drop testid="train-prompt-drop" step="0.05" />
            <NumberInput label="Steps" value=steps testid="train-steps" step="1" />
            <details>
                <summary>"More"</summary>
                <NumberInput label="Probe every (steps)" value=probe_every testid="train-probe-every" step="1" />
                <NumberInput label="Seed" value=seed testid="train-seed" step="1" />
                <NumberInput label="World examples" value=examples testid="train-examples" step="1" />
            </details>
        </div>
    }
}

/// Train, Pause, Resume, Reset, the status line and the log's download link.
#[component]
fn TrainControls(run: TrainRun, form: TrainForm, shapes_loaded: Signal<bool>) -> impl IntoView {
    let TrainRun { status, lines, planned, rate, log_url, .. } = run;
    view! {
        <div class="learn-controls">
            <button
                data-testid="train-start"
                disabled=move || status.with(Status::busy) || !shapes_loaded.get()
                on:click=move |_| run.start(form.settings())
            >
                "Train"
            </button>
            <button data-testid="train-pause" disabled=move || status.get() != Status::Running on:click=move |_| run.pause()>
                "Pause"
            </button>
            <button
                data-testid="train-resume"
                disabled=move || status.get() != Status::Paused
                on:click=move |_| run.resume()
            >
                "Resume"
            </button>
            <button data-testid="train-reset" disabled=move || status.get() == Status::Idle on:click=move |_| run.reset()>
                "Reset"
            </button>
            <output data-testid="train-status" data-status=move || status.with(Status::name)>
                {move || {
                    let step = lines.with(|l| l.last().map_or(0, |l| l.step));
                    status.with(|status| status.text(step, planned.get(), rate.get()))
                }}
            </output>
            {move || log_url.get().map(|url| view! {
                <a data-testid="train-log" href=url download="log.jsonl">"Download the log (JSONL)"</a>
            })}
        </div>
    }
}

/// The live charts (loss, zero-convolution norms, residuals, adherence), with the recipe's own
/// run and the previous run behind them, and the step where adherence jumped.
#[component]
fn TrainCharts(run: TrainRun, condition: RwSignal<Preprocessor>) -> impl IntoView {
    let TrainRun { lines, shots, previous, planned, .. } = run;
    let cursor = RwSignal::new(0u64);
    Effect::new(move || cursor.set(lines.with(|l| l.last().map_or(0, |l| l.step))));
    // The recipe's own run on the chosen maps, drawn behind the live loss for reference.
    let reference = LocalResource::new(move || {
        let run = shapes::controlnet_for(condition.get());
        async move {
            match run {
                Some(run) => load(run).await.ok().map(|replay| replay.lines),
                None => None,
            }
        }
    });
    view! {
        <div class="learn-charts">
            {move || {
                let steps = planned.get().max(cursor.get());
                let (mut loss, norms, residuals) = lines.with(|lines| log_series(lines));
                if let Some(Some(recipe)) = reference.get() {
                    loss.insert(0, recipe_series(&recipe, steps));
                }
                let mut adherence = vec![Series {
                    label: "shape IoU on the probes".into(),
                    colour: "hsl(140 60% 35%)".into(),
                    width: 2.2,
                    points: shots.with(|s| s.iter().map(|s| (s.step as f64, s.adherence)).collect()),
                }];
                if let Some(before) = previous.get() {
                    let [previous_loss, previous_adherence] = before.series(steps);
                    loss.push(previous_loss);
                    adherence.push(previous_adherence);
                }
                view! {
                    <Chart title="Loss (ε-prediction MSE)" testid="train-loss" y_label="loss" steps series=loss cursor />
                    <Chart title="Zero convolutions: weight norm, shallow to deep" testid="train-norms" y_label="‖W‖" steps series=norms cursor />
                    <Chart title="The residual each adds (mean magnitude)" testid="train-residuals" y_label="|residual|" steps series=residuals cursor />
                    <Chart title="Adherence: how well the images follow the condition" testid="train-adherence" y_label="IoU" steps series=adherence cursor />
                }
            }}
            <p data-testid="train-jump">
                {move || shots.with(|s| jump(s)).map(|(step, before, after)| format!(
                    "Adherence rose most by step {step}: IoU {} → {}.", short(before), short(after)
                ))}
            </p>
        </div>
    }
}

/// The recipe's run's smoothed loss up to `steps`.
fn recipe_series(recipe: &[LogLine], steps: u64) -> Series {
    Series {
        label: "the recipe's run (smoothed)".into(),
        colour: "hsl(30 80% 60%)".into(),
        width: 1.4,
        points: recipe.iter().filter(|l| l.step <= steps).map(|l| (l.step as f64, l.loss_ema)).collect(),
    }
}

/// The first and the latest probe grid of the run, and the previous run's last.
#[component]
fn ProbeShots(run: TrainRun) -> impl IntoView {
    let TrainRun { shots, previous, .. } = run;
    view! {
        {move || shots.with(|shots| {
            let first = shots.first().cloned();
            let latest = shots.last().cloned().filter(|_| shots.len() > 1);
            [first, latest].into_iter().flatten().map(|shot| view! { <ProbeShot shot /> }).collect_view()
        })}
        {move || previous.get().and_then(|p| p.shot.map(|shot| (p.label, shot))).map(|(label, shot)| view! {
            <figure class="train-probe" data-testid="train-probe-previous" data-step=shot.step.to_string()>
                <img src=shot.url.clone() alt=format!("The previous run's probe grid at step {}", shot.step) />
                <figcaption>{format!(
                    "The previous run ({label}) at step {}: shape IoU {}.", shot.step, short(shot.adherence)
                )}</figcaption>
            </figure>
        })}
    }
}

/// One probe grid of the run, and how far it differs from the locked model's images.
#[component]
fn ProbeShot(shot: Shot) -> impl IntoView {
    let testid = if shot.step == 0 { "train-probe-first" } else { "train-probe-latest" };
    let counts = shot.counts();
    let caption = shot.caption();
    view! {
        <figure class="train-probe" data-testid=testid data-step=shot.step.to_string() data-differing=counts>
            <img src=shot.url.clone() alt=format!("The probe grid at step {}", shot.step) />
            <figcaption>
                {format!("Step {}: condition · locked model alone · with the ControlNet. ", shot.step)}
                {caption}
            </figcaption>
        </figure>
    }
}

/// The probe at another conditioning scale, and "Use this ControlNet in the generator".
#[component]
fn UseControlNet(run: TrainRun, shapes_loaded: Signal<bool>) -> impl IntoView {
    let TrainRun { status, scale, rescaled, added, .. } = run;
    let stopped = move || matches!(status.get(), Status::Paused | Status::Finished);
    view! {
        <div class="train-use" data-testid="train-use-panel">
            <label>
                "Conditioning scale "
                <input
                    type="range"
                    min="0"
                    max="2"
                    step="0.1"
                    data-testid="train-scale"
                    disabled=move || !stopped()
                    prop:value=move || scale.get().to_string()
                    on:change=move |event| {
                        if let Ok(value) = event_target_value(&event).parse::<f64>() {
                            run.rescale(value);
                        }
                    }
                />
                <output>{move || format!("{:.1}", scale.get())}</output>
            </label>
            <p class="hint">"Paused or finished: the probe again at another scale (every residual times it)."</p>
            {move || rescaled.get().map(|shot| view! {
                <figure class="train-probe" data-testid="train-probe-scaled" data-scale=shot.scale.to_string()
                    data-differing=shot.counts()>
                    <img src=shot.url.clone() alt=format!("The probe grid at scale {}", shot.scale) />
                    <figcaption>{format!(
                        "Step {} at scale {:.1}: shape IoU {}.", shot.step, shot.scale, short(shot.adherence)
                    )}</figcaption>
                </figure>
            })}
            <button
                data-testid="train-use"
                disabled=move || !stopped() || !shapes_loaded.get()
                on:click=move |_| { run.send(|id| Request::TrainUse { id }); }
            >
                "Use this ControlNet in the generator"
            </button>
            {move || added.get().map(|name| view! {
                <p class="notice" data-testid="train-added">
                    {format!("Added to the loaded models as “{name}”: choose it in a control unit (")}
                    <a href="#">"back to making images"</a>")."
                </p>
            })}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(step: u64, adherence: f64) -> Shot {
        Shot { step, scale: 1.0, url: String::new(), differing: vec![0, 0], adherence }
    }

    #[test]
    fn the_status_line_says_where_the_run_stands() {
        assert_eq!(Status::Idle.text(0, 300, 0.0), "");
        assert!(Status::Starting.text(0, 300, 0.0).starts_with("Starting: a fresh ControlNet"));
        assert_eq!(Status::Running.text(12, 300, 1.234), "training: step 12 / 300, 1.23 steps/s");
        assert_eq!(Status::Paused.text(12, 300, 1.0), "paused: step 12 / 300, 1.00 steps/s");
        assert_eq!(Status::Finished.text(300, 300, 2.0), "finished: step 300 / 300, 2.00 steps/s");
        assert_eq!(Status::Failed("out of memory".into()).text(3, 300, 1.0), "out of memory");
        assert_eq!(Status::Failed(String::new()).name(), "failed");
        assert!(Status::Starting.busy() && Status::Running.busy() && !Status::Paused.busy());
    }

    #[test]
    fn the_jump_is_the_largest_rise_between_probes() {
        let shots = [shot(0, 0.1), shot(100, 0.15), shot(200, 0.6), shot(300, 0.65), shot(400, 0.5)];
        assert_eq!(jump(&shots), Some((200, 0.15, 0.6)));
        assert_eq!(jump(&[shot(0, 0.5), shot(100, 0.4)]), None, "no rise, no jump");
        assert_eq!(jump(&[]), None);
    }

    #[test]
    fn a_probe_says_whether_it_equals_the_locked_model() {
        assert_eq!(shot(0, 0.2).caption(), "Identical to the locked model's images, pixel for pixel.");
        let moved = Shot { differing: vec![12, 0], ..shot(100, 0.25) };
        assert_eq!(moved.counts(), "12, 0");
        let pixels = shapes::SIDE * shapes::SIDE;
        assert_eq!(
            moved.caption(),
            format!("Pixels differing from the locked model's: 12, 0 of {pixels} each. Shape IoU 0.2500.")
        );
    }

    #[test]
    fn the_previous_run_is_drawn_up_to_the_steps_shown() {
        let before = Previous {
            label: "canny, zero convs".into(),
            loss_ema: vec![(0.0, 1.0), (10.0, 0.5), (20.0, 0.4)],
            adherence: vec![(0.0, 0.1), (20.0, 0.3)],
            shot: None,
        };
        let [loss, adherence] = before.series(10);
        assert_eq!(loss.points, [(0.0, 1.0), (10.0, 0.5)]);
        assert_eq!(adherence.points, [(0.0, 0.1)]);
        assert_eq!(loss.label, "previous run (canny, zero convs), smoothed");
    }
}
