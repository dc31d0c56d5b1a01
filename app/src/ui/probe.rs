//! The device check: the GPU worker runs the model's convolutions, group norms and attention (on
//! WebGPU, its hand-written kernels) on fixed inputs (`model::probe`) and the page shows the
//! numbers and the time they took.

use leptos::prelude::*;
use web::protocol::vocabulary::Named;
use web::protocol::{Backend, Precision, ProbeOutput, Request, Response};

use crate::worker::use_gpu_worker;

#[derive(Clone, Debug, PartialEq)]
enum RunState {
    Running,
    Done { elapsed_ms: f64, outputs: Vec<ProbeOutput> },
    Failed(String),
}

/// One request to the worker. Its state is a signal of its own, so that the list (keyed by
/// id) re-renders only the run that changed.
#[derive(Clone, Copy, Debug)]
struct Run {
    id: u32,
    precision: Precision,
    state: RwSignal<RunState>,
}

#[component]
pub fn ProbePanel(
    /// Whether the adapter offers `shader-f16`, so that an f16 run is worth asking for.
    f16: bool,
    /// What the worker computes on.
    backend: Backend,
) -> impl IntoView {
    let runs = RwSignal::new(Vec::<Run>::new());
    let device = RwSignal::new(None::<(Backend, f64, bool)>);
    let failure = RwSignal::new(None::<String>);
    let next_id = StoredValue::new(0u32);

    let worker = use_gpu_worker(
        backend,
        move |response| match response {
            Response::DeviceReady { backend, init_ms, f16 } => device.set(Some((backend, init_ms, f16))),
            Response::ProbeDone { id, elapsed_ms, outputs, .. } => {
                update_run(runs, id, RunState::Done { elapsed_ms, outputs })
            }
            Response::Error { id: Some(id), message } => update_run(runs, id, RunState::Failed(message)),
            Response::Error { id: None, message } => failure.set(Some(message)),
            // Model loading answers to whoever asked for it.
            _ => {}
        },
        move |message| failure.set(Some(message)),
    );

    let start = move || {
        let precisions: &[Precision] =
            if f16 { &[Precision::F32, Precision::F16] } else { &[Precision::F32] };
        for &precision in precisions {
            let id = next_id.get_value();
            next_id.set_value(id + 1);
            runs.update(|runs| {
                runs.retain(|run| run.precision != precision);
                runs.push(Run { id, precision, state: RwSignal::new(RunState::Running) });
            });
            worker.send(Request::Probe { id, precision });
        }
    };
    start();

    let busy = move || runs.with(|runs| runs.iter().any(|run| run.state.get() == RunState::Running));

    view! {
        <section class="panel" data-testid="probe">
            <h2>"Device check"</h2>
            <p>
                "The GPU worker runs a 3×3 convolution, group normalisation and softmax attention \
                 on fixed inputs; the numbers must equal the native build's. The first run of a \
                 precision includes compiling its shaders."
            </p>
            {move || device.get().map(|(backend, init_ms, f16)| view! {
                <p data-testid="device-ready">
                    {format!(
                        "Worker device ({}) acquired in {init_ms:.0} ms; f16 compute {}.",
                        backend.label(),
                        if f16 { "available" } else { "unavailable" },
                    )}
                </p>
            })}
            {(!f16).then(|| view! {
                <p data-testid="f16-skipped">"f16: skipped, this adapter does not offer shader-f16."</p>
            })}
            {move || failure.get().map(|message| view! {
                <p class="warning" data-testid="worker-failure" role="alert">{message}</p>
            })}
            <button data-testid="probe-run" on:click=move |_| start() disabled=busy>
                "Run again"
            </button>
            <For each=move || runs.get() key=|run| run.id let:run>
                <ProbeRun run />
            </For>
        </section>
    }
}

fn update_run(runs: RwSignal<Vec<Run>>, id: u32, state: RunState) {
    if let Some(run) = runs.with_untracked(|runs| runs.iter().find(|run| run.id == id).copied()) {
        run.state.set(state);
    }
}

#[component]
fn ProbeRun(run: Run) -> impl IntoView {
    let precision = run.precision.name();
    let body = move || match run.state.get() {
        RunState::Running => {
            view! { <p data-testid=format!("probe-running-{precision}")>"Running…"</p> }.into_any()
        }
        RunState::Failed(message) => view! {
            <p class="warning" data-testid=format!("probe-error-{precision}")>{message}</p>
        }
        .into_any(),
        RunState::Done { elapsed_ms, outputs } => {
            let json = serde_json::to_string(&outputs).unwrap_or_default();
            view! {
                <p data-testid=format!("probe-time-{precision}")>{format!("{elapsed_ms:.1} ms")}</p>
                <table>
                    <thead>
                        <tr><th>"op"</th><th>"shape"</th><th>"sum"</th><th>"max |x|"</th><th>"first values"</th></tr>
                    </thead>
                    <tbody>
                        {outputs.iter().map(summary_row).collect_view()}
                    </tbody>
                </table>
                <details>
                    <summary>"All numbers (JSON)"</summary>
                    <pre data-testid=format!("probe-json-{precision}")>{json}</pre>
                </details>
            }
                .into_any()
        }
    };
    view! {
        <article class="probe-run" data-testid=format!("probe-{precision}")>
            <h3>{precision}</h3>
            {body}
        </article>
    }
}

fn summary_row(output: &ProbeOutput) -> impl IntoView + use<> {
    let sum: f64 = output.values.iter().map(|&v| v as f64).sum();
    let max = output.values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let first: Vec<String> = output.values.iter().take(3).map(|v| format!("{v:.5}")).collect();
    let shape: Vec<String> = output.shape.iter().map(usize::to_string).collect();
    view! {
        <tr>
            <td>{output.name.clone()}</td>
            <td>{format!("[{}]", shape.join(", "))}</td>
            <td>{format!("{sum:.5}")}</td>
            <td>{format!("{max:.5}")}</td>
            <td>{first.join(", ")}</td>
        </tr>
    }
}
