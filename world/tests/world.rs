//! The shapes world as a user of its pairs relies on it: the same seed gives the same bytes, the
//! caption says what the image shows, the condition maps lie on the shapes' outlines, and a
//! written folder is a Fill50K folder.

use world::eval::grow;
use world::palette::{MIN_CONTRAST, distance};
use world::{Background, Condition, Example, Kind, PALETTE, Scene, masks, render};

const SIZE: usize = 128;

/// FNV-1a, to fingerprint bytes.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[test]
fn same_seed_same_bytes_other_seed_other_world() {
    for index in 0..4 {
        let a = Example::make(5, index, SIZE);
        let b = Example::make(5, index, SIZE);
        assert_eq!(a, b);
        for condition in Condition::ALL {
            assert_eq!(a.condition(condition, 5, index), b.condition(condition, 5, index));
        }
        assert_ne!(a.image, Example::make(6, index, SIZE).image);
    }
    assert_ne!(Example::make(5, 0, SIZE).image, Example::make(5, 1, SIZE).image);
}

/// The world's bytes as first made. The shipped models were trained on them and the browser's
/// worker makes them again: a change to the world (or a platform whose arithmetic differs) must
/// be a decision, not an accident. If the world is changed on purpose, retrain and update this.
#[test]
fn the_world_has_not_drifted() {
    let mut bytes = Vec::new();
    for index in 0..8 {
        let example = Example::make(0, index, 64);
        bytes.extend(&example.image.pixels);
        bytes.extend(example.caption.as_bytes());
        for condition in Condition::ALL {
            bytes.extend(&example.condition(condition, 0, index).pixels);
        }
    }
    let print = format!("{:016x}", fnv(&bytes));
    assert_eq!(print, "aad6815836dcbea9", "the world's fingerprint");
}

#[test]
fn the_world_is_varied() {
    let mut kinds = std::collections::HashSet::new();
    let mut colours = std::collections::HashSet::new();
    let (mut gradients, mut counts) = (0, [0; 4]);
    for index in 0..400 {
        let scene = Scene::sample(1, index);
        counts[scene.shapes.len()] += 1;
        gradients += usize::from(matches!(scene.background, Background::Gradient { .. }));
        for shape in &scene.shapes {
            kinds.insert(shape.kind);
            colours.insert(shape.colour.name);
        }
    }
    assert_eq!(kinds.len(), Kind::ALL.len());
    assert_eq!(colours.len(), PALETTE.len());
    assert!((100..220).contains(&gradients), "{gradients} gradients in 400");
    assert_eq!(counts[0], 0, "every scene has a shape");
    assert!(counts[1..].iter().all(|&n| n > 80), "shape counts {counts:?}");
}

#[test]
fn the_image_shows_what_the_caption_says() {
    for index in 0..60 {
        let example = Example::make(2, index, SIZE);
        let scene = &example.scene;
        let pixel = |(x, y): (f64, f64)| {
            let (px, py) = ((x * SIZE as f64) as usize, (y * SIZE as f64) as usize);
            let at = (py * SIZE + px) * 3;
            [example.image.pixels[at], example.image.pixels[at + 1], example.image.pixels[at + 2]]
        };
        // The caption names the shapes left to right, then the background.
        let mut rest = example.caption.as_str();
        for shape in &scene.shapes {
            let named = format!("{} {}", shape.colour.name, shape.kind);
            let at = rest
                .find(&named)
                .unwrap_or_else(|| panic!("`{named}` not in order in `{}`", example.caption));
            rest = &rest[at + named.len()..];
            assert_eq!(pixel(shape.inner_point()), shape.colour.rgb, "{index}: {}", example.caption);
            for background in scene.background.colours() {
                assert!(distance(shape.colour.rgb, background.rgb) >= MIN_CONTRAST);
            }
        }
        match scene.background {
            Background::Flat(colour) => {
                assert!(rest.ends_with(&format!("on a {} background", colour.name)), "{}", example.caption)
            }
            Background::Gradient { from, to, .. } => {
                assert!(rest.ends_with(&format!("on a {} to {} gradient background", from.name, to.name)))
            }
        }
        // Shapes never overlap, and each is as big as its radius says.
        let masks = masks(scene, SIZE);
        for (shape, mask) in scene.shapes.iter().zip(&masks) {
            let area = mask.iter().sum::<f32>() as f64 / (SIZE * SIZE) as f64;
            let disc = std::f64::consts::PI * shape.radius * shape.radius;
            assert!(
                area > 0.2 * disc && area <= disc * 1.001,
                "{:?}: area {area} vs disc {disc}",
                shape.kind
            );
        }
        for i in 0..SIZE * SIZE {
            assert!(masks.iter().map(|m| m[i]).sum::<f32>() <= 1.0 + 1e-6);
        }
    }
}

/// Pixels within `reach` of a shape's edge: where a mask is neither 0 nor 1 nearby.
fn near_edges(scene: &Scene, reach: usize) -> Vec<bool> {
    let masks = masks(scene, SIZE);
    let edge: Vec<bool> = (0..SIZE * SIZE)
        .map(|i| {
            let (x, y) = (i % SIZE, i / SIZE);
            masks.iter().any(|m| {
                let v = m[i];
                (v > 0.0 && v < 1.0)
                    || [(1, 0), (0, 1)].iter().any(|&(dx, dy)| {
                        x + dx < SIZE && y + dy < SIZE && (m[(y + dy) * SIZE + x + dx] > 0.5) != (v > 0.5)
                    })
            })
        })
        .collect();
    grow(&edge, SIZE, reach)
}

#[test]
fn conditions_trace_the_outlines() {
    for index in 0..30 {
        let example = Example::make(3, index, SIZE);
        let near = near_edges(&example.scene, 2);
        let canny = example.condition(Condition::Canny, 3, index);
        let on: Vec<usize> = (0..SIZE * SIZE).filter(|&i| canny.pixels[i] == 255).collect();
        assert!(!on.is_empty(), "{index}: no Canny edges");
        let close = on.iter().filter(|&&i| near[i]).count();
        assert!(
            close as f64 >= 0.97 * on.len() as f64,
            "{index}: {close} of {} Canny pixels near an outline",
            on.len()
        );
        // The edges go all the way round: most of the outline has an edge near it.
        let outline = near_edges(&example.scene, 0);
        let canny_near = dilate(&canny.pixels, 2);
        let traced = (0..SIZE * SIZE).filter(|&i| outline[i] && canny_near[i]).count();
        let total = outline.iter().filter(|&&b| b).count();
        assert!(
            traced as f64 >= 0.9 * total as f64,
            "{index}: Canny follows {traced} of {total} outline pixels"
        );

        // The scribble wanders more, but stays by the outline and covers most of it.
        let scribble = example.condition(Condition::Scribble, 3, index);
        let wide = near_edges(&example.scene, 8);
        let inked: Vec<usize> = (0..SIZE * SIZE).filter(|&i| scribble.pixels[i] >= 128).collect();
        let close = inked.iter().filter(|&&i| wide[i]).count();
        assert!(
            close as f64 >= 0.97 * inked.len() as f64,
            "{index}: {close} of {} scribble pixels near an outline",
            inked.len()
        );
        let scribble_near = dilate(&scribble.pixels, 6);
        let traced = (0..SIZE * SIZE).filter(|&i| outline[i] && scribble_near[i]).count();
        assert!(
            traced as f64 >= 0.75 * total as f64,
            "{index}: the scribble follows {traced} of {total} outline pixels"
        );
    }
}

/// The pixels with ink (≥ 128), grown by `reach`.
fn dilate(pixels: &[u8], reach: usize) -> Vec<bool> {
    grow(&pixels.iter().map(|&p| p >= 128).collect::<Vec<_>>(), SIZE, reach)
}

#[test]
fn a_written_world_is_a_fill50k_folder() {
    let dir = std::env::temp_dir().join(format!("world-test-{}", std::process::id()));
    let spec = world::dataset::Spec { seed: 9, count: 5, size: 64, condition: Condition::Scribble };
    let mut seen = 0;
    world::dataset::write(&dir, spec, |done| seen = done).unwrap();
    assert_eq!(seen, 5);
    let index = std::fs::read_to_string(dir.join("prompt.json")).unwrap();
    let lines: Vec<serde_json::Value> = index.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    for (i, line) in lines.iter().enumerate() {
        let example = Example::make(9, i as u64, 64);
        assert_eq!(line["prompt"], example.caption.as_str());
        let target =
            preprocess::decode(&std::fs::read(dir.join(line["target"].as_str().unwrap())).unwrap()).unwrap();
        assert_eq!(target, example.image);
        let source =
            preprocess::decode(&std::fs::read(dir.join(line["source"].as_str().unwrap())).unwrap()).unwrap();
        assert_eq!(source, example.condition(Condition::Scribble, 9, i as u64).to_rgb());
    }
    let written: world::dataset::Spec =
        serde_json::from_str(&std::fs::read_to_string(dir.join("world.json")).unwrap()).unwrap();
    assert_eq!(written, spec);
    assert!(!dir.join("prompt.json.partial").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rendering_is_resolution_independent() {
    // The same scene at two sizes: the small one is (close to) the big one scaled down.
    let scene = Scene::sample(4, 0);
    let (big, small) = (render(&scene, 128), render(&scene, 64));
    let (mut worst, mut total) = (0.0f64, 0.0f64);
    for y in 0..64 {
        for x in 0..64 {
            for c in 0..3 {
                let mean = [(0, 0), (1, 0), (0, 1), (1, 1)]
                    .iter()
                    .map(|&(dx, dy)| f64::from(big.pixels[((2 * y + dy) * 128 + 2 * x + dx) * 3 + c]))
                    .sum::<f64>()
                    / 4.0;
                let gap = (mean - f64::from(small.pixels[(y * 64 + x) * 3 + c])).abs();
                worst = worst.max(gap);
                total += gap;
            }
        }
    }
    // Edge pixels differ by how the 4×4 samples fall; the rest agree to rounding.
    assert!(worst <= 96.0 && total / (64.0 * 64.0 * 3.0) < 2.0, "worst {worst}, total {total}");
}
