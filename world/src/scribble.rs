//! Scribbles: what a person draws on the pad to ask for a scene — the outlines traced by hand,
//! wobbly, not quite closed or a little past the start, in a brush of some width. White strokes
//! on black, as the pad and the ControlNet 1.1 scribble models have them.

use std::f64::consts::TAU;

use preprocess::GrayImage;

use crate::raster;
use crate::rng::{Rng, Stream};
use crate::scene::Scene;

/// The brush, as a fraction of the image width: the pad's default brush is 8 px of 512
/// (0.016); people also pick thicker ones.
pub const BRUSH: (f64, f64) = (0.012, 0.035);

/// A scribble of `scene` at `size × size`, from the scribble stream of example `index`.
pub fn scribble(scene: &Scene, seed: u64, index: u64, size: usize) -> GrayImage {
    let mut rng = Rng::new(seed, index, Stream::Scribble);
    let mut coverage = vec![0.0f32; size * size];
    let scale = size as f64;
    for shape in &scene.shapes {
        for outline in shape.outlines() {
            let traced = trace(&outline, shape.radius, &mut rng);
            let width = rng.range(BRUSH.0, BRUSH.1) * scale;
            let pixels: Vec<(f64, f64)> = traced.iter().map(|&(x, y)| (x * scale, y * scale)).collect();
            for (total, stroke) in coverage.iter_mut().zip(raster::stroke(&pixels, width, size)) {
                *total = total.max(stroke);
            }
        }
    }
    GrayImage {
        width: size,
        height: size,
        pixels: coverage.iter().map(|&c| (c * 255.0).round() as u8).collect(),
    }
}

/// The closed `outline` (unit coordinates) traced by hand: resampled evenly, pushed along its
/// normal by a slow wobble and a little tremor, started anywhere, and stopped short of the start
/// or a little past it.
fn trace(outline: &[(f64, f64)], radius: f64, rng: &mut Rng) -> Vec<(f64, f64)> {
    // Arc length along the closed outline.
    let n = outline.len();
    let mut lengths = vec![0.0];
    for i in 0..n {
        let (a, b) = (outline[i], outline[(i + 1) % n]);
        lengths.push(lengths[i] + ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt());
    }
    let perimeter = lengths[n];
    let at = |s: f64| -> (f64, f64) {
        let s = s.rem_euclid(perimeter);
        let i = lengths.partition_point(|&l| l <= s).clamp(1, n) - 1;
        let t = (s - lengths[i]) / (lengths[i + 1] - lengths[i]).max(f64::MIN_POSITIVE);
        let (a, b) = (outline[i], outline[(i + 1) % n]);
        (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1))
    };
    let start = rng.range(0.0, perimeter);
    let span = perimeter * rng.range(0.88, 1.1);
    let count = ((span / 0.004).ceil() as usize).max(8);
    // The wobble: two slow waves along the stroke, scaled to the shape (a hand is less steady on
    // a big shape), and a small tremor.
    let amplitude = radius * rng.range(0.02, 0.08);
    let waves =
        [(1.0 + rng.below(3) as f64, rng.range(0.0, TAU)), (3.0 + rng.below(5) as f64, rng.range(0.0, TAU))];
    (0..=count)
        .map(|i| {
            let s = start + span * i as f64 / count as f64;
            let (p, ahead, behind) = (at(s), at(s + 0.002), at(s - 0.002));
            let (tx, ty) = (ahead.0 - behind.0, ahead.1 - behind.1);
            let norm = (tx * tx + ty * ty).sqrt().max(f64::MIN_POSITIVE);
            let phase = TAU * (s - start) / perimeter;
            let offset = amplitude
                * (libm::sin(waves[0].0 * phase + waves[0].1)
                    + 0.5 * libm::sin(waves[1].0 * phase + waves[1].1))
                + rng.range(-0.002, 0.002);
            (p.0 - ty / norm * offset, p.1 + tx / norm * offset)
        })
        .collect()
}
