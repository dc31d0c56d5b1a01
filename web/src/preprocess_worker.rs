//! The preprocessing worker: a second dedicated Web Worker that decodes condition images and
//! runs the preprocessors (Canny, scribble from line art, sketch from photo) off the UI thread.
//!
//! It is not the GPU worker: a slider move must never wait behind a diffusion step, and this
//! worker links no burn (its wasm is small and starts at once). Requests are handled one at a time
//! in arrival order, synchronously; the UI keeps at most one `Process` in flight and replaces the
//! waiting one, so a burst of slider moves costs one computation per answer, not one per move.

use std::cell::RefCell;

use preprocess::{GrayImage, RgbImage};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::MessageEvent;

use crate::protocol::{PreprocessOp, PreprocessRequest, PreprocessResponse, Resize, ResizeMode};
use crate::scope::{now_ms, scope};

/// Installs the message handler. Called once from the worker binary's `main`.
pub fn start() {
    console_error_panic_hook::set_once();
    let source = RefCell::new(Source::default());
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let response = match serde_wasm_bindgen::from_value::<PreprocessRequest>(event.data()) {
            Ok(request) => source.borrow_mut().handle(request, now_ms),
            Err(e) => PreprocessResponse::Error { id: None, message: format!("malformed request: {e}") },
        };
        post(&response);
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    // The handler lives as long as the worker does.
    onmessage.forget();
    post(&PreprocessResponse::Ready);
}

/// The decoded image, kept between requests so that moving a slider sends no file.
#[derive(Default)]
pub struct Source {
    image: Option<RgbImage>,
    /// The image fitted to the last size asked for: a threshold change re-runs only the
    /// preprocessor, not the resize.
    fitted: Option<(Fit, RgbImage)>,
}

impl Source {
    /// Answers one request; `now` is a millisecond clock (`performance.now()` in the worker).
    pub fn handle(&mut self, request: PreprocessRequest, now: impl Fn() -> f64) -> PreprocessResponse {
        match request {
            PreprocessRequest::Decode { id, bytes } => {
                let started = now();
                match preprocess::decode(&bytes) {
                    Ok(image) => {
                        let (width, height) = (image.width as u32, image.height as u32);
                        self.image = Some(image);
                        self.fitted = None;
                        PreprocessResponse::Decoded { id, width, height, decode_ms: now() - started }
                    }
                    // The previous image stays: a bad file must not break what already works.
                    Err(e) => PreprocessResponse::Error { id: Some(id), message: e.to_string() },
                }
            }
            PreprocessRequest::Process { id, op, resize, invert } => self
                .process(id, op, resize, invert, now)
                .unwrap_or_else(|message| PreprocessResponse::Error { id: Some(id), message }),
        }
    }

    fn process(
        &mut self,
        id: u32,
        op: PreprocessOp,
        resize: Resize,
        invert: bool,
        now: impl Fn() -> f64,
    ) -> Result<PreprocessResponse, String> {
        resize.validate().map_err(|e| e.to_string())?;
        let op = checked(op)?;
        let image = self.image.as_ref().ok_or("no image yet: drop, paste or choose one first")?;
        let started = now();
        let fit = Fit { resize, as_map: op == PreprocessOp::None };
        let fitted = match self.fitted.take() {
            Some((cached, fitted)) if cached == fit => fitted,
            _ => fit.apply(image),
        };
        let op_started = now();
        let map = match op {
            PreprocessOp::Canny { low, high } => Some(preprocess::canny(&fitted, low, high)),
            PreprocessOp::Scribble => Some(preprocess::scribble_from_lineart(&fitted)),
            PreprocessOp::Xdog => Some(preprocess::xdog(&fitted)),
            PreprocessOp::None => None,
        };
        let op_ms = now() - op_started;
        let rgba = match map {
            Some(map) => gray_to_rgba(&fit.pad(map), invert),
            None => rgb_to_rgba(&fitted, invert),
        };
        self.fitted = Some((fit, fitted));
        Ok(PreprocessResponse::Processed {
            id,
            width: resize.width,
            height: resize.height,
            rgba,
            op_ms,
            elapsed_ms: now() - started,
        })
    }
}

/// How the source becomes the preprocessor's input.
///
/// As in A1111, a preprocessor sees the picture, never the padding: for "resize and fill" it runs
/// on the picture scaled to fit inside the target, and its map is then padded with black. (Run on
/// a padded picture, Canny would draw the padding's edges, and the scribble threshold would turn
/// a dark padding white.) Just resize and crop and resize have no padding: the preprocessor runs
/// at the target size. With no preprocessor the picture is the map, padded with black.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fit {
    resize: Resize,
    /// The picture is the control map itself (no preprocessor).
    as_map: bool,
}

impl Fit {
    fn apply(&self, image: &RgbImage) -> RgbImage {
        let Resize { mode, width, height } = self.resize;
        let (width, height) = (width as usize, height as usize);
        match mode {
            _ if self.as_map => preprocess::resize_map(image, resize_mode(mode), width, height),
            ResizeMode::Fill => {
                let (inner_width, inner_height) = self.inner(image.width, image.height);
                preprocess::resample(image, inner_width, inner_height)
            }
            ResizeMode::Just | ResizeMode::Crop => {
                preprocess::resize(image, resize_mode(mode), width, height)
            }
        }
    }

    /// A preprocessor's map at the target size: padded with black for "resize and fill".
    fn pad(&self, map: GrayImage) -> GrayImage {
        let (width, height) = (self.resize.width as usize, self.resize.height as usize);
        if (map.width, map.height) == (width, height) || map.width > width || map.height > height {
            return map;
        }
        // Centred, as `preprocess::resize` places the picture.
        let (left, top) = ((width - map.width) / 2, (height - map.height) / 2);
        let mut pixels = vec![0; width * height];
        for (row, source) in pixels.chunks_exact_mut(width).skip(top).zip(map.pixels.chunks_exact(map.width))
        {
            row[left..left + map.width].copy_from_slice(source);
        }
        GrayImage { width, height, pixels }
    }

    /// "Resize and fill": the picture's size inside the target, with `preprocess::resize`'s
    /// geometry (A1111's `int(np.round(side · k))`).
    fn inner(&self, picture_width: usize, picture_height: usize) -> (usize, usize) {
        let (width, height) = (self.resize.width as usize, self.resize.height as usize);
        if picture_width == 0 || picture_height == 0 {
            return (width, height);
        }
        let k = (height as f64 / picture_height as f64).min(width as f64 / picture_width as f64);
        let side = |x: f64| (x.round_ties_even() as usize).max(1);
        let inner_width = side(picture_width as f64 * k).min(width);
        let inner_height = side(picture_height as f64 * k).min(height);
        (inner_width, inner_height)
    }
}

/// Refuses thresholds no slider sends, and orders them as OpenCV does (it swaps them).
fn checked(op: PreprocessOp) -> Result<PreprocessOp, String> {
    match op {
        PreprocessOp::Canny { low, high } => {
            if !(low.is_finite() && high.is_finite() && low >= 0.0 && high >= 0.0) {
                return Err(format!("Canny thresholds must be non-negative numbers, not {low} and {high}"));
            }
            Ok(PreprocessOp::Canny { low: low.min(high), high: low.max(high) })
        }
        other => Ok(other),
    }
}

fn resize_mode(mode: ResizeMode) -> preprocess::ResizeMode {
    match mode {
        ResizeMode::Just => preprocess::ResizeMode::JustResize,
        ResizeMode::Crop => preprocess::ResizeMode::CropAndResize,
        ResizeMode::Fill => preprocess::ResizeMode::ResizeAndFill,
    }
}

/// Gray → opaque RGBA for `ImageData`, inverted on the way if asked.
fn gray_to_rgba(gray: &GrayImage, invert: bool) -> Vec<u8> {
    let flip = if invert { 0xff } else { 0 };
    gray.pixels.iter().flat_map(|&v| [v ^ flip, v ^ flip, v ^ flip, 0xff]).collect()
}

/// RGB → opaque RGBA for `ImageData`, inverted on the way if asked.
fn rgb_to_rgba(rgb: &RgbImage, invert: bool) -> Vec<u8> {
    let flip = if invert { 0xff } else { 0 };
    rgb.pixels.chunks_exact(3).flat_map(|p| [p[0] ^ flip, p[1] ^ flip, p[2] ^ flip, 0xff]).collect()
}

/// Posts `response`, moving (not copying) its pixel buffer to the UI thread.
fn post(response: &PreprocessResponse) {
    let posted = crate::message::to_js(response).and_then(|(message, transfer)| {
        scope().post_message_with_transfer(&message, &transfer).map_err(|e| format!("{e:?}"))
    });
    if let Err(e) = posted {
        web_sys::console::error_1(&format!("the preprocessing worker could not post a message: {e}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 24-bit BMP (bottom-up rows padded to 4 bytes): the simplest real file the decoder reads.
    fn bmp(width: usize, height: usize, pixel: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
        let row = (width * 3).div_ceil(4) * 4;
        let size = 54 + row * height;
        let mut file = Vec::with_capacity(size);
        file.extend_from_slice(b"BM");
        file.extend_from_slice(&(size as u32).to_le_bytes());
        file.extend_from_slice(&[0; 4]);
        file.extend_from_slice(&54u32.to_le_bytes());
        file.extend_from_slice(&40u32.to_le_bytes());
        file.extend_from_slice(&(width as i32).to_le_bytes());
        file.extend_from_slice(&(height as i32).to_le_bytes());
        file.extend_from_slice(&1u16.to_le_bytes());
        file.extend_from_slice(&24u16.to_le_bytes());
        file.extend_from_slice(&[0; 24]);
        for y in (0..height).rev() {
            let start = file.len();
            for x in 0..width {
                let [r, g, b] = pixel(x, y);
                file.extend_from_slice(&[b, g, r]);
            }
            file.resize(start + row, 0);
        }
        file
    }

    /// A white square on black: Canny finds its outline.
    fn square() -> Vec<u8> {
        bmp(80, 60, |x, y| if (20..60).contains(&x) && (15..45).contains(&y) { [255; 3] } else { [0; 3] })
    }

    fn canny(id: u32, width: u32, height: u32, invert: bool) -> PreprocessRequest {
        PreprocessRequest::Process {
            id,
            op: PreprocessOp::Canny { low: 100.0, high: 200.0 },
            resize: Resize { mode: ResizeMode::Just, width, height },
            invert,
        }
    }

    fn processed(response: PreprocessResponse) -> (u32, u32, u32, Vec<u8>) {
        match response {
            PreprocessResponse::Processed { id, width, height, rgba, op_ms, elapsed_ms } => {
                assert!(op_ms >= 0.0 && elapsed_ms >= op_ms, "{op_ms} {elapsed_ms}");
                (id, width, height, rgba)
            }
            other => panic!("expected Processed, got {other:?}"),
        }
    }

    fn clock() -> impl Fn() -> f64 {
        let ticks = std::cell::Cell::new(0.0);
        move || {
            ticks.set(ticks.get() + 1.0);
            ticks.get()
        }
    }

    #[test]
    fn decodes_then_processes_and_keeps_the_image_across_bad_files() {
        let mut source = Source::default();
        let before = source.handle(canny(1, 64, 64, false), clock());
        assert!(
            matches!(&before, PreprocessResponse::Error { id: Some(1), message } if message.contains("no image"))
        );

        let decoded = source.handle(PreprocessRequest::Decode { id: 2, bytes: square() }, clock());
        assert_eq!(decoded, PreprocessResponse::Decoded { id: 2, width: 80, height: 60, decode_ms: 1.0 });

        let (id, width, height, edges) = processed(source.handle(canny(3, 80, 64, false), clock()));
        assert_eq!((id, width, height, edges.len()), (3, 80, 64, 80 * 64 * 4));
        let white = edges.chunks_exact(4).filter(|p| p[..3] == [255; 3]).count();
        let black = edges.chunks_exact(4).filter(|p| p[..3] == [0; 3]).count();
        assert!(edges.chunks_exact(4).all(|p| p[3] == 255), "opaque");
        assert_eq!(white + black, 80 * 64, "a binary edge map");
        assert!(white > 100 && white < 80 * 64 / 4, "{white} edge pixels");

        let (_, _, _, inverted) = processed(source.handle(canny(4, 80, 64, true), clock()));
        assert!(edges.iter().zip(&inverted).enumerate().all(|(i, (&a, &b))| if i % 4 == 3 {
            b == 255
        } else {
            b == 255 - a
        }));

        let bad =
            source.handle(PreprocessRequest::Decode { id: 5, bytes: b"hello, world".to_vec() }, clock());
        assert!(matches!(bad, PreprocessResponse::Error { id: Some(5), .. }), "{bad:?}");
        let (_, _, _, again) = processed(source.handle(canny(6, 80, 64, false), clock()));
        assert_eq!(again, edges, "the earlier image is still there");
    }

    #[test]
    fn refuses_what_no_ui_sends() {
        let mut source = Source::default();
        source.handle(PreprocessRequest::Decode { id: 1, bytes: square() }, clock());
        let odd = source.handle(canny(2, 100, 64, false), clock());
        assert!(
            matches!(&odd, PreprocessResponse::Error { id: Some(2), message } if message.contains("multiple of 8"))
        );
        let nan = source.handle(
            PreprocessRequest::Process {
                id: 3,
                op: PreprocessOp::Canny { low: f64::NAN, high: 200.0 },
                resize: Resize { mode: ResizeMode::Crop, width: 64, height: 64 },
                invert: false,
            },
            clock(),
        );
        assert!(matches!(nan, PreprocessResponse::Error { id: Some(3), .. }));
    }

    #[test]
    fn resize_and_fill_pads_the_map_not_the_picture() {
        // Line art in a black frame: padded in its border's colour (black) before the scribble
        // threshold, the padding would turn white.
        let frame = |x: usize, y: usize| x < 3 || y < 3 || x >= 77 || y >= 57;
        let square = |x: usize, y: usize| (30..50).contains(&x) && (20..40).contains(&y);
        let lineart = bmp(80, 60, |x, y| if frame(x, y) || square(x, y) { [0; 3] } else { [255; 3] });
        let mut source = Source::default();
        source.handle(PreprocessRequest::Decode { id: 1, bytes: lineart }, clock());
        let request = |op| PreprocessRequest::Process {
            id: 2,
            op,
            resize: Resize { mode: ResizeMode::Fill, width: 80, height: 80 },
            invert: false,
        };
        for op in
            [PreprocessOp::Canny { low: 100.0, high: 200.0 }, PreprocessOp::Scribble, PreprocessOp::Xdog]
        {
            let (_, width, height, rgba) = processed(source.handle(request(op), clock()));
            assert_eq!((width, height), (80, 80));
            let row_white =
                |y: usize| rgba[y * 80 * 4..(y + 1) * 80 * 4].chunks_exact(4).any(|p| p[0] == 255);
            // 80×60 fits as 80×60 with 10 black rows above and below.
            for y in (0..10).chain(70..80) {
                assert!(!row_white(y), "{op:?}: row {y} should be black");
            }
            assert!((10..70).any(row_white), "{op:?}: the picture is in the map");
        }
        let (_, _, _, none) = processed(source.handle(request(PreprocessOp::None), clock()));
        assert_eq!(&none[..4], [0, 0, 0, 255], "no preprocessor: the picture padded with black");
        assert_eq!(&none[(40 * 80 + 10) * 4..][..4], [255, 255, 255, 255]);
    }

    #[test]
    fn none_passes_the_fitted_image_through() {
        let mut source = Source::default();
        source.handle(PreprocessRequest::Decode { id: 1, bytes: square() }, clock());
        let request = |invert| PreprocessRequest::Process {
            id: 2,
            op: PreprocessOp::None,
            resize: Resize { mode: ResizeMode::Just, width: 80, height: 64 },
            invert,
        };
        let (_, _, _, rgba) = processed(source.handle(request(false), clock()));
        // The centre of the square is white, a corner is black.
        let at = |x: usize, y: usize| &rgba[(y * 80 + x) * 4..][..4];
        assert_eq!(at(40, 32), [255, 255, 255, 255]);
        assert_eq!(at(2, 2), [0, 0, 0, 255]);
        let (_, _, _, inverted) = processed(source.handle(request(true), clock()));
        assert_eq!(&inverted[(32 * 80 + 40) * 4..][..4], [0, 0, 0, 255]);
    }
}
