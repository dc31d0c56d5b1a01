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

/// A probe grid the run sent.
#[derive(Clone, Debug, PartialEq)]
struct Shot {
    step: u64,
    scale: f64,
    url: String,
    differing: Vec<u32>,
    adherence: f64,
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
    let defaults = TrainSettings::for_backend(session.backend);
    let condition = RwSignal::new(defaults.condition);
    let init = RwSignal::new(defaults.init);
    let lr = RwSignal::new(defaults.lr);
    let batch = RwSignal::new(defaults.batch);
    let prompt_drop = RwSignal::new(defaults.prompt_drop);
    let steps = RwSignal::new(defaults.steps);
    let probe_every = RwSignal::new(defaults.probe_every);
    let seed = RwSignal::new(defaults.seed);
    let examples = RwSignal::new(defaults.examples);

    let run = RwSignal::new(None::<u32>);
    let status = RwSignal::new(Status::Idle);
    let lines = RwSignal::new(Vec::<LogLine>::new());
    let rate = RwSignal::new(0.0f64);
    let shots = RwSignal::new(Vec::<Shot>::new());
    let log_url = RwSignal::new(None::<String>);
    let planned = RwSignal::new(defaults.steps);
    // The probe grid at a conditioning scale other than 1, and the ControlNets given to the
    // generator.
    let rescaled = RwSignal::new(None::<Shot>);
    let scale = RwSignal::new(1.0f64);
    let added = RwSignal::new(None::<String>);
    let label = RwSignal::new(String::new());
    let previous = RwSignal::new(None::<Previous>);

    let shapes_loaded =
        move || session.models.with(|m| m.as_ref().is_some_and(|m| m.pipeline == shapes::REPO));
    let clear = move || {
        shots.update(|shots| shots.drain(..).for_each(|s| revoke(&s.url)));
        if let Some(url) = log_url.get_untracked() {
            revoke(&url);
        }
        log_url.set(None);
        if let Some(shot) = rescaled.get_untracked() {
            revoke(&shot.url);
        }
        rescaled.set(None);
        scale.set(1.0);
        added.set(None);
        lines.set(Vec::new());
        rate.set(0.0);
    };
    // The log as JSONL, the format `controlnet train` writes, for the download link.
    let publish_log = move || {
        let text: String = lines.with_untracked(|lines| {
            lines.iter().map(|l| serde_json::to_string(l).expect("JSON") + "\n").collect()
        });
        if let Some(url) = log_url.get_untracked() {
            revoke(&url);
        }
        let blob = web_sys::Blob::new_with_str_sequence(&js_sys::Array::of1(&text.into()));
        log_url.set(blob.ok().and_then(|b| web_sys::Url::create_object_url_with_blob(&b).ok()));
    };

    session.listen(move |response| {
        let Some(id) = run.get_untracked() else { return };
        match response {
            Response::TrainStep { id: r, line, steps_per_second } if *r == id => {
                status.set(Status::Running);
                lines.update(|lines| lines.push(line.clone()));
                rate.set(*steps_per_second);
            }
            Response::TrainProbe { id: r, step, scale, png, differing, adherence, .. } if *r == id => {
                if status.get_untracked() == Status::Starting {
                    status.set(Status::Running);
                }
                let shot = |url| Shot {
                    step: *step,
                    scale: *scale,
                    url,
                    differing: differing.clone(),
                    adherence: *adherence,
                };
                match blob_url(&Uint8Array::from(&png[..])) {
                    // A grid at another scale is a look, not a point of the run's curve.
                    Ok(url) if *scale != 1.0 => {
                        if let Some(old) = rescaled.get_untracked() {
                            revoke(&old.url);
                        }
                        rescaled.set(Some(shot(url)));
                    }
                    Ok(url) => shots.update(|shots| shots.push(shot(url))),
                    Err(message) => status.set(Status::Failed(message)),
                }
            }
            Response::ControlNetAdded { id: r, name, preprocessor, weight_bytes } if *r == id => {
                session.models.update(|models| {
                    if let Some(models) = models {
                        models.controlnets.push(name.clone());
                        models.preprocessors.push(preprocessor.control_kind().map(str::to_owned));
                        if let Some(memory) = &mut models.memory {
                            memory.controlnet_weight_bytes.push(*weight_bytes);
                        }
                    }
                });
                added.set(Some(name.clone()));
            }
            Response::TrainStopped { id: r, finished, .. } if *r == id => {
                status.set(if *finished { Status::Finished } else { Status::Paused });
                publish_log();
            }
            Response::Error { id: Some(r), message } if *r == id => {
                status.set(Status::Failed(message.clone()));
                publish_log();
            }
            _ => {}
        }
    });
    // A restarted worker has lost the run.
    Effect::watch(
        move || session.restarts().get(),
        move |_, _, _| {
            if matches!(status.get_untracked(), Status::Starting | Status::Running | Status::Paused) {
                status.set(Status::Failed("the worker restarted: the run is lost; start again".into()));
            }
        },
        false,
    );

    let start = move |_| {
        // The run so far becomes the one to compare with; its latest grid is kept, not revoked.
        if lines.with_untracked(|l| !l.is_empty()) {
            let shot = shots.try_update(|shots| shots.pop()).flatten();
            let kept = Previous {
                label: label.get_untracked(),
                loss_ema: lines.with_untracked(|l| l.iter().map(|l| (l.step as f64, l.loss_ema)).collect()),
                adherence: shots.with_untracked(|s| s.iter().map(|s| (s.step as f64, s.adherence)).collect()),
                shot,
            };
            if let Some(Previous { shot: Some(old), .. }) = previous.get_untracked() {
                revoke(&old.url);
            }
            previous.set(Some(kept));
        }
        clear();
        let id = session.next_id();
        run.set(Some(id));
        planned.set(steps.get_untracked());
        status.set(Status::Starting);
        let settings = TrainSettings {
            condition: condition.get_untracked(),
            init: init.get_untracked(),
            lr: lr.get_untracked(),
            batch: batch.get_untracked(),
            prompt_drop: prompt_drop.get_untracked(),
            seed: seed.get_untracked(),
            examples: examples.get_untracked(),
            steps: steps.get_untracked(),
            probe_every: probe_every.get_untracked(),
        };
        label.set(run_label(&settings));
        session.send(Request::TrainStart { id, settings });
    };
    let pause = move |_| {
        if let Some(id) = run.get_untracked() {
            session.send(Request::TrainPause { id });
        }
    };
    let resume = move |_| {
        if let Some(id) = run.get_untracked() {
            status.set(Status::Running);
            session.send(Request::TrainResume { id });
        }
    };
    let reset = move |_| {
        if let Some(id) = run.get_untracked() {
            session.send(Request::TrainPause { id });
            session.send(Request::TrainDiscard { id });
        }
        run.set(None);
        status.set(Status::Idle);
        clear();
        if let Some(Previous { shot: Some(old), .. }) = previous.get_untracked() {
            revoke(&old.url);
        }
        previous.set(None);
    };
    let pause_now = move || {
        if let Some(id) = run.get_untracked()
            && matches!(status.get_untracked(), Status::Starting | Status::Running)
        {
            session.send(Request::TrainPause { id });
        }
    };
    Effect::watch(
        move || learning.get(),
        move |shown, _, _| {
            if !shown {
                pause_now();
            }
        },
        false,
    );
    on_cleanup(pause_now);

    let rescale = move |event| {
        let Ok(value) = event_target_value(&event).parse::<f64>() else { return };
        scale.set(value);
        if let Some(id) = run.get_untracked() {
            session.send(Request::TrainProbe { id, scale: value });
        }
    };
    let use_it = move |_| {
        if let Some(id) = run.get_untracked() {
            session.send(Request::TrainUse { id });
        }
    };
    let stopped = move || matches!(status.get(), Status::Paused | Status::Finished);
    let busy = move || matches!(status.get(), Status::Starting | Status::Running);
    let cursor = RwSignal::new(0u64);
    Effect::new(move || cursor.set(lines.with(|l| l.last().map_or(0, |l| l.step))));
    let last = Signal::derive(move || lines.with(|l| l.last().cloned()));

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

    let conditions: Vec<Preprocessor> = shapes::CONTROLNETS.iter().map(|(_, p)| *p).collect();
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
            <Show when=move || !shapes_loaded()>
                <p class="notice" data-testid="train-needs-shapes">
                    "Training here uses the built-in shapes models: load the Shapes preset in the \
                     generator's models panel (it loads on first open)."
                </p>
            </Show>
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
            <div class="learn-controls">
                <button data-testid="train-start" disabled=move || busy() || !shapes_loaded() on:click=start>
                    "Train"
                </button>
                <button data-testid="train-pause" disabled=move || status.get() != Status::Running on:click=pause>
                    "Pause"
                </button>
                <button
                    data-testid="train-resume"
                    disabled=move || status.get() != Status::Paused
                    on:click=resume
                >
                    "Resume"
                </button>
                <button data-testid="train-reset" disabled=move || status.get() == Status::Idle on:click=reset>
                    "Reset"
                </button>
                <output data-testid="train-status" data-status=move || match status.get() {
                    Status::Idle => "idle",
                    Status::Starting => "starting",
                    Status::Running => "running",
                    Status::Paused => "paused",
                    Status::Finished => "finished",
                    Status::Failed(_) => "failed",
                }>
                    {move || match status.get() {
                        Status::Idle => String::new(),
                        Status::Starting => "Starting: a fresh ControlNet, the probes' base images…".to_owned(),
                        Status::Failed(message) => message,
                        other => {
                            let step = lines.with(|l| l.last().map_or(0, |l| l.step));
                            let word = match other {
                                Status::Paused => "paused",
                                Status::Finished => "finished",
                                _ => "training",
                            };
                            format!("{word}: step {step} / {}, {:.2} steps/s", planned.get(), rate.get())
                        }
                    }}
                </output>
                {move || log_url.get().map(|url| view! {
                    <a data-testid="train-log" href=url download="log.jsonl">"Download the log (JSONL)"</a>
                })}
            </div>
            <div class="learn-grid">
                <div class="learn-charts">
                    {move || {
                        let steps = planned.get().max(cursor.get());
                        let (mut loss, norms, residuals) = lines.with(|lines| log_series(lines));
                        if let Some(Some(recipe)) = reference.get() {
                            loss.insert(0, Series {
                                label: "the recipe's run (smoothed)".into(),
                                colour: "hsl(30 80% 60%)".into(),
                                width: 1.4,
                                points: recipe
                                    .iter()
                                    .filter(|l| l.step <= steps)
                                    .map(|l| (l.step as f64, l.loss_ema))
                                    .collect(),
                            });
                        }
                        let mut adherence = vec![Series {
                            label: "shape IoU on the probes".into(),
                            colour: "hsl(140 60% 35%)".into(),
                            width: 2.2,
                            points: shots.with(|s| s.iter().map(|s| (s.step as f64, s.adherence)).collect()),
                        }];
                        if let Some(before) = previous.get() {
                            let clip = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
                                points.iter().copied().filter(|p| p.0 <= steps as f64).collect()
                            };
                            loss.push(Series {
                                label: format!("previous run ({}), smoothed", before.label),
                                colour: "hsl(0 0% 55%)".into(),
                                width: 1.6,
                                points: clip(&before.loss_ema),
                            });
                            adherence.push(Series {
                                label: format!("previous run ({})", before.label),
                                colour: "hsl(0 0% 55%)".into(),
                                width: 1.6,
                                points: clip(&before.adherence),
                            });
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
                <div class="learn-side">
                    {move || shots.with(|shots| {
                        let first = shots.first().cloned();
                        let latest = shots.last().cloned().filter(|_| shots.len() > 1);
                        [first, latest].into_iter().flatten().map(|shot| {
                            let testid = if shot.step == 0 { "train-probe-first" } else { "train-probe-latest" };
                            let same = shot.differing.iter().all(|&d| d == 0);
                            let pixels = (shapes::SIDE * shapes::SIDE) as usize;
                            let counts = shot.differing.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
                            view! {
                                <figure class="train-probe" data-testid=testid data-step=shot.step.to_string()
                                    data-differing=counts.clone()>
                                    <img src=shot.url.clone() alt=format!("The probe grid at step {}", shot.step) />
                                    <figcaption>
                                        {format!("Step {}: condition · locked model alone · with the ControlNet. ", shot.step)}
                                        {if same {
                                            "Identical to the locked model's images, pixel for pixel.".to_owned()
                                        } else {
                                            format!(
                                                "Pixels differing from the locked model's: {counts} of {pixels} each. Shape IoU {}.",
                                                short(shot.adherence)
                                            )
                                        }}
                                    </figcaption>
                                </figure>
                            }
                        }).collect_view()
                    })}
                    {move || previous.get().and_then(|p| p.shot.map(|shot| (p.label, shot))).map(|(label, shot)| view! {
                        <figure class="train-probe" data-testid="train-probe-previous" data-step=shot.step.to_string()>
                            <img src=shot.url.clone() alt=format!("The previous run's probe grid at step {}", shot.step) />
                            <figcaption>{format!(
                                "The previous run ({label}) at step {}: shape IoU {}.", shot.step, short(shot.adherence)
                            )}</figcaption>
                        </figure>
                    })}
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
                                on:change=rescale
                            />
                            <output>{move || format!("{:.1}", scale.get())}</output>
                        </label>
                        <p class="hint">"Paused or finished: the probe again at another scale (every residual times it)."</p>
                        {move || rescaled.get().map(|shot| {
                            let counts = shot.differing.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
                            view! {
                            <figure class="train-probe" data-testid="train-probe-scaled" data-scale=shot.scale.to_string()
                                data-differing=counts>
                                <img src=shot.url.clone() alt=format!("The probe grid at scale {}", shot.scale) />
                                <figcaption>{format!(
                                    "Step {} at scale {:.1}: shape IoU {}.", shot.step, shot.scale, short(shot.adherence)
                                )}</figcaption>
                            </figure>
                            }
                        })}
                        <button data-testid="train-use" disabled=move || !stopped() || !shapes_loaded() on:click=use_it>
                            "Use this ControlNet in the generator"
                        </button>
                        {move || added.get().map(|name| view! {
                            <p class="notice" data-testid="train-added">
                                {format!("Added to the loaded models as “{name}”: choose it in a control unit (")}
                                <a href="#">"back to making images"</a>")."
                            </p>
                        })}
                    </div>
                    <Diagram line=last />
                </div>
            </div>
        </section>
    }
}
