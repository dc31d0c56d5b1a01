//! How well a generated image follows its prompt and condition, measured against the scene it
//! was asked for (issue 17's goals; `controlnet world eval` prints them):
//!
//! - [`edge_f1`]: Canny of the output against the condition's edges, each edge pixel counted as
//!   matched within a tolerance (2 pixels in the goals): the F1 of precision and recall;
//! - [`coverage_iou`]: where the output differs from the scene's background against where the
//!   scene's shapes are (for scribbles: "the generated shapes cover the scribbled regions");
//! - [`colours`]: each shape's mean colour in the output, named by the nearest palette colour.

use preprocess::{GrayImage, RgbImage};
use vocabulary::Limits;

use crate::palette::{Colour, distance, nearest};
use crate::{Scene, masks};

/// Precision, recall and their F1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdgeScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// `mask` grown by `reach` pixels (a square neighbourhood), on a `width`-wide image: every pixel
/// within `reach` of a set one, on each axis.
pub fn grow(mask: &[bool], width: usize, reach: usize) -> Vec<bool> {
    let height = mask.len() / width;
    let mut out = vec![false; mask.len()];
    for (i, _) in mask.iter().enumerate().filter(|(_, on)| **on) {
        let (x, y) = (i % width, i / width);
        for ny in y.saturating_sub(reach)..=(y + reach).min(height - 1) {
            for nx in x.saturating_sub(reach)..=(x + reach).min(width - 1) {
                out[ny * width + nx] = true;
            }
        }
    }
    out
}

/// Canny of `output` (the page's thresholds) against the edge map `condition` (white on
/// black): precision is the share of the output's edge pixels within `tolerance` of a condition
/// edge, recall the share of condition edge pixels within `tolerance` of an output edge. With no
/// edges on either side the score is 0 (nothing was followed).
///
/// # Panics
/// If the two images differ in size.
pub fn edge_f1(output: &RgbImage, condition: &GrayImage, tolerance: usize) -> EdgeScore {
    assert_eq!((output.width, output.height), (condition.width, condition.height), "sizes differ");
    let (low, high) = Limits::CANNY_THRESHOLDS;
    let made: Vec<bool> = preprocess::canny(output, low, high).pixels.iter().map(|&p| p >= 128).collect();
    let wanted: Vec<bool> = condition.pixels.iter().map(|&p| p >= 128).collect();
    let (made_near, wanted_near) =
        (grow(&made, output.width, tolerance), grow(&wanted, output.width, tolerance));
    let share = |of: &[bool], near: &[bool]| {
        let total = of.iter().filter(|&&b| b).count();
        let hit = of.iter().zip(near).filter(|&(&a, &b)| a && b).count();
        if total == 0 { 0.0 } else { hit as f64 / total as f64 }
    };
    let (precision, recall) = (share(&made, &wanted_near), share(&wanted, &made_near));
    let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
    EdgeScore { precision, recall, f1 }
}

/// A pixel is foreground when its colour is at least this far (RGB) from the background the
/// scene has there: half the contrast every shape keeps from its background.
pub const FOREGROUND_DISTANCE: f64 = 60.0;

/// Intersection over union of the output's foreground (pixels far from the scene's background
/// colour at that place) and the scene's shapes (pixels at least half covered).
pub fn coverage_iou(output: &RgbImage, scene: &Scene) -> f64 {
    let size = output.width;
    let shapes = masks(scene, size);
    let (mut both, mut either) = (0usize, 0usize);
    for i in 0..size * output.height {
        let (x, y) = ((i % size) as f64 + 0.5, (i / size) as f64 + 0.5);
        let background = scene.background.at(x / size as f64, y / size as f64).map(|v| v.round() as u8);
        let pixel = [output.pixels[3 * i], output.pixels[3 * i + 1], output.pixels[3 * i + 2]];
        let foreground = distance(pixel, background) >= FOREGROUND_DISTANCE;
        let shape = shapes.iter().any(|m| m[i] >= 0.5);
        both += usize::from(foreground && shape);
        either += usize::from(foreground || shape);
    }
    if either == 0 { 1.0 } else { both as f64 / either as f64 }
}

/// For each shape of `scene`, in order: the palette colour nearest to the output's mean colour
/// over the pixels the shape fully covers.
pub fn colours(output: &RgbImage, scene: &Scene) -> Vec<Colour> {
    masks(scene, output.width)
        .iter()
        .map(|mask| {
            let mut sum = [0.0f64; 3];
            let mut count = 0usize;
            for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m >= 1.0) {
                for (c, total) in sum.iter_mut().enumerate() {
                    *total += f64::from(output.pixels[3 * i + c]);
                }
                count += 1;
            }
            nearest(sum.map(|v| v / count.max(1) as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Condition, Example, render};

    #[test]
    fn the_worlds_own_image_scores_perfectly() {
        for index in 0..10 {
            let example = Example::make(11, index, 128);
            let canny = example.condition(Condition::Canny, 11, index);
            let score = edge_f1(&example.image, &canny, 2);
            assert_eq!(score.f1, 1.0, "{index}");
            assert!(coverage_iou(&example.image, &example.scene) > 0.95, "{index}");
            let wanted: Vec<Colour> = example.scene.shapes.iter().map(|s| s.colour).collect();
            assert_eq!(colours(&example.image, &example.scene), wanted);
        }
    }

    #[test]
    fn another_scene_scores_badly() {
        let (a, b) = (Example::make(12, 0, 128), Example::make(12, 1, 128));
        let canny = a.condition(Condition::Canny, 12, 0);
        assert!(edge_f1(&b.image, &canny, 2).f1 < 0.3);
        assert!(coverage_iou(&b.image, &a.scene) < 0.3);
        // A blank image has no edges and no shapes.
        let blank = render(&Scene { background: a.scene.background, shapes: vec![] }, 128);
        assert_eq!(edge_f1(&blank, &canny, 2).f1, 0.0);
        assert_eq!(coverage_iou(&blank, &a.scene), 0.0);
    }

    #[test]
    fn tolerance_forgives_a_small_shift() {
        let example = Example::make(13, 0, 128);
        let canny = example.condition(Condition::Canny, 13, 0);
        // The image moved right by 2 pixels.
        let mut moved = example.image.clone();
        for y in 0..128 {
            for x in (2..128).rev() {
                for c in 0..3 {
                    moved.pixels[(y * 128 + x) * 3 + c] = example.image.pixels[(y * 128 + x - 2) * 3 + c];
                }
            }
        }
        assert!(edge_f1(&moved, &canny, 2).f1 > 0.95);
        assert!(edge_f1(&moved, &canny, 0).f1 < 0.5);
    }
}
