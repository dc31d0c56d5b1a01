//! Training pairs in the layout of the official tutorial's Fill50K, which diffusers'
//! `train_controlnet.py` (with a loading script) and the official `tutorial_dataset.py` read:
//!
//! ```text
//! DIR/prompt.json   one JSON object per line: {"source": "source/0.png", "target": "target/0.png",
//!                   "prompt": "pale golden rod circle with old lace background"}
//! DIR/source/…      condition images (the control maps)
//! DIR/target/…      the images the model learns to make under them
//! ```
//!
//! [`Dataset::open`] checks every pair before the first step — both files exist, are images, and
//! have the same size — and names the first file that fails. Images are fitted to the training
//! resolution as `train_controlnet.py`'s transforms do: the shorter side resized to it (bilinear),
//! then a centre crop.

use std::path::{Path, PathBuf};

use super::TrainError;
use crate::image_io::{self, Rgb8};

/// One line of `prompt.json`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Line {
    pub source: String,
    pub target: String,
    pub prompt: String,
}

/// A checked training set.
#[derive(Clone, Debug)]
pub struct Dataset {
    root: PathBuf,
    pairs: Vec<Line>,
    resolution: usize,
}

impl Dataset {
    /// Reads `dir/prompt.json` and checks every pair it lists.
    pub fn open(dir: &Path, resolution: usize) -> Result<Self, TrainError> {
        let index = dir.join("prompt.json");
        let text = std::fs::read_to_string(&index)
            .map_err(|e| TrainError::Data(format!("cannot read {}: {e}", index.display())))?;
        let mut pairs = Vec::new();
        for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let pair: Line = serde_json::from_str(line).map_err(|e| {
                TrainError::Data(format!(
                    "{} line {}: {e} (expected {{\"source\", \"target\", \"prompt\"}})",
                    index.display(),
                    number + 1
                ))
            })?;
            pairs.push(pair);
        }
        if pairs.is_empty() {
            return Err(TrainError::Data(format!("{} lists no pairs", index.display())));
        }
        for pair in &pairs {
            let source = dimensions(&dir.join(&pair.source))?;
            let target = dimensions(&dir.join(&pair.target))?;
            if source != target {
                return Err(TrainError::Data(format!(
                    "{} is {}×{} but its target {} is {}×{}",
                    dir.join(&pair.source).display(),
                    source.0,
                    source.1,
                    dir.join(&pair.target).display(),
                    target.0,
                    target.1
                )));
            }
        }
        Ok(Self { root: dir.to_owned(), pairs, resolution })
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Pair `index`'s line of `prompt.json`.
    pub fn line(&self, index: usize) -> &Line {
        &self.pairs[index]
    }

    /// Pair `index`'s target and source, fitted to the resolution.
    pub fn load(&self, index: usize) -> Result<(Rgb8, Rgb8), TrainError> {
        let pair = &self.pairs[index];
        let read = |name: &str| -> Result<Rgb8, TrainError> {
            let path = self.root.join(name);
            let bytes = std::fs::read(&path)
                .map_err(|e| TrainError::Data(format!("cannot read {}: {e}", path.display())))?;
            let image =
                image_io::decode(&bytes).map_err(|e| TrainError::Data(format!("{}: {e}", path.display())))?;
            Ok(fit(&image, self.resolution))
        };
        Ok((read(&pair.target)?, read(&pair.source)?))
    }
}

impl super::Pairs for Dataset {
    fn count(&self) -> usize {
        self.pairs.len()
    }

    fn side(&self) -> usize {
        self.resolution
    }

    fn pair(&self, index: usize) -> Result<super::Pair, TrainError> {
        let (target, source) = self.load(index)?;
        Ok(super::Pair {
            target: target.pixels,
            source: source.pixels,
            caption: self.pairs[index].prompt.clone(),
        })
    }
}

/// An image file's size, from its header; an error naming the file if it is missing or not an
/// image.
fn dimensions(path: &Path) -> Result<(u32, u32), TrainError> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| TrainError::Data(format!("cannot read {}: {e}", path.display())))?
        .with_guessed_format()
        .map_err(|e| TrainError::Data(format!("cannot read {}: {e}", path.display())))?;
    if reader.format().is_none() {
        return Err(TrainError::Data(format!(
            "{} is not an image (PNG, JPEG, WebP, GIF or BMP)",
            path.display()
        )));
    }
    reader
        .into_dimensions()
        .map_err(|e| TrainError::Data(format!("{} is not a readable image: {e}", path.display())))
}

/// The shorter side resized to `resolution` (bilinear, as torchvision's `Resize`), then the
/// centre `resolution × resolution` crop.
pub fn fit(image: &Rgb8, resolution: usize) -> Rgb8 {
    if (image.width, image.height) == (resolution, resolution) {
        return image.clone();
    }
    let scale = resolution as f64 / image.width.min(image.height) as f64;
    let (w, h) = (
        ((image.width as f64 * scale).round() as usize).max(resolution),
        ((image.height as f64 * scale).round() as usize).max(resolution),
    );
    let buffer = image::RgbImage::from_raw(image.width as u32, image.height as u32, image.pixels.clone())
        .expect("pixels match the size");
    let resized = image::imageops::resize(&buffer, w as u32, h as u32, image::imageops::FilterType::Triangle);
    let (x, y) = ((w - resolution) / 2, (h - resolution) / 2);
    let cropped =
        image::imageops::crop_imm(&resized, x as u32, y as u32, resolution as u32, resolution as u32)
            .to_image();
    Rgb8 { width: resolution, height: resolution, pixels: cropped.into_raw() }
}
