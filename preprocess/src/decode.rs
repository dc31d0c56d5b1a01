//! Image files to RGB8: PNG, JPEG, WebP, GIF and BMP, with the checks a browser app needs for
//! files dropped by a user (anything at all, possibly huge, possibly truncated).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use crate::RgbImage;
use crate::resize::resample;

/// The most pixels [`decode`] accepts. Checked against the file's header before anything is
/// allocated, so a small file claiming 20000×20000 pixels (a "decompression bomb") is refused at
/// once. 8192×8192 RGBA is 256 MiB, about what a browser tab can spare.
pub const MAX_DECODE_PIXELS: u64 = 8192 * 8192;

/// Longer sides are scaled down to this many pixels by [`decode`] (INTER_AREA, keeping the aspect
/// ratio): the maps are made at the generation size (at most 2048 for SD1.5), and a 48-megapixel
/// photo would only make every slider move slow.
pub const MAX_WORKING_SIDE: usize = 2048;

const FORMATS: &str = "PNG, JPEG, WebP, GIF or BMP";

/// Why a file could not be decoded. `Display` gives one sentence for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not any image format we know.
    NotAnImage,
    /// An image format (or a feature of one) this build does not read, e.g. TIFF or AVIF.
    Unsupported(String),
    /// A known format, but the file is damaged or cut short.
    Damaged(String),
    /// More than [`MAX_DECODE_PIXELS`] pixels.
    TooLarge { width: u32, height: u32, max_pixels: u64 },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAnImage => write!(f, "the file is not an image ({FORMATS} expected)"),
            Self::Unsupported(what) => write!(f, "cannot read this image: {what} ({FORMATS} expected)"),
            Self::Damaged(why) => write!(f, "the image is damaged or incomplete: {why}"),
            Self::TooLarge { width, height, max_pixels } => {
                write!(f, "the image is {width}×{height} pixels, more than the {max_pixels}")?;
                let side = max_pixels.isqrt();
                if side * side == *max_pixels {
                    write!(f, " ({side}×{side})")?;
                }
                write!(f, " accepted")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes an image file to RGB8.
///
/// * Formats: PNG (8 or 16 bits, palette, grey), JPEG (baseline and progressive), WebP (lossy
///   and lossless), GIF (its first frame) and BMP.
/// * EXIF orientation (JPEG, and PNG/WebP files that carry EXIF) is applied, so a phone photo
///   comes out the way it is shown.
/// * Transparency is composited on **white**, as the A1111 extension's `HWC3` does
///   (`rgb·α + 255·(1 − α)`, truncated): black line art on a transparent background stays black
///   on white, which is what the scribble preprocessor expects.
/// * Images with more than [`MAX_DECODE_PIXELS`] pixels are refused before decoding; images whose
///   longer side exceeds [`MAX_WORKING_SIDE`] are scaled down to it (INTER_AREA).
/// * A cut-off JPEG is refused before decoding (decoders fill the rest with grey): one that ends
///   before its end-of-image marker, or holds fewer bits of picture data than its header's size
///   has 8×8 blocks.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    decode_within(bytes, MAX_DECODE_PIXELS)
}

/// [`decode`] with another limit than [`MAX_DECODE_PIXELS`]: the same checks, decoders and
/// scaling, refusing images of more than `max_pixels` pixels. The fuzzer decodes under a small
/// limit, so that its executions explore the formats' parsers rather than paint large canvases.
pub fn decode_within(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    decode_full_within(bytes, Alpha::OnWhite, max_pixels).map(fit_working_size)
}

/// What becomes of an image's transparency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpha {
    /// Composited on white, as the A1111 extension's `HWC3` does (the page's condition images).
    OnWhite,
    /// Dropped, as PIL's `convert("RGB")` does (diffusers' `load_image`, which the CLI equals).
    Drop,
}

/// Decodes an image file to RGB8 at its own size, with [`decode`]'s checks (formats, the pixel
/// limit, cut-off JPEGs refused) and EXIF orientation; `alpha` says what becomes of
/// transparency.
pub fn decode_full(bytes: &[u8], alpha: Alpha) -> Result<RgbImage, DecodeError> {
    decode_full_within(bytes, alpha, MAX_DECODE_PIXELS)
}

/// [`decode_full`] refusing images of more than `max_pixels` pixels (see [`decode_within`]).
pub fn decode_full_within(bytes: &[u8], alpha: Alpha, max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let format = image::guess_format(bytes).map_err(|_| DecodeError::NotAnImage)?;
    // The JPEG decoder fills a cut-off file with grey and reports success; a map of half a
    // picture would be silently wrong.
    let jpeg = if format == ImageFormat::Jpeg {
        Some(jpeg_layout(bytes).ok_or_else(|| DecodeError::Damaged("the JPEG file ends too early".into()))?)
    } else {
        None
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    // A decoder may need the output image and a copy of it; 16-bit RGBA is 8 bytes a pixel.
    limits.max_alloc = Some(max_pixels * 8);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| error(format, e, None, max_pixels))?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(DecodeError::TooLarge { width, height, max_pixels });
    }
    if width == 0 || height == 0 {
        return Err(DecodeError::Damaged(format!(
            "the {} header says {width}×{height} pixels",
            name(format)
        )));
    }
    // Huffman coding spends at least a bit on each 8×8 block (its DC code), so fewer bits than
    // blocks is a file cut short that still ends with an end-of-image marker: decoders would fill
    // the picture with grey, at the cost of decoding all of it.
    if let Some(JpegLayout { scan_bytes, arithmetic: false }) = jpeg {
        let blocks = u64::from(width.div_ceil(8)) * u64::from(height.div_ceil(8));
        if (scan_bytes as u64) * 8 < blocks {
            return Err(DecodeError::Damaged(format!(
                "the JPEG file holds {scan_bytes} bytes of picture data, too few for {width}×{height} pixels"
            )));
        }
    }
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder)
        .map_err(|e| error(format, e, Some((width, height)), max_pixels))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(if alpha == Alpha::OnWhite && image.color().has_alpha() { on_white(image) } else { to_rgb(image) })
}

/// What [`jpeg_layout`] finds in a JPEG file.
#[derive(Clone, Copy, Debug)]
struct JpegLayout {
    /// The entropy-coded bytes of all its scans.
    scan_bytes: usize,
    /// Arithmetic coding (SOF9–SOF15), which can spend less than a bit on a block.
    arithmetic: bool,
}

/// A JPEG's layout if its segments and entropy-coded scans run up to an end-of-image marker
/// (`None`: it ends too early): walks the marker segments (skipping their payloads, EXIF
/// thumbnails included) and scans the compressed data for the next marker (`FF` then anything
/// but `00` (stuffing) or `D0`–`D7` (restarts)). Progressive files have several scans with tables
/// between them.
fn jpeg_layout(bytes: &[u8]) -> Option<JpegLayout> {
    let mut layout = JpegLayout { scan_bytes: 0, arithmetic: false };
    let mut i = 2; // after SOI
    loop {
        // Fill bytes may precede a marker.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) else {
            return None;
        };
        i += 2;
        match marker {
            0xD9 => return Some(layout),
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            0xC9..=0xCB | 0xCD..=0xCF => layout.arithmetic = true,
            _ => {}
        }
        let length = bytes.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))?;
        i += length;
        if marker == 0xDA {
            // Entropy-coded data up to the next real marker.
            let start = i;
            loop {
                match (bytes.get(i), bytes.get(i + 1)) {
                    (Some(&0xFF), Some(&next))
                        if next != 0x00 && !(0xD0..=0xD7).contains(&next) && next != 0xFF =>
                    {
                        break;
                    }
                    (Some(_), Some(_)) => i += 1,
                    _ => return None,
                }
            }
            layout.scan_bytes += i - start;
        }
    }
}

fn name(format: ImageFormat) -> String {
    format.extensions_str().first().map_or_else(|| format!("{format:?}"), |ext| ext.to_uppercase())
}

fn error(format: ImageFormat, e: ImageError, size: Option<(u32, u32)>, max_pixels: u64) -> DecodeError {
    match e {
        ImageError::Unsupported(e) => match e.kind() {
            image::error::UnsupportedErrorKind::Format(_) => {
                DecodeError::Unsupported(format!("{} images are not supported", name(format)))
            }
            _ => DecodeError::Unsupported(format!(
                "this {} file uses a feature we do not read ({e})",
                name(format)
            )),
        },
        ImageError::Limits(_) => match size {
            Some((width, height)) => DecodeError::TooLarge { width, height, max_pixels },
            None => DecodeError::Damaged(format!("the {} header asks for too much memory", name(format))),
        },
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Damaged(format!("the {} file ends too early", name(format)))
        }
        other => DecodeError::Damaged(format!("{} decoder: {other}", name(format))),
    }
}

fn to_rgb(image: DynamicImage) -> RgbImage {
    let rgb = image.into_rgb8();
    RgbImage { width: rgb.width() as usize, height: rgb.height() as usize, pixels: rgb.into_raw() }
}

/// A1111 `HWC3` for RGBA: `(rgb · α + 255 · (1 − α)).clip(0, 255).astype(uint8)` in float32,
/// `α = a / 255`.
fn on_white(image: DynamicImage) -> RgbImage {
    let rgba = image.into_rgba8();
    let (width, height) = (rgba.width() as usize, rgba.height() as usize);
    let mut pixels = Vec::with_capacity(width * height * 3);
    for p in rgba.as_raw().chunks_exact(4) {
        let alpha = f32::from(p[3]) / 255.0;
        let background = 255.0 * (1.0 - alpha);
        for &c in &p[..3] {
            // `as u8` truncates and saturates, like `clip(0, 255).astype(uint8)`.
            pixels.push((f32::from(c) * alpha + background) as u8);
        }
    }
    RgbImage { width, height, pixels }
}

fn fit_working_size(image: RgbImage) -> RgbImage {
    let longest = image.width.max(image.height);
    if longest <= MAX_WORKING_SIDE {
        return image;
    }
    let scale = MAX_WORKING_SIDE as f64 / longest as f64;
    let side = |n: usize| ((n as f64 * scale).round() as usize).clamp(1, MAX_WORKING_SIDE);
    resample(&image, side(image.width), side(image.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparency_is_composited_on_white() {
        let mut png = Vec::new();
        let pixels = [0u8, 0, 0, 0, 0, 0, 0, 255, 200, 100, 50, 128];
        image::write_buffer_with_format(
            &mut Cursor::new(&mut png),
            &pixels,
            3,
            1,
            image::ExtendedColorType::Rgba8,
            ImageFormat::Png,
        )
        .unwrap();
        let rgb = decode(&png).unwrap();
        // Transparent → white, opaque → itself, half → A1111's float32 blend, truncated.
        let half = |c: f32| (c * (128.0 / 255.0) + 255.0 * (1.0 - 128.0 / 255.0)) as u8;
        assert_eq!(rgb.pixels, vec![255, 255, 255, 0, 0, 0, half(200.0), half(100.0), half(50.0)]);
        assert_eq!(&rgb.pixels[6..], &[227, 177, 152]);
    }

    #[test]
    fn large_images_are_scaled_to_the_working_size() {
        let wide = RgbImage::filled(4100, 10, [10, 20, 30]);
        let fitted = fit_working_size(wide);
        assert_eq!((fitted.width, fitted.height), (2048, 5));
        assert!(fitted.pixels.chunks(3).all(|p| p == [10, 20, 30]));
    }
}
