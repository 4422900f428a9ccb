//! Choosing the device, the engine (the optimisation) and the feature extractor (the style
//! precompute) for this machine: on a GPU, candle on CUDA optimises and ONNX Runtime's CUDA
//! provider precomputes (candle when that provider cannot start); on the CPU, ONNX Runtime
//! where its library loads and candle otherwise. Every fallback is logged. All share one set
//! of weights.

pub mod precompute;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Device};

use crate::engine::{Engine, Pooling};

use crate::candle::CandleEngine;

use crate::backends::precompute::{BackendChoice, ort_features};
use crate::error::{Error, Result};
use crate::features::FeatureExtractor;
use crate::model::Vgg19Weights;
use crate::onnxruntime::OrtEngine;
use crate::onnxruntime::OrtFeatures;
use crate::onnxruntime::Provider;

/// Where candle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The first GPU when this build has CUDA and one is usable, else the CPU (logged).
    Auto,
    Cpu,
    /// The GPU with this ordinal, or an error.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid("device", format!("`{s}` is not auto, cpu, cuda or cuda:N"));
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. Without the `cuda` feature, asking for a GPU is an error.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => open_cuda(ordinal),
            Self::Auto if cfg!(feature = "cuda") => match open_cuda(0) {
                Ok(device) => Ok(device),
                Err(err) => {
                    tracing::warn!(%err, "no usable GPU; running on the CPU");
                    Ok(Device::Cpu)
                }
            },
            Self::Auto => Ok(Device::Cpu),
        }
    }
}

fn open_cuda(ordinal: usize) -> Result<Device> {
    if !cfg!(feature = "cuda") {
        return Err(Error::invalid(
            "device",
            "this build has no CUDA support (build with scripts/build-cuda.sh)",
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::invalid("device", format!("cuda:{ordinal}: {e}")))
}

/// The engine and extractor a process runs with.
pub struct Backends {
    pub engine: Arc<dyn Engine>,
    pub features: Arc<dyn FeatureExtractor>,
    /// The device they were built on, as `--device` names it (`cpu`, `cuda:0`).
    pub device: String,
}

/// `device` as `--device` names it.
pub fn device_label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Builds the backends on `device`. `engine` and `precompute` take the same choices (auto,
/// ort, candle). ONNX Runtime's engine (max pooling only) runs on the CPU only; its precompute
/// runs on the CUDA provider when `device` is a GPU. With `auto` on a GPU, the precompute is
/// ONNX Runtime's only if its CUDA provider starts (tried here, not on the first request),
/// else candle's on that GPU.
pub fn choose(
    engine: BackendChoice,
    precompute: BackendChoice,
    models_dir: &Path,
    weights: Arc<Vgg19Weights>,
    pooling: Pooling,
    device: &Device,
) -> Result<Backends> {
    use BackendChoice::{Auto, Candle, Ort};
    let on_gpu = !device.is_cpu();
    if engine == Ort && pooling != Pooling::Max {
        return Err(Error::invalid(
            "engine",
            "the ONNX Runtime engine supports max pooling only",
        ));
    }
    if engine == Ort && on_gpu {
        return Err(Error::invalid(
            "engine",
            "the ONNX Runtime engine runs on the CPU; use the candle engine on a GPU",
        ));
    }
    let ort_engine_wanted = engine != Candle && !on_gpu;
    let ort_precompute_wanted = precompute != Candle;
    let provider = Provider::for_device(device);
    let ort: Option<Arc<OrtFeatures>> = if ort_engine_wanted || ort_precompute_wanted {
        match ort_features(models_dir, weights.clone(), pooling, provider) {
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
    let ort_engine = match &ort {
        Some(ort) if ort_engine_wanted && pooling == Pooling::Max => Some(Arc::new(
            OrtEngine::new(ort.environment(), weights.clone(), ort.clone(), 0),
        )),
        _ => None,
    };
    let ort_precompute = match ort.filter(|_| ort_precompute_wanted) {
        Some(ort) if on_gpu && precompute == Auto => gpu_precompute_starts(ort),
        other => other,
    };
    let candle = match (&ort_engine, &ort_precompute) {
        (Some(_), Some(_)) => None,
        _ => Some(Arc::new(CandleEngine::new(
            &weights,
            pooling,
            device,
            DType::F32,
        )?)),
    };
    let engine: Arc<dyn Engine> = match (ort_engine, &candle) {
        (Some(e), _) => e,
        (None, Some(c)) => c.clone(),
        (None, None) => unreachable!("a candle engine is built whenever ONNX Runtime's is not"),
    };
    let features: Arc<dyn FeatureExtractor> = match (ort_precompute, &candle) {
        (Some(ort), _) => ort,
        (None, Some(c)) => Arc::new(c.features()),
        (None, None) => unreachable!("no ONNX Runtime precompute means a candle engine"),
    };
    Ok(Backends {
        engine,
        features,
        device: device_label(device),
    })
}

/// `ort` when its CUDA provider runs the default style layers (which also builds their
/// session before the first request), else `None` with a warning: on a GPU, candle there
/// beats ONNX Runtime on the CPU, and `auto` never fails a start over ONNX Runtime.
pub fn gpu_precompute_starts(ort: Arc<OrtFeatures>) -> Option<Arc<OrtFeatures>> {
    let side = 32;
    let probe = crate::model::InputImage {
        height: side,
        width: side,
        data: vec![0.0; 3 * side * side],
    };
    match ort.grams(&probe, &crate::render::default_style_taps()) {
        Ok(_) if matches!(ort.provider(), Provider::Cuda(_)) => return Some(ort),
        Ok(_) => {}
        Err(err) => tracing::warn!(%err, "ONNX Runtime's precompute failed on the GPU"),
    }
    tracing::warn!("the style precompute runs as candle on the GPU");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse_and_reject_the_rest() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(err.contains("device"), "{bad}: {err}");
        }
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        if !cfg!(feature = "cuda") {
            assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
            let err = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(err.contains("no CUDA support"), "{err}");
        }
    }
}
