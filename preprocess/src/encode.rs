//! PNG files of images and maps (the CLI's output, a download in the browser).

use std::io::Cursor;

use image::{ExtendedColorType, ImageFormat};

use crate::{GrayImage, RgbImage};

/// An RGB8 PNG of `image`.
///
/// # Panics
/// If `image.pixels.len() != image.width * image.height * 3`, or a side exceeds `u32::MAX`.
pub fn encode_png(image: &RgbImage) -> Vec<u8> {
    png(&image.pixels, image.width, image.height, ExtendedColorType::Rgb8)
}

/// An 8-bit greyscale PNG of `map`.
///
/// # Panics
/// If `map.pixels.len() != map.width * map.height`, or a side exceeds `u32::MAX`.
pub fn encode_png_gray(map: &GrayImage) -> Vec<u8> {
    png(&map.pixels, map.width, map.height, ExtendedColorType::L8)
}

fn png(pixels: &[u8], width: usize, height: usize, colour: ExtendedColorType) -> Vec<u8> {
    let (width, height) =
        (u32::try_from(width).expect("width fits u32"), u32::try_from(height).expect("height fits u32"));
    let mut out = Vec::new();
    // Writing to memory fails only when the buffer does not match the size: a caller's bug.
    image::write_buffer_with_format(
        &mut Cursor::new(&mut out),
        pixels,
        width,
        height,
        colour,
        ImageFormat::Png,
    )
    .expect("pixels match the image size");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips() {
        let rgb = RgbImage { width: 3, height: 2, pixels: (0..18).map(|i| i * 13).collect() };
        assert_eq!(crate::decode(&encode_png(&rgb)).unwrap(), rgb);
        let gray = GrayImage { width: 2, height: 2, pixels: vec![0, 255, 7, 9] };
        assert_eq!(crate::decode(&encode_png_gray(&gray)).unwrap(), gray.to_rgb());
    }
}
