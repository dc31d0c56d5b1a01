//! The generated image as the page receives it: a PNG carrying its parameters, and a small
//! thumbnail for the gallery. Pure host code (the `png` crate alone: the worker links no image
//! decoders).

/// The longest side of a gallery thumbnail, in pixels.
pub const THUMBNAIL_SIDE: usize = 256;

/// Encodes 8-bit RGB rows as a PNG with text chunks: `tEXt` where key and value are Latin-1
/// (what A1111 writes, and what every reader of `parameters` understands), `iTXt` (UTF-8)
/// otherwise, so that a prompt in any script survives.
pub fn encode_png(width: usize, height: usize, rgb: &[u8], text: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    if rgb.len() != width * height * 3 {
        return Err(format!("{} bytes are not a {width}×{height} RGB image", rgb.len()));
    }
    let (w, h) = (
        u32::try_from(width).map_err(|_| format!("a width of {width}"))?,
        u32::try_from(height).map_err(|_| format!("a height of {height}"))?,
    );
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (key, value) in text {
            let latin1 = value.chars().all(|c| (c as u32) < 256 && c != '\0');
            let result = if latin1 {
                encoder.add_text_chunk((*key).to_owned(), (*value).to_owned())
            } else {
                encoder.add_itxt_chunk((*key).to_owned(), (*value).to_owned())
            };
            result.map_err(|e| format!("the PNG's `{key}` text: {e}"))?;
        }
        let mut writer = encoder.write_header().map_err(|e| format!("PNG: {e}"))?;
        writer.write_image_data(rgb).map_err(|e| format!("PNG: {e}"))?;
        writer.finish().map_err(|e| format!("PNG: {e}"))?;
    }
    Ok(out)
}

/// The size of `width × height` scaled to fit `max_side` (never enlarged, at least 1 pixel).
pub fn fit(width: usize, height: usize, max_side: usize) -> (usize, usize) {
    let longer = width.max(height);
    if longer <= max_side || longer == 0 {
        return (width, height);
    }
    let scale = |side: usize| ((side * max_side) as f64 / longer as f64).round().max(1.0) as usize;
    (scale(width), scale(height))
}

/// Area-averaging downscale of 8-bit RGB rows (each target pixel is the mean of the source area
/// it covers, fractions included): no aliasing, and cheap enough for the host. Separable: rows
/// first, then columns.
pub fn downscale(width: usize, height: usize, rgb: &[u8], to_width: usize, to_height: usize) -> Vec<u8> {
    assert_eq!(rgb.len(), width * height * 3, "RGB bytes do not match the size");
    assert!(to_width >= 1 && to_height >= 1 && to_width <= width && to_height <= height, "only shrinks");
    let columns = area_weights(width, to_width);
    let rows = area_weights(height, to_height);
    // Rows: [height, to_width, 3] sums.
    let mut horizontal = vec![0f32; height * to_width * 3];
    for y in 0..height {
        for (x, weights) in columns.iter().enumerate() {
            for &(source, weight) in weights {
                for c in 0..3 {
                    horizontal[(y * to_width + x) * 3 + c] +=
                        weight * f32::from(rgb[(y * width + source) * 3 + c]);
                }
            }
        }
    }
    let area = (width as f32 / to_width as f32) * (height as f32 / to_height as f32);
    let mut out = vec![0u8; to_width * to_height * 3];
    for (y, weights) in rows.iter().enumerate() {
        for x in 0..to_width {
            for c in 0..3 {
                let sum: f32 = weights
                    .iter()
                    .map(|&(source, weight)| weight * horizontal[(source * to_width + x) * 3 + c])
                    .sum();
                out[(y * to_width + x) * 3 + c] = (sum / area).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// For each of `to` target cells, the source cells it covers and how much of each (in source
/// cells: they add up to `from / to`).
fn area_weights(from: usize, to: usize) -> Vec<Vec<(usize, f32)>> {
    let step = from as f64 / to as f64;
    (0..to)
        .map(|i| {
            let (start, end) = (i as f64 * step, (i + 1) as f64 * step);
            let first = start.floor() as usize;
            let last = (end.ceil() as usize).min(from);
            (first..last)
                .map(|s| (s, ((end.min(s as f64 + 1.0) - start.max(s as f64)) as f32)))
                .filter(|&(_, w)| w > 0.0)
                .collect()
        })
        .collect()
}

/// A gallery thumbnail: the image fitted into [`THUMBNAIL_SIDE`] pixels, as a PNG.
pub fn thumbnail_png(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>, String> {
    let (w, h) = fit(width, height, THUMBNAIL_SIDE);
    if (w, h) == (width, height) {
        return encode_png(width, height, rgb, &[]);
    }
    encode_png(w, h, &downscale(width, height, rgb, w, h), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> (png::Info<'static>, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut pixels).unwrap();
        pixels.truncate(frame.buffer_size());
        let info = reader.info().clone();
        (info, pixels)
    }

    #[test]
    fn png_round_trips_pixels_and_text() {
        let rgb: Vec<u8> = (0..3 * 2 * 3).map(|i| (i * 13) as u8).collect();
        let parameters = "a cat\nNegative prompt: dog\nSteps: 2, Seed: 7";
        let png = encode_png(3, 2, &rgb, &[("parameters", parameters), ("prompt", "猫 ☕")]).unwrap();
        let (info, pixels) = decode(&png);
        assert_eq!((info.width, info.height, info.color_type), (3, 2, png::ColorType::Rgb));
        assert_eq!(pixels, rgb);
        // Latin-1 text is a plain tEXt chunk, as A1111 writes it…
        let latin1: Vec<(&str, &str)> =
            info.uncompressed_latin1_text.iter().map(|t| (t.keyword.as_str(), t.text.as_str())).collect();
        assert_eq!(latin1, [("parameters", parameters)]);
        // …and anything else iTXt.
        assert_eq!(info.utf8_text.len(), 1);
        assert_eq!(info.utf8_text[0].keyword, "prompt");
        assert_eq!(info.utf8_text[0].get_text().unwrap(), "猫 ☕");
        assert!(encode_png(3, 3, &rgb, &[]).unwrap_err().contains("3×3"));
    }

    #[test]
    fn thumbnails_fit_256_pixels_keeping_the_aspect() {
        assert_eq!(fit(512, 512, 256), (256, 256));
        assert_eq!(fit(512, 768, 256), (171, 256));
        assert_eq!(fit(2048, 64, 256), (256, 8));
        assert_eq!(fit(64, 96, 256), (64, 96));
        assert_eq!(fit(4096, 8, 256), (256, 1));
    }

    #[test]
    fn downscaling_averages_areas() {
        // 4×2 → 2×1: each target pixel is the mean of a 2×2 block.
        #[rustfmt::skip]
        let rgb = [
            0, 0, 0,   10, 20, 30,   100, 100, 100,   200, 200, 200,
            4, 4, 4,   14, 24, 34,   100, 100, 100,   201, 201, 201,
        ];
        assert_eq!(downscale(4, 2, &rgb, 2, 1), [7, 12, 17, 150, 150, 150]);
        // A uniform image stays uniform at any ratio, fractional included.
        let grey = vec![77u8; 7 * 5 * 3];
        assert!(downscale(7, 5, &grey, 3, 2).iter().all(|&v| v == 77));
        // 3 → 2 columns: the middle source pixel is split between both targets.
        let line = [0, 0, 0, 90, 90, 90, 180, 180, 180];
        assert_eq!(downscale(3, 1, &line, 2, 1), [30, 30, 30, 150, 150, 150]);
    }

    #[test]
    fn thumbnail_is_a_small_png() {
        let rgb = vec![128u8; 512 * 768 * 3];
        let (info, pixels) = decode(&thumbnail_png(512, 768, &rgb).unwrap());
        assert_eq!((info.width, info.height), (171, 256));
        assert!(pixels.iter().all(|&v| v == 128));
        let (info, _) = decode(&thumbnail_png(64, 96, &rgb[..64 * 96 * 3]).unwrap());
        assert_eq!((info.width, info.height), (64, 96));
    }
}
