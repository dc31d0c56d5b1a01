//! The words the crates share, without burn.
//!
//! The UI (which must not link burn), the browser worker, the CLI and the model all speak of the
//! same things: a scheduler, a control mode, a preprocessor, a precision, a resize mode, the
//! parameters of a generation and their limits. Each lives here once, as a plain type with its
//! machine name (command line, protocol, storage), its label for the page, and its name in
//! A1111's parameters text. The protocol carries these types, the page builds its menus from
//! [`Named::ALL`], and the pipeline takes them: one table, one validation, one set of limits.

pub mod a1111;
pub mod memory;
mod names;
pub mod params;
pub mod shapes;
pub mod training;

pub use names::{ControlMode, Named, Precision, Preprocessor, ResizeMode, SchedulerKind, UnknownName};
pub use params::{GenerationParams, Limits, ParamError, Resize, UnitSettings};
