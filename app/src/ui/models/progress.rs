//! A load's progress: one bar for all its files (bytes, rate, time left) and one per file.
//!
//! The total starts from the worker's `LoadPlan` (sizes from the cache or the server's
//! headers) and is refined as each file's `DownloadProgress` brings its exact size.

use std::collections::VecDeque;

use leptos::prelude::*;
use web::protocol::{FileLoaded, PlannedFile, Verified};

use super::format;

/// How far back the rate looks: long enough to smooth out chunk boundaries, short enough to
/// follow the switch from cached files (fast) to downloads (slow).
const RATE_WINDOW_MS: f64 = 5_000.0;

/// One file of the load. Its progress is a signal of its own, so that a message about one file
/// re-renders only its row (and the total).
#[derive(Clone)]
pub struct FileRow {
    /// As the worker names it: `{repo}/{path}`.
    file: String,
    /// The size the plan announced, until the file's own progress says better.
    planned: Option<u64>,
    /// Whether the plan found it complete in the cache.
    cached: bool,
    progress: RwSignal<Option<FileProgress>>,
    /// The load finished without it: an optional file the repository does not have.
    absent: RwSignal<bool>,
    /// Downloaded weights whose server named no SHA-256 to check them against.
    unverified: RwSignal<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct FileProgress {
    bytes: u64,
    total: u64,
    from_cache: bool,
}

impl FileRow {
    fn new(file: String, planned: Option<u64>, cached: bool) -> Self {
        Self {
            file,
            planned,
            cached,
            progress: RwSignal::new(None),
            absent: RwSignal::new(false),
            unverified: RwSignal::new(false),
        }
    }

    /// Bytes done and the best known size (0 while unknown).
    fn amounts(&self) -> (u64, u64) {
        match self.progress.get() {
            Some(p) => (p.bytes, p.total),
            None => (0, self.planned.unwrap_or(0)),
        }
    }

    fn amounts_untracked(&self) -> (u64, u64) {
        match self.progress.get_untracked() {
            Some(p) => (p.bytes, p.total),
            None => (0, self.planned.unwrap_or(0)),
        }
    }
}

/// The progress of the load in flight (or of the last one). Cheap to copy.
#[derive(Clone, Copy)]
pub struct Progress {
    rows: RwSignal<Vec<FileRow>>,
    /// Whether the plan has arrived (before it, nothing is known about the files).
    planned: RwSignal<bool>,
    /// `(time in ms, bytes done)` over the last few seconds.
    samples: StoredValue<VecDeque<(f64, u64)>>,
    /// Bytes per second over [`RATE_WINDOW_MS`], once there is enough to tell.
    rate: RwSignal<Option<f64>>,
    /// Whether the load is over (the bars stay, the rate and time left go).
    finished: RwSignal<bool>,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            rows: RwSignal::new(Vec::new()),
            planned: RwSignal::new(false),
            samples: StoredValue::new(VecDeque::new()),
            rate: RwSignal::new(None),
            finished: RwSignal::new(false),
        }
    }

    /// A new load begins: forget the last one.
    pub fn reset(&self) {
        self.rows.set(Vec::new());
        self.planned.set(false);
        self.samples.set_value(VecDeque::new());
        self.rate.set(None);
        self.finished.set(false);
    }

    /// The worker's `LoadPlan`.
    pub fn plan(&self, files: &[PlannedFile]) {
        self.rows.set(files.iter().map(|f| FileRow::new(f.file.clone(), f.size, f.cached)).collect());
        self.planned.set(true);
    }

    /// A `DownloadProgress` at time `now_ms`.
    pub fn update(&self, file: &str, bytes: u64, total: u64, from_cache: bool, now_ms: f64) {
        let row = self.rows.with_untracked(|rows| rows.iter().find(|row| row.file == file).cloned());
        let row = row.unwrap_or_else(|| {
            // A file the plan did not list (or no plan at all): show it anyway.
            let row = FileRow::new(file.to_owned(), Some(total), false);
            self.rows.update(|rows| rows.push(row.clone()));
            row
        });
        row.progress.set(Some(FileProgress { bytes, total, from_cache }));

        let done = self.totals_untracked().0;
        let rate = self
            .samples
            .try_update_value(|samples| {
                samples.push_back((now_ms, done));
                // Keep one sample older than the window, so the window is always covered.
                while samples.len() > 2 && samples[1].0 < now_ms - RATE_WINDOW_MS {
                    samples.pop_front();
                }
                let &(then, before) = samples.front()?;
                let seconds = (now_ms - then) / 1000.0;
                (seconds >= 0.5).then(|| done.saturating_sub(before) as f64 / seconds)
            })
            .flatten();
        if rate.is_some() {
            self.rate.set(rate);
        }
    }

    /// The `ModelLoaded` of the load: every file is complete, at its exact size.
    pub fn finish(&self, files: &[FileLoaded]) {
        self.rows.with_untracked(|rows| {
            for row in rows {
                match files.iter().find(|f| f.file == row.file) {
                    Some(f) => {
                        row.progress.set(Some(FileProgress {
                            bytes: f.size,
                            total: f.size,
                            from_cache: f.fetched_bytes == 0,
                        }));
                        row.unverified.set(f.verified == Verified::Unchecked);
                    }
                    // No list at all: trust the progress seen.
                    None if files.is_empty() => {
                        let (_, total) = row.amounts_untracked();
                        let from_cache = row.progress.get_untracked().map_or(row.cached, |p| p.from_cache);
                        row.progress.set(Some(FileProgress { bytes: total, total, from_cache }));
                    }
                    // Not loaded, yet the load succeeded: an optional file the repository lacks.
                    None => {
                        row.progress.set(Some(FileProgress { bytes: 0, total: 0, from_cache: false }));
                        row.absent.set(true);
                    }
                }
            }
        });
        self.finished.set(true);
        self.rate.set(None);
    }

    /// The load stopped without finishing: the bars stay where they are.
    pub fn stop(&self) {
        self.finished.set(true);
        self.rate.set(None);
    }

    /// Whether any file is listed (tracked).
    pub fn has_files(&self) -> bool {
        self.rows.with(|rows| !rows.is_empty())
    }

    /// Bytes done and bytes in all (as far as known).
    fn totals(&self) -> (u64, u64) {
        self.rows.with(|rows| {
            rows.iter().map(FileRow::amounts).fold((0, 0), |(done, all), (d, a)| (done + d, all + a.max(d)))
        })
    }

    fn totals_untracked(&self) -> (u64, u64) {
        self.rows.with_untracked(|rows| {
            rows.iter()
                .map(FileRow::amounts_untracked)
                .fold((0, 0), |(done, all), (d, a)| (done + d, all + a.max(d)))
        })
    }
}

/// The total bar and the list of files.
#[component]
pub fn ProgressView(progress: Progress) -> impl IntoView {
    let totals = Memo::new(move |_| progress.totals());
    let summary = move || {
        if !progress.planned.get() && progress.rows.with(Vec::is_empty) {
            return "Finding the files…".to_owned();
        }
        let (done, all) = totals.get();
        let mut text = format!("{} of {}", format::bytes(done), format::bytes(all));
        if !progress.finished.get()
            && let Some(rate) = progress.rate.get()
        {
            text.push_str(&format!(" · {}", format::rate(rate)));
            if rate > 0.0 && all > done {
                let left = (all - done) as f64 / rate;
                text.push_str(&format!(" · {} left", format::duration(left)));
            }
        }
        text
    };
    view! {
        <div class="models-progress">
            // The summary is also the bar's content: what its text reads, and the fallback where
            // `<progress>` is not drawn.
            <progress
                data-testid="models-progress-total"
                value=move || totals.get().0.to_string()
                max=move || { let (_, all) = totals.get(); (all > 0).then(|| all.to_string()) }
            >
                {summary}
            </progress>
            <span class="models-progress-text" data-testid="models-progress-text" aria-hidden="true">{summary}</span>
            // Every file while loading; folded to one line when done (open it to see them),
            // unless a file is unverified, which the visitor should see.
            <details
                class="models-files-details"
                prop:open=move || {
                    !progress.finished.get() || progress.rows.with(|rows| rows.iter().any(|row| row.unverified.get()))
                }
            >
                <summary data-testid="models-files-summary">
                    {move || format!("{} files", progress.rows.with(Vec::len))}
                </summary>
                <ul class="models-files">
                    <For each=move || progress.rows.get() key=|row| row.file.clone() let:row>
                        <FileRowView row />
                    </For>
                </ul>
            </details>
        </div>
    }
}

#[component]
fn FileRowView(row: FileRow) -> impl IntoView {
    let FileRow { file, planned, cached, progress, absent, unverified } = row;
    let state = move || match progress.get() {
        _ if absent.get() => "absent",
        None if cached => "cached",
        None => "waiting",
        Some(p) if p.from_cache => "cache",
        Some(p) if p.bytes >= p.total => "downloaded",
        Some(_) => "downloading",
    };
    let label = move || match state() {
        "cached" => "in the cache",
        "absent" => "not in the repository (optional)",
        "waiting" => "waiting",
        "cache" => "from cache",
        "downloaded" => "downloaded",
        _ => "downloading",
    };
    let amounts = move || match progress.get() {
        Some(p) => (p.bytes, p.total),
        None => (0, planned.unwrap_or(0)),
    };
    view! {
        <li data-testid="models-file" data-file=file.clone() data-state=state>
            <span class="models-file-name">{file.clone()}</span>
            <progress
                value=move || amounts().0.to_string()
                max=move || { let (_, all) = amounts(); (all > 0).then(|| all.to_string()) }
            ></progress>
            <span class="models-file-state">{label}</span>
            {move || unverified.get().then(|| view! {
                <span
                    class="warning"
                    data-testid="models-file-unverified"
                    title="The server named no SHA-256 for this file: its size and each cached chunk were checked, \
                           the whole file could not be."
                >
                    "unverified"
                </span>
            })}
            <span class="models-file-bytes">
                {move || {
                    let (done, all) = amounts();
                    if all > 0 { format!("{} / {}", format::bytes(done), format::bytes(all)) } else { String::new() }
                }}
            </span>
        </li>
    }
}
