//! The two pixel buffers: RGB8 pictures and 8-bit single-channel maps.

/// An 8-bit RGB image: `pixels` holds `width * height * 3` bytes, rows top to bottom, each pixel
/// `r, g, b`.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// An 8-bit single-channel image (a control map): `pixels` holds `width * height` bytes, rows
/// top to bottom. The preprocessors write 255 for a stroke and 0 elsewhere.
#[derive(Clone, Debug, PartialEq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// A `width × height` image of one colour.
    pub fn filled(width: usize, height: usize, colour: [u8; 3]) -> Self {
        Self { width, height, pixels: colour.repeat(width * height) }
    }

    /// The same pixels with an opaque alpha channel (`ImageData` in the browser wants RGBA).
    pub fn to_rgba(&self) -> Vec<u8> {
        self.pixels.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 0xff]).collect()
    }

    /// Copies `tile` in with its top-left corner at `(x, y)` (clipped at the edges): contact
    /// sheets of examples and results.
    pub fn paste(&mut self, tile: &RgbImage, x: usize, y: usize) {
        let columns = tile.width.min(self.width.saturating_sub(x));
        for row in 0..tile.height.min(self.height.saturating_sub(y)) {
            let from = row * tile.width * 3;
            let to = ((y + row) * self.width + x) * 3;
            self.pixels[to..to + columns * 3].copy_from_slice(&tile.pixels[from..from + columns * 3]);
        }
    }

    /// Black ↔ white: `255 - v` for every channel.
    pub fn inverted(&self) -> Self {
        Self { width: self.width, height: self.height, pixels: self.pixels.iter().map(|&v| !v).collect() }
    }
}

impl GrayImage {
    /// The map as RGB with r = g = b (what the pipeline's 3-channel condition input wants; A1111's
    /// `HWC3` does the same).
    pub fn to_rgb(&self) -> RgbImage {
        RgbImage {
            width: self.width,
            height: self.height,
            pixels: self.pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        }
    }

    /// Black ↔ white: `255 - v`, e.g. white strokes on black → black strokes on white.
    pub fn inverted(&self) -> Self {
        Self { width: self.width, height: self.height, pixels: self.pixels.iter().map(|&v| !v).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_to_rgb_and_inversion() {
        let gray = GrayImage { width: 2, height: 1, pixels: vec![0, 255] };
        assert_eq!(gray.to_rgb().pixels, vec![0, 0, 0, 255, 255, 255]);
        assert_eq!(gray.inverted().pixels, vec![255, 0]);
        let rgb = RgbImage { width: 1, height: 1, pixels: vec![1, 2, 3] };
        assert_eq!(rgb.inverted().pixels, vec![254, 253, 252]);
        assert_eq!(rgb.to_rgba(), vec![1, 2, 3, 255]);
        assert_eq!(RgbImage::filled(2, 1, [9, 8, 7]).pixels, vec![9, 8, 7, 9, 8, 7]);
    }

    #[test]
    fn paste_places_and_clips() {
        let mut sheet = RgbImage::filled(3, 2, [0, 0, 0]);
        let tile = RgbImage { width: 2, height: 2, pixels: (1..=12).collect() };
        sheet.paste(&tile, 2, 1);
        // Only the tile's top-left pixel lands inside, at (2, 1).
        let mut expected = vec![0; 18];
        expected[15..18].copy_from_slice(&[1, 2, 3]);
        assert_eq!(sheet.pixels, expected);
        sheet.paste(&tile, 0, 0);
        assert_eq!(&sheet.pixels[..6], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(&sheet.pixels[9..15], &[7, 8, 9, 10, 11, 12]);
    }
}
