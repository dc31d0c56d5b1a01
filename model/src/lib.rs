//! Stable Diffusion 1.5 with ControlNet, in burn.
//!
//! The same code runs natively (burn-wgpu on Vulkan or Metal, burn's Flex CPU backend) and in the
//! browser (burn-wgpu on WebGPU). Nothing here touches a browser API, and nothing reads a GPU
//! buffer synchronously: every read-back is `into_data_async().await`, which WebGPU requires.

pub mod bench;
pub mod clip;
pub mod compat;
pub mod config;
pub mod controlnet;
#[cfg(feature = "images")]
pub mod image_io;
#[cfg(feature = "kernels")]
pub mod kernels;
pub mod loader;
pub mod memory;
pub mod nn;
pub mod npy;
pub mod pipeline;
pub mod precision;
pub mod probe;
pub mod rng;
pub mod save;
pub mod scheduler;
pub mod single_file;
pub mod streaming;
pub mod tokenizer;
#[cfg(feature = "train")]
pub mod train;
pub mod unet;
pub mod vae;
pub mod weights;

pub use controlnet::{ControlNet, Steering};
pub use precision::{Precision, PrecisionExt};
pub use unet::{ControlResiduals, UNet};

/// Drives a future to completion on the current thread (native only: a browser never blocks).
#[cfg(not(target_family = "wasm"))]
pub use futures_lite::future::block_on;

/// The burn this crate is built on, so that dependants use the very same version.
pub use burn;
/// The burn-free words this crate shares with the browser crates.
pub use vocabulary;
