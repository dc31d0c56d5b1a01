//! Images in and out: decoding condition images (PNG, JPEG with its EXIF orientation, WebP, GIF's
//! first frame, BMP) and writing PNGs that carry their generation parameters.

use std::io::Cursor;

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

/// Decodes an image file's bytes to RGB at its own size, with the page's checks
/// ([`preprocess::decode_full`]: formats, the pixel limit, cut-off JPEGs refused, EXIF
/// orientation); transparency is dropped as diffusers' `load_image` (PIL's `convert("RGB")`) does.
pub fn decode(bytes: &[u8]) -> Result<Rgb8, ImageError> {
    let image =
        preprocess::decode_full(bytes, preprocess::Alpha::Drop).map_err(|e| ImageError(e.to_string()))?;
    Ok(Rgb8 { width: image.width, height: image.height, pixels: image.pixels })
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
    fn decodes_with_the_pages_checks_and_drops_transparency() {
        assert!(decode(b"just some text, not an image").unwrap_err().0.contains("not an image"));
        // A 774-byte JPEG declaring 65535×255 pixels whose scan stops short (found by the images
        // fuzzer): this decoder used to fill the rest with grey, 0.3 s of work, and accept it.
        let cut_off = include_bytes!("../../preprocess/tests/fixtures/cut-off-65535x255.jpg");
        let message = decode(cut_off).unwrap_err().0;
        assert!(message.contains("ends too early"), "{message}");
        // Transparent pixels keep their colour, as PIL's `convert("RGB")` gives diffusers.
        let mut png = Vec::new();
        let rgba = [10u8, 20, 30, 0, 200, 100, 50, 128];
        let mut encoder = png::Encoder::new(&mut png, 2, 1);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header().unwrap().write_image_data(&rgba).unwrap();
        assert_eq!(decode(&png).unwrap().pixels, [10, 20, 30, 200, 100, 50]);
    }
}
