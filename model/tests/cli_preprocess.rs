//! `controlnet preprocess` against the OpenCV fixtures of `tests/fixtures/condition`, and
//! one-line errors (never a panic) for bad input.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn controlnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_controlnet")).args(args).output().expect("the binary runs")
}

fn condition(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/condition")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

fn out_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("controlnet-cli-preprocess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gray(path: &Path) -> (u32, u32, Vec<u8>) {
    let luma = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_luma8();
    (luma.width(), luma.height(), luma.into_raw())
}

fn run_ok(args: &[&str]) {
    let output = controlnet(args);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn canny_equals_opencv() {
    let out = out_dir().join("astronaut_canny.png");
    let out_str = out.to_string_lossy();
    for (low, high) in [("100", "200"), ("50", "100")] {
        run_ok(&[
            "preprocess",
            "canny",
            &condition("input/astronaut.png"),
            &out_str,
            "--low",
            low,
            "--high",
            high,
        ]);
        let expected = gray(Path::new(&condition(&format!("canny/astronaut_{low}_{high}.png"))));
        let ours = gray(&out);
        assert_eq!((ours.0, ours.1), (expected.0, expected.1));
        let same = ours.2.iter().zip(&expected.2).filter(|(a, b)| a == b).count();
        println!("cli canny {low}/{high}: {same} of {} pixels identical to cv2.Canny", ours.2.len());
        assert_eq!(same, ours.2.len());
    }
    // --invert gives black edges on white.
    run_ok(&["preprocess", "canny", &condition("input/astronaut.png"), &out_str, "--invert"]);
    let expected = gray(Path::new(&condition("canny/astronaut_100_200.png")));
    assert!(gray(&out).2.iter().zip(&expected.2).all(|(a, b)| *a == 255 - b));
}

#[test]
fn resizes_before_the_preprocessor() {
    let dir = out_dir();
    for (op, mode) in [("canny", "crop"), ("scribble", "fill"), ("xdog", "just")] {
        let out = dir.join(format!("{op}_{mode}.png"));
        let input = condition("input/chelsea.png");
        run_ok(&[
            "preprocess",
            op,
            &input,
            &out.to_string_lossy(),
            "--resize-mode",
            mode,
            "--width",
            "96",
            "--height",
            "64",
        ]);
        let (w, h, pixels) = gray(&out);
        assert_eq!((w, h), (96, 64), "{op} {mode}");
        assert!(pixels.iter().all(|&v| v == 0 || v == 255), "{op}: a binary map");
        // The same as the library on the resized picture.
        let picture = preprocess::decode(&std::fs::read(&input).unwrap()).unwrap();
        let fitted = preprocess::resize(&picture, mode.parse().unwrap(), 96, 64);
        let map = match op {
            "canny" => preprocess::canny(&fitted, 100.0, 200.0),
            "scribble" => preprocess::scribble_from_lineart(&fitted),
            _ => preprocess::xdog(&fitted),
        };
        assert_eq!(pixels, map.pixels, "{op} {mode}");
    }
    // Without a size the map keeps the picture's own.
    let out = dir.join("coffee_xdog.png");
    run_ok(&["preprocess", "xdog", &condition("input/coffee.png"), &out.to_string_lossy()]);
    let (w, h, _) = gray(&out);
    assert_eq!((w, h), (600, 400));
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = out_dir();
    let text = dir.join("not_an_image.png");
    std::fs::write(&text, "hello").unwrap();
    let out = dir.join("unused.png");
    let (text, out) = (text.to_string_lossy().into_owned(), out.to_string_lossy().into_owned());
    let input = condition("input/lines.png");
    let missing = dir.join("missing.png").to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["preprocess"], "got 0 argument(s)"),
        (vec!["preprocess", "canny", &input], "got 2 argument(s)"),
        (vec!["preprocess", "sobel", &input, &out], "unknown preprocessor `sobel`"),
        (vec!["preprocess", "canny", &missing, &out], "missing.png"),
        (vec!["preprocess", "canny", &text, &out], "not an image"),
        (vec!["preprocess", "canny", &input, &out, "--low", "x"], "`--low x`"),
        (vec!["preprocess", "canny", &input, &out, "--high", "-5"], "from 0 up"),
        (vec!["preprocess", "xdog", &input, &out, "--low", "5"], "has none"),
        (vec!["preprocess", "canny", &input, &out, "--width", "64"], "both `--width` and `--height`"),
        (vec!["preprocess", "canny", &input, &out, "--width", "0", "--height", "64"], "from 1 to 8192"),
        (
            vec![
                "preprocess",
                "canny",
                &input,
                &out,
                "--resize-mode",
                "zoom",
                "--width",
                "8",
                "--height",
                "8",
            ],
            "zoom",
        ),
        (vec!["preprocess", "canny", &input, "/nonexistent-dir/out.png"], "/nonexistent-dir/out.png"),
    ];
    for (args, needle) in cases {
        let output = controlnet(&args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("controlnet: ") && stderr.contains(needle),
            "{args:?}: `{needle}` not in: {stderr}"
        );
    }
}
