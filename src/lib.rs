//! stylize: the gRPC server for neural style transfer (Gatys et al.) on VGG19. The core
//! (models, engines, rendering, image I/O, the in-process style cache) is the
//! `stylize-core` crate, re-exported here under the same module names; this crate adds the
//! transport and operations around it.
//!
//! Data flows one way: `server` -> `scheduler` -> the core (`render` -> `engine` /
//! `features` -> `model`); `registry` (styles by key, the shared Redis store) and
//! `telemetry` sit beside them.

pub use stylize_core::{
    Error, Result, allocator, backends, cache, candle, colour, decode_limits, engine, error,
    exr_file, features, image_io, memory, model, motion, net, onnxruntime, passthrough, render,
};

pub mod registry;
pub mod scheduler;
pub mod server;
pub mod telemetry;
