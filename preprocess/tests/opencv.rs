//! The preprocessors against OpenCV 5.0 / NumPy, on the fixtures of
//! `tests/fixtures/make_condition_fixtures.py` (`tests/fixtures/condition/manifest.json`).
//! Every case prints its share of identical pixels.

use std::path::{Path, PathBuf};

use preprocess::{GrayImage, ResizeMode, RgbImage};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/condition")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(root().join("manifest.json")).expect("the condition fixtures exist");
    serde_json::from_str(&text).unwrap()
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn input(manifest: &Value, name: &str) -> RgbImage {
    let entry = &manifest["inputs"][name];
    let image = preprocess::decode(&read(entry["path"].as_str().unwrap())).unwrap();
    assert_eq!(image.width as u64, entry["width"].as_u64().unwrap());
    assert_eq!(image.height as u64, entry["height"].as_u64().unwrap());
    image
}

/// A 1-bit or 8-bit greyscale PNG map (the `image` crate expands 1-bit to 0/255).
fn map(path: &str) -> GrayImage {
    let luma = image::load_from_memory(&read(path)).unwrap().into_luma8();
    GrayImage { width: luma.width() as usize, height: luma.height() as usize, pixels: luma.into_raw() }
}

/// Share of equal pixels.
fn identical(ours: &[u8], theirs: &[u8]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    if ours.is_empty() {
        return 1.0;
    }
    ours.iter().zip(theirs).filter(|(a, b)| a == b).count() as f64 / ours.len() as f64
}

fn cases<'a>(manifest: &'a Value, kind: &str) -> &'a Vec<Value> {
    manifest[kind].as_array().unwrap()
}

#[test]
fn one_bit_maps_read_as_0_and_255() {
    let edges = map("canny/lines_100_200.png");
    assert!(edges.pixels.contains(&255) && edges.pixels.contains(&0));
    assert!(edges.pixels.iter().all(|&v| v == 0 || v == 255));
}

#[test]
fn canny_matches_opencv() {
    let manifest = manifest();
    let (mut exact, mut worst) = (0, 1.0f64);
    let all = cases(&manifest, "canny");
    for case in all {
        let name = case["input"].as_str().unwrap();
        let (low, high) = (case["low"].as_f64().unwrap(), case["high"].as_f64().unwrap());
        let expected = map(case["output"].as_str().unwrap());
        let ours = preprocess::canny(&input(&manifest, name), low, high);
        assert_eq!((ours.width, ours.height), (expected.width, expected.height));
        let share = identical(&ours.pixels, &expected.pixels);
        let edges = ours.pixels.iter().filter(|&&v| v == 255).count();
        println!(
            "canny {name:>13} {low:>5}/{high:<5} identical {:>8.4} %  edges ours {edges:>6}, OpenCV {:>6}",
            share * 100.0,
            case["edge_pixels"]
        );
        exact += usize::from(share == 1.0);
        worst = worst.min(share);
        assert!(share >= 0.999, "{name} {low}/{high}: only {:.4} % identical", share * 100.0);
    }
    println!("canny: {exact} of {} cases bit-identical, worst {:.4} %", all.len(), worst * 100.0);
}

#[test]
fn xdog_matches_opencv() {
    let manifest = manifest();
    let (mut exact, mut worst) = (0, 1.0f64);
    let all = cases(&manifest, "xdog");
    for case in all {
        let name = case["input"].as_str().unwrap();
        let threshold = case["threshold"].as_u64().unwrap() as u8;
        assert_eq!(threshold, preprocess::XDOG_THRESHOLD);
        let expected = map(case["output"].as_str().unwrap());
        let ours = preprocess::xdog(&input(&manifest, name));
        let share = identical(&ours.pixels, &expected.pixels);
        let strokes = ours.pixels.iter().filter(|&&v| v == 255).count();
        println!(
            "xdog {name:>13} identical {:>8.4} %  strokes ours {strokes:>6}, OpenCV {:>6}",
            share * 100.0,
            case["edge_pixels"]
        );
        exact += usize::from(share == 1.0);
        worst = worst.min(share);
        assert!(share >= 0.999, "{name}: only {:.4} % identical", share * 100.0);
    }
    println!("xdog: {exact} of {} cases bit-identical, worst {:.4} %", all.len(), worst * 100.0);
}

#[test]
fn scribble_matches_numpy() {
    let manifest = manifest();
    for case in cases(&manifest, "scribble") {
        let name = case["input"].as_str().unwrap();
        let expected = map(case["output"].as_str().unwrap());
        assert_eq!(preprocess::scribble_from_lineart(&input(&manifest, name)), expected, "{name}");
    }
}

/// Resampling follows OpenCV's arithmetic; at exact halves (synthetic images) OpenCV's own
/// rounding error may tip a pixel the other way, so a pixel may be 1 off.
#[test]
fn resize_matches_a1111_with_opencv() {
    let manifest = manifest();
    for case in cases(&manifest, "resize") {
        let name = case["input"].as_str().unwrap();
        let mode: ResizeMode = case["mode"].as_str().unwrap().parse().unwrap();
        let (w, h) = (case["width"].as_u64().unwrap() as usize, case["height"].as_u64().unwrap() as usize);
        let expected = preprocess::decode(&read(case["output"].as_str().unwrap())).unwrap();
        let ours = preprocess::resize(&input(&manifest, name), mode, w, h);
        assert_eq!((ours.width, ours.height), (w, h));
        let share = identical(&ours.pixels, &expected.pixels);
        let max = ours.pixels.iter().zip(&expected.pixels).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        println!(
            "resize {name:>10} {mode} {w:>3}×{h:<3} identical {:>8.4} %  max difference {max}",
            share * 100.0
        );
        assert!(
            max <= 1 && share >= 0.9999,
            "{name} {mode} {w}×{h}: {:.4} % identical, max {max}",
            share * 100.0
        );
    }
}

#[test]
fn exif_orientation_is_applied() {
    let manifest = manifest();
    let exif = &manifest["exif"];
    let decoded = preprocess::decode(&read(exif["input"].as_str().unwrap())).unwrap();
    let upright = preprocess::decode(&read(exif["upright"].as_str().unwrap())).unwrap();
    assert_eq!((decoded.width, decoded.height), (40, 24), "the stored pixels are 24×40, shown 40×24");
    // JPEG decoders differ by a few levels; the orientation is what matters.
    let diff: f64 = decoded.pixels.iter().zip(&upright.pixels).map(|(a, b)| f64::from(a.abs_diff(*b))).sum();
    let mean = diff / decoded.pixels.len() as f64;
    println!("exif: mean difference from PIL's exif_transpose {mean:.3} levels");
    assert!(mean < 2.0, "mean difference {mean}");
    // The red block is at the top left, the green one at the bottom right.
    let at = |x: usize, y: usize| &decoded.pixels[(y * 40 + x) * 3..][..3];
    assert!(at(2, 2)[0] > 200 && at(2, 2)[1] < 80, "{:?}", at(2, 2));
    assert!(at(37, 21)[1] > 180 && at(37, 21)[0] < 80, "{:?}", at(37, 21));
}

/// Native speed of the preprocessors at the largest working size (a figure, not an assertion;
/// `cargo run --release -p preprocess --example bench` gives optimised numbers).
#[test]
fn timing_at_2048() {
    let image = preprocess::resize(&input(&manifest(), "astronaut"), ResizeMode::JustResize, 2048, 2048);
    let started = std::time::Instant::now();
    let edges = preprocess::canny(&image, 100.0, 200.0);
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!("canny 2048×2048 ({profile} build): {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    assert_eq!(edges.pixels.len(), 2048 * 2048);
}
