//! The `images` target at the real limit (`preprocess::MAX_DECODE_PIXELS`), through the functions
//! the page and the CLI call: a few bytes may declare 67 megapixels, so one execution may take
//! seconds (`.ci/fuzz` gives this target 8 s) and allocate up to the decoder's 512 MiB cap.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = preprocess::decode(data) {
        assert!(image.width.max(image.height) <= preprocess::MAX_WORKING_SIDE);
        assert_eq!(image.pixels.len(), image.width * image.height * 3);
    }
    let _ = model::image_io::decode(data);
});
