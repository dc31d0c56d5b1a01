//! The two scribble preprocessors of the A1111 extension (`annotator` functions in
//! `scripts/processor.py`), less their resize step: `scribble_thr` (line art to strokes) and
//! `scribble_xdog` (a photo to a sketch by a difference of Gaussians).

use crate::{GrayImage, RgbImage};

/// The default threshold of [`xdog`] (A1111's "XDoG Threshold" slider default).
pub const XDOG_THRESHOLD: u8 = 32;

/// Line art (dark strokes on a light background) to a scribble map: 255 where the darkest
/// channel is below 127, 0 elsewhere (A1111 `scribble_thr`).
///
/// # Panics
/// If `image.pixels.len() != image.width * image.height * 3`.
pub fn scribble_from_lineart(image: &RgbImage) -> GrayImage {
    check(image);
    let pixels =
        image.pixels.chunks_exact(3).map(|p| if p[0].min(p[1]).min(p[2]) < 127 { 255 } else { 0 }).collect();
    GrayImage { width: image.width, height: image.height, pixels }
}

/// A photo to a sketch (A1111 `scribble_xdog` at its default threshold, [`XDOG_THRESHOLD`]).
pub fn xdog(image: &RgbImage) -> GrayImage {
    xdog_with_threshold(image, XDOG_THRESHOLD)
}

/// A1111 `scribble_xdog` with threshold `thr_a` (the slider goes from 1 to 64):
///
/// ```python
/// g1 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.5)
/// g2 = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 5.0)
/// dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
/// result[2 * (255 - dog) > thr_a] = 255
/// ```
///
/// Pixels darker than their surroundings in every channel become strokes. `2 * (255 - dog)` is
/// NumPy `uint8` arithmetic and wraps modulo 256, so differences of 128 to 144 drop out; the
/// extension does that, so we do too. The blurs are OpenCV's: float32 separable Gaussian kernels
/// of 5 and 41 taps (`ksize = round(8σ + 1) | 1` for float images), `BORDER_REFLECT_101`, rows
/// first, in OpenCV's summation order (without its fused multiply-adds).
///
/// # Panics
/// If `image.pixels.len() != image.width * image.height * 3`.
pub fn xdog_with_threshold(image: &RgbImage, thr_a: u8) -> GrayImage {
    check(image);
    let (width, height) = (image.width, image.height);
    if width == 0 || height == 0 {
        return GrayImage { width, height, pixels: Vec::new() };
    }
    let mut small = Blur::new(image, 0.5);
    let mut large = Blur::new(image, 5.0);
    let mut g1 = vec![0f32; width * 3];
    let mut g2 = vec![0f32; width * 3];
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        small.row(y, &mut g1);
        large.row(y, &mut g2);
        for (a, b) in g1.chunks_exact(3).zip(g2.chunks_exact(3)) {
            let dmin = (b[0] - a[0]).min(b[1] - a[1]).min(b[2] - a[2]);
            // `as u8` truncates and saturates: `.clip(0, 255).astype(np.uint8)`.
            let dog = (255.0 - dmin) as u8;
            let doubled = (255 - dog).wrapping_mul(2);
            pixels.push(if doubled > thr_a { 255 } else { 0 });
        }
    }
    GrayImage { width, height, pixels }
}

fn check(image: &RgbImage) {
    assert_eq!(image.pixels.len(), image.width * image.height * 3, "RgbImage: pixels do not match its size");
}

/// OpenCV's `borderInterpolate` for `BORDER_REFLECT_101` (`gfedcb|abcdefgh|gfedcba`), repeated
/// for images narrower than the kernel.
fn reflect_101(mut p: isize, len: usize) -> usize {
    let len = len as isize;
    if len == 1 {
        return 0;
    }
    while p < 0 || p >= len {
        p = if p < 0 { -p } else { 2 * len - 2 - p };
    }
    p as usize
}

/// `getGaussianKernel(round(8σ + 1) | 1, σ, CV_32F)`: computed in double, normalised, rounded
/// to float.
fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let n = ((sigma * 8.0 + 1.0).round() as usize) | 1;
    let half = (n - 1) / 2;
    let scale = -0.125 / (sigma * sigma);
    let values: Vec<f64> = (0..half)
        .map(|i| {
            let x = 2 * i as i64 + 1 - n as i64;
            ((x * x) as f64 * scale).exp()
        })
        .collect();
    let sum = values.iter().sum::<f64>() * 2.0 + 1.0;
    let mul = 1.0 / sum;
    let mut kernel = vec![0f32; n];
    for (i, v) in values.iter().enumerate() {
        kernel[i] = (v * mul) as f32;
        kernel[n - 1 - i] = kernel[i];
    }
    kernel[half] = mul as f32;
    kernel
}

/// A separable float Gaussian blur of an RGB8 image, one output row at a time: rows are filtered
/// horizontally on demand and kept in a ring of `2r + 1` rows, so memory stays small for big
/// images.
struct Blur<'a> {
    image: &'a RgbImage,
    kernel: Vec<f32>,
    radius: usize,
    /// Source column of each padded column (`BORDER_REFLECT_101`).
    columns: Vec<usize>,
    /// One source row, padded, as float.
    padded: Vec<f32>,
    /// Horizontally filtered rows, slot = row % (2r + 1), with the row each slot holds.
    ring: Vec<(usize, Vec<f32>)>,
}

impl<'a> Blur<'a> {
    fn new(image: &'a RgbImage, sigma: f64) -> Self {
        let kernel = gaussian_kernel(sigma);
        let radius = kernel.len() / 2;
        let columns = (0..image.width + 2 * radius)
            .map(|i| reflect_101(i as isize - radius as isize, image.width))
            .collect();
        let ring = (0..kernel.len()).map(|_| (usize::MAX, vec![0f32; image.width * 3])).collect();
        Self { image, kernel, radius, columns, padded: vec![0f32; (image.width + 2 * radius) * 3], ring }
    }

    /// Filters source row `y` horizontally into its ring slot (OpenCV's row filter: for up to 5
    /// taps the symmetric form `s0·k0 + (s−1 + s1)·k1 + (s−2 + s2)·k2`, else left to right).
    fn filter_row(&mut self, y: usize) {
        let slot = y % self.ring.len();
        if self.ring[slot].0 == y {
            return;
        }
        let stride = self.image.width * 3;
        let source = &self.image.pixels[y * stride..(y + 1) * stride];
        for (p, &x) in self.padded.chunks_exact_mut(3).zip(&self.columns) {
            for (v, &s) in p.iter_mut().zip(&source[x * 3..x * 3 + 3]) {
                *v = f32::from(s);
            }
        }
        let (k, r) = (&self.kernel, self.radius);
        let out = &mut self.ring[slot].1;
        let at = |j: usize| &self.padded[j * 3..j * 3 + stride];
        if k.len() <= 5 {
            for (o, &c) in out.iter_mut().zip(at(r)) {
                *o = c * k[r];
            }
            for j in 1..=r {
                for ((o, &a), &b) in out.iter_mut().zip(at(r - j)).zip(at(r + j)) {
                    *o += (a + b) * k[r + j];
                }
            }
        } else {
            for (o, &a) in out.iter_mut().zip(at(0)) {
                *o = a * k[0];
            }
            for (j, &kj) in k.iter().enumerate().skip(1) {
                for (o, &a) in out.iter_mut().zip(at(j)) {
                    *o += a * kj;
                }
            }
        }
        self.ring[slot].0 = y;
    }

    /// Output row `y`: OpenCV's symmetric column filter `k0·s0 + Σ kj·(s−j + sj)`.
    fn row(&mut self, y: usize, out: &mut [f32]) {
        let (r, height) = (self.radius, self.image.height);
        let source = |k: isize| reflect_101(y as isize + k, height);
        for k in -(r as isize)..=r as isize {
            self.filter_row(source(k));
        }
        let slot = |row: usize| &self.ring[row % self.ring.len()].1;
        let k = &self.kernel;
        for (o, &c) in out.iter_mut().zip(slot(y)) {
            *o = c * k[r];
        }
        for j in 1..=r {
            let (above, below) = (slot(source(-(j as isize))), slot(source(j as isize)));
            for ((o, &a), &b) in out.iter_mut().zip(above).zip(below) {
                *o += (a + b) * k[r + j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_opencv() {
        // cv2.getGaussianKernel(5, 0.5, cv2.CV_32F) and (41, 5.0): centre and neighbours.
        let k = gaussian_kernel(0.5);
        assert_eq!(k.len(), 5);
        assert_eq!(&k[2..], &[0.786_570_7, 0.106_450_774, 0.000_263_865_08]);
        let k = gaussian_kernel(5.0);
        assert_eq!(k.len(), 41);
        assert_eq!(&k[20..23], &[0.079_791_66, 0.078_211_67, 0.073_656_98]);
    }

    #[test]
    fn reflect_101_repeats_for_small_images() {
        let row: Vec<usize> = (-5..8).map(|p| reflect_101(p, 3)).collect();
        assert_eq!(row, [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]);
        assert_eq!(reflect_101(-20, 1), 0);
    }

    #[test]
    fn scribble_thresholds_the_darkest_channel() {
        let image = RgbImage { width: 3, height: 1, pixels: vec![126, 255, 255, 127, 127, 127, 255, 0, 255] };
        assert_eq!(scribble_from_lineart(&image).pixels, vec![255, 0, 255]);
    }

    #[test]
    fn a_dark_line_on_white_is_a_stroke() {
        let mut image = RgbImage::filled(40, 30, [255; 3]);
        for y in 0..30 {
            image.pixels[(y * 40 + 20) * 3..][..3].copy_from_slice(&[0, 0, 0]);
        }
        let sketch = xdog(&image);
        assert!((0..30).all(|y| sketch.pixels[y * 40 + 20] == 255));
        assert!((0..30).all(|y| sketch.pixels[y * 40 + 2] == 0));
    }
}
