//! The backend choice (auto, ort, candle) and the ONNX Runtime extractor it needs; the
//! choice itself is made in `backends`.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::Vgg19Weights;
use crate::net::Pooling;
use crate::onnxruntime::OrtFeatures;
use crate::onnxruntime::library::{self as ort_library, Flavor};
use crate::onnxruntime::{self, Provider};

/// Which implementation runs a part (the engine or the precompute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    /// ONNX Runtime if it loads, else candle (with a warning).
    Auto,
    /// ONNX Runtime or an error.
    Ort,
    Candle,
}

impl FromStr for BackendChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "ort" | "onnxruntime" => Ok(Self::Ort),
            "candle" => Ok(Self::Candle),
            other => Err(Error::invalid(
                "precompute",
                format!("`{other}` is not auto, ort or candle"),
            )),
        }
    }
}

/// An ONNX Runtime extractor on `provider`, fetching this build's library flavour when it is
/// not there yet.
pub fn ort_features(
    models_dir: &Path,
    weights: Arc<Vgg19Weights>,
    pooling: Pooling,
    provider: Provider,
) -> Result<OrtFeatures> {
    let library = ort_library::ensure(models_dir, Flavor::for_build())?;
    let environment = onnxruntime::environment(&library)?;
    Ok(OrtFeatures::new(environment, weights, pooling, 0, provider))
}
