//! Canny edges, pixel for pixel as `cv2.Canny(rgb, low, high)` (OpenCV 4.x / 5.x,
//! `modules/imgproc/src/canny.cpp`, the non-IPP path that 3-channel images always take).
//!
//! The ControlNet `canny` annotator calls `cv2.Canny(img, low, high)` on the 8-bit RGB image
//! itself: no grey conversion and no blur. OpenCV then
//!
//! 1. takes 3×3 Sobel derivatives `dx`, `dy` of every channel (`BORDER_REPLICATE`, 16-bit);
//! 2. keeps, per pixel, the channel with the largest L1 magnitude `|dx| + |dy|` (the first one
//!    on ties, with its signed `dx`, `dy`);
//! 3. suppresses non-maxima along the gradient direction, quantised to 0°, 45°, 90° or 135° with
//!    the integer test `|dy|·2¹⁵ < |dx|·tan(22.5°)·2¹⁵` (and the 67.5° one), comparing with
//!    `>` on one side and `>=` on the other (`>` on both for diagonals) so a plateau keeps one
//!    pixel; pixels outside the image have magnitude 0;
//! 4. marks survivors above `high` as edges and those above `low` as candidates (both
//!    thresholds floored to integers, swapped if `low > high`), and grows the edges into
//!    8-connected candidates (hysteresis with a stack).
//!
//! Everything is integer arithmetic in one pass over the image with a three-row ring buffer, so
//! the result does not depend on the platform, and nothing is allocated per pixel.

use crate::{GrayImage, RgbImage};

/// `tan(22.5°)` in Q15, rounded as OpenCV rounds it.
const TG22: i32 = 13573;

/// Map values, as OpenCV names them: not an edge, maybe an edge (a candidate), an edge.
const NOT_EDGE: u8 = 1;
const CANDIDATE: u8 = 0;
const EDGE: u8 = 2;

/// Canny edges of an RGB image: 255 on edges, 0 elsewhere. Equal to
/// `cv2.Canny(rgb_uint8, low, high)` (aperture 3, L1 gradient).
///
/// `low` and `high` are in units of the L1 Sobel magnitude (0 to 2040); they are floored, and
/// swapped if `low > high`. Typical values: 100 and 200 (the A1111 defaults).
///
/// # Panics
/// If `image.pixels.len() != image.width * image.height * 3`.
pub fn canny(image: &RgbImage, low: f64, high: f64) -> GrayImage {
    let (width, height) = (image.width, image.height);
    assert_eq!(image.pixels.len(), width * height * 3, "RgbImage: pixels do not match its size");
    if width == 0 || height == 0 {
        return GrayImage { width, height, pixels: Vec::new() };
    }
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    // cvFloor; `as` saturates (and maps NaN to 0).
    let (low, high) = (low.floor() as i32, high.floor() as i32);

    let map_step = width + 2;
    // One cell of border all round that is never an edge: the hysteresis needs no bounds checks.
    let mut map = vec![NOT_EDGE; map_step * (height + 2)];
    let mut stack: Vec<usize> = Vec::with_capacity(1024);

    // Magnitudes of the rows above, at and below the row being thinned, with a zero on each side.
    let mut mag_prev = vec![0i32; width + 2];
    let mut mag_cur = vec![0i32; width + 2];
    let mut mag_next = vec![0i32; width + 2];
    // The chosen channel's derivatives of the current and next rows.
    let (mut dx_cur, mut dy_cur) = (vec![0i16; width], vec![0i16; width]);
    let (mut dx_next, mut dy_next) = (vec![0i16; width], vec![0i16; width]);
    let mut sobel = SobelRows::new(width);

    for y in 0..=height {
        // Scroll the ring: next becomes current, current becomes previous.
        std::mem::swap(&mut mag_prev, &mut mag_cur);
        std::mem::swap(&mut mag_cur, &mut mag_next);
        std::mem::swap(&mut dx_cur, &mut dx_next);
        std::mem::swap(&mut dy_cur, &mut dy_next);
        if y < height {
            sobel.row(image, y, &mut mag_next[1..=width], &mut dx_next, &mut dy_next);
        } else {
            mag_next.fill(0);
        }
        if y == 0 {
            continue;
        }
        let row = y - 1;
        let map_row = (row + 1) * map_step + 1;
        let thin = Thin { low, high, prev: &mag_prev, cur: &mag_cur, next: &mag_next };
        thin.row(&dx_cur, &dy_cur, &mut map[map_row..map_row + width], map_row, &mut stack);
    }

    // Hysteresis: grow every edge into the candidates around it.
    while let Some(p) = stack.pop() {
        for q in [
            p - map_step - 1,
            p - map_step,
            p - map_step + 1,
            p - 1,
            p + 1,
            p + map_step - 1,
            p + map_step,
            p + map_step + 1,
        ] {
            if map[q] == CANDIDATE {
                map[q] = EDGE;
                stack.push(q);
            }
        }
    }

    let mut pixels = vec![0u8; width * height];
    for (out, cells) in pixels.chunks_exact_mut(width).zip(map.chunks_exact(map_step).skip(1)) {
        for (o, &m) in out.iter_mut().zip(&cells[1..=width]) {
            // 2 → 255, 0 or 1 → 0.
            *o = (m >> 1).wrapping_neg();
        }
    }
    GrayImage { width, height, pixels }
}

/// Scratch rows for the separable 3×3 Sobel of one image row (all three channels interleaved,
/// with one replicated pixel on each side).
struct SobelRows {
    /// `up + 2·mid + down`: the vertical smoothing that `dx` differentiates.
    smooth: Vec<i16>,
    /// `down − up`: the vertical difference that `dy` smooths.
    diff: Vec<i16>,
}

impl SobelRows {
    fn new(width: usize) -> Self {
        Self { smooth: vec![0; (width + 2) * 3], diff: vec![0; (width + 2) * 3] }
    }

    /// Writes row `y`'s magnitude, `dx` and `dy` of the strongest channel.
    fn row(&mut self, image: &RgbImage, y: usize, mag: &mut [i32], dx: &mut [i16], dy: &mut [i16]) {
        let stride = image.width * 3;
        let line = |r: usize| &image.pixels[r * stride..(r + 1) * stride];
        // BORDER_REPLICATE.
        let (up, mid, down) = (line(y.saturating_sub(1)), line(y), line((y + 1).min(image.height - 1)));
        let smooth = &mut self.smooth[3..3 + stride];
        let diff = &mut self.diff[3..3 + stride];
        for ((((s, d), &u), &m), &w) in smooth.iter_mut().zip(diff.iter_mut()).zip(up).zip(mid).zip(down) {
            let (u, m, w) = (i16::from(u), i16::from(m), i16::from(w));
            *s = u + 2 * m + w;
            *d = w - u;
        }
        for buffer in [&mut self.smooth, &mut self.diff] {
            buffer.copy_within(3..6, 0);
            buffer.copy_within(stride..stride + 3, stride + 3);
        }
        // The left, centre and right neighbours' three channels, pixel by pixel.
        let (s, d) = (&self.smooth, &self.diff);
        let neighbours = triples(s, 0, stride)
            .zip(triples(s, 6, stride))
            .zip(triples(d, 0, stride).zip(triples(d, 3, stride)).zip(triples(d, 6, stride)));
        for (((sl, sr), ((dl, dc), dr)), ((m, gx), gy)) in
            neighbours.zip(mag.iter_mut().zip(dx.iter_mut()).zip(dy.iter_mut()))
        {
            let channel = |c: usize| {
                let (x, y) = (sr[c] - sl[c], dl[c] + 2 * dc[c] + dr[c]);
                (i32::from(x.abs()) + i32::from(y.abs()), x, y)
            };
            let mut best = channel(0);
            // Strictly greater: the first channel wins ties, as in OpenCV.
            for c in 1..3 {
                let candidate = channel(c);
                if candidate.0 > best.0 {
                    best = candidate;
                }
            }
            (*m, *gx, *gy) = best;
        }
    }
}

/// `v[from..from + len]` by pixel.
fn triples(v: &[i16], from: usize, len: usize) -> std::slice::ChunksExact<'_, i16> {
    v[from..from + len].chunks_exact(3)
}

/// Non-maximum suppression and double threshold of one row.
struct Thin<'a> {
    low: i32,
    high: i32,
    /// Magnitudes of the rows above, at and below, each with a zero at both ends.
    prev: &'a [i32],
    cur: &'a [i32],
    next: &'a [i32],
}

impl Thin<'_> {
    /// Marks the row's cells in `map` (which start as [`NOT_EDGE`]) and pushes its edges, whose
    /// map indices start at `map_start`.
    fn row(&self, dx: &[i16], dy: &[i16], map: &mut [u8], map_start: usize, stack: &mut Vec<usize>) {
        let (prev, cur, next) = (self.prev, self.cur, self.next);
        for (x, ((&xs, &ys), cell)) in dx.iter().zip(dy).zip(map.iter_mut()).enumerate() {
            // `j` is x in the padded magnitude rows.
            let j = x + 1;
            let m = cur[j];
            if m <= self.low {
                continue;
            }
            let (xs, ys) = (i32::from(xs), i32::from(ys));
            let ax = xs.abs();
            let ay = ys.abs() << 15;
            let tg22x = ax * TG22;
            let maximum = if ay < tg22x {
                // Within 22.5° of horizontal: compare left and right.
                m > cur[j - 1] && m >= cur[j + 1]
            } else {
                let tg67x = tg22x + (ax << 16);
                if ay > tg67x {
                    // Within 22.5° of vertical: compare above and below.
                    m > prev[j] && m >= next[j]
                } else if (xs ^ ys) < 0 {
                    // Diagonal, dx and dy of opposite signs: above-right and below-left.
                    m > prev[j + 1] && m > next[j - 1]
                } else {
                    // Diagonal, same signs: above-left and below-right.
                    m > prev[j - 1] && m > next[j + 1]
                }
            };
            if maximum {
                if m > self.high {
                    *cell = EDGE;
                    stack.push(map_start + x);
                } else {
                    *cell = CANDIDATE;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: usize, height: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> RgbImage {
        let pixels = (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).flat_map(|(x, y)| f(x, y));
        RgbImage { width, height, pixels: pixels.collect() }
    }

    #[test]
    fn a_vertical_step_gives_one_column_of_edges() {
        let step = image(8, 5, |x, _| if x < 4 { [0; 3] } else { [200; 3] });
        let edges = canny(&step, 100.0, 200.0);
        for row in edges.pixels.chunks(8) {
            // Magnitudes 800 at x = 3 and x = 4: `>` on the left, `>=` on the right keeps x = 3.
            assert_eq!(row, [0, 0, 0, 255, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn flat_and_empty_images_have_no_edges() {
        assert!(canny(&image(5, 4, |_, _| [77, 3, 200]), 0.0, 0.0).pixels.iter().all(|&v| v == 0));
        assert_eq!(canny(&image(0, 3, |_, _| [0; 3]), 1.0, 2.0).pixels.len(), 0);
    }

    #[test]
    fn thresholds_are_swapped_and_floored() {
        let ramp = image(9, 9, |x, y| [(x * 20 + y * 3) as u8, 0, 0]);
        assert_eq!(canny(&ramp, 200.0, 50.0), canny(&ramp, 50.0, 200.0));
        assert_eq!(canny(&ramp, 50.9, 80.99), canny(&ramp, 50.0, 80.0));
    }
}
