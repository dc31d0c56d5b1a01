//! Scenes: a background and one to three shapes, drawn from a seed; their outlines and caption.

use std::f64::consts::{PI, TAU};
use std::fmt;

use crate::palette::{Colour, MIN_CONTRAST, PALETTE, distance};
use crate::rng::{Rng, Stream};

/// The kinds of shape the world draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Circle,
    Square,
    Triangle,
    Star,
    Ring,
    Heart,
    Blob,
}

impl Kind {
    pub const ALL: [Kind; 7] =
        [Kind::Circle, Kind::Square, Kind::Triangle, Kind::Star, Kind::Ring, Kind::Heart, Kind::Blob];

    /// The word captions use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Circle => "circle",
            Kind::Square => "square",
            Kind::Triangle => "triangle",
            Kind::Star => "star",
            Kind::Ring => "ring",
            Kind::Heart => "heart",
            Kind::Blob => "blob",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is behind the shapes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Background {
    Flat(Colour),
    /// From `from` to `to` along the direction `angle` (radians, 0 = left to right).
    Gradient {
        from: Colour,
        to: Colour,
        angle: f64,
    },
}

impl Background {
    pub fn colours(&self) -> Vec<Colour> {
        match *self {
            Background::Flat(colour) => vec![colour],
            Background::Gradient { from, to, .. } => vec![from, to],
        }
    }

    /// The colour at `(x, y)` in unit coordinates (`0..1`, y down), unrounded.
    pub(crate) fn at(&self, x: f64, y: f64) -> [f64; 3] {
        match *self {
            Background::Flat(colour) => colour.rgb.map(f64::from),
            Background::Gradient { from, to, angle } => {
                // Project on the direction through the centre, so the whole square spans 0..1.
                let (dx, dy) = (libm::cos(angle), libm::sin(angle));
                let reach = 0.5 * (dx.abs() + dy.abs());
                let t = (((x - 0.5) * dx + (y - 0.5) * dy) / reach * 0.5 + 0.5).clamp(0.0, 1.0);
                std::array::from_fn(|i| f64::from(from.rgb[i]) * (1.0 - t) + f64::from(to.rgb[i]) * t)
            }
        }
    }
}

/// One shape: `kind` at `centre` (unit coordinates, y down), fitting a circle of `radius`,
/// turned by `rotation`.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub kind: Kind,
    pub colour: Colour,
    pub centre: (f64, f64),
    pub radius: f64,
    pub rotation: f64,
    /// A blob's outline: amplitudes and phases of harmonics 2, 3 and 4 of its radius.
    pub(crate) wobble: [(f64, f64); 3],
}

/// Points per full turn of a curved outline: a 96-gon is within 0.06 % of its circle, well under
/// a pixel at any size the world is made at.
const CURVE_POINTS: usize = 96;

impl Shape {
    /// The outline as closed polygons in unit coordinates (a ring has two). Filling them with the
    /// even-odd rule gives the shape; they are also what a person would trace in a scribble.
    pub fn outlines(&self) -> Vec<Vec<(f64, f64)>> {
        let polar = |radius: &dyn Fn(f64) -> f64, count: usize, start: f64| -> Vec<(f64, f64)> {
            (0..count)
                .map(|i| {
                    let angle = start + TAU * i as f64 / count as f64;
                    let r = radius(angle);
                    (r * libm::cos(angle), r * libm::sin(angle))
                })
                .collect()
        };
        let unit: Vec<Vec<(f64, f64)>> = match self.kind {
            Kind::Circle => vec![polar(&|_| 1.0, CURVE_POINTS, 0.0)],
            Kind::Ring => vec![polar(&|_| 1.0, CURVE_POINTS, 0.0), polar(&|_| 0.55, CURVE_POINTS, 0.0)],
            // Corners on the unit circle: half-side 1/√2.
            Kind::Square => vec![polar(&|_| 1.0, 4, PI / 4.0)],
            Kind::Triangle => vec![polar(&|_| 1.0, 3, -PI / 2.0)],
            Kind::Star => vec![polar(&|a| star_radius(a + PI / 2.0), 10, -PI / 2.0)],
            Kind::Heart => vec![heart()],
            Kind::Blob => {
                let wobble = self.wobble;
                let radius = move |a: f64| {
                    1.0 + wobble
                        .iter()
                        .enumerate()
                        .map(|(k, &(amp, phase))| amp * libm::cos((k + 2) as f64 * a + phase))
                        .sum::<f64>()
                };
                vec![normalised(polar(&radius, CURVE_POINTS, 0.0))]
            }
        };
        let (sin, cos) = (libm::sin(self.rotation), libm::cos(self.rotation));
        unit.into_iter()
            .map(|outline| {
                outline
                    .into_iter()
                    .map(|(x, y)| {
                        let (x, y) = (x * cos - y * sin, x * sin + y * cos);
                        (self.centre.0 + self.radius * x, self.centre.1 + self.radius * y)
                    })
                    .collect()
            })
            .collect()
    }

    /// A point well inside the shape (unit coordinates): where its colour is certainly solid.
    pub fn inner_point(&self) -> (f64, f64) {
        match self.kind {
            // Halfway through the ring's band, on its rotated x axis.
            Kind::Ring => (
                self.centre.0 + 0.775 * self.radius * libm::cos(self.rotation),
                self.centre.1 + 0.775 * self.radius * libm::sin(self.rotation),
            ),
            _ => self.centre,
        }
    }
}

/// A five-pointed star's radius at angle `a` from a point: alternately 1 and 0.45 at its
/// vertices (the polygon joins them with straight edges).
fn star_radius(a: f64) -> f64 {
    let step = TAU / 10.0;
    if ((a / step).round() as i64).rem_euclid(2) == 0 { 1.0 } else { 0.45 }
}

/// The classic heart curve `(16 sin³t, 13 cos t − 5 cos 2t − 2 cos 3t − cos 4t)`, point down,
/// centred and scaled into the unit circle.
fn heart() -> Vec<(f64, f64)> {
    let points = (0..CURVE_POINTS)
        .map(|i| {
            let t = TAU * i as f64 / CURVE_POINTS as f64;
            let s = libm::sin(t);
            let x = 16.0 * (s * s * s);
            let y = 13.0 * libm::cos(t)
                - 5.0 * libm::cos(2.0 * t)
                - 2.0 * libm::cos(3.0 * t)
                - libm::cos(4.0 * t);
            (x, -y)
        })
        .collect();
    normalised(points)
}

/// `points` moved so their bounding box is centred at 0 and scaled so the farthest is at 1.
fn normalised(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| {
        points.iter().map(pick).fold(init, f)
    };
    let cx = 0.5 * (fold(f64::min, f64::INFINITY, |p| p.0) + fold(f64::max, f64::NEG_INFINITY, |p| p.0));
    let cy = 0.5 * (fold(f64::min, f64::INFINITY, |p| p.1) + fold(f64::max, f64::NEG_INFINITY, |p| p.1));
    let reach = points.iter().map(|&(x, y)| ((x - cx).powi(2) + (y - cy).powi(2)).sqrt()).fold(0.0, f64::max);
    points.into_iter().map(|(x, y)| ((x - cx) / reach, (y - cy) / reach)).collect()
}

/// A background and the shapes on it, left to right.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub background: Background,
    pub shapes: Vec<Shape>,
}

/// Space kept between two shapes and between a shape and the border (unit coordinates).
const MARGIN: f64 = 0.03;

impl Scene {
    /// Example `index` of the world with `seed`.
    pub fn sample(seed: u64, index: u64) -> Self {
        let mut rng = Rng::new(seed, index, Stream::Scene);
        let pick = |rng: &mut Rng, from: &[Colour]| from[rng.below(from.len())];
        let background = if rng.chance(0.6) {
            Background::Flat(pick(&mut rng, &PALETTE))
        } else {
            let from = pick(&mut rng, &PALETTE);
            let others: Vec<Colour> = PALETTE.iter().copied().filter(|c| *c != from).collect();
            Background::Gradient { from, to: pick(&mut rng, &others), angle: rng.range(0.0, TAU) }
        };
        let count = 1 + rng.below(3);
        let largest = [0.36, 0.28, 0.22][count - 1];
        let mut shapes: Vec<Shape> = Vec::new();
        for _ in 0..count {
            let kind = Kind::ALL[rng.below(Kind::ALL.len())];
            let usable: Vec<Colour> = PALETTE
                .iter()
                .copied()
                .filter(|c| background.colours().iter().all(|b| distance(c.rgb, b.rgb) >= MIN_CONTRAST))
                .filter(|c| shapes.iter().all(|s| s.colour != *c))
                .collect();
            // Never empty: every pair of palette colours leaves at least nine that contrast with
            // both (a test walks every pair), and at most two are taken.
            let colour = pick(&mut rng, &usable);
            let radius = rng.range(0.12, largest);
            let rotation = match kind {
                // Hearts stay upright enough to read as hearts.
                Kind::Heart => rng.range(-0.5, 0.5),
                _ => rng.range(0.0, TAU),
            };
            let wobble = std::array::from_fn(|_| (rng.range(0.05, 0.16), rng.range(0.0, TAU)));
            // Placed where it overlaps nothing; a shape that finds no room in 64 tries is left out.
            let low = radius + MARGIN;
            let centre =
                (0..64).map(|_| (rng.range(low, 1.0 - low), rng.range(low, 1.0 - low))).find(|&(x, y)| {
                    shapes.iter().all(|s| {
                        ((s.centre.0 - x).powi(2) + (s.centre.1 - y).powi(2)).sqrt()
                            >= s.radius + radius + MARGIN
                    })
                });
            if let Some(centre) = centre {
                shapes.push(Shape { kind, colour, centre, radius, rotation, wobble });
            }
        }
        shapes.sort_by(|a, b| a.centre.0.total_cmp(&b.centre.0));
        Scene { background, shapes }
    }

    /// "a light coral star and a teal ring on a navy background": the shapes left to right, then
    /// the background ("on a navy to teal gradient background").
    pub fn caption(&self) -> String {
        let named: Vec<String> = self
            .shapes
            .iter()
            .map(|s| {
                let article = if s.colour.name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
                format!("{article} {} {}", s.colour.name, s.kind)
            })
            .collect();
        let shapes = match named.as_slice() {
            [] => String::from("nothing"),
            [one] => one.clone(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        };
        let background = match self.background {
            Background::Flat(colour) => format!("a {} background", colour.name),
            Background::Gradient { from, to, .. } => {
                format!("a {} to {} gradient background", from.name, to.name)
            }
        };
        format!("{shapes} on {background}")
    }
}

/// Every word a caption can use, in a fixed order (what the world's vocabulary is made from).
pub fn words() -> Vec<&'static str> {
    let mut words = vec!["a", "an", "and", "on", "to", "gradient", "background", "nothing"];
    words.extend(Kind::ALL.iter().map(|k| k.name()));
    for colour in PALETTE {
        words.extend(colour.name.split(' '));
    }
    let mut seen = std::collections::HashSet::new();
    words.retain(|w| seen.insert(*w));
    words
}
