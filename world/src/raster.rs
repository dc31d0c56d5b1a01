//! Coverage rasterisation: how much of each pixel a filled outline or a stroke covers, from a
//! 4 × 4 grid of samples per pixel. Plain `f64` arithmetic (no transcendental functions), so the
//! result is the same on every platform.

/// Samples per pixel side.
const SUB: usize = 4;

/// Coverage in `[0, 1]` per pixel of a `size × size` image, row-major.
pub type Coverage = Vec<f32>;

type Point = (f64, f64);
/// A line segment, from one point to another.
type Segment = (Point, Point);

/// The even-odd fill of closed `outlines` given in unit coordinates.
pub fn fill(outlines: &[Vec<(f64, f64)>], size: usize) -> Coverage {
    let scale = size as f64;
    let edges: Vec<Segment> = outlines
        .iter()
        .flat_map(|outline| {
            (0..outline.len()).map(move |i| {
                let (a, b) = (outline[i], outline[(i + 1) % outline.len()]);
                ((a.0 * scale, a.1 * scale), (b.0 * scale, b.1 * scale))
            })
        })
        .collect();
    let mut coverage = vec![0.0f32; size * size];
    let step = 1.0 / SUB as f64;
    let mut crossings: Vec<f64> = Vec::new();
    for row in 0..size * SUB {
        let y = (row as f64 + 0.5) * step;
        crossings.clear();
        for &((x0, y0), (x1, y1)) in &edges {
            if (y0 <= y) != (y1 <= y) {
                crossings.push(x0 + (y - y0) * (x1 - x0) / (y1 - y0));
            }
        }
        if crossings.is_empty() {
            continue;
        }
        crossings.sort_by(f64::total_cmp);
        let line = &mut coverage[(row / SUB) * size..(row / SUB + 1) * size];
        // Between crossings 2k and 2k+1 is inside.
        for pair in crossings.chunks_exact(2) {
            let first = ((pair[0] / step - 0.5).ceil().max(0.0)) as usize;
            let last = ((pair[1] / step - 0.5).floor()).min((size * SUB) as f64 - 1.0);
            if last < 0.0 {
                continue;
            }
            for column in first..=last as usize {
                line[column / SUB] += 1.0 / (SUB * SUB) as f32;
            }
        }
    }
    coverage
}

/// A round-capped stroke of `width` pixels along the open polyline `points` (pixel coordinates).
pub fn stroke(points: &[(f64, f64)], width: f64, size: usize) -> Coverage {
    let mut coverage = vec![0.0f32; size * size];
    if points.is_empty() {
        return coverage;
    }
    let half = width / 2.0;
    let reach = half * half;
    let bound = |pick: fn(&(f64, f64)) -> f64, f: fn(f64, f64) -> f64, init: f64| {
        points.iter().map(pick).fold(init, f)
    };
    let clamp = |v: f64| v.clamp(0.0, size as f64 - 1.0) as usize;
    let (x0, x1) = (
        clamp(bound(|p| p.0, f64::min, f64::INFINITY) - half - 1.0),
        clamp(bound(|p| p.0, f64::max, f64::NEG_INFINITY) + half + 1.0),
    );
    let (y0, y1) = (
        clamp(bound(|p| p.1, f64::min, f64::INFINITY) - half - 1.0),
        clamp(bound(|p| p.1, f64::max, f64::NEG_INFINITY) + half + 1.0),
    );
    let segments: Vec<Segment> = if points.len() == 1 {
        vec![(points[0], points[0])]
    } else {
        points.windows(2).map(|w| (w[0], w[1])).collect()
    };
    for py in y0..=y1 {
        for px in x0..=x1 {
            // Only the segments near this pixel matter.
            let centre = (px as f64 + 0.5, py as f64 + 0.5);
            let near: Vec<&Segment> =
                segments.iter().filter(|s| distance_squared(centre, s) <= (half + 0.75).powi(2)).collect();
            if near.is_empty() {
                continue;
            }
            let mut hits = 0;
            for sy in 0..SUB {
                for sx in 0..SUB {
                    let sample = (
                        px as f64 + (sx as f64 + 0.5) / SUB as f64,
                        py as f64 + (sy as f64 + 0.5) / SUB as f64,
                    );
                    if near.iter().any(|s| distance_squared(sample, s) <= reach) {
                        hits += 1;
                    }
                }
            }
            coverage[py * size + px] = hits as f32 / (SUB * SUB) as f32;
        }
    }
    coverage
}

/// The squared distance from `p` to the segment `(a, b)`.
fn distance_squared(p: Point, &(a, b): &Segment) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let length = dx * dx + dy * dy;
    let t = if length > 0.0 { (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / length).clamp(0.0, 1.0) } else { 0.0 };
    let (x, y) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    x * x + y * y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_square_covers_its_area_with_soft_edges() {
        // A square from 2.25 to 5.75 on a 8-pixel image: 3.5² = 12.25 pixels of area.
        let outline = vec![
            (2.25 / 8.0, 2.25 / 8.0),
            (5.75 / 8.0, 2.25 / 8.0),
            (5.75 / 8.0, 5.75 / 8.0),
            (2.25 / 8.0, 5.75 / 8.0),
        ];
        let coverage = fill(&[outline], 8);
        let area: f32 = coverage.iter().sum();
        assert!((area - 12.25).abs() < 1e-4, "{area}");
        assert_eq!(coverage[3 * 8 + 3], 1.0);
        assert_eq!(coverage[2 * 8 + 2], 0.75 * 0.75);
        assert_eq!(coverage[0], 0.0);
    }

    #[test]
    fn even_odd_makes_a_hole() {
        let square = |a: f64, b: f64| vec![(a, a), (b, a), (b, b), (a, b)];
        let coverage = fill(&[square(0.0, 1.0), square(0.25, 0.75)], 8);
        assert_eq!(coverage.iter().sum::<f32>(), 64.0 - 16.0);
        assert_eq!(coverage[4 * 8 + 4], 0.0);
    }

    #[test]
    fn a_stroke_is_a_capsule() {
        let coverage = stroke(&[(4.0, 8.0), (12.0, 8.0)], 4.0, 16);
        let area: f32 = coverage.iter().sum();
        // 8 × 4 rectangle plus a disc of radius 2: 32 + 4π ≈ 44.57.
        assert!((area - 44.57).abs() < 1.0, "{area}");
        assert_eq!(coverage[8 * 16 + 8], 1.0);
        assert_eq!(coverage[16 + 8], 0.0);
    }
}
