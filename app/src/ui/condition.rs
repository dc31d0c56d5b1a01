//! The condition image: dropped, pasted or picked; turned into a control map by a preprocessor
//! (Canny, scribble from line art, sketch from photo, or none) in the preprocessing worker, with
//! a live preview; and drawn on with the scribble pad.
//!
//! Each control unit has one: its state is a [`Condition`] the unit owns, so that the generation
//! can read the control map ([`Condition::control_map`]) at the generation's size, which the
//! panel also follows.

use leptos::ev;
use leptos::html::Canvas;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::{Deserialize, Serialize};
use wasm_bindgen::{Clamped, JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web::protocol::{
    Limits, PreprocessOp, PreprocessRequest, PreprocessResponse, Preprocessor, Resize, ResizeMode,
};
use web_sys::{CanvasRenderingContext2d, ClipboardEvent, DragEvent, File, HtmlCanvasElement, ImageData};

use super::scribble::{self, History, ScribblePad};
use super::widgets::NamedSelect;
use crate::gpu::describe_js_error;
use crate::worker::{Latest, PreprocessWorker, use_preprocess_worker};

/// Files larger than this are refused before they are read: no photo is this large, and the
/// decoder scales big images down anyway.
const MAX_FILE_BYTES: f64 = 50.0 * 1024.0 * 1024.0;

/// The preprocessing settings, each a signal the controls write and the preview request reads.
/// The control map's size is the generation's, not a setting of its own.
#[derive(Clone, Copy)]
struct Settings {
    op: RwSignal<Preprocessor>,
    low: RwSignal<f64>,
    high: RwSignal<f64>,
    mode: RwSignal<ResizeMode>,
    invert: RwSignal<bool>,
}

/// The settings as they are kept between visits (the image is not kept).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConditionSettings {
    pub preprocessor: Preprocessor,
    pub low: f64,
    pub high: f64,
    pub resize: ResizeMode,
    pub invert: bool,
}

impl Default for ConditionSettings {
    fn default() -> Self {
        Self {
            preprocessor: Preprocessor::Canny,
            low: Limits::CANNY_THRESHOLDS.0,
            high: Limits::CANNY_THRESHOLDS.1,
            resize: ResizeMode::default(),
            invert: false,
        }
    }
}

impl Settings {
    fn new(saved: &ConditionSettings) -> Self {
        let threshold =
            |value: f64, default: f64| if (1.0..=255.0).contains(&value) { value } else { default };
        Self {
            op: RwSignal::new(saved.preprocessor),
            low: RwSignal::new(threshold(saved.low, Limits::CANNY_THRESHOLDS.0)),
            high: RwSignal::new(threshold(saved.high, Limits::CANNY_THRESHOLDS.1)),
            mode: RwSignal::new(saved.resize),
            invert: RwSignal::new(saved.invert),
        }
    }

    /// The preprocessor with its parameters (tracks the thresholds only for Canny).
    fn op(&self) -> PreprocessOp {
        match self.op.get() {
            Preprocessor::Canny => PreprocessOp::Canny { low: self.low.get(), high: self.high.get() },
            Preprocessor::Scribble => PreprocessOp::Scribble,
            Preprocessor::Xdog => PreprocessOp::Xdog,
            Preprocessor::None => PreprocessOp::None,
        }
    }
}

/// The decoded image the worker holds.
#[derive(Clone, Debug, PartialEq)]
struct Source {
    name: String,
    width: u32,
    height: u32,
    decode_ms: f64,
}

/// What the preview shows and what it cost.
#[derive(Clone, Debug, PartialEq)]
struct PreviewInfo {
    /// The request it answers: tests wait for it to change.
    id: u32,
    label: &'static str,
    width: u32,
    height: u32,
    op_ms: f64,
    elapsed_ms: f64,
}

/// Whether a unit's control map can be read now.
#[derive(Clone, Debug, PartialEq)]
pub enum MapState {
    /// No image and nothing drawn.
    Empty,
    /// The preview for the current image, settings or size is being computed.
    Pending,
    /// The preview failed; the message says why.
    Failed(String),
    Ready,
}

/// A unit's condition image: what its [`ConditionPanel`] shows and the generation reads. The
/// unit holds it, not the panel, so that the generation panel can read the map. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Condition {
    settings: Settings,
    /// The decoded image in the worker.
    source: RwSignal<Option<Source>>,
    /// The preview on the canvas.
    preview: RwSignal<Option<PreviewInfo>>,
    /// The latest preview asked of the worker: the canvas is current when `preview` answers it.
    requested: RwSignal<Option<u32>>,
    /// A preview that could not be computed.
    preview_error: RwSignal<Option<String>>,
    /// What was drawn on the scribble pad.
    history: RwSignal<History>,
    preview_canvas: NodeRef<Canvas>,
}

impl Condition {
    pub fn new(saved: &ConditionSettings) -> Self {
        Self {
            settings: Settings::new(saved),
            source: RwSignal::new(None),
            preview: RwSignal::new(None),
            requested: RwSignal::new(None),
            preview_error: RwSignal::new(None),
            history: RwSignal::new(History::default()),
            preview_canvas: NodeRef::new(),
        }
    }

    /// The settings to keep (tracked).
    pub fn saved(&self) -> ConditionSettings {
        let Settings { op, low, high, mode, invert } = self.settings;
        ConditionSettings {
            preprocessor: op.get(),
            low: low.get(),
            high: high.get(),
            resize: mode.get(),
            invert: invert.get(),
        }
    }

    /// What made the map, for the PNG's parameters and to choose a ControlNet (tracked): the
    /// preprocessor, or `Scribble` for a drawing on black.
    pub fn preprocessor(&self) -> Preprocessor {
        if self.source.with(Option::is_some) { self.settings.op.get() } else { Preprocessor::Scribble }
    }

    /// How the map was fitted to the image and Canny's thresholds, for the PNG's parameters
    /// (untracked).
    pub fn fit_and_thresholds(&self) -> (ResizeMode, Option<(f64, f64)>) {
        let Settings { op, low, high, mode, .. } = self.settings;
        let thresholds = (op.get_untracked() == Preprocessor::Canny
            && self.source.with_untracked(Option::is_some))
        .then(|| (low.get_untracked(), high.get_untracked()));
        (mode.get_untracked(), thresholds)
    }

    /// Puts back settings read from a PNG's parameters ("use these parameters again").
    pub fn restore(&self, preprocessor: Preprocessor, resize: ResizeMode, thresholds: Option<(f64, f64)>) {
        let Settings { op, low, high, mode, .. } = self.settings;
        op.set(preprocessor);
        mode.set(resize);
        if let Some((l, h)) =
            thresholds.filter(|(l, h)| (1.0..=255.0).contains(l) && (1.0..=255.0).contains(h))
        {
            low.set(l);
            high.set(h);
        }
    }

    /// Whether the map at `width × height` can be read now (tracked).
    pub fn state(&self, width: u32, height: u32) -> MapState {
        if self.source.with(Option::is_none) {
            return if self.history.with(History::is_empty) { MapState::Empty } else { MapState::Ready };
        }
        if let Some(message) = self.preview_error.get() {
            return MapState::Failed(message);
        }
        let current = self.preview.with(|preview| {
            preview.as_ref().is_some_and(|info| {
                Some(info.id) == self.requested.get() && (info.width, info.height) == (width, height)
            })
        });
        if current { MapState::Ready } else { MapState::Pending }
    }

    /// The control map, `width × height` RGB: the preprocessed image (or black, without one) with
    /// the scribble pad's strokes on top; `None` with neither image nor strokes.
    pub fn control_map(&self, width: u32, height: u32) -> Result<Option<Vec<u8>>, String> {
        match untrack(|| self.state(width, height)) {
            MapState::Empty => return Ok(None),
            MapState::Pending => return Err("its control map is still being computed".into()),
            MapState::Failed(message) => return Err(format!("its control map failed: {message}")),
            MapState::Ready => {}
        }
        let with_image = self.source.with_untracked(Option::is_some);
        let preview = self.preview_canvas.get_untracked();
        self.history
            .with_untracked(|history| {
                compose(width, height, preview.filter(|_| with_image).as_ref(), history)
            })
            .map(Some)
            .map_err(|e| format!("could not read its control map: {}", describe_js_error(&e)))
    }
}

/// The condition image of one control unit. `width × height` is the control map's size (the
/// generation's); `active` says whether a paste (Ctrl+V) and Ctrl+Z are this unit's.
#[component]
pub fn ConditionPanel(
    condition: Condition,
    width: Signal<u32>,
    height: Signal<u32>,
    #[prop(into)] active: Signal<bool>,
) -> impl IntoView {
    let Condition { settings, source, history, preview_canvas, .. } = condition;
    let preprocessing = Preprocessing::new(condition);
    let worker = use_preprocess_worker(
        move |response| preprocessing.answer(response),
        move |message| condition.preview_error.set(Some(message)),
    );
    preprocessing.worker.set_value(Some(worker));
    let load = Callback::new(move |file: File| preprocessing.load(file));

    // Ctrl+V anywhere on the page with an image (or any file) on the clipboard, for the unit
    // last used.
    let paste = window_event_listener(ev::paste, move |event: ClipboardEvent| {
        if !active.get_untracked() {
            return;
        }
        let file = event.clipboard_data().and_then(|data| data.files()).and_then(|files| files.get(0));
        if let Some(file) = file {
            event.prevent_default();
            load.run(file);
        }
    });
    // A file dropped beside the drop zone must not replace the page with the image.
    let stray_over = window_event_listener(ev::dragover, |event: DragEvent| event.prevent_default());
    let stray_drop = window_event_listener(ev::drop, |event: DragEvent| event.prevent_default());
    on_cleanup(move || {
        paste.remove();
        stray_over.remove();
        stray_drop.remove();
    });

    // The preview follows the source and every setting; only the latest request is computed.
    Effect::new(move || {
        let resize = Resize { mode: settings.mode.get(), width: width.get(), height: height.get() };
        let (op, invert) = (settings.op(), settings.invert.get());
        if source.with(Option::is_some) {
            preprocessing.request_preview(op, resize, invert);
        }
    });
    // Before any image: a black map of the chosen size, to draw a scribble on from scratch.
    Effect::new(move || {
        let (width, height) = (width.get(), height.get());
        if source.with(Option::is_some) {
            return;
        }
        if let Some(canvas) = preview_canvas.get() {
            let _ = blank(&canvas, width, height);
        }
    });

    view! {
        <section class="panel condition" data-testid="condition-panel">
            <h2>"Condition image"</h2>
            <DropZone on_file=load />
            <SourceInfo preprocessing />
            <PreprocessControls settings />
            <ScribblePad width height history active>
                <canvas class="condition-preview" data-testid="condition-preview" node_ref=preview_canvas></canvas>
            </ScribblePad>
            <PreviewInfoLine condition />
        </section>
    }
}

/// The panel's side of the preprocessing worker: the files sent to be decoded, the latest preview
/// asked for, and what their answers change. Cheap to copy.
#[derive(Clone, Copy)]
struct Preprocessing {
    condition: Condition,
    /// The file being read, by name.
    reading: RwSignal<Option<String>>,
    /// A file that could not be read or decoded; the previous source and preview stay.
    file_error: RwSignal<Option<String>>,
    next_id: StoredValue<u32>,
    /// Files sent to the worker and not yet answered, by request id.
    decoding: StoredValue<Vec<(u32, String)>>,
    latest: StoredValue<Latest<PreprocessRequest>>,
    /// Set once the worker exists: the answers send the waiting request through it.
    worker: StoredValue<Option<PreprocessWorker>>,
    /// The preprocessor of the request in the worker, to label its answer.
    in_flight_label: StoredValue<&'static str>,
}

impl Preprocessing {
    fn new(condition: Condition) -> Self {
        Self {
            condition,
            reading: RwSignal::new(None),
            file_error: RwSignal::new(None),
            next_id: StoredValue::new(0),
            decoding: StoredValue::new(Vec::new()),
            latest: StoredValue::new(Latest::default()),
            worker: StoredValue::new(None),
            in_flight_label: StoredValue::new(""),
        }
    }

    fn new_id(self) -> u32 {
        let id = self.next_id.get_value();
        self.next_id.set_value(id.wrapping_add(1));
        id
    }

    fn send(self, request: PreprocessRequest) {
        if let PreprocessRequest::Process { op, .. } = &request {
            self.in_flight_label.set_value(op.name());
        }
        if let Some(worker) = self.worker.get_value() {
            worker.send(request);
        }
    }

    /// The preview of the source with these settings: sent now, or once the one in the worker
    /// is answered (replacing any older one waiting).
    fn request_preview(self, op: PreprocessOp, resize: Resize, invert: bool) {
        let id = self.new_id();
        self.condition.requested.set(Some(id));
        let request = PreprocessRequest::Process { id, op, resize, invert };
        if let Some(request) = self.latest.try_update_value(|latest| latest.submit(id, request)).flatten() {
            self.send(request);
        }
    }

    /// Request `answered` is done: the waiting one goes to the worker.
    fn send_waiting(self, answered: u32) {
        if let Some(next) = self.latest.try_update_value(|latest| latest.answered(answered)).flatten() {
            self.send(next);
        }
    }

    /// Reads a file and hands its bytes to the worker; the worker decides whether it is an image.
    fn load(self, file: File) {
        let name = file.name();
        self.file_error.set(None);
        if file.size() > MAX_FILE_BYTES {
            self.file_error.set(Some(format!(
                "{name}: {:.0} MB is more than the {:.0} MB this page reads",
                file.size() / 1e6,
                MAX_FILE_BYTES / 1e6
            )));
            return;
        }
        self.reading.set(Some(name.clone()));
        spawn_local(async move {
            match read(&file).await {
                Ok(bytes) => {
                    let id = self.new_id();
                    self.decoding.update_value(|decoding| decoding.push((id, name)));
                    self.send(PreprocessRequest::Decode { id, bytes });
                }
                Err(e) => {
                    self.reading.set(None);
                    self.file_error
                        .set(Some(format!("{name}: could not read the file: {}", describe_js_error(&e))));
                }
            }
        });
    }

    /// The name of the file decode request `id` carried, forgetting it.
    fn take_decoding(self, id: u32) -> Option<String> {
        self.decoding
            .try_update_value(|decoding| {
                let index = decoding.iter().position(|(pending, _)| *pending == id)?;
                Some(decoding.remove(index).1)
            })
            .flatten()
    }

    fn answer(self, response: PreprocessResponse) {
        let condition = self.condition;
        let in_flight = |id| self.latest.with_value(|latest| latest.is_in_flight(id));
        match response {
            PreprocessResponse::Decoded { id, width, height, decode_ms } => {
                if let Some(name) = self.take_decoding(id) {
                    self.reading.set(None);
                    self.file_error.set(None);
                    condition.source.set(Some(Source { name, width, height, decode_ms }));
                }
            }
            PreprocessResponse::Processed { id, width, height, rgba, op_ms, elapsed_ms } if in_flight(id) => {
                let label = self.in_flight_label.get_value();
                self.send_waiting(id);
                let info = PreviewInfo { id, label, width, height, op_ms, elapsed_ms };
                self.show_preview(info, &rgba);
            }
            PreprocessResponse::Processed { .. } => {}
            PreprocessResponse::Error { id: Some(id), message } if in_flight(id) => {
                self.send_waiting(id);
                condition.preview_error.set(Some(message));
            }
            PreprocessResponse::Error { id: Some(id), message } => match self.take_decoding(id) {
                Some(name) => {
                    self.reading.set(None);
                    self.file_error.set(Some(format!("{name}: {message}")));
                }
                None => condition.preview_error.set(Some(message)),
            },
            PreprocessResponse::Error { id: None, message } => condition.preview_error.set(Some(message)),
            PreprocessResponse::Ready => {}
        }
    }

    fn show_preview(self, info: PreviewInfo, rgba: &[u8]) {
        let condition = self.condition;
        let shown = condition
            .preview_canvas
            .get_untracked()
            .ok_or_else(|| "the preview is not on the page".to_owned())
            .and_then(|canvas| {
                show(&canvas, info.width, info.height, rgba).map_err(|e| describe_js_error(&e))
            });
        match shown {
            Ok(()) => {
                condition.preview_error.set(None);
                condition.preview.set(Some(info));
            }
            Err(message) => {
                condition.preview_error.set(Some(format!("could not show the preview: {message}")))
            }
        }
    }
}

/// The file being read, why the last could not be, and the image in use.
#[component]
fn SourceInfo(preprocessing: Preprocessing) -> impl IntoView {
    let Preprocessing { reading, file_error, condition, .. } = preprocessing;
    view! {
        {move || reading.get().map(|name| view! {
            <p data-testid="condition-reading">{format!("Reading {name}…")}</p>
        })}
        {move || file_error.get().map(|message| view! {
            <p class="warning" data-testid="condition-error" role="alert">{message}</p>
        })}
        {move || condition.source.get().map(|source| view! {
            <p data-testid="condition-source">
                {format!(
                    "{} · {}×{} · decoded in {:.0} ms",
                    source.name,
                    source.width,
                    source.height,
                    source.decode_ms
                )}
            </p>
        })}
    }
}

/// What the preview shows and what it took, or why there is none.
#[component]
fn PreviewInfoLine(condition: Condition) -> impl IntoView {
    let Condition { source, preview, requested, preview_error, .. } = condition;
    view! {
        <p
            class="preview-time"
            data-testid="preview-time"
            data-id=move || preview.with(|info| info.as_ref().map(|info| info.id.to_string()))
            // Whether the preview shown answers the latest settings (`false` while a newer
            // one is computed): tests wait for it rather than for any new preview.
            data-current=move || {
                (preview.with(|info| info.as_ref().map(|info| info.id)) == requested.get()).to_string()
            }
            data-op=move || preview.with(|info| info.as_ref().map(|info| info.label))
            data-op-ms=move || preview.with(|info| info.as_ref().map(|info| info.op_ms.to_string()))
            data-elapsed-ms=move || preview.with(|info| info.as_ref().map(|info| info.elapsed_ms.to_string()))
        >
            {move || match preview.get() {
                None if source.with(Option::is_none) => {
                    "No image yet: the control map is black, ready for a scribble.".to_owned()
                }
                None => "Computing the preview…".to_owned(),
                Some(info) => format!(
                    "{}: {:.1} ms at {}×{} ({:.1} ms with resizing)",
                    info.label,
                    info.op_ms,
                    info.width,
                    info.height,
                    info.elapsed_ms
                ),
            }}
        </p>
        {move || preview_error.get().map(|message| view! {
            <p class="warning" data-testid="preview-error" role="alert">{message}</p>
        })}
    }
}

/// Drag and drop, or a file picker; paste is handled page-wide by the panel.
#[component]
fn DropZone(on_file: Callback<File>) -> impl IntoView {
    // dragenter/dragleave fire for every child crossed: count them.
    let depth = RwSignal::new(0i32);
    let first_file = |event: &DragEvent| {
        event.data_transfer().and_then(|data| data.files()).and_then(|files| files.get(0))
    };
    view! {
        <div
            class="drop-zone"
            class:dragging=move || { depth.get() > 0 }
            data-testid="condition-drop"
            on:dragenter=move |event: DragEvent| {
                event.prevent_default();
                depth.update(|depth| *depth += 1);
            }
            on:dragover=move |event: DragEvent| {
                event.prevent_default();
                if let Some(data) = event.data_transfer() {
                    data.set_drop_effect("copy");
                }
            }
            on:dragleave=move |_| depth.update(|depth| *depth = (*depth - 1).max(0))
            on:drop=move |event: DragEvent| {
                event.prevent_default();
                event.stop_propagation();
                depth.set(0);
                if let Some(file) = first_file(&event) {
                    on_file.run(file);
                }
            }
        >
            <p>"Drop an image here, paste one (Ctrl+V), or"</p>
            <label class="button">
                "Choose a file"
                <input
                    type="file"
                    accept="image/*"
                    class="visually-hidden"
                    data-testid="condition-file"
                    on:change=move |event| {
                        let input = event_target::<web_sys::HtmlInputElement>(&event);
                        if let Some(file) = input.files().and_then(|files| files.get(0)) {
                            on_file.run(file);
                        }
                        // Choosing the same file again is a change too.
                        input.set_value("");
                    }
                />
            </label>
            <p class="hint">"PNG, JPEG, WebP, GIF or BMP."</p>
        </div>
    }
}

/// The preprocessor, its thresholds, the fit to the control map's size, and inversion.
#[component]
fn PreprocessControls(settings: Settings) -> impl IntoView {
    let Settings { op, low, high, mode, invert } = settings;
    let threshold = move |signal: RwSignal<f64>, testid: &'static str, name: &'static str| {
        view! {
            <label>
                {name}
                <input
                    type="range"
                    data-testid=testid
                    min="1"
                    max="255"
                    step="1"
                    prop:value=move || signal.get()
                    on:input=move |event| {
                        if let Ok(value) = event_target_value(&event).parse::<f64>() {
                            signal.set(value);
                        }
                    }
                />
                <output data-testid=format!("{testid}-value")>{move || signal.get()}</output>
            </label>
        }
    };
    view! {
        <div class="condition-controls">
            <label>
                "Preprocessor "
                <NamedSelect value=op testid="preprocessor" />
            </label>
            <Show when=move || op.get() == Preprocessor::Canny>
                <fieldset class="thresholds">
                    <legend>"Canny thresholds"</legend>
                    {threshold(low, "canny-low", "Low ")}
                    {threshold(high, "canny-high", "High ")}
                </fieldset>
            </Show>
            <label>
                "Fit "
                <NamedSelect value=mode testid="resize-mode" />
            </label>
            <label>
                <input
                    type="checkbox"
                    data-testid="invert"
                    prop:checked=move || invert.get()
                    on:change=move |event| invert.set(event_target_checked(&event))
                />
                " Invert"
            </label>
        </div>
    }
}

/// Reads a file's bytes (asynchronously: the UI thread never blocks on it).
async fn read(file: &File) -> Result<Vec<u8>, JsValue> {
    let buffer = JsFuture::from(file.array_buffer()).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

fn context(canvas: &HtmlCanvasElement) -> Result<CanvasRenderingContext2d, JsValue> {
    canvas.get_context("2d")?.ok_or("no 2D context")?.dyn_into().map_err(JsValue::from)
}

/// Shows a control map on the preview canvas, which takes its size.
fn show(canvas: &HtmlCanvasElement, width: u32, height: u32, rgba: &[u8]) -> Result<(), JsValue> {
    let image = ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), width, height)?;
    canvas.set_width(width);
    canvas.set_height(height);
    context(canvas)?.put_image_data(&image, 0.0, 0.0)
}

/// An all-black map of the given size.
fn blank(canvas: &HtmlCanvasElement, width: u32, height: u32) -> Result<(), JsValue> {
    canvas.set_width(width);
    canvas.set_height(height);
    let context = context(canvas)?;
    context.set_fill_style_str("#000");
    context.fill_rect(0.0, 0.0, f64::from(width), f64::from(height));
    Ok(())
}

/// The control map: `preview` (or black) with the strokes of `history` composited on top, read
/// back as RGB. The strokes are painted on a layer of their own first, so that the eraser removes
/// strokes and never the map beneath, as on the pad.
fn compose(
    width: u32,
    height: u32,
    preview: Option<&HtmlCanvasElement>,
    history: &History,
) -> Result<Vec<u8>, JsValue> {
    let read = |context: &CanvasRenderingContext2d| -> Result<Vec<u8>, JsValue> {
        let rgba = context.get_image_data(0.0, 0.0, f64::from(width), f64::from(height))?.data();
        Ok(rgba.chunks_exact(4).flat_map(|pixel| [pixel[0], pixel[1], pixel[2]]).collect())
    };
    // Nothing drawn: the preview's own pixels, exactly as the worker made them.
    if let Some(preview) = preview
        && history.is_empty()
        && (preview.width(), preview.height()) == (width, height)
    {
        return read(&context(preview)?);
    }
    let canvas = scratch_canvas(width, height)?;
    let context = context(&canvas)?;
    match preview {
        Some(preview) if (preview.width(), preview.height()) == (width, height) => {
            context.draw_image_with_html_canvas_element(preview, 0.0, 0.0)?
        }
        Some(_) => return Err("the preview is not at the generation's size".into()),
        None => {
            context.set_fill_style_str("#000");
            context.fill_rect(0.0, 0.0, f64::from(width), f64::from(height));
        }
    }
    if !history.is_empty() {
        let layer = scratch_canvas(width, height)?;
        scribble::render(history, &layer);
        context.draw_image_with_html_canvas_element(&layer, 0.0, 0.0)?;
    }
    read(&context)
}

/// A canvas that is not on the page.
fn scratch_canvas(width: u32, height: u32) -> Result<HtmlCanvasElement, JsValue> {
    let document = web_sys::window().and_then(|window| window.document()).ok_or("no document")?;
    let canvas: HtmlCanvasElement = document.create_element("canvas")?.dyn_into()?;
    canvas.set_width(width);
    canvas.set_height(height);
    Ok(canvas)
}
