//! Times the preprocessors on a 2048×2048 picture (the largest working size):
//! `cargo run --release -p preprocess --example bench [PHOTO]`. Without a photo it scales up
//! the astronaut fixture. Prints one line per operation: best and median of 5 runs, in ms.

use std::time::Instant;

use preprocess::{ResizeMode, RgbImage};

fn time(name: &str, mut f: impl FnMut()) {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("{name:<28} best {:>8.1} ms  median {:>8.1} ms", runs[0], runs[2]);
}

fn main() -> Result<(), String> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/condition/input/astronaut.png").to_owned()
    });
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let photo = preprocess::decode(&bytes).map_err(|e| e.to_string())?;
    let image: RgbImage = preprocess::resize(&photo, ResizeMode::CropAndResize, 2048, 2048);
    time("canny 100/200 2048×2048", || {
        std::hint::black_box(preprocess::canny(&image, 100.0, 200.0));
    });
    time("canny 0/0 2048×2048", || {
        std::hint::black_box(preprocess::canny(&image, 0.0, 0.0));
    });
    time("scribble 2048×2048", || {
        std::hint::black_box(preprocess::scribble_from_lineart(&image));
    });
    time("xdog 2048×2048", || {
        std::hint::black_box(preprocess::xdog(&image));
    });
    time("resize 2048² → 512² (area)", || {
        std::hint::black_box(preprocess::resize(&image, ResizeMode::JustResize, 512, 512));
    });
    time("resize 512² → 2048² (cubic)", || {
        std::hint::black_box(preprocess::resize(&photo, ResizeMode::JustResize, 2048, 2048));
    });
    Ok(())
}
