//! stylize-core: neural style transfer (Gatys et al.) on VGG19, exact to a float64
//! reference, with no transport. The server, scheduler, telemetry and shared registry live
//! in the root package `stylize`, which builds on this crate.
//!
//! Imports run one way: `backends` -> `render` -> the backends (`onnxruntime`, `candle`) ->
//! the backend-neutral optimiser and traits (`engine`, `features`) -> `net` -> `model`;
//! `cache`, `image_io`, `motion`, `memory` and `error` are shared below them.

pub mod allocator;
pub mod backends;
pub mod cache;
pub mod candle;
pub mod colour;
pub mod decode_limits;
pub mod engine;
pub mod error;
pub mod exr_file;
pub mod features;
pub mod image_io;
pub mod memory;
pub mod model;
pub mod motion;
pub mod net;
pub mod onnxruntime;
pub mod passthrough;
pub mod render;

pub use error::{Error, Result};
