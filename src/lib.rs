//! stylize: neural style transfer (Gatys et al.) on VGG19, exact to a float64 reference.
//!
//! Data flows one way: `server` -> `scheduler` -> `render` -> `engine` / `features` ->
//! `net` / `runtime` -> `model`; `cache` is shared.

pub mod allocator;
pub mod backends;
pub mod bench;
pub mod cache;
pub mod decode_limits;
pub mod engine;
pub mod error;
pub mod exr_file;
pub mod features;
pub mod image_io;
pub mod loadgen;
pub mod memory;
pub mod model;
pub mod motion;
pub mod net;
pub mod onnx;
pub mod render;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod telemetry;

pub use error::{Error, Result};
