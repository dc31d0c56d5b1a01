//! `decode` on the files a user may drop: every format, and the ones it must refuse with a
//! readable error rather than a panic or a huge allocation.

use std::io::Cursor;

use image::{ExtendedColorType, ImageFormat};
use preprocess::{Alpha, DecodeError, MAX_DECODE_PIXELS, MAX_WORKING_SIDE, RgbImage};

fn pattern(width: usize, height: usize) -> RgbImage {
    let pixels = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .flat_map(|(x, y)| {
            [(x * 255 / width.max(2)) as u8, (y * 255 / height.max(2)) as u8, ((x + y) % 2 * 200) as u8]
        })
        .collect();
    RgbImage { width, height, pixels }
}

fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    image::write_buffer_with_format(
        &mut Cursor::new(&mut out),
        &image.pixels,
        image.width as u32,
        image.height as u32,
        ExtendedColorType::Rgb8,
        format,
    )
    .unwrap();
    out
}

#[test]
fn lossless_formats_round_trip() {
    let image = pattern(37, 21);
    for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::WebP] {
        assert_eq!(preprocess::decode(&encode(&image, format)).unwrap(), image, "{format:?}");
    }
}

#[test]
fn jpeg_decodes_close_to_the_original() {
    let image = pattern(40, 30);
    let decoded = preprocess::decode(&encode(&image, ImageFormat::Jpeg)).unwrap();
    assert_eq!((decoded.width, decoded.height), (40, 30));
}

#[test]
fn gif_gives_its_first_frame() {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame, RgbaImage};
    let frame = |colour: [u8; 4]| {
        Frame::from_parts(
            RgbaImage::from_pixel(6, 4, image::Rgba(colour)),
            0,
            0,
            Delay::from_numer_denom_ms(100, 1),
        )
    };
    let mut gif = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut gif);
        encoder.encode_frames([frame([255, 0, 0, 255]), frame([0, 0, 255, 255])]).unwrap();
    }
    let decoded = preprocess::decode(&gif).unwrap();
    assert_eq!((decoded.width, decoded.height), (6, 4));
    assert!(decoded.pixels.chunks(3).all(|p| p == [255, 0, 0]), "{:?}", &decoded.pixels[..3]);
}

#[test]
fn refuses_bytes_that_are_no_image() {
    let error = preprocess::decode(b"just some text, not an image").unwrap_err();
    assert_eq!(error, DecodeError::NotAnImage);
    assert_eq!(error.to_string(), "the file is not an image (PNG, JPEG, WebP, GIF or BMP expected)");
    assert_eq!(preprocess::decode(&[]).unwrap_err(), DecodeError::NotAnImage);
}

#[test]
fn refuses_unsupported_formats() {
    // A little-endian TIFF header: a real format, not built in.
    let error = preprocess::decode(b"II*\0\x08\0\0\0\0\0\0\0\0\0\0\0").unwrap_err();
    assert!(matches!(error, DecodeError::Unsupported(_)), "{error:?}");
    println!("{error}");
}

#[test]
fn refuses_truncated_files() {
    let image = pattern(64, 48);
    for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Bmp] {
        let bytes = encode(&image, format);
        for cut in [bytes.len() / 2, bytes.len() * 9 / 10, 40] {
            let result = preprocess::decode(&bytes[..cut]).map(|image| (image.width, image.height));
            println!("{format:?} cut at {cut} of {}: {result:?}", bytes.len());
            let error = result.expect_err("a truncated file is refused");
            assert!(
                matches!(error, DecodeError::Damaged(_) | DecodeError::NotAnImage),
                "{format:?}: {error:?}"
            );
        }
    }
}

#[test]
fn refuses_a_small_cut_off_jpeg_claiming_many_pixels_at_once() {
    // 774 bytes (found by the images fuzzer): a JPEG header declaring 65535×255 pixels, EXIF
    // orientation 7, and a scan of a few bytes. Decoders fill the missing part with grey and
    // report success, after 0.3 s of decoding and rotating 50 MB (the CLI's decoder did); both
    // alpha modes refuse it before decoding.
    let bytes = include_bytes!("fixtures/cut-off-65535x255.jpg");
    for result in [preprocess::decode(bytes), preprocess::decode_full(bytes, Alpha::Drop)] {
        let error = result.map(|image| (image.width, image.height)).unwrap_err();
        assert_eq!(error, DecodeError::Damaged("the JPEG file ends too early".into()));
    }
    // A whole 64×48 JPEG whose header says 65535×255: its scan ends with an end-of-image marker,
    // but a bit per 8×8 block is the least Huffman coding spends, and 262,144 blocks need
    // 32,768 bytes.
    let mut bomb = encode(&pattern(64, 48), ImageFormat::Jpeg);
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline frame header");
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x00, 0xFF, 0xFF, 0xFF]);
    for result in [preprocess::decode(&bomb), preprocess::decode_full(&bomb, Alpha::Drop)] {
        let error = result.map(|image| (image.width, image.height)).unwrap_err();
        assert!(
            matches!(&error, DecodeError::Damaged(why) if why.ends_with("too few for 65535×255 pixels")),
            "{error:?}"
        );
    }
    // The least a real encoder spends: one colour, 2048×2048, decodes.
    let flat = encode(&RgbImage::filled(2048, 2048, [90, 90, 90]), ImageFormat::Jpeg);
    println!("a flat 2048×2048 JPEG: {} bytes", flat.len());
    assert_eq!(preprocess::decode(&flat).map(|image| image.width), Ok(2048));
}

#[test]
fn transparency_is_on_white_or_dropped_as_asked() {
    let pixels = [10u8, 20, 30, 0, 200, 100, 50, 255];
    let mut png = Vec::new();
    image::write_buffer_with_format(
        &mut Cursor::new(&mut png),
        &pixels,
        2,
        1,
        ExtendedColorType::Rgba8,
        ImageFormat::Png,
    )
    .unwrap();
    assert_eq!(preprocess::decode(&png).unwrap().pixels, [255, 255, 255, 200, 100, 50]);
    assert_eq!(preprocess::decode_full(&png, Alpha::OnWhite).unwrap().pixels, [255, 255, 255, 200, 100, 50]);
    assert_eq!(preprocess::decode_full(&png, Alpha::Drop).unwrap().pixels, [10, 20, 30, 200, 100, 50]);
}

/// CRC-32 (PNG chunks).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { 0xEDB8_8320 ^ (crc >> 1) } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn refuses_a_decompression_bomb_before_allocating() {
    // A valid 16×16 PNG whose header (with a correct CRC) claims 20000×20000 pixels.
    let mut bomb = encode(&pattern(16, 16), ImageFormat::Png);
    bomb[16..20].copy_from_slice(&20000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let crc = crc32(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let error = preprocess::decode(&bomb).unwrap_err();
    assert_eq!(error, DecodeError::TooLarge { width: 20000, height: 20000, max_pixels: MAX_DECODE_PIXELS });
    assert_eq!(
        error.to_string(),
        "the image is 20000×20000 pixels, more than the 67108864 (8192×8192) accepted"
    );
}

#[test]
fn another_limit_is_the_same_check_with_another_number() {
    // What the fuzzer decodes under: a 64×48 image (3,072 pixels) against limits around it.
    let png = encode(&pattern(64, 48), ImageFormat::Png);
    let whole = preprocess::decode(&png).unwrap();
    assert_eq!(preprocess::decode_within(&png, 64 * 48).unwrap(), whole);
    let error = preprocess::decode_within(&png, 64 * 48 - 1).unwrap_err();
    assert_eq!(error, DecodeError::TooLarge { width: 64, height: 48, max_pixels: 3071 });
    assert_eq!(error.to_string(), "the image is 64×48 pixels, more than the 3071 accepted");
    let error = preprocess::decode_full_within(&png, Alpha::Drop, 32 * 32).unwrap_err();
    assert_eq!(error.to_string(), "the image is 64×48 pixels, more than the 1024 (32×32) accepted");
}

#[test]
fn large_photos_are_scaled_to_the_working_size() {
    let image = RgbImage::filled(3000, 1000, [10, 200, 30]);
    let decoded = preprocess::decode(&encode(&image, ImageFormat::Png)).unwrap();
    assert_eq!((decoded.width, decoded.height), (MAX_WORKING_SIDE, 683));
    assert!(decoded.pixels.chunks(3).all(|p| p == [10, 200, 30]));
}
