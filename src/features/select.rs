//! Choosing the style-precompute backend: ONNX Runtime when its library is present (or can
//! be fetched), candle otherwise, with a logged warning on the fallback.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use super::{CandleFeatures, FeatureExtractor, OrtFeatures, ort_runtime};
use crate::engine::Pooling;
use crate::error::{Error, Result};
use crate::model::Vgg19Weights;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecomputeBackend {
    /// ONNX Runtime if it loads, else candle (with a warning).
    Auto,
    /// ONNX Runtime or an error.
    Ort,
    Candle,
}

impl FromStr for PrecomputeBackend {
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

/// An ONNX Runtime extractor, fetching the library when it is not there yet.
pub fn ort_features(
    models_dir: &Path,
    weights: Arc<Vgg19Weights>,
    pooling: Pooling,
) -> Result<OrtFeatures> {
    let library = ort_runtime::ensure(models_dir)?;
    let environment = ort_runtime::environment(&library)?;
    Ok(OrtFeatures::new(environment, weights, pooling, 0))
}

/// The extractor for `backend`; `candle` supplies the fallback sharing the engine's network.
pub fn choose(
    backend: PrecomputeBackend,
    models_dir: &Path,
    weights: Arc<Vgg19Weights>,
    pooling: Pooling,
    candle: impl FnOnce() -> CandleFeatures,
) -> Result<Box<dyn FeatureExtractor>> {
    match backend {
        PrecomputeBackend::Candle => Ok(Box::new(candle())),
        PrecomputeBackend::Ort => Ok(Box::new(ort_features(models_dir, weights, pooling)?)),
        PrecomputeBackend::Auto => match ort_features(models_dir, weights, pooling) {
            Ok(features) => Ok(Box::new(features)),
            Err(err) => {
                tracing::warn!(%err, "ONNX Runtime unavailable; style precompute falls back to candle");
                Ok(Box::new(candle()))
            }
        },
    }
}
