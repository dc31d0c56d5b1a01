//! Images a visitor drops or the CLI reads (PNG, JPEG, WebP, GIF, BMP): any bytes, through the
//! page's decoder (size limits, orientation, scaling to the working size) and the CLI's, and the
//! PNG text reader (the `parameters` chunk).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = preprocess::decode(data) {
        assert!(image.width.max(image.height) <= preprocess::MAX_WORKING_SIDE);
        assert_eq!(image.pixels.len(), image.width * image.height * 3);
    }
    let _ = model::image_io::decode(data);
    let _ = model::image_io::png_text(data);
});
