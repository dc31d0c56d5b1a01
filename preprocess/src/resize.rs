//! Fitting a picture to the generation size, as the A1111 ControlNet extension does
//! (`detectmap_proc` in `scripts/controlnet.py`), with OpenCV's resampling.
//!
//! * [`ResizeMode::JustResize`] stretches to the target size.
//! * [`ResizeMode::CropAndResize`] scales to cover the target (`k = max(w/W, h/H)`) and cuts the
//!   overflow evenly from both sides.
//! * [`ResizeMode::ResizeAndFill`] scales to fit inside (`k = min(…)`) and pads evenly; [`resize`]
//!   pads with the median colour of the picture's border pixels (as A1111), [`resize_map`] with
//!   black (the background of a white-on-black map).
//!
//! Scaled sizes are `int(np.round(side · k))` (round half to even), at least 1. Resampling is
//! `cv2.resize` with `INTER_AREA` when the new size has fewer pixels and `INTER_CUBIC`
//! otherwise, reproduced from OpenCV's `resize.cpp` (the same coordinate mapping, area weights
//! and rounding; cubic as OpenCV 5.0 computes it, in double precision, for pictures of at least
//! 4×4 pixels). The fixtures match OpenCV pixel for pixel but for exact ties of synthetic images.
//! A1111's extra branches for maps of few colours (nearest neighbour; Otsu threshold and
//! thinning of binary maps) are not reproduced: resize the picture first, then run the
//! preprocessor at the final size, as the CLI and the worker do.

use crate::RgbImage;

/// How a picture is fitted to a different aspect ratio. `FromStr` reads `just`, `crop`, `fill`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResizeMode {
    /// Stretch to the target size.
    #[default]
    JustResize,
    /// Scale to cover the target, then cut the overflow evenly from both sides.
    CropAndResize,
    /// Scale to fit inside the target, then pad evenly.
    ResizeAndFill,
}

impl std::str::FromStr for ResizeMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "just" => Ok(Self::JustResize),
            "crop" => Ok(Self::CropAndResize),
            "fill" => Ok(Self::ResizeAndFill),
            other => Err(format!("unknown resize mode `{other}` (expected just, crop or fill)")),
        }
    }
}

impl std::fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::JustResize => "just",
            Self::CropAndResize => "crop",
            Self::ResizeAndFill => "fill",
        })
    }
}

/// Fits a picture to `width × height` (see the module docs). `ResizeAndFill` pads with the
/// median colour of the picture's border pixels, as A1111 does. An empty target gives an empty
/// image; an empty picture gives a black one.
pub fn resize(image: &RgbImage, mode: ResizeMode, width: usize, height: usize) -> RgbImage {
    fit(image, mode, width, height, || border_median(image))
}

/// [`resize`] for white-on-black maps: `ResizeAndFill` pads with black.
pub fn resize_map(map: &RgbImage, mode: ResizeMode, width: usize, height: usize) -> RgbImage {
    fit(map, mode, width, height, || [0; 3])
}

fn fit(
    image: &RgbImage,
    mode: ResizeMode,
    width: usize,
    height: usize,
    fill: impl Fn() -> [u8; 3],
) -> RgbImage {
    check(image);
    if width == 0 || height == 0 {
        return RgbImage { width, height, pixels: Vec::new() };
    }
    if image.width == 0 || image.height == 0 {
        return RgbImage::filled(width, height, [0; 3]);
    }
    if mode == ResizeMode::JustResize {
        return resample(image, width, height);
    }
    let (old_w, old_h) = (image.width as f64, image.height as f64);
    let (k0, k1) = (height as f64 / old_h, width as f64 / old_w);
    // `int(np.round(x))`, never 0.
    let side = |x: f64| (x.round_ties_even() as usize).max(1);
    if mode == ResizeMode::ResizeAndFill {
        let k = k0.min(k1);
        let (new_w, new_h) = (side(old_w * k).min(width), side(old_h * k).min(height));
        let scaled = resample(image, new_w, new_h);
        let mut out = RgbImage::filled(width, height, fill());
        let (top, left) = ((height - new_h) / 2, (width - new_w) / 2);
        for (dst, src) in
            out.pixels.chunks_exact_mut(width * 3).skip(top).zip(scaled.pixels.chunks_exact(new_w * 3))
        {
            dst[left * 3..(left + new_w) * 3].copy_from_slice(src);
        }
        out
    } else {
        let k = k0.max(k1);
        let (new_w, new_h) = (side(old_w * k).max(width), side(old_h * k).max(height));
        let scaled = resample(image, new_w, new_h);
        let (top, left) = ((new_h - height) / 2, (new_w - width) / 2);
        let rows = scaled.pixels.chunks_exact(new_w * 3).skip(top).take(height);
        let pixels = rows.flat_map(|row| &row[left * 3..(left + width) * 3]).copied().collect();
        RgbImage { width, height, pixels }
    }
}

fn check(image: &RgbImage) {
    assert_eq!(image.pixels.len(), image.width * image.height * 3, "RgbImage: pixels do not match its size");
}

/// `np.median` of the border pixels (top row, bottom row, left column, right column, corners
/// counted twice, as A1111 concatenates them), per channel, truncated to `u8`.
fn border_median(image: &RgbImage) -> [u8; 3] {
    let (w, h) = (image.width, image.height);
    let pixel = |x: usize, y: usize| &image.pixels[(y * w + x) * 3..][..3];
    let mut histograms = [[0usize; 256]; 3];
    let border = (0..w).flat_map(|x| [(x, 0), (x, h - 1)]).chain((0..h).flat_map(|y| [(0, y), (w - 1, y)]));
    let mut count = 0;
    for (x, y) in border {
        for (histogram, &v) in histograms.iter_mut().zip(pixel(x, y)) {
            histogram[usize::from(v)] += 1;
        }
        count += 1;
    }
    histograms.map(|histogram| {
        // The k-th smallest value (0-based).
        let nth = |k: usize| {
            let mut seen = 0;
            histogram.iter().position(|&n| {
                seen += n;
                seen > k
            })
        };
        let (a, b) = (nth((count - 1) / 2).unwrap_or(0), nth(count / 2).unwrap_or(0));
        // The mean of the two middle values, truncated (`.astype(uint8)`).
        ((a + b) / 2) as u8
    })
}

/// `cv2.resize` to `width × height`: `INTER_AREA` when the result has fewer pixels than the
/// source, `INTER_CUBIC` otherwise (A1111's choice for control maps).
pub fn resample(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    check(image);
    if (width, height) == (image.width, image.height) {
        return image.clone();
    }
    if width == 0 || height == 0 {
        return RgbImage { width, height, pixels: Vec::new() };
    }
    if image.width == 0 || image.height == 0 {
        return RgbImage::filled(width, height, [0; 3]);
    }
    if width * height < image.width * image.height {
        area(image, width, height)
    } else {
        cubic(image, width, height)
    }
}

/// OpenCV's `INTER_AREA`: exact box averages when both axes shrink, else its bilinear emulation.
fn area(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    let scale_x = 1.0 / (width as f64 / image.width as f64);
    let scale_y = 1.0 / (height as f64 / image.height as f64);
    if scale_x >= 1.0 && scale_y >= 1.0 {
        let (ix, iy) = (scale_x.round(), scale_y.round());
        if (scale_x - ix).abs() < f64::EPSILON && (scale_y - iy).abs() < f64::EPSILON {
            area_integer(image, width, height, ix as usize, iy as usize)
        } else {
            area_fractional(image, width, height, scale_x, scale_y)
        }
    } else {
        area_linear(image, width, height, scale_x, scale_y)
    }
}

/// Integer factors (`resizeAreaFast`): 2×2 blocks are `(sum + 2) >> 2` (OpenCV's vector path),
/// other blocks `cvRound(sum · (1/area))` in `f32`.
fn area_integer(image: &RgbImage, width: usize, height: usize, fx: usize, fy: usize) -> RgbImage {
    let stride = image.width * 3;
    let scale = 1.0f32 / (fx * fy) as f32;
    let mut pixels = Vec::with_capacity(width * height * 3);
    for dy in 0..height {
        let rows = &image.pixels[dy * fy * stride..(dy + 1) * fy * stride];
        for dx in 0..width {
            for c in 0..3 {
                let sum: u32 = rows
                    .chunks_exact(stride)
                    .flat_map(|row| row[dx * fx * 3..(dx + 1) * fx * 3].iter().skip(c).step_by(3))
                    .map(|&v| u32::from(v))
                    .sum();
                pixels.push(if fx == 2 && fy == 2 {
                    ((sum + 2) >> 2) as u8
                } else {
                    saturate_u8(sum as f32 * scale)
                });
            }
        }
    }
    RgbImage { width, height, pixels }
}

/// One source index and its weight, for a destination index (`DecimateAlpha`).
struct Decimate {
    src: usize,
    dst: usize,
    weight: f32,
}

/// `computeResizeAreaTab`: the source cells each destination cell covers, with their shares.
fn area_tab(src_len: usize, dst_len: usize, scale: f64) -> Vec<Decimate> {
    let mut tab = Vec::with_capacity(src_len * 2);
    let ssize = src_len as f64;
    for dst in 0..dst_len {
        let fsx1 = dst as f64 * scale;
        let fsx2 = fsx1 + scale;
        let cell = scale.min(ssize - fsx1);
        let sx2 = (fsx2.floor() as i64).min(src_len as i64 - 1);
        let sx1 = (fsx1.ceil() as i64).min(sx2);
        if sx1 as f64 - fsx1 > 1e-3 {
            tab.push(Decimate { src: (sx1 - 1) as usize, dst, weight: ((sx1 as f64 - fsx1) / cell) as f32 });
        }
        for src in sx1..sx2 {
            tab.push(Decimate { src: src as usize, dst, weight: (1.0 / cell) as f32 });
        }
        if fsx2 - sx2 as f64 > 1e-3 {
            let weight = ((fsx2 - sx2 as f64).min(1.0).min(cell) / cell) as f32;
            tab.push(Decimate { src: sx2 as usize, dst, weight });
        }
    }
    tab
}

/// Fractional factors (`ResizeArea_Invoker`): float32 sums of weighted rows, in OpenCV's order.
fn area_fractional(image: &RgbImage, width: usize, height: usize, scale_x: f64, scale_y: f64) -> RgbImage {
    let xtab = area_tab(image.width, width, scale_x);
    let ytab = area_tab(image.height, height, scale_y);
    let stride = image.width * 3;
    let mut pixels = vec![0u8; width * height * 3];
    let mut buf = vec![0f32; width * 3];
    let mut sum = vec![0f32; width * 3];
    let mut prev_dy = ytab.first().map_or(0, |t| t.dst);
    let flush = |pixels: &mut [u8], dy: usize, sum: &[f32]| {
        for (p, &s) in pixels[dy * width * 3..(dy + 1) * width * 3].iter_mut().zip(sum) {
            *p = saturate_u8(s);
        }
    };
    for t in &ytab {
        let row = &image.pixels[t.src * stride..(t.src + 1) * stride];
        buf.fill(0.0);
        for x in &xtab {
            for c in 0..3 {
                buf[x.dst * 3 + c] += f32::from(row[x.src * 3 + c]) * x.weight;
            }
        }
        if t.dst != prev_dy {
            flush(&mut pixels, prev_dy, &sum);
            for (s, &b) in sum.iter_mut().zip(&buf) {
                *s = t.weight * b;
            }
            prev_dy = t.dst;
        } else {
            for (s, &b) in sum.iter_mut().zip(&buf) {
                *s += t.weight * b;
            }
        }
    }
    flush(&mut pixels, prev_dy, &sum);
    RgbImage { width, height, pixels }
}

/// A destination index's first source index (it may lie outside the image: reads clamp it, as
/// `BORDER_REPLICATE`) and the weights of the `N` source pixels from there.
#[derive(Clone, Copy)]
struct Taps<W, const N: usize> {
    first: isize,
    weights: [W; N],
}

/// OpenCV's fixed-point weights have 11 fractional bits.
const COEF_SCALE: f32 = 2048.0;

/// `saturate_cast<short>(w · 2048)`.
fn fixed(w: f32) -> i32 {
    (w * COEF_SCALE).round_ties_even().clamp(-32768.0, 32767.0) as i32
}

/// Keys' cubic weights (`A = −0.75`, OpenCV's `interpolateCubic`) at `(d + 0.5)·scale − 0.5`.
fn keys<T>(x: T) -> [T; 4]
where
    T: Copy + From<f32> + std::ops::Add<Output = T> + std::ops::Sub<Output = T> + std::ops::Mul<Output = T>,
{
    let c = |v: f32| T::from(v);
    let a = c(-0.75);
    let one = c(1.0);
    let c0 = ((a * (x + one) - c(5.0) * a) * (x + one) + c(8.0) * a) * (x + one) - c(4.0) * a;
    let c1 = ((a + c(2.0)) * x - (a + c(3.0))) * x * x + one;
    let c2 = ((a + c(2.0)) * (one - x) - (a + c(3.0))) * (one - x) * (one - x) + one;
    [c0, c1, c2, one - c0 - c1 - c2]
}

/// OpenCV 5's `INTER_CUBIC` for 8-bit images of at least 4×4 pixels gives the correctly rounded
/// result of the cubic in double precision (every pixel of the fixtures), not the 11-bit
/// fixed-point result of OpenCV 4's generic code, which it keeps for smaller images
/// ([`cubic_taps_fixed`]).
fn cubic_taps(src_len: usize, dst_len: usize) -> Vec<Taps<f64, 4>> {
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    (0..dst_len)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let s = f.floor();
            Taps { first: s as isize - 1, weights: keys(f - s) }
        })
        .collect()
}

/// OpenCV's generic cubic: coordinates and weights in float, weights to 11-bit fixed point.
fn cubic_taps_fixed(src_len: usize, dst_len: usize) -> Vec<Taps<i32, 4>> {
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    (0..dst_len)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            Taps { first: s as isize - 1, weights: keys(f - s).map(fixed) }
        })
        .collect()
}

/// `INTER_AREA` when an axis grows: OpenCV's bilinear weights from the area overlap, fixed
/// point. OpenCV pins the last source column (not row) to weight 1 (`pin_end`).
fn area_linear_taps(src_len: usize, dst_len: usize, scale: f64, pin_end: bool) -> Vec<Taps<i32, 2>> {
    let inv_scale = dst_len as f64 / src_len as f64;
    (0..dst_len)
        .map(|d| {
            let mut s = (d as f64 * scale).floor() as isize;
            let f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
            let mut f = if f <= 0.0 { 0.0 } else { f - f.floor() };
            if pin_end && s >= src_len as isize - 1 {
                (s, f) = (src_len as isize - 1, 0.0);
            }
            Taps { first: s, weights: [fixed(1.0 - f), fixed(f)] }
        })
        .collect()
}

/// `INTER_CUBIC` as OpenCV 5 does it (see [`cubic_taps`]).
fn cubic(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    if image.width >= 4 && image.height >= 4 {
        let (taps_x, taps_y) = (cubic_taps(image.width, width), cubic_taps(image.height, height));
        separable(
            image,
            width,
            height,
            (&taps_x, &taps_y),
            |acc: f64, v, w| acc + f64::from(v) * w,
            |sums, weights| {
                let v: f64 = sums.iter().zip(weights).map(|(s, w)| s * w).sum();
                v.round_ties_even().clamp(0.0, 255.0) as u8
            },
        )
    } else {
        let (taps_x, taps_y) = (cubic_taps_fixed(image.width, width), cubic_taps_fixed(image.height, height));
        separable(
            image,
            width,
            height,
            (&taps_x, &taps_y),
            |acc: i32, v, w| acc + i32::from(v) * w,
            // `VResizeCubicVec_32s8u`: float32 weights / 2²², `s0·b0 + (s1·b1 + (s2·b2 + s3·b3))`.
            |sums, weights| {
                let b = |k: usize| weights[k] as f32 * (1.0 / (COEF_SCALE * COEF_SCALE));
                let mut v = sums[3] as f32 * b(3);
                for k in (0..3).rev() {
                    v += sums[k] as f32 * b(k);
                }
                saturate_u8(v)
            },
        )
    }
}

/// `INTER_AREA`'s bilinear emulation: integer rows, then OpenCV's vector formula
/// `((s0>>4)·b0 >> 16) + ((s1>>4)·b1 >> 16) + 2 >> 2` (`VResizeLinearVec_32s8u`).
fn area_linear(image: &RgbImage, width: usize, height: usize, scale_x: f64, scale_y: f64) -> RgbImage {
    let taps_x = area_linear_taps(image.width, width, scale_x, true);
    let taps_y = area_linear_taps(image.height, height, scale_y, false);
    separable(
        image,
        width,
        height,
        (&taps_x, &taps_y),
        |acc: i32, v, w| acc + i32::from(v) * w,
        |sums, weights| {
            let v = 2 + (((sums[0] >> 4) * weights[0]) >> 16) + (((sums[1] >> 4) * weights[1]) >> 16);
            (v >> 2).clamp(0, 255) as u8
        },
    )
}

/// A separable resampling: each source row is filtered horizontally once (`add` folds a pixel
/// and its weight into a sum), then each output row combines the `N` rows it needs (`combine`).
fn separable<W: Copy, A: Copy + Default, const N: usize>(
    image: &RgbImage,
    width: usize,
    height: usize,
    (taps_x, taps_y): (&[Taps<W, N>], &[Taps<W, N>]),
    add: impl Fn(A, u8, W) -> A,
    combine: impl Fn([A; N], &[W; N]) -> u8,
) -> RgbImage {
    let stride = image.width * 3;
    let clamp = |i: isize, len: usize| i.clamp(0, len as isize - 1) as usize;
    let horizontal = |y: usize, out: &mut [A]| {
        let row = &image.pixels[y * stride..(y + 1) * stride];
        for (t, o) in taps_x.iter().zip(out.chunks_exact_mut(3)) {
            let mut acc = [A::default(); 3];
            for (k, &w) in t.weights.iter().enumerate() {
                let s = clamp(t.first + k as isize, image.width) * 3;
                for (a, &v) in acc.iter_mut().zip(&row[s..s + 3]) {
                    *a = add(*a, v, w);
                }
            }
            o.copy_from_slice(&acc);
        }
    };
    // The filtered rows in use, slot = row % N (an output row needs N consecutive rows at most).
    let mut cache: Vec<(usize, Vec<A>)> =
        (0..N).map(|_| (usize::MAX, vec![A::default(); width * 3])).collect();
    let mut pixels = Vec::with_capacity(width * height * 3);
    for t in taps_y {
        let rows: [usize; N] = std::array::from_fn(|k| clamp(t.first + k as isize, image.height));
        for &r in &rows {
            let slot = &mut cache[r % N];
            if slot.0 != r {
                horizontal(r, &mut slot.1);
                slot.0 = r;
            }
        }
        let sums: [&[A]; N] = std::array::from_fn(|k| cache[rows[k] % N].1.as_slice());
        pixels.extend((0..width * 3).map(|x| combine(sums.map(|s| s[x]), &t.weights)));
    }
    RgbImage { width, height, pixels }
}

/// `saturate_cast<uchar>(float)`: round half to even, clamp.
fn saturate_u8(v: f32) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: usize, height: usize) -> RgbImage {
        let pixels = (0..width * height).flat_map(|i| [(i % 251) as u8, (i * 7 % 256) as u8, 9]).collect();
        RgbImage { width, height, pixels }
    }

    #[test]
    fn modes_parse_and_print() {
        for (text, mode) in [
            ("just", ResizeMode::JustResize),
            ("crop", ResizeMode::CropAndResize),
            ("fill", ResizeMode::ResizeAndFill),
        ] {
            assert_eq!(text.parse::<ResizeMode>(), Ok(mode));
            assert_eq!(mode.to_string(), text);
        }
        assert!("stretch".parse::<ResizeMode>().unwrap_err().contains("just, crop or fill"));
    }

    #[test]
    fn every_mode_gives_the_target_size() {
        for (w, h) in [(1, 1), (3, 17), (64, 64), (100, 30), (1, 300)] {
            for mode in [ResizeMode::JustResize, ResizeMode::CropAndResize, ResizeMode::ResizeAndFill] {
                for image in [gradient(37, 23), gradient(1, 40), gradient(2, 2)] {
                    let out = resize(&image, mode, w, h);
                    assert_eq!(
                        (out.width, out.height, out.pixels.len()),
                        (w, h, w * h * 3),
                        "{mode} {w}×{h}"
                    );
                }
            }
        }
        assert_eq!(resize(&gradient(4, 4), ResizeMode::JustResize, 0, 5).pixels.len(), 0);
        let empty = RgbImage { width: 0, height: 0, pixels: Vec::new() };
        assert_eq!(resize(&empty, ResizeMode::ResizeAndFill, 2, 2), RgbImage::filled(2, 2, [0; 3]));
    }

    #[test]
    fn same_size_is_a_copy_and_flat_stays_flat() {
        let image = gradient(13, 9);
        assert_eq!(resample(&image, 13, 9), image);
        let flat = RgbImage::filled(30, 20, [200, 10, 77]);
        for (w, h) in [(7, 5), (15, 10), (45, 31), (100, 13), (10, 60)] {
            assert!(resample(&flat, w, h).pixels.chunks(3).all(|p| p == [200, 10, 77]), "{w}×{h}");
        }
    }

    #[test]
    fn border_median_is_numpy_median_truncated() {
        // Border of a 3×2 image: every pixel; values 10, 20, 30 / 40, 50, 61 per channel 0.
        let mut image = RgbImage::filled(3, 2, [0; 3]);
        for (i, v) in [10, 20, 30, 40, 50, 61].into_iter().enumerate() {
            image.pixels[i * 3] = v;
        }
        // Concatenated: rows [10,20,30], [40,50,61], columns [10,40], [30,61]: ten values,
        // sorted 10 10 20 30 30 40 40 50 61 61: middle two 30 and 40 → 35.
        assert_eq!(border_median(&image), [35, 0, 0]);
    }
}
