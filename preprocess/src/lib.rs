//! Condition images for ControlNet, in pure Rust (native and `wasm32-unknown-unknown`, no GPU).
//!
//! The pieces of the A1111 sd-webui-controlnet extension that turn a user's picture into a
//! control map, reproduced so that the same picture gives the same map:
//!
//! * [`decode`]: PNG, JPEG (EXIF orientation applied), WebP, GIF (first frame) and BMP to RGB8,
//!   refusing decompression bombs before they allocate, and scaling very large photos down to
//!   [`MAX_WORKING_SIDE`].
//! * [`resize`] / [`resize_map`]: the extension's three resize modes (just resize, crop and
//!   resize, resize and fill) with OpenCV's `INTER_AREA` / `INTER_CUBIC` resampling.
//! * [`canny`]: `cv2.Canny(rgb, low, high)` exactly (the `canny` preprocessor).
//! * [`scribble_from_lineart`] and [`xdog`]: the `scribble_thr` and `scribble_xdog`
//!   preprocessors.
//! * [`to_model_input`]: the map as the pipeline's CHW `[0, 1]` condition tensor data.
//!
//! Maps are white strokes on black ([`GrayImage`]), as the ControlNet 1.1 models expect;
//! [`GrayImage::inverted`] gives black on white for display.
//!
//! The tests compare every function with OpenCV 5.0 on the fixtures written by
//! `tests/fixtures/make_condition_fixtures.py`.

mod canny;
mod decode;
mod encode;
mod pixels;
mod resize;
mod scribble;

pub use canny::canny;
pub use decode::{
    Alpha, DecodeError, MAX_DECODE_PIXELS, MAX_WORKING_SIDE, decode, decode_full, decode_full_within,
    decode_within,
};
pub use encode::{encode_png, encode_png_gray};
pub use pixels::{GrayImage, RgbImage};
pub use resize::{ResizeMode, resample, resize, resize_map};
pub use scribble::{XDOG_THRESHOLD, scribble_from_lineart, xdog, xdog_with_threshold};

/// The map as the pipeline's condition tensor data: CHW `f32` in `[0, 1]` (`pixel / 255`), the
/// layout of `[3, height, width]`, as diffusers' `ControlNet` image processor produces it (no
/// normalisation to `[-1, 1]` for control images).
pub fn to_model_input(map: &RgbImage) -> Vec<f32> {
    let plane = map.width * map.height;
    let mut out = vec![0.0f32; 3 * plane];
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, p) in map.pixels.chunks_exact(3).enumerate() {
        r[i] = f32::from(p[0]) / 255.0;
        g[i] = f32::from(p[1]) / 255.0;
        b[i] = f32::from(p[2]) / 255.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_input_is_chw_in_unit_range() {
        let map = RgbImage { width: 2, height: 1, pixels: vec![0, 51, 255, 255, 102, 0] };
        assert_eq!(to_model_input(&map), vec![0.0, 1.0, 0.2, 0.4, 1.0, 0.0]);
    }
}
