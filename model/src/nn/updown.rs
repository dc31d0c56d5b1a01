//! Resampling between the UNet's levels.

use burn::nn::conv::Conv2d;
use burn::prelude::*;

use super::ops;
use super::resnet::conv3x3;

/// `Downsample2D`: a 3×3 convolution with stride 2 (padding 1).
#[derive(Module, Debug)]
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self { conv: conv3x3(channels, channels, 2, device) }
    }

    /// `[b, c, h, w]` → `[b, c, ⌈h/2⌉, ⌈w/2⌉]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        ops::conv(&self.conv, x)
    }
}

/// `Upsample2D`: nearest-neighbour upsampling, then a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self { conv: conv3x3(channels, channels, 1, device) }
    }

    /// Upsamples to `size` (`[h, w]`), twice the input's unless the level below had odd sizes.
    ///
    /// # Shapes
    /// `[b, c, h, w]` → `[b, c, size[0], size[1]]`
    pub fn forward(&self, x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
        ops::conv(&self.conv, nearest(x, size))
    }
}

/// torch's `interpolate(mode="nearest", size=…)`: output pixel `i` takes input pixel
/// `⌊i · in / out⌋`.
pub fn nearest(x: Tensor<4>, [out_h, out_w]: [usize; 2]) -> Tensor<4> {
    let [_, _, in_h, in_w] = x.dims();
    let device = x.device();
    let indices = |input: usize, output: usize| {
        let idx: Vec<i64> = (0..output).map(|i| ((i * input) / output) as i64).collect();
        Tensor::<1, Int>::from_data(TensorData::new(idx, [output]), &device)
    };
    let x = if in_h == out_h { x } else { x.select(2, indices(in_h, out_h)) };
    if in_w == out_w { x } else { x.select(3, indices(in_w, out_w)) }
}
