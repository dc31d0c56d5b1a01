//! `controlnet generate` on the fixture folders: the image diffusers made from the same noise,
//! the parameters in the PNG, and one-line errors (never a panic) for bad input.
#![cfg(feature = "cli")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixtures;
use model::image_io;

fn controlnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_controlnet")).args(args).output().expect("the binary runs")
}

fn out_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("controlnet-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(path: &str) -> String {
    fixtures().join(path).to_string_lossy().into_owned()
}

/// The `cli` case of the fixture script, by command line.
fn cli_case_args(out: &Path, backend: &str) -> Vec<String> {
    [
        "generate",
        "--model",
        &fixture("tiny"),
        "--controlnet",
        &fixture("tiny/controlnet"),
        "--control",
        &fixture("tiny/control/edges_64x64.png"),
        "--scale",
        "0.7",
        "--control-end",
        "0.8",
        "--prompt",
        "a tiny cat",
        "--steps",
        "4",
        "--scheduler",
        "unipc",
        "--noise",
        &fixture("tiny/noise_64x64.npy"),
        "--precision",
        "f32",
        "--backend",
        backend,
        "--out",
        &out.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn generate_reproduces_diffusers() {
    let dir = out_dir();
    for backend in ["cpu", "wgpu"] {
        let out = dir.join(format!("cli-{backend}.png"));
        let args = cli_case_args(&out, backend);
        let output = controlnet(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{backend}: {stderr}");
        assert!(stderr.contains("step 4/4"), "progress is shown: {stderr}");

        let png = std::fs::read(&out).unwrap();
        let image = image_io::decode(&png).unwrap();
        let expected = common::pipeline_expected().get("pipe.cli.image").unwrap();
        assert_eq!((image.height, image.width), (expected.shape[2], expected.shape[3]));
        // diffusers' [1, 3, h, w] in [0, 1] → 8-bit the way numpy_to_pil rounds.
        let (h, w) = (image.height, image.width);
        let mut mse = 0.0;
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let e = (expected.values[(c * h + y) * w + x] * 255.0).round() as f64;
                    mse += (image.pixels[(y * w + x) * 3 + c] as f64 - e).powi(2);
                }
            }
        }
        mse /= (3 * h * w) as f64;
        let psnr = 10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10();
        println!("{backend}: CLI image vs diffusers: PSNR {psnr:.1} dB (mse {mse:.3} in 8-bit units)");
        assert!(psnr >= 40.0, "{backend}: PSNR {psnr:.1} dB < 40 dB");

        let text = image_io::png_text(&png).unwrap();
        let parameters = &text.iter().find(|(k, _)| k == "parameters").expect("a parameters chunk").1;
        println!("{parameters}");
        // A1111's names, read back by the same parser the page uses.
        assert!(
            parameters.starts_with("a tiny cat\nSteps: 4, Sampler: UniPC, CFG scale: 7.5"),
            "{parameters}"
        );
        assert!(parameters.contains("Size: 64x64"), "{parameters}");
        assert!(
            parameters.contains("ControlNet 0: \"Module: none, Model: controlnet, Weight: 0.7, Resize Mode: Just Resize, Guidance Start: 0, Guidance End: 0.8, Control Mode: Balanced\""),
            "{parameters}"
        );
        let parsed = model::vocabulary::a1111::Parameters::parse(parameters).unwrap();
        assert_eq!((parsed.params.steps, parsed.params.width), (4, 64));
        assert_eq!(parsed.units[0].settings.end, 0.8);
        assert!(!parsed.has_seed, "the noise came from a file");
    }
}

/// PSNR of two 8-bit RGB images of one size, in dB.
fn psnr_8bit(a: &image_io::Rgb8, b: &image_io::Rgb8) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let mse =
        a.pixels.iter().zip(&b.pixels).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>()
            / a.pixels.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10()
}

/// Pipelines of other shapes (tests/fixtures/make_topology_fixtures.py): diffusers' own ControlNet
/// test components (a VAE scaling by 2, a first block with fewer channels than heads, one norm
/// group) and a three-level one (a VAE scaling by 4): the CLI's image for seed 1234 equals
/// diffusers' from the same latents, on both backends.
#[test]
fn other_topologies_equal_diffusers() {
    let dir = out_dir();
    for name in ["dummy", "three"] {
        let folder = format!("topology/{name}");
        let fixture_json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixtures().join(&folder).join("fixture.json")).unwrap())
                .unwrap();
        let settings = &fixture_json["settings"];
        let expected =
            image_io::decode(&std::fs::read(fixtures().join(&folder).join("expected.png")).unwrap()).unwrap();
        for backend in ["cpu", "wgpu"] {
            let out = dir.join(format!("topology-{name}-{backend}.png"));
            let text = |key: &str| settings[key].as_str().unwrap().to_owned();
            let number = |key: &str| settings[key].to_string();
            let args = [
                "generate".to_owned(),
                "--model".to_owned(),
                fixture(&folder),
                "--controlnet".to_owned(),
                fixture(&format!("{folder}/controlnet")),
                "--control".to_owned(),
                fixture(settings["control"].as_str().unwrap()),
                "--prompt".to_owned(),
                text("prompt"),
                "--negative-prompt".to_owned(),
                text("negative"),
                "--seed".to_owned(),
                number("seed"),
                "--steps".to_owned(),
                number("steps"),
                "--guidance".to_owned(),
                number("guidance"),
                "--scheduler".to_owned(),
                text("scheduler"),
                "--width".to_owned(),
                number("size"),
                "--height".to_owned(),
                number("size"),
                "--precision".to_owned(),
                "f32".to_owned(),
                "--backend".to_owned(),
                backend.to_owned(),
                "--quiet".to_owned(),
                "--out".to_owned(),
                out.to_string_lossy().into_owned(),
            ];
            let output = controlnet(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(
                output.status.success(),
                "{name}, {backend}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let image = image_io::decode(&std::fs::read(&out).unwrap()).unwrap();
            let psnr = psnr_8bit(&image, &expected);
            println!(
                "{name} (VAE scale {}), {backend}: CLI vs diffusers PSNR {psnr:.1} dB (without the ControlNet: {} dB)",
                fixture_json["vae_scale_factor"], fixture_json["psnr_without_controlnet_db"]
            );
            assert!(psnr >= 40.0, "{name}, {backend}: PSNR {psnr:.1} dB < 40 dB");
        }
    }
}

#[test]
fn seeds_are_reproducible() {
    let dir = out_dir();
    let run = |seed: &str, name: &str| {
        let out = dir.join(name);
        let args = [
            "generate",
            "--model",
            &fixture("tiny"),
            "--prompt",
            "a tiny cat",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--seed",
            seed,
            "--backend",
            "cpu",
            "--quiet",
            "--out",
            &out.to_string_lossy(),
        ];
        let output = controlnet(&args);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(output.stderr.is_empty(), "--quiet prints nothing");
        let png = std::fs::read(&out).unwrap();
        let text = image_io::png_text(&png).unwrap();
        assert!(text[0].1.contains(&format!("Seed: {seed}")));
        image_io::decode(&png).unwrap().pixels
    };
    assert_eq!(run("7", "a.png"), run("7", "b.png"));
    assert_ne!(run("7", "a.png"), run("8", "c.png"));
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = out_dir();
    let out = dir.join("never.png").to_string_lossy().into_owned();
    let not_image = dir.join("not-an-image.png");
    std::fs::write(&not_image, b"hello").unwrap();
    let tiny = fixture("tiny");
    let cn = fixture("tiny/controlnet");
    let edges = fixture("tiny/control/edges_64x64.png");
    // A ControlNet for SD2.x (1024-wide text embeddings): refused from its config, before its
    // weights are read, with the message the page shows.
    let sd2_dir = dir.join("sd2-controlnet");
    std::fs::create_dir_all(&sd2_dir).unwrap();
    let config = std::fs::read_to_string(fixture("tiny/controlnet/config.json")).unwrap();
    let sd2_config = config.replace("\"cross_attention_dim\": 16", "\"cross_attention_dim\": 1024");
    assert_ne!(sd2_config, config);
    std::fs::write(sd2_dir.join("config.json"), sd2_config).unwrap();
    std::fs::copy(
        fixture("tiny/controlnet/diffusion_pytorch_model.safetensors"),
        sd2_dir.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let sd2 = sd2_dir.to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["generate", "--model", "/nonexistent/model", "--prompt", "x", "--out", &out],
            "model_index.json",
        ),
        (
            vec!["generate", "--model", &cn, "--prompt", "x", "--backend", "cpu", "--out", &out],
            "not a diffusers",
        ),
        (
            vec![
                "generate",
                "--model",
                &tiny,
                "--prompt",
                "x",
                "--width",
                "60",
                "--backend",
                "cpu",
                "--out",
                &out,
            ],
            "multiple of 8",
        ),
        (
            vec![
                "generate",
                "--model",
                &tiny,
                "--controlnet",
                &sd2,
                "--control",
                &edges,
                "--prompt",
                "x",
                "--backend",
                "cpu",
                "--out",
                &out,
            ],
            "is a ControlNet for another model: its cross_attention_dim is 1024",
        ),
        (
            vec![
                "generate",
                "--model",
                &tiny,
                "--prompt",
                "x",
                "--steps",
                "0",
                "--backend",
                "cpu",
                "--out",
                &out,
            ],
            "steps must be 1 to 150",
        ),
        (
            vec![
                "generate",
                "--model",
                &tiny,
                "--controlnet",
                &cn,
                "--control",
                not_image.to_str().unwrap(),
                "--prompt",
                "x",
                "--backend",
                "cpu",
                "--out",
                &out,
            ],
            "not an image",
        ),
        (
            vec![
                "generate",
                "--model",
                &tiny,
                "--controlnet",
                &tiny,
                "--control",
                &edges,
                "--prompt",
                "x",
                "--backend",
                "cpu",
                "--out",
                &out,
            ],
            "tiny",
        ),
        (vec!["generate", "--model", &tiny, "--out", &out], "--prompt"),
        (vec!["generate", "--model", &tiny, "--prompt", "x", "--scheduler", "pndm", "--out", &out], "pndm"),
        (vec!["generate", "--model", &tiny, "--scale", "2", "--prompt", "x", "--out", &out], "--controlnet"),
    ];
    for (args, needle) in cases {
        one_line_error(&args, needle);
    }
    assert!(!Path::new(&out).exists(), "nothing written on error");
}

/// `args` fail with exit status 1 and one line, the last, that names the error (`needle`); no
/// panic.
fn one_line_error(args: &[&str], needle: &str) {
    let output = controlnet(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    // Progress lines may come first; the error is the last line, and the only one so marked.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("controlnet: ")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{args:?}: {stderr}");
    assert!(errors[0].contains(needle), "{args:?}: `{needle}` not in: {stderr}");
    println!("{}", errors[0]);
}

/// A copy of a fixture folder, to break one file of it.
fn copy_of(name: &str, to: &Path) -> String {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    copy(&fixtures().join(name), to);
    to.to_string_lossy().into_owned()
}

/// A `.npy` file of `shape` with `descr` (`<f4`, `<f8`, `<i4`…), its data zeros.
fn npy(path: &Path, descr: &str, shape: &[usize], item_bytes: usize) {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.resize(bytes.len() + shape.iter().product::<usize>() * item_bytes, 0);
    std::fs::write(path, bytes).unwrap();
}

/// Broken weights, configs of the wrong kind, an SDXL ControlNet, a huge or unreadable image, a
/// noise file of the wrong shape or dtype: each a one-line error, exit status 1, nothing written.
#[test]
fn broken_files_are_a_one_line_error() {
    let dir = out_dir().join("broken");
    let out_path = dir.join("never.png");
    let out = out_path.to_string_lossy().into_owned();
    let edges = fixture("tiny/control/edges_64x64.png");
    let cn = fixture("tiny/controlnet");
    let base = |model: &str| -> Vec<String> {
        ["generate", "--model", model, "--prompt", "x", "--steps", "1", "--backend", "cpu", "--out", &out]
            .map(str::to_owned)
            .to_vec()
    };
    let run = |args: Vec<String>, needle: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        one_line_error(&args, needle);
    };

    // The UNet's weights cut in half.
    let truncated = copy_of("tiny", &dir.join("truncated"));
    let unet = Path::new(&truncated).join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&unet).unwrap();
    std::fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
    run(base(&truncated), "unet");
    // A header length beyond the file.
    let corrupt = copy_of("tiny", &dir.join("corrupt"));
    let vae = Path::new(&corrupt).join("vae/diffusion_pytorch_model.safetensors");
    let mut bytes = std::fs::read(&vae).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&vae, bytes).unwrap();
    run(base(&corrupt), "vae");
    // The VAE's config where the UNet's belongs.
    let swapped = copy_of("tiny", &dir.join("swapped"));
    std::fs::copy(fixtures().join("tiny/vae/config.json"), Path::new(&swapped).join("unet/config.json"))
        .unwrap();
    run(base(&swapped), "unet");
    // An SDXL ControlNet (2048-wide text embeddings, text_time embeddings).
    let sdxl = dir.join("sdxl-controlnet");
    std::fs::create_dir_all(&sdxl).unwrap();
    let config = std::fs::read_to_string(fixtures().join("tiny/controlnet/config.json")).unwrap();
    let config = config.replace("\"cross_attention_dim\": 16", "\"cross_attention_dim\": 2048");
    std::fs::write(sdxl.join("config.json"), config).unwrap();
    std::fs::copy(
        fixtures().join("tiny/controlnet/diffusion_pytorch_model.safetensors"),
        sdxl.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let with_control = |controlnet: &str, control: &str| {
        let mut args = base(&fixture("tiny"));
        args.extend(["--controlnet", controlnet, "--control", control].map(str::to_owned));
        args
    };
    run(with_control(&sdxl.to_string_lossy(), &edges), "is a ControlNet for another model");
    // A control "image" that is a folder, and a 20000 × 20000 PNG (its header alone).
    run(with_control(&cn, &dir.to_string_lossy()), &dir.to_string_lossy());
    let huge = dir.join("huge.png");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let ihdr: Vec<u8> =
        [b"IHDR".as_slice(), &20000u32.to_be_bytes(), &20000u32.to_be_bytes(), &[8, 2, 0, 0, 0]].concat();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    // A first, short data chunk and the end: enough for a decoder to read the header's size.
    for chunk in [[b"IDAT".as_slice(), &[0x78, 0x9c, 0x03, 0x00]].concat(), b"IEND".to_vec()] {
        png.extend((chunk.len() as u32 - 4).to_be_bytes());
        png.extend(&chunk);
        png.extend(crc32(&chunk).to_be_bytes());
    }
    std::fs::write(&huge, png).unwrap();
    run(with_control(&cn, &huge.to_string_lossy()), "20000");
    // Noise of the wrong shape, and of the wrong dtype.
    for (name, descr, shape, item, needle) in [
        ("shape.npy", "<f4", vec![1, 4, 4, 4], 4, "the noise is [1, 4, 4, 4]"),
        ("dtype.npy", "<i4", vec![1, 4, 8, 8], 4, "i4"),
    ] {
        let path = dir.join(name);
        npy(&path, descr, &shape, item);
        let mut args = base(&fixture("tiny"));
        args.extend(["--noise", &path.to_string_lossy()].map(str::to_owned));
        run(args, needle);
    }
    assert!(!out_path.exists(), "nothing written on error");
}

/// PNG's CRC-32 (ISO 3309), for a chunk written by hand.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
