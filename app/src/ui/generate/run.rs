//! A generation run as plain data: the state machine the generation panel drives with the
//! worker's answers (start, progress, done, cancelled, failed) and the progress line it shows.

use crate::session::is_device_lost;

/// Where a run stands; `data-state` on the progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Running,
    Done,
    Cancelled,
    Error,
}

impl Phase {
    pub fn name(self) -> &'static str {
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
pub struct Run {
    pub id: Option<u32>,
    pub phase: Phase,
    pub step: u32,
    pub total: u32,
    /// Steps per second, once measured.
    pub rate: Option<f64>,
    /// Cancel was asked; the worker stops after the step in progress.
    pub cancelling: bool,
    /// Denoising and decoding, when done.
    pub elapsed_ms: Option<f64>,
    pub error: Option<String>,
    /// The first progress message: when it came (ms) and its step. The rate is measured from
    /// it: the worker's own step time includes nothing of the message's trip, but the first step
    /// also compiles shaders.
    first: Option<(f64, u32)>,
}

impl Run {
    pub fn idle() -> Self {
        Run {
            id: None,
            phase: Phase::Idle,
            step: 0,
            total: 0,
            rate: None,
            cancelling: false,
            elapsed_ms: None,
            error: None,
            first: None,
        }
    }

    /// Run `id` of `total` steps, started.
    pub fn start(id: u32, total: u32) -> Self {
        Run { id: Some(id), phase: Phase::Running, total, ..Run::idle() }
    }

    /// A run that never started: `message` says why.
    pub fn refused(message: String) -> Self {
        let mut run = Run::idle();
        run.fail(message);
        run
    }

    pub fn running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// Whether `id` is the run in progress (answers to older runs are ignored).
    pub fn is_current(&self, id: u32) -> bool {
        self.running() && self.id == Some(id)
    }

    /// Cancel asked: the id to send it to, if a run is in progress.
    pub fn cancel(&mut self) -> Option<u32> {
        let id = self.id.filter(|_| self.running())?;
        self.cancelling = true;
        Some(id)
    }

    /// Step `step` of `total` is done, `elapsed_ms` into the run by the worker's clock, the
    /// message arriving at `now_ms` by the page's.
    pub fn progress(&mut self, step: u32, total: u32, elapsed_ms: f64, now_ms: f64) {
        let rate = match self.first {
            // Between messages: what the user waits for, shader compilation of step one aside.
            Some((at, first_step)) if step > first_step && now_ms > at => {
                Some(f64::from(step - first_step) / ((now_ms - at) / 1000.0))
            }
            Some(_) => None,
            None => {
                self.first = Some((now_ms, step));
                (elapsed_ms > 0.0).then(|| f64::from(step) / (elapsed_ms / 1000.0))
            }
        };
        self.step = step;
        self.total = total;
        self.rate = rate.or(self.rate);
    }

    /// The image is made, in `elapsed_ms`.
    pub fn done(&mut self, elapsed_ms: f64) {
        self.phase = Phase::Done;
        self.step = self.total;
        self.elapsed_ms = Some(elapsed_ms);
        self.cancelling = false;
    }

    /// The worker stopped after step `step`, as asked.
    pub fn cancelled(&mut self, step: u32) {
        self.phase = Phase::Cancelled;
        self.step = step;
        self.cancelling = false;
    }

    /// The run stopped on an error; where only a reload of the models helps, the message says so.
    pub fn fail(&mut self, message: String) {
        self.phase = Phase::Error;
        self.error = Some(with_advice(message));
        self.cancelling = false;
    }

    /// "Step i/N · x.x it/s · y s left", or what became of the run.
    pub fn text(&self) -> String {
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

/// Whether an error means the worker or its device is gone, so that only a reload of the models
/// helps.
fn worker_gone(message: &str) -> bool {
    is_device_lost(message) || message.to_lowercase().contains("worker failed")
}

/// `message`, with what to do where the worker or its device is gone.
pub fn with_advice(message: String) -> String {
    if worker_gone(&message) {
        format!("{message} — reload the models (Models panel) to go on; the prompt and settings are kept.")
    } else {
        message
    }
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
    fn the_rate_is_the_workers_at_first_then_the_pages_between_messages() {
        let mut run = Run::start(7, 20);
        assert_eq!(run.text(), "Starting…");
        // Step 1 after 4 s of the worker's time (shaders compiled): 0.25 it/s.
        run.progress(1, 20, 4000.0, 10_000.0);
        assert_eq!(run.rate, Some(0.25));
        // A message at the same moment measures nothing: the rate stays.
        run.progress(1, 20, 4000.0, 10_000.0);
        assert_eq!(run.rate, Some(0.25));
        // Steps 1 → 5 in 2 s of the page's time: 2 it/s, whatever the worker's clock says.
        run.progress(5, 20, 999_999.0, 12_000.0);
        assert_eq!(run.rate, Some(2.0));
        assert_eq!(run.text(), "Step 5/20 · 2.0 it/s · 8 s left");
        // A first message with no time of its own (0 ms) gives no rate yet.
        let mut quick = Run::start(8, 10);
        quick.progress(1, 10, 0.0, 5.0);
        assert_eq!(quick.rate, None);
    }

    #[test]
    fn a_run_goes_from_start_to_done_cancelled_or_failed_and_ignores_other_ids() {
        let mut run = Run::start(3, 20);
        assert!(run.is_current(3) && !run.is_current(2));
        run.progress(4, 20, 1000.0, 0.0);
        let mut done = run.clone();
        done.done(8_000.0);
        assert_eq!((done.phase, done.step, done.elapsed_ms), (Phase::Done, 20, Some(8_000.0)));
        assert!(!done.is_current(3), "a finished run takes no more answers");
        assert_eq!(done.clone().cancel(), None, "nothing to cancel");

        let mut cancelling = run.clone();
        assert_eq!(cancelling.cancel(), Some(3));
        assert_eq!(cancelling.text(), "Step 4/20 · 4.0 it/s · 4 s left · cancelling…");
        cancelling.cancelled(5);
        assert_eq!((cancelling.phase, cancelling.step, cancelling.cancelling), (Phase::Cancelled, 5, false));
        assert_eq!(cancelling.text(), "Cancelled after step 5/20.");

        let mut failed = run.clone();
        failed.fail("out of memory".into());
        assert_eq!((failed.phase, failed.error.as_deref()), (Phase::Error, Some("out of memory")));
        assert_eq!(failed.text(), "Stopped at step 4/20.");

        let refused = Run::refused("Unit 1: no map.".into());
        assert_eq!((refused.phase, refused.id), (Phase::Error, None));
    }

    #[test]
    fn a_lost_device_asks_for_a_reload() {
        assert!(with_advice("GPU device lost: reason unknown".into()).contains("reload the models"));
        assert!(with_advice("the GPU worker failed: out of memory".into()).contains("reload the models"));
        assert_eq!(with_advice("the prompt is too long".into()), "the prompt is too long");
        let mut run = Run::start(1, 2);
        run.fail("The GPU worker failed: gone".into());
        assert!(run.error.unwrap().contains("reload the models"));
    }
}
