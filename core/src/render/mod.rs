//! A stylisation from request to delivered image: its options and validation (`options`),
//! the coarse-to-fine scales' memory plan (`plan`), a still's run (`still`), a sequence's
//! frames (`sequence`) and where each later frame starts (`start_image`), how steady a
//! delivered shot is (`coherence`) and the quality presets (`preset`).

pub mod coherence;
pub mod content;
pub mod given;
pub mod options;
pub mod plan;
pub mod preset;
pub mod sequence;
mod start_image;
pub mod still;

pub use content::Content;
pub use given::{GivenOptions, OptimizerChoice};
pub use options::*;
pub use plan::{MemoryPlan, plan_memory};
pub use start_image::STILL_FEATHER;
pub use still::*;
