//! Choosing the engine (the optimisation) and the feature extractor (the style precompute)
//! for this machine: ONNX Runtime where its library loads, candle otherwise, with a logged
//! warning on every fallback. Both share one set of weights.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};

use crate::engine::{CandleEngine, Engine, OrtEngine, Pooling};
use crate::error::{Error, Result};
use crate::features::select::{BackendChoice, ort_features};
use crate::features::{FeatureExtractor, OrtFeatures};
use crate::model::Vgg19Weights;

/// The engine and extractor a process runs with.
pub struct Backends {
    pub engine: Arc<dyn Engine>,
    pub features: Arc<dyn FeatureExtractor>,
}

/// Builds the backends. `engine` and `precompute` take the same choices (auto, ort,
/// candle); the ONNX Runtime engine supports max pooling only.
pub fn choose(
    engine: BackendChoice,
    precompute: BackendChoice,
    models_dir: &Path,
    weights: Arc<Vgg19Weights>,
    pooling: Pooling,
) -> Result<Backends> {
    use BackendChoice::{Auto, Candle, Ort};
    if engine == Ort && pooling != Pooling::Max {
        return Err(Error::invalid(
            "engine",
            "the ONNX Runtime engine supports max pooling only",
        ));
    }
    let wants_ort = engine != Candle || precompute != Candle;
    let ort: Option<Arc<OrtFeatures>> = if wants_ort {
        match ort_features(models_dir, weights.clone(), pooling) {
            Ok(features) => Some(Arc::new(features)),
            Err(err) if engine != Ort && precompute != Ort => {
                tracing::warn!(%err, "ONNX Runtime unavailable; falling back to candle");
                None
            }
            Err(err) => return Err(err),
        }
    } else {
        None
    };
    let ort_engine = match (&ort, engine) {
        (Some(ort), Ort | Auto) if pooling == Pooling::Max => Some(Arc::new(OrtEngine::new(
            ort.environment(),
            weights.clone(),
            ort.clone(),
            0,
        ))),
        _ => None,
    };
    let candle = match (&ort_engine, &ort, precompute) {
        (Some(_), Some(_), Auto | Ort) => None,
        _ => Some(Arc::new(CandleEngine::new(
            &weights,
            pooling,
            &Device::Cpu,
            DType::F32,
        )?)),
    };
    let engine: Arc<dyn Engine> = match (ort_engine, &candle) {
        (Some(e), _) => e,
        (None, Some(c)) => c.clone(),
        (None, None) => unreachable!("a candle engine is built whenever ONNX Runtime's is not"),
    };
    let features: Arc<dyn FeatureExtractor> = match (ort, precompute, &candle) {
        (Some(ort), Auto | Ort, _) => ort,
        (_, _, Some(c)) => Arc::new(c.features()),
        (None, _, None) => unreachable!("no ONNX Runtime means a candle engine"),
        (Some(_), Candle, None) => unreachable!("candle precompute builds a candle engine"),
    };
    Ok(Backends { engine, features })
}
