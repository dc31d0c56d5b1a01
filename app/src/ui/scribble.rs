//! The scribble pad: white strokes drawn over the control map with a mouse, a finger or a pen,
//! with a brush size, an eraser, stroke-level undo and redo, and clear.
//!
//! Strokes are kept as data (points relative to the canvas, brush size relative to its width)
//! and the canvas is repainted from them, so undo is exact and a change of the control map's
//! size keeps the drawing where it was.

use leptos::ev;
use leptos::html::Canvas;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlInputElement, KeyboardEvent, PointerEvent};

/// One stroke, from pointer down to pointer up.
#[derive(Clone, Debug, PartialEq)]
pub struct Stroke {
    /// Positions relative to the canvas, 0..1 on each axis.
    pub points: Vec<(f64, f64)>,
    /// Brush diameter as a fraction of the canvas width.
    pub size: f64,
    /// Erases strokes instead of drawing one (the control map beneath is left alone).
    pub erase: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Action {
    Stroke(Stroke),
    /// Clearing is an action too, so that it can be undone.
    Clear,
}

/// What was drawn, as an undo stack and a redo stack of whole strokes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    done: Vec<Action>,
    undone: Vec<Action>,
}

impl History {
    pub fn add(&mut self, stroke: Stroke) {
        self.done.push(Action::Stroke(stroke));
        self.undone.clear();
    }

    /// Clears the pad, unless it is already empty.
    pub fn clear(&mut self) {
        if !self.is_empty() {
            self.done.push(Action::Clear);
            self.undone.clear();
        }
    }

    pub fn undo(&mut self) {
        if let Some(action) = self.done.pop() {
            self.undone.push(action);
        }
    }

    pub fn redo(&mut self) {
        if let Some(action) = self.undone.pop() {
            self.done.push(action);
        }
    }

    pub fn can_undo(&self) -> bool {
        !self.done.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.undone.is_empty()
    }

    /// The strokes on the pad now, oldest first: those since the last clear.
    pub fn visible(&self) -> impl Iterator<Item = &Stroke> {
        let start = self.done.iter().rposition(|action| *action == Action::Clear).map_or(0, |i| i + 1);
        self.done[start..].iter().filter_map(|action| match action {
            Action::Stroke(stroke) => Some(stroke),
            Action::Clear => None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.visible().next().is_none()
    }
}

/// Brush diameters offered, in control-map pixels.
const BRUSH_MIN: f64 = 1.0;
const BRUSH_MAX: f64 = 64.0;

/// The brush until the visitor picks one: 1.6 % of the map's width (8 px at 512, a pen's
/// stroke; the shapes world's scribbles are 1.2–3.5 %), at least 2 px.
fn default_brush(width: u32) -> f64 {
    (0.016 * f64::from(width)).round().clamp(2.0, BRUSH_MAX)
}

/// The drawing canvas over `children` (the control map), and its tools. `width` × `height` is
/// the control map's size: the canvas has as many pixels.
#[component]
pub fn ScribblePad(
    width: Signal<u32>,
    height: Signal<u32>,
    /// What was drawn; owned by the parent, which combines it with the control map.
    history: RwSignal<History>,
    /// Whether Ctrl+Z and Ctrl+Y are this pad's (one pad per control unit).
    active: Signal<bool>,
    children: Children,
) -> impl IntoView {
    let canvas = NodeRef::<Canvas>::new();
    let brush = RwSignal::new(default_brush(width.get_untracked()));
    // The default follows the map's size (the shapes models draw at 64², SD at 512²) until the
    // visitor moves the slider.
    let brush_chosen = RwSignal::new(false);
    Effect::new(move || {
        let width = width.get();
        if !brush_chosen.get_untracked() {
            brush.set(default_brush(width));
        }
    });
    let eraser = RwSignal::new(false);
    let current = StoredValue::new(None);

    // Repaint from the history whenever it or the size changes (resizing a canvas clears it).
    Effect::new(move || {
        let (width, height) = (width.get(), height.get());
        let Some(canvas) = canvas.get() else { return };
        if canvas.width() != width || canvas.height() != height {
            canvas.set_width(width);
            canvas.set_height(height);
        }
        history.with(|history| render(history, &canvas));
    });

    let drawing = Drawing { canvas, brush, eraser, current, history };
    // Ctrl+Z / Ctrl+Shift+Z / Ctrl+Y, except where a text field has its own undo.
    let keys = window_event_listener(ev::keydown, move |event: KeyboardEvent| {
        if !(event.ctrl_key() || event.meta_key()) || in_text_field(&event) || !active.get_untracked() {
            return;
        }
        match (event.key().to_lowercase().as_str(), event.shift_key()) {
            ("z", false) => history.update(History::undo),
            ("z", true) | ("y", _) => history.update(History::redo),
            _ => return,
        }
        event.prevent_default();
    });
    on_cleanup(move || keys.remove());

    view! {
        <div
            class="condition-stage"
            style=move || format!("aspect-ratio: {} / {}", width.get(), height.get())
        >
            {children()}
            <canvas
                class="scribble-canvas"
                data-testid="scribble-canvas"
                node_ref=canvas
                on:pointerdown=move |event| drawing.down(&event)
                on:pointermove=move |event| drawing.moved(&event)
                on:pointerup=move |event| drawing.up(&event)
                on:pointercancel=move |event| drawing.up(&event)
            ></canvas>
        </div>
        <ScribbleTools brush brush_chosen eraser history />
    }
}

/// The pointer's strokes on the pad's canvas. Cheap to copy.
#[derive(Clone, Copy)]
struct Drawing {
    canvas: NodeRef<Canvas>,
    brush: RwSignal<f64>,
    eraser: RwSignal<bool>,
    /// The stroke being drawn and the pointer drawing it; other pointers are ignored meanwhile.
    current: StoredValue<Option<(i32, Stroke)>>,
    history: RwSignal<History>,
}

impl Drawing {
    /// A stroke starts, with the primary button: a mouse's left button, a finger's contact, a
    /// pen's tip.
    fn down(self, event: &PointerEvent) {
        if event.button() != 0 || self.current.with_value(Option::is_some) {
            return;
        }
        let Some(canvas) = self.canvas.get_untracked() else { return };
        event.prevent_default();
        // Keep receiving this pointer's moves when it leaves the canvas.
        let _ = canvas.set_pointer_capture(event.pointer_id());
        let stroke = Stroke {
            points: vec![position(&canvas, event)],
            size: self.brush.get_untracked() / f64::from(canvas.width().max(1)),
            erase: self.eraser.get_untracked(),
        };
        if let Some(context) = context(&canvas) {
            paint(&context, &stroke, 0);
        }
        self.current.set_value(Some((event.pointer_id(), stroke)));
    }

    /// The stroke goes on, painted a segment at a time.
    fn moved(self, event: &PointerEvent) {
        let Some(canvas) = self.canvas.get_untracked() else { return };
        self.current.update_value(|current| {
            let Some((pointer, stroke)) = current else { return };
            if *pointer != event.pointer_id() {
                return;
            }
            stroke.points.push(position(&canvas, event));
            if let Some(context) = context(&canvas) {
                // Only the new segment: the rest is on the canvas already.
                paint(&context, stroke, stroke.points.len() - 2);
            }
        });
    }

    /// The stroke ends (or the pointer is lost) and goes into the history.
    fn up(self, event: &PointerEvent) {
        let finished = self
            .current
            .try_update_value(|current| match current {
                Some((pointer, _)) if *pointer == event.pointer_id() => current.take(),
                _ => None,
            })
            .flatten();
        if let Some((_, stroke)) = finished {
            self.history.update(|history| history.add(stroke));
        }
    }
}

/// The brush size, the eraser, Undo, Redo and Clear.
#[component]
fn ScribbleTools(
    brush: RwSignal<f64>,
    /// Set once the visitor moves the slider: the size then stops following the map's.
    brush_chosen: RwSignal<bool>,
    eraser: RwSignal<bool>,
    history: RwSignal<History>,
) -> impl IntoView {
    view! {
    <div class="scribble-tools" role="toolbar" aria-label="Drawing">
        <label>
            "Brush "
            <input
                type="range"
                data-testid="brush-size"
                min=BRUSH_MIN.to_string()
                max=BRUSH_MAX.to_string()
                step="1"
                prop:value=move || brush.get()
                on:input=move |event| {
                    if let Ok(size) = event_target_value(&event).parse::<f64>() {
                        brush.set(size.clamp(BRUSH_MIN, BRUSH_MAX));
                        brush_chosen.set(true);
                    }
                }
            />
            <output>{move || format!("{} px", brush.get())}</output>
        </label>
        <button
            data-testid="eraser"
            class="toggle"
            aria-pressed=move || eraser.get().to_string()
            on:click=move |_| eraser.update(|on| *on = !*on)
        >
            "Eraser"
        </button>
        <button
            data-testid="scribble-undo"
            title="Undo (Ctrl+Z)"
            disabled=move || !history.with(History::can_undo)
            on:click=move |_| history.update(History::undo)
        >
            "Undo"
        </button>
        <button
            data-testid="scribble-redo"
            title="Redo (Ctrl+Shift+Z)"
            disabled=move || !history.with(History::can_redo)
            on:click=move |_| history.update(History::redo)
        >
            "Redo"
        </button>
        <button
            data-testid="scribble-clear"
            disabled=move || history.with(History::is_empty)
            on:click=move |_| history.update(History::clear)
        >
            "Clear"
        </button>
    </div>
    }
}

/// Paints the visible strokes of `history` on a transparent `canvas`, at its size: the pad's
/// drawing, and the layer the control map is composited with.
pub fn render(history: &History, canvas: &HtmlCanvasElement) {
    let Some(context) = context(canvas) else { return };
    context.clear_rect(0.0, 0.0, f64::from(canvas.width()), f64::from(canvas.height()));
    for stroke in history.visible() {
        paint(&context, stroke, 0);
    }
}

fn context(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten()?.dyn_into().ok()
}

/// The pointer's position relative to the canvas as displayed (CSS scales it).
fn position(canvas: &HtmlCanvasElement, event: &PointerEvent) -> (f64, f64) {
    let rect = canvas.get_bounding_client_rect();
    let relative = |at: f64, start: f64, length: f64| if length > 0.0 { (at - start) / length } else { 0.0 };
    (
        relative(f64::from(event.client_x()), rect.left(), rect.width()),
        relative(f64::from(event.client_y()), rect.top(), rect.height()),
    )
}

/// Paints `stroke` from its point `from` on: round caps and joins, so a click is a dot and a
/// drag a smooth line.
fn paint(context: &CanvasRenderingContext2d, stroke: &Stroke, from: usize) {
    let Some(canvas) = context.canvas() else { return };
    let (width, height) = (f64::from(canvas.width()), f64::from(canvas.height()));
    let diameter = (stroke.size * width).max(1.0);
    let at = |(x, y): (f64, f64)| (x * width, y * height);
    // Erasing removes strokes only: this canvas is transparent over the control map.
    let _ =
        context.set_global_composite_operation(if stroke.erase { "destination-out" } else { "source-over" });
    context.set_stroke_style_str("#fff");
    context.set_fill_style_str("#fff");
    context.set_line_width(diameter);
    context.set_line_cap("round");
    context.set_line_join("round");
    context.begin_path();
    let points = &stroke.points[from.min(stroke.points.len())..];
    match points {
        [] => {}
        [point] => {
            let (x, y) = at(*point);
            let _ = context.arc(x, y, diameter / 2.0, 0.0, std::f64::consts::TAU);
            context.fill();
        }
        [first, rest @ ..] => {
            let (x, y) = at(*first);
            context.move_to(x, y);
            for &point in rest {
                let (x, y) = at(point);
                context.line_to(x, y);
            }
            context.stroke();
        }
    }
}

fn in_text_field(event: &KeyboardEvent) -> bool {
    let Some(target) = event.target() else { return false };
    if target.dyn_ref::<web_sys::HtmlTextAreaElement>().is_some() {
        return true;
    }
    target
        .dyn_ref::<HtmlInputElement>()
        .is_some_and(|input| matches!(input.type_().as_str(), "text" | "number" | "search" | "url" | "email"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stroke(x: f64) -> Stroke {
        Stroke { points: vec![(x, 0.5)], size: 0.02, erase: false }
    }

    fn xs(history: &History) -> Vec<f64> {
        history.visible().map(|stroke| stroke.points[0].0).collect()
    }

    #[test]
    fn undo_and_redo_whole_strokes_and_clears() {
        let mut history = History::default();
        assert!(history.is_empty() && !history.can_undo() && !history.can_redo());
        history.add(stroke(0.1));
        history.add(stroke(0.2));
        assert_eq!(xs(&history), [0.1, 0.2]);
        history.undo();
        assert_eq!(xs(&history), [0.1]);
        history.redo();
        assert_eq!(xs(&history), [0.1, 0.2]);

        history.clear();
        assert!(history.is_empty());
        history.clear();
        history.undo();
        assert_eq!(xs(&history), [0.1, 0.2], "undoing a clear brings the strokes back");
        history.redo();
        assert!(history.is_empty());

        history.undo();
        history.undo();
        assert!(history.can_redo());
        history.add(stroke(0.3));
        assert!(!history.can_redo(), "a new stroke drops what was undone");
        assert_eq!(xs(&history), [0.1, 0.3]);

        history.undo();
        history.undo();
        history.undo();
        assert!(history.is_empty() && !history.can_undo());
    }
}
