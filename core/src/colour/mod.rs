//! Colour on the way into and out of the optimiser: the view that turns scene-linear light
//! (OpenEXR) into the display encoding VGG sees, and its exact inverse, so a stylised frame
//! returns to scene-linear with its highlights above 1.0. Built-in curves (`srgb`, `acescct`)
//! and a studio's view baked from its OpenColorIO config as a pair of `.cube` LUTs.

pub mod cube;
pub mod view;

pub use cube::{CubeLut, Interpolation};
pub use view::{LutPair, View};
