//! The shapes world: a procedural, seeded, deterministic maker of ControlNet training pairs, in
//! the spirit of the official tutorial's Fill50K ("pale golden rod circle with old lace
//! background"), richer: a flat or two-colour gradient background, one to three shapes (circle,
//! square, triangle, star, ring, heart, blob) at random places, sizes and turns, each in a CSS
//! colour; a caption that names them ("a light coral star and a teal ring on a navy
//! background"); and the condition maps made as the page makes them — Canny of the image through
//! [`preprocess::canny`] with the page's thresholds, and a scribble like one drawn on the pad.
//!
//! Example `i` of the world with seed `s` is a pure function of `(s, i)` ([`Example::make`]):
//! the CLI writes them to a folder ([`dataset::write`], `controlnet world make`), the browser's
//! worker makes them on the fly, and both get the same bytes (only `f64` arithmetic and `libm`).
//! [`vocab`] makes the small BPE vocabulary of the world's words, in CLIP's file format;
//! [`shapes`] holds the architecture of the models trained on the world; [`eval`] measures how
//! well a generated image follows its caption and condition.

pub mod dataset;
pub mod eval;
pub mod palette;
mod raster;
mod rng;
pub mod scene;
mod scribble;
pub mod shapes;
pub mod vocab;

pub use palette::{Colour, PALETTE};
pub use preprocess::{GrayImage, RgbImage};
pub use scene::{Background, Kind, Scene, Shape};
use vocabulary::Limits;

/// The side the world is made at unless asked otherwise (the shipped models' resolution).
pub const DEFAULT_SIZE: usize = 64;

/// Which condition map a ControlNet of the world learns from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// `cv2.Canny(image, 100, 200)`, the page's Canny.
    Canny,
    /// Hand-drawn outlines, white on black.
    Scribble,
}

impl Condition {
    pub const ALL: [Condition; 2] = [Condition::Canny, Condition::Scribble];

    pub fn name(self) -> &'static str {
        match self {
            Condition::Canny => "canny",
            Condition::Scribble => "scribble",
        }
    }

    /// The condition whose maps the page's `preprocessor` makes, if the world has it.
    pub fn of(preprocessor: vocabulary::Preprocessor) -> Option<Self> {
        match preprocessor {
            vocabulary::Preprocessor::Canny => Some(Condition::Canny),
            vocabulary::Preprocessor::Scribble => Some(Condition::Scribble),
            vocabulary::Preprocessor::Xdog | vocabulary::Preprocessor::None => None,
        }
    }
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Condition::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| format!("unknown condition `{name}` (expected canny or scribble)"))
    }
}

/// One training pair with its caption and the scene it was drawn from.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub scene: Scene,
    pub caption: String,
    pub image: RgbImage,
}

impl Example {
    /// Example `index` of the world with `seed`, `size × size`.
    pub fn make(seed: u64, index: u64, size: usize) -> Self {
        let scene = Scene::sample(seed, index);
        Self { caption: scene.caption(), image: render(&scene, size), scene }
    }

    /// The condition map (white on black): Canny of the image, or the scribble of example
    /// `index` of the world with `seed` (its own random stream: the image never depends on it).
    pub fn condition(&self, condition: Condition, seed: u64, index: u64) -> GrayImage {
        match condition {
            Condition::Canny => {
                let (low, high) = Limits::CANNY_THRESHOLDS;
                preprocess::canny(&self.image, low, high)
            }
            Condition::Scribble => scribble::scribble(&self.scene, seed, index, self.image.width),
        }
    }
}

/// How much of each pixel every shape covers where it is visible, in scene order (`size²`
/// values per shape, row-major): what the evaluation measures colours and overlaps with.
pub fn masks(scene: &Scene, size: usize) -> Vec<Vec<f32>> {
    let mut masks: Vec<Vec<f32>> = scene.shapes.iter().map(|s| raster::fill(&s.outlines(), size)).collect();
    // Later shapes hide earlier ones (they never overlap as made, but a scene may be edited).
    for later in (1..masks.len()).rev() {
        let (front, back) = masks.split_at_mut(later);
        for mask in front {
            for (m, cover) in mask.iter_mut().zip(&back[0]) {
                *m *= 1.0 - cover;
            }
        }
    }
    masks
}

/// The scene painted at `size × size`: the background, then each shape over it, blended by how
/// much of each pixel it covers.
pub fn render(scene: &Scene, size: usize) -> RgbImage {
    let mut colours: Vec<[f64; 3]> = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f64 + 0.5, (i / size) as f64 + 0.5);
            scene.background.at(x / size as f64, y / size as f64)
        })
        .collect();
    for shape in &scene.shapes {
        let rgb = shape.colour.rgb.map(f64::from);
        for (pixel, cover) in colours.iter_mut().zip(raster::fill(&shape.outlines(), size)) {
            let cover = f64::from(cover);
            for c in 0..3 {
                pixel[c] = pixel[c] * (1.0 - cover) + rgb[c] * cover;
            }
        }
    }
    RgbImage {
        width: size,
        height: size,
        pixels: colours.iter().flat_map(|p| p.map(|v| v.round().clamp(0.0, 255.0) as u8)).collect(),
    }
}
