//! Browser plumbing: the two workers and the typed protocol the UI speaks to them.
//!
//! Without features this crate is only [`protocol`] and [`message`], so the UI can use the
//! message types without linking burn. `worker` is the GPU worker (burn-wgpu);
//! `preprocess-worker` is the preprocessing worker (decoding, Canny, scribble; no burn).

pub mod idb;
pub mod message;
pub mod models;
pub mod protocol;
pub mod scope;

#[cfg(feature = "worker")]
pub mod cache;
#[cfg(feature = "worker")]
pub mod download;
#[cfg(feature = "worker")]
pub mod generate;
#[cfg(feature = "worker")]
pub mod image;
#[cfg(feature = "worker")]
pub mod import;
#[cfg(feature = "worker")]
pub mod load;
#[cfg(feature = "preprocess-worker")]
pub mod preprocess_worker;
#[cfg(feature = "worker")]
pub mod train;
#[cfg(feature = "worker")]
pub mod worker;
