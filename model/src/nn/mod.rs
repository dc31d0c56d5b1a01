//! Building blocks shared by the UNet, the ControlNet and the VAE.

pub mod attention;
pub mod embeddings;
pub mod ops;
pub mod resnet;
pub mod transformer;
pub mod updown;

pub use attention::attention;
