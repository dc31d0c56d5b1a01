//! Browser plumbing: the GPU worker and the typed protocol the UI speaks to it.
//!
//! Without the `worker` feature this crate is only [`protocol`], so the UI can use the message
//! types without linking burn.

pub mod protocol;

#[cfg(feature = "worker")]
pub mod worker;
