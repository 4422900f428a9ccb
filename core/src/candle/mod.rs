//! The candle backend: the engine that optimises an image with candle's tensors (the
//! hand-written VGG backward of `net::vgg`), on the CPU or, in the `cuda` build, an NVIDIA
//! GPU, and the style-feature extractor on the same network. Both implement the core's
//! traits (`engine::Engine`, `features::FeatureExtractor`).

pub mod engine;
pub mod features;
pub mod objective;

pub use engine::CandleEngine;
pub use features::CandleFeatures;
pub use objective::Objective;
