//! The Learn view (`#learn`): how a ControlNet learns, replayed from the recipe's own training
//! runs (their logs and sample images ship with the site beside the shapes models). A step
//! slider (or Play) scrubs through a whole run: the loss, each zero convolution's weight norm and
//! the residual it adds, and the sample the run made at its last checkpoint, beside the paper's
//! picture of the locked copy, the trainable copy and the zero convolutions with the numbers of
//! the step.
//!
//! The charts are SVG written by Leptos, not a plotting crate: a few polylines and ticks are
//! short to write, scale crisply on any screen, follow the step signal without redrawing a
//! canvas, and stay in the DOM, where the browser test reads what was drawn.

use std::time::Duration;

use leptos::prelude::*;
use web::models::SHAPES;
use web::protocol::vocabulary::training::{self, LogLine};
use web::protocol::vocabulary::{Named, shapes};

use super::site_hub;
use super::train::TrainHere;
use crate::session::GpuSession;

/// The address fragment that opens this view.
pub const HASH: &str = "#learn";

/// A replayed run: its log, and the steps it has sample images for.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Replay {
    pub lines: Vec<LogLine>,
    /// Each sample's step and URL, by step.
    samples: Vec<(u64, String)>,
}

async fn fetch_text(url: &str) -> Result<String, String> {
    let response = gloo_net::http::Request::get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !response.ok() {
        return Err(format!("{url}: the server answered {}", response.status()));
    }
    response.text().await.map_err(|e| format!("{url}: {e}"))
}

/// The run `run` (a ControlNet's folder in [`shapes::CONTROLNETS`]) from the site.
pub(super) async fn load(run: &'static str) -> Result<Replay, String> {
    let source = SHAPES.model_ref(&site_hub()?, false).source;
    let folder = format!("{}/{run}/", shapes::LOGS);
    let text = fetch_text(&source.url(&format!("{folder}{}", training::LOG_FILE))).await?;
    let lines = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str::<LogLine>(line).map_err(|e| format!("{run}'s log, line {}: {e}", n + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if lines.is_empty() {
        return Err(format!("{run}'s log is empty"));
    }
    // Which samples there are: the site's Hub-style API lists the repository's files.
    let api: serde_json::Value = serde_json::from_str(&fetch_text(&source.api_url()).await?)
        .map_err(|e| format!("the file list: {e}"))?;
    let mut samples: Vec<(u64, String)> = api["siblings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sibling| {
            let path = sibling["rfilename"].as_str()?;
            let step = training::sample_step(path.strip_prefix(&folder)?)?;
            Some((step, source.url(path)))
        })
        .collect();
    samples.sort();
    Ok(Replay { lines, samples })
}

/// Shallow (light) to deep (dark), for zero convolution `i` of `n`.
fn depth_colour(i: usize, n: usize) -> String {
    let t = if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
    format!("hsl({:.0} 70% {:.0}%)", 185.0 + 95.0 * t, 58.0 - 28.0 * t)
}

/// A number with four significant digits.
pub(super) fn short(value: f64) -> String {
    if value == 0.0 {
        "0".to_owned()
    } else if value.abs() >= 0.01 {
        format!("{value:.4}")
    } else {
        format!("{value:.3e}")
    }
}

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Series {
    pub label: String,
    pub colour: String,
    pub width: f64,
    /// `(step, value)`.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 30.0;

/// Round numbers near `max` for an axis: 1, 2 or 5 times a power of ten.
fn nice(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|v| *v >= max).unwrap_or(10.0 * power)
}

/// Where steps and values go in a chart's SVG (its viewBox is `WIDTH × HEIGHT`): steps
/// `0..=steps` across the plot, values `0..=y_max` up it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Axes {
    steps: u64,
    y_max: f64,
}

impl Axes {
    const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
    const PLOT_HEIGHT: f64 = HEIGHT - TOP - BOTTOM;

    /// Axes for `series` over `steps`: up to a round number above the largest value.
    fn new(steps: u64, series: &[Series]) -> Self {
        Axes {
            steps,
            y_max: nice(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max)),
        }
    }

    fn x(self, step: f64) -> f64 {
        LEFT + Self::PLOT_WIDTH * step / self.steps.max(1) as f64
    }

    fn y(self, value: f64) -> f64 {
        TOP + Self::PLOT_HEIGHT * (1.0 - value / self.y_max)
    }

    /// The step under a pointer `fraction` of the way across the whole chart (from 1).
    fn step_at(self, fraction: f64) -> u64 {
        let at = fraction * WIDTH;
        ((at - LEFT) / Self::PLOT_WIDTH * self.steps as f64).round().clamp(1.0, self.steps.max(1) as f64)
            as u64
    }

    /// A series as an SVG polyline's points.
    fn points(self, series: &Series) -> String {
        series
            .points
            .iter()
            .map(|&(step, value)| format!("{:.1},{:.1} ", self.x(step), self.y(value)))
            .collect()
    }
}

/// A line chart of `series` over steps `0..=steps`, with a cursor at `cursor`; moving the
/// pointer over it moves the cursor (the values at the cursor are in the table below).
#[component]
pub(super) fn Chart(
    title: &'static str,
    testid: &'static str,
    y_label: &'static str,
    steps: u64,
    series: Vec<Series>,
    cursor: RwSignal<u64>,
) -> impl IntoView {
    let axes = Axes::new(steps, &series);
    let lines = series
        .iter()
        .map(|s| {
            view! {
                <polyline
                    data-testid=format!("{testid}-line")
                    data-label=s.label.clone()
                    data-points=s.points.len().to_string()
                    points=axes.points(s)
                    fill="none"
                    stroke=s.colour.clone()
                    stroke-width=s.width.to_string()
                    stroke-linejoin="round"
                >
                    <title>{s.label.clone()}</title>
                </polyline>
            }
        })
        .collect_view();
    let on_move = move |event: leptos::ev::PointerEvent| {
        use wasm_bindgen::JsCast;
        let Some(svg) = event.current_target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else {
            return;
        };
        let rect = svg.get_bounding_client_rect();
        if rect.width() > 0.0 {
            cursor.set(axes.step_at((event.client_x() as f64 - rect.left()) / rect.width()));
        }
    };
    let middle = TOP + Axes::PLOT_HEIGHT / 2.0;
    view! {
        <figure class="chart" data-testid=testid>
            <figcaption>{title}</figcaption>
            <svg
                viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                role="img"
                aria-label=title
                on:pointermove=on_move
                on:pointerdown=on_move
            >
                <Ticks axes />
                <text class="axis-label" x=14.0 y=middle transform=format!("rotate(-90 14 {middle})") text-anchor="middle">
                    {y_label}
                </text>
                {lines}
                <line
                    class="cursor"
                    data-testid=format!("{testid}-cursor")
                    x1=move || axes.x(cursor.get() as f64)
                    x2=move || axes.x(cursor.get() as f64)
                    y1=TOP
                    y2=TOP + Axes::PLOT_HEIGHT
                />
            </svg>
            <div class="legend">{(series.len() > 1).then(|| view! { <Legend series /> })}</div>
        </figure>
    }
}

/// The grid lines and the values along both axes.
#[component]
fn Ticks(axes: Axes) -> impl IntoView {
    let y_ticks = (0..=4)
        .map(|i| {
            let value = axes.y_max * i as f64 / 4.0;
            view! {
                <line x1=LEFT x2=WIDTH - RIGHT y1=axes.y(value) y2=axes.y(value) class="grid" />
                <text x=LEFT - 6.0 y=axes.y(value) + 4.0 text-anchor="end">{short(value)}</text>
            }
        })
        .collect_view();
    let x_ticks = (0..=4)
        .map(|i| {
            let step = (axes.steps as f64 * i as f64 / 4.0).round();
            view! { <text x=axes.x(step) y=HEIGHT - 10.0 text-anchor="middle">{step.to_string()}</text> }
        })
        .collect_view();
    view! { {y_ticks} {x_ticks} }
}

/// Each series' colour and name.
#[component]
fn Legend(series: Vec<Series>) -> impl IntoView {
    series
        .into_iter()
        .map(|s| {
            view! {
                <span class="legend-item">
                    <span class="swatch" style:background=s.colour></span>
                    {s.label}
                </span>
            }
        })
        .collect_view()
}

/// The paper's Figure 2 for one block: the locked copy, the trainable copy between two zero
/// convolutions, with the step's numbers on its parts.
#[component]
pub(super) fn Diagram(line: Signal<Option<LogLine>>) -> impl IntoView {
    let norm = move || {
        line.with(|l| l.as_ref().map(|l| l.zero_convs.iter().map(|z| z.weight_norm).sum::<f64>()))
            .unwrap_or(0.0)
    };
    let residual = move || {
        line.with(|l| {
            l.as_ref().map(|l| {
                l.zero_convs.iter().map(|z| z.output_mean).sum::<f64>() / l.zero_convs.len().max(1) as f64
            })
        })
        .unwrap_or(0.0)
    };
    view! {
        <svg class="diagram" data-testid="learn-diagram" viewBox="0 0 560 236" role="img"
            aria-label="A ControlNet block: the locked copy, the trainable copy and two zero convolutions">
            <defs>
                <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse">
                    <path d="M 0 0 L 10 5 L 0 10 z" />
                </marker>
            </defs>
            // x → locked copy → (+) → y
            <text x="10" y="44">"x"</text>
            <line x1="24" y1="40" x2="168" y2="40" marker-end="url(#arrow)" />
            <rect class="locked" x="170" y="20" width="180" height="40" rx="6" />
            <text x="260" y="45" text-anchor="middle">"locked copy (frozen)"</text>
            <line x1="350" y1="40" x2="466" y2="40" marker-end="url(#arrow)" />
            <circle cx="480" cy="40" r="13" class="sum" />
            <text x="480" y="45" text-anchor="middle">"+"</text>
            <line x1="493" y1="40" x2="540" y2="40" marker-end="url(#arrow)" />
            <text x="546" y="44">"y"</text>
            // c → zero conv → (+ x) → trainable copy → zero conv → (+)
            <text x="10" y="194">"c"</text>
            <line x1="24" y1="190" x2="58" y2="190" marker-end="url(#arrow)" />
            <rect class="zero" x="60" y="170" width="70" height="40" rx="6" />
            <text x="95" y="195" text-anchor="middle">"zero conv"</text>
            <line x1="130" y1="190" x2="170" y2="190" marker-end="url(#arrow)" />
            <line x1="96" y1="40" x2="96" y2="130" />
            <line x1="96" y1="130" x2="184" y2="130" />
            <line x1="184" y1="130" x2="184" y2="174" marker-end="url(#arrow)" />
            <circle cx="184" cy="190" r="13" class="sum" />
            <text x="184" y="195" text-anchor="middle">"+"</text>
            <line x1="197" y1="190" x2="228" y2="190" marker-end="url(#arrow)" />
            <rect class="trainable" x="230" y="170" width="160" height="40" rx="6" />
            <text x="310" y="195" text-anchor="middle">"trainable copy"</text>
            <line x1="390" y1="190" x2="408" y2="190" marker-end="url(#arrow)" />
            <rect class="zero" x="410" y="170" width="70" height="40" rx="6" />
            <text x="445" y="195" text-anchor="middle">"zero conv"</text>
            <line x1="480" y1="170" x2="480" y2="55" marker-end="url(#arrow)" />
            {move || line.with(|l| l.as_ref().and_then(|l| l.hint_conv_norm)).map(|norm| view! {
                <text class="live" data-testid="learn-diagram-hint" x="95" y="225" text-anchor="middle">
                    {format!("‖W‖ = {}", short(norm))}
                </text>
            })}
            <text class="live" data-testid="learn-diagram-norm" x="470" y="112" text-anchor="end">
                {move || format!("Σ‖W‖ = {}", short(norm()))}
            </text>
            <text class="live" data-testid="learn-diagram-residual" x="470" y="130" text-anchor="end">
                {move || format!("|residual| ≈ {}", short(residual()))}
            </text>
        </svg>
    }
}

/// The Learn view.
#[component]
pub fn Learn(
    /// The generator's GPU session, once it has started: a run in the tab trains there.
    session: ReadSignal<Option<GpuSession>>,
    /// Whether the view is shown: a run pauses when the visitor leaves it.
    learning: ReadSignal<bool>,
) -> impl IntoView {
    let run = RwSignal::new(shapes::CONTROLNETS[0].0);
    let replay = LocalResource::new(move || load(run.get()));
    view! {
        <section class="panel learn" data-testid="learn">
            <h2>"Watch a ControlNet learn"</h2>
            <p>
                "A ControlNet steers a diffusion model it never changes. It clones the model's encoder: "
                <strong>"the locked copy"</strong>" keeps the trained weights, frozen; "
                <strong>"the trainable copy"</strong>" learns the new condition (an edge map, a scribble). "
                "The copy's outputs join the locked model through "<strong>"zero convolutions"</strong>
                ": 1×1 convolutions whose weights start at zero. At step 0 they add exactly nothing, so the \
                 locked model's image is untouched and no noise reaches it; training grows them from zero."
            </p>
            <p>
                "The paper reports a “sudden convergence”: for a while the model ignores the condition, \
                 then abruptly follows it. Below is a replay of this site's own ControlNets, trained on the \
                 shapes world by "<code>"controlnet world recipe"</code>" on a 2-core CPU. Drag the slider \
                 (or press Play) to scrub through the run; move the pointer over a chart to read it."
            </p>
            <label>
                "Run "
                <select
                    data-testid="learn-run"
                    on:change=move |event| {
                        let value = event_target_value(&event);
                        if let Some((folder, _)) = shapes::CONTROLNETS.iter().find(|(f, _)| *f == value) {
                            run.set(folder);
                        }
                    }
                >
                    {shapes::CONTROLNETS.map(|(folder, preprocessor)| view! {
                        <option value=folder selected=move || run.get() == folder>
                            {format!("{} ControlNet", preprocessor.label())}
                        </option>
                    })}
                </select>
            </label>
            <Suspense fallback=|| view! { <p data-testid="learn-loading">"Loading the run's log…"</p> }>
                {move || replay.get().map(|result| match result {
                    Ok(replay) => view! { <ReplayView replay /> }.into_any(),
                    Err(message) => view! { <p class="warning" data-testid="learn-error" role="alert">{message}</p> }.into_any(),
                })}
            </Suspense>
            {move || session.get().map(|session| view! { <TrainHere session learning /> })}
        </section>
    }
}

/// A log's three charts' lines: the loss (raw and smoothed), each zero convolution's weight
/// norm, and the residual each adds.
pub(super) fn log_series(lines: &[LogLine]) -> (Vec<Series>, Vec<Series>, Vec<Series>) {
    let convs = lines.iter().map(|l| l.zero_convs.len()).max().unwrap_or(0);
    let series = |value: &dyn Fn(&LogLine) -> Option<f64>| -> Vec<(f64, f64)> {
        lines.iter().filter_map(|l| Some((l.step as f64, value(l)?))).collect()
    };
    let loss = vec![
        Series {
            label: "loss".into(),
            colour: "hsl(250 40% 70%)".into(),
            width: 0.8,
            points: series(&|l| Some(l.loss)),
        },
        Series {
            label: "smoothed (EMA 0.98)".into(),
            colour: "hsl(250 70% 40%)".into(),
            width: 2.2,
            points: series(&|l| Some(l.loss_ema)),
        },
    ];
    let per_conv = |value: fn(&training::ZeroConv) -> f64| -> Vec<Series> {
        (0..convs)
            .map(|i| Series {
                label: format!("zero conv {}", i + 1),
                colour: depth_colour(i, convs),
                width: 1.6,
                points: series(&|l| l.zero_convs.get(i).map(value)),
            })
            .collect()
    };
    let mut norms = per_conv(|z| z.weight_norm);
    if lines.iter().any(|l| l.hint_conv_norm.is_some()) {
        norms.push(Series {
            label: "hint encoder's last conv".into(),
            colour: "hsl(30 85% 50%)".into(),
            width: 1.6,
            points: series(&|l| l.hint_conv_norm),
        });
    }
    (loss, norms, per_conv(|z| z.output_mean))
}

/// One run's charts, slider, sample and diagram.
#[component]
fn ReplayView(replay: Replay) -> impl IntoView {
    let Replay { lines, samples } = replay;
    let steps = lines.last().map_or(1, |l| l.step);
    let cursor = RwSignal::new(steps);
    let (loss, norms, residuals) = log_series(&lines);
    let lines = StoredValue::new(lines);
    let at = Signal::derive(move || lines.with_value(|lines| line_at(lines, cursor.get()).cloned()));
    let sample = Signal::derive(move || sample_at(&samples, cursor.get()).cloned());
    view! {
        <div class="learn-controls">
            <PlayButton cursor steps />
            <label class="learn-step">
                "Step "
                <input
                    type="range"
                    data-testid="learn-step"
                    min="1"
                    max=steps.to_string()
                    prop:value=move || cursor.get().to_string()
                    on:input=move |event| {
                        if let Ok(step) = event_target_value(&event).parse::<u64>() {
                            cursor.set(step.clamp(1, steps));
                        }
                    }
                />
                <output data-testid="learn-step-value">{move || format!("{} / {steps}", cursor.get())}</output>
            </label>
        </div>
        <div class="learn-grid">
            <div class="learn-charts">
                <Chart title="Loss (ε-prediction MSE)" testid="learn-loss" y_label="loss" steps series=loss cursor />
                <Chart title="Zero convolutions: weight norm, shallow to deep" testid="learn-norms" y_label="‖W‖" steps series=norms cursor />
                <Chart title="The residual each adds (mean magnitude)" testid="learn-residuals" y_label="|residual|" steps series=residuals cursor />
            </div>
            <div class="learn-side">
                <figure class="learn-sample" data-testid="learn-sample">
                    {move || match sample.get() {
                        Some((step, url)) => view! {
                            <img data-testid="learn-sample-image" data-step=step.to_string() src=url alt=format!("The run's sample at step {step}") />
                            <figcaption>{format!("The run's sample at step {step}: the first held-out condition, 20 steps")}</figcaption>
                        }.into_any(),
                        None => view! { <figcaption>"No sample yet at this step."</figcaption> }.into_any(),
                    }}
                </figure>
                <Diagram line=at />
                <ValuesTable at />
            </div>
        </div>
    }
}

/// The log's line at `step`: the last at or before it.
fn line_at(lines: &[LogLine], step: u64) -> Option<&LogLine> {
    let index = lines.partition_point(|l| l.step <= step);
    index.checked_sub(1).map(|i| &lines[i])
}

/// The run's sample at `step`: the last made at or before it.
fn sample_at(samples: &[(u64, String)], step: u64) -> Option<&(u64, String)> {
    samples.iter().rev().find(|(s, _)| *s <= step)
}

/// Play: the whole run in about six seconds, from the start (or from where the slider is); Pause.
#[component]
fn PlayButton(cursor: RwSignal<u64>, steps: u64) -> impl IntoView {
    let playing = RwSignal::new(None::<IntervalHandle>);
    let stop = move || {
        if let Some(handle) = playing.get_untracked() {
            handle.clear();
        }
        playing.set(None);
    };
    let play = move |_| {
        if playing.with_untracked(Option::is_some) {
            stop();
            return;
        }
        if cursor.get_untracked() >= steps {
            cursor.set(1);
        }
        let stride = (steps / 200).max(1);
        let tick = move || {
            let next = (cursor.get_untracked() + stride).min(steps);
            cursor.set(next);
            if next >= steps {
                stop();
            }
        };
        if let Ok(handle) = set_interval_with_handle(tick, Duration::from_millis(30)) {
            playing.set(Some(handle));
        }
    };
    on_cleanup(stop);
    view! {
        <button data-testid="learn-play" on:click=play>
            {move || if playing.with(Option::is_some) { "Pause" } else { "Play" }}
        </button>
    }
}

/// The values at the cursor: the loss, and each zero convolution's norm and residual.
#[component]
fn ValuesTable(at: Signal<Option<LogLine>>) -> impl IntoView {
    view! {
        <table class="learn-values" data-testid="learn-values">
            <tbody>
                {move || at.get().map(|l| view! {
                    <tr><th>"step"</th><td data-testid="learn-value-step">{l.step.to_string()}</td></tr>
                    <tr><th>"loss"</th><td data-testid="learn-value-loss">{short(l.loss)}</td></tr>
                    <tr><th>"smoothed"</th><td>{short(l.loss_ema)}</td></tr>
                    {l.zero_convs.iter().enumerate().map(|(i, z)| view! {
                        <tr>
                            <th>
                                <span class="swatch" style:background=depth_colour(i, l.zero_convs.len())></span>
                                {format!("zero conv {}", i + 1)}
                            </th>
                            <td>{format!("‖W‖ {} · |r| {}", short(z.weight_norm), short(z.output_mean))}</td>
                        </tr>
                    }).collect_view()}
                })}
            </tbody>
        </table>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(step: u64) -> LogLine {
        serde_json::from_value(serde_json::json!({
            "step": step, "loss": 0.5, "loss_ema": 0.4, "lr": 1e-4, "elapsed_s": 1.0, "zero_convs": []
        }))
        .expect("a log line")
    }

    #[test]
    fn axes_round_up_and_map_steps_and_values_into_the_plot() {
        assert_eq!((nice(0.37), nice(3.0), nice(7.0), nice(0.0)), (0.5, 5.0, 10.0, 1.0));
        let series = Series {
            label: "loss".into(),
            colour: "red".into(),
            width: 1.0,
            points: vec![(0.0, 0.0), (100.0, 0.8)],
        };
        let axes = Axes::new(100, std::slice::from_ref(&series));
        assert_eq!(axes.y_max, 1.0);
        assert_eq!((axes.x(0.0), axes.x(100.0)), (LEFT, WIDTH - RIGHT));
        assert_eq!((axes.y(0.0), axes.y(1.0)), (HEIGHT - BOTTOM, TOP));
        assert_eq!(
            axes.points(&series),
            format!("{LEFT:.1},{:.1} {:.1},{:.1} ", HEIGHT - BOTTOM, WIDTH - RIGHT, axes.y(0.8))
        );
        // The pointer at the plot's right edge is the last step; left of the plot, the first.
        assert_eq!(axes.step_at((WIDTH - RIGHT) / WIDTH), 100);
        assert_eq!(axes.step_at(0.0), 1);
        assert_eq!(axes.step_at((LEFT + Axes::PLOT_WIDTH / 2.0) / WIDTH), 50);
    }

    #[test]
    fn the_cursor_shows_the_last_line_and_sample_at_or_before_it() {
        let lines = [line(1), line(2), line(5)];
        assert_eq!(line_at(&lines, 4).map(|l| l.step), Some(2));
        assert_eq!(line_at(&lines, 5).map(|l| l.step), Some(5));
        assert_eq!(line_at(&lines, 0), None);
        let samples = [(0, "a".to_owned()), (250, "b".to_owned())];
        assert_eq!(sample_at(&samples, 249).map(|s| s.1.as_str()), Some("a"));
        assert_eq!(sample_at(&samples, 250).map(|s| s.1.as_str()), Some("b"));
    }
}
