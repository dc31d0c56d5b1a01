//! The README's picture of the world: examples `0..COUNT` of seed 0, one per column — the image,
//! its Canny map and a scribble — with a gap between them.
//!
//! `cargo run --release -p world --example grid -- docs/world.png`

use world::{Condition, Example, RgbImage};

const COUNT: usize = 8;
const SIZE: usize = 128;
const GAP: usize = 4;

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "docs/world.png".into());
    let (width, height) = (COUNT * (SIZE + GAP) - GAP, 3 * (SIZE + GAP) - GAP);
    let mut grid = RgbImage::filled(width, height, [255, 255, 255]);
    for column in 0..COUNT {
        let example = Example::make(0, column as u64, SIZE);
        let rows = [
            example.image.clone(),
            example.condition(Condition::Canny, 0, column as u64).to_rgb(),
            example.condition(Condition::Scribble, 0, column as u64).to_rgb(),
        ];
        for (row, tile) in rows.iter().enumerate() {
            grid.paste(tile, column * (SIZE + GAP), row * (SIZE + GAP));
        }
        println!("{column}: {}", example.caption);
    }
    std::fs::write(&out, preprocess::encode_png(&grid)).expect("the grid is written");
}
