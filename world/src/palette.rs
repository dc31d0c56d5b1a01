//! The world's colours: CSS colour names, as Fill50K's captions name them ("light coral",
//! "sky blue"), chosen far apart so that "which of these is it?" has one answer.

/// A named colour of the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Colour {
    /// The CSS name in words, as captions say it.
    pub name: &'static str,
    pub rgb: [u8; 3],
}

const fn colour(name: &'static str, rgb: [u8; 3]) -> Colour {
    Colour { name, rgb }
}

/// Every colour the world paints with, with its CSS value. No two are closer than
/// [`MIN_PALETTE_DISTANCE`] (a test checks it).
pub const PALETTE: [Colour; 14] = [
    colour("black", [0, 0, 0]),
    colour("white", [255, 255, 255]),
    colour("gray", [128, 128, 128]),
    colour("red", [255, 0, 0]),
    colour("brown", [165, 42, 42]),
    colour("orange", [255, 165, 0]),
    colour("yellow", [255, 255, 0]),
    colour("green", [0, 128, 0]),
    colour("teal", [0, 128, 128]),
    colour("sky blue", [135, 206, 235]),
    colour("blue", [0, 0, 255]),
    colour("navy", [0, 0, 128]),
    colour("purple", [128, 0, 128]),
    colour("light coral", [240, 128, 128]),
];

/// The smallest RGB distance between two palette colours.
pub const MIN_PALETTE_DISTANCE: f64 = 90.0;

/// A shape's colour is at least this far (RGB) from its background's, so it stands out.
pub const MIN_CONTRAST: f64 = 120.0;

/// Euclidean distance in RGB.
pub fn distance(a: [u8; 3], b: [u8; 3]) -> f64 {
    let square = |i: usize| (f64::from(a[i]) - f64::from(b[i])).powi(2);
    (square(0) + square(1) + square(2)).sqrt()
}

/// The palette colour nearest to `rgb` (what the evaluation calls a shape's colour).
pub fn nearest(rgb: [f64; 3]) -> Colour {
    let gap = |c: &Colour| (0..3).map(|i| (f64::from(c.rgb[i]) - rgb[i]).powi(2)).sum::<f64>();
    *PALETTE.iter().min_by(|a, b| gap(a).total_cmp(&gap(b))).expect("the palette is not empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_far_apart_and_named_once() {
        for (i, a) in PALETTE.iter().enumerate() {
            for b in &PALETTE[i + 1..] {
                assert_ne!(a.name, b.name);
                let d = distance(a.rgb, b.rgb);
                assert!(d >= MIN_PALETTE_DISTANCE, "{} and {} are {d:.0} apart", a.name, b.name);
            }
            assert_eq!(nearest(a.rgb.map(f64::from)), *a);
        }
    }
}
