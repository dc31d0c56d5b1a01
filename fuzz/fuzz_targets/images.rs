//! Images a visitor drops or the CLI reads (PNG, JPEG, WebP, GIF, BMP): any bytes, through the
//! page's decoder (orientation, scaling to the working size) and the CLI's (transparency
//! dropped), and the PNG text reader (the `parameters` chunk) — under a limit of
//! [`FUZZ_PIXELS`] instead of `preprocess::MAX_DECODE_PIXELS`: the same checks with a smaller
//! number, so that a few bytes declaring a large canvas cost milliseconds, not seconds, and the
//! executions go to the formats' parsers. `images_full_size` runs the real limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preprocess::Alpha;

/// 1,048,576 pixels: above the working side's 2048 in either direction (2048 × 512), so the
/// scaling to the working size runs too.
const FUZZ_PIXELS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = preprocess::decode_within(data, FUZZ_PIXELS) {
        assert!(image.width.max(image.height) <= preprocess::MAX_WORKING_SIDE);
        assert_eq!(image.pixels.len(), image.width * image.height * 3);
    }
    if let Ok(image) = preprocess::decode_full_within(data, Alpha::Drop, FUZZ_PIXELS) {
        assert!(image.width * image.height <= FUZZ_PIXELS as usize);
        assert_eq!(image.pixels.len(), image.width * image.height * 3);
    }
    let _ = model::image_io::png_text(data);
});
