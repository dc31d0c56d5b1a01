//! Normalisation layers.

use burn::prelude::*;

/// Group normalisation, as `torch.nn.functional.group_norm`.
///
/// Channels are split into `groups` groups; each group of each sample is normalised to zero mean
/// and unit (biased) variance over its channels and pixels, then scaled and shifted per channel.
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`, `channels` divisible by `groups`
/// - `weight`, `bias`: `[channels]`
/// - output: like `x`
pub fn group_norm(x: Tensor<4>, groups: usize, weight: Tensor<1>, bias: Tensor<1>, eps: f64) -> Tensor<4> {
    let [batch, channels, height, width] = x.dims();
    assert!(
        groups > 0 && channels % groups == 0,
        "group_norm: {channels} channels do not split into {groups} groups"
    );
    let grouped = x.reshape([batch, groups, (channels / groups) * height * width]);
    let (variance, mean) = grouped.clone().var_mean_bias(2); // [b, groups, 1] each
    let normalised = (grouped - mean) / (variance + eps).sqrt();
    normalised.reshape([batch, channels, height, width]) * weight.reshape([1, channels, 1, 1])
        + bias.reshape([1, channels, 1, 1])
}
