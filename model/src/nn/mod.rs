//! Building blocks shared by the UNet, the ControlNet and the VAE.

mod attention;
mod norm;

pub use attention::attention;
pub use norm::group_norm;
