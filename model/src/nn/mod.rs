//! Building blocks shared by the UNet, the ControlNet and the VAE.

pub mod attention;
pub mod embeddings;
mod norm;
pub mod resnet;
pub mod transformer;
pub mod updown;

pub use attention::attention;
pub use norm::group_norm;
