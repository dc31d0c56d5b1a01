//! Images in and out: decoding condition images (PNG, JPEG with its EXIF orientation, WebP, GIF's
//! first frame, BMP) and writing PNGs that carry their generation parameters.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

/// The most pixels we decode (a 20000×20000 "decompression bomb" is refused before it allocates).
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// Why an image could not be read or written.
#[derive(Debug)]
pub struct ImageError(pub String);

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ImageError {}

/// An 8-bit RGB image, rows top to bottom.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Decodes an image file's bytes to RGB (alpha dropped, EXIF orientation applied).
pub fn decode(bytes: &[u8]) -> Result<Rgb8, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError(format!("cannot read the image: {e}")))?;
    let Some(format) = reader.format() else {
        return Err(ImageError("not an image (PNG, JPEG, WebP, GIF or BMP expected)".into()));
    };
    let mut decoder =
        reader.into_decoder().map_err(|e| ImageError(format!("not a valid {format:?} image: {e}")))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(ImageError(format!(
            "the image is {w}×{h} pixels; at most {MAX_PIXELS} pixels ({}×{}) are accepted",
            8192, 8192
        )));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 8);
    decoder.set_limits(limits).map_err(|e| ImageError(format!("image too large: {e}")))?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder)
        .map_err(|e| ImageError(format!("the {format:?} image is damaged or truncated: {e}")))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    let rgb = image.to_rgb8();
    Ok(Rgb8 { width: rgb.width() as usize, height: rgb.height() as usize, pixels: rgb.into_raw() })
}

/// Resizes with a Lanczos filter (what PIL, and so diffusers, use for condition images).
pub fn resize(image: &Rgb8, width: usize, height: usize) -> Rgb8 {
    if (image.width, image.height) == (width, height) {
        return image.clone();
    }
    let buffer = image::RgbImage::from_raw(image.width as u32, image.height as u32, image.pixels.clone())
        .expect("pixels match the size");
    let resized =
        image::imageops::resize(&buffer, width as u32, height as u32, image::imageops::FilterType::Lanczos3);
    Rgb8 { width, height, pixels: resized.into_raw() }
}

/// Encodes an RGB image as PNG with text chunks (`tEXt` for Latin-1 keys and values, `iTXt`
/// otherwise): Stable Diffusion tools read the generation parameters from the `parameters` key.
pub fn encode_png(image: &Rgb8, text: &[(&str, &str)]) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width as u32, image.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (key, value) in text {
            let latin1 = value.chars().all(|c| (c as u32) < 256 && c != '\0');
            let result = if latin1 {
                encoder.add_text_chunk(key.to_string(), value.to_string())
            } else {
                encoder.add_itxt_chunk(key.to_string(), value.to_string())
            };
            result.map_err(|e| ImageError(format!("PNG text chunk `{key}`: {e}")))?;
        }
        let mut writer = encoder.write_header().map_err(|e| ImageError(format!("PNG: {e}")))?;
        writer.write_image_data(&image.pixels).map_err(|e| ImageError(format!("PNG: {e}")))?;
        writer.finish().map_err(|e| ImageError(format!("PNG: {e}")))?;
    }
    Ok(out)
}

/// The text chunks of a PNG (`tEXt`, `zTXt` and `iTXt`), as key/value pairs.
pub fn png_text(bytes: &[u8]) -> Result<Vec<(String, String)>, ImageError> {
    let decoder = png::Decoder::new(Cursor::new(bytes));
    let reader = decoder.read_info().map_err(|e| ImageError(format!("not a PNG: {e}")))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> =
        info.uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    for t in &info.compressed_latin1_text {
        out.push((t.keyword.clone(), t.get_text().map_err(|e| ImageError(e.to_string()))?));
    }
    for t in &info.utf8_text {
        out.push((t.keyword.clone(), t.get_text().map_err(|e| ImageError(e.to_string()))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_with_text() {
        let image = Rgb8 { width: 3, height: 2, pixels: (0..18).map(|i| i * 14).collect() };
        let png = encode_png(&image, &[("parameters", "a cat\nSteps: 2"), ("note", "café ☕")]).unwrap();
        assert_eq!(decode(&png).unwrap(), image);
        let text = png_text(&png).unwrap();
        assert!(text.contains(&("parameters".into(), "a cat\nSteps: 2".into())));
        assert!(text.contains(&("note".into(), "café ☕".into())));
    }

    #[test]
    fn refuses_non_images_truncated_files_and_bombs() {
        assert!(decode(b"just some text, not an image").unwrap_err().0.contains("not an image"));
        let image = Rgb8 { width: 16, height: 16, pixels: vec![200; 16 * 16 * 3] };
        let png = encode_png(&image, &[]).unwrap();
        assert!(decode(&png[..png.len() / 2]).is_err());
        // A valid PNG header claiming 20000×20000 pixels.
        let mut bomb = png.clone();
        bomb[16..20].copy_from_slice(&20000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&20000u32.to_be_bytes());
        let crc = png_crc(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let message = decode(&bomb).unwrap_err().0;
        assert!(message.contains("20000×20000"), "{message}");
    }

    fn png_crc(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { 0xEDB8_8320 ^ (crc >> 1) } else { crc >> 1 };
            }
        }
        !crc
    }
}
