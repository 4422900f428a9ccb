//! stylize: neural style transfer (Gatys et al.) on VGG19, exact to a float64 reference.
//!
//! Data flows one way: `render` (and later the server) -> `engine` / `features` -> `model`.

pub mod backends;
pub mod bench;
pub mod cache;
pub mod engine;
pub mod error;
pub mod features;
pub mod image_io;
pub mod loadgen;
pub mod model;
pub mod onnx;
pub mod render;
pub mod scheduler;
pub mod server;
pub mod telemetry;

pub use error::{Error, Result};
