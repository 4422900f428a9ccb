//! The ONNX Runtime implementation of `FeatureExtractor`: runs the generated VGG19 graph
//! (see `onnx_graph`) on the CPU or the CUDA execution provider. One session per distinct
//! set of outputs, built on first use; a small bounded table keeps the most recent. When the CUDA provider cannot start (no
//! driver, a CPU-only library), the extractor says so once and carries on on the CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ort::environment::Environment;
use ort::value::Tensor;

use super::features_graph::{self, GraphSpec};
use crate::error::{Error, Result};
use crate::features::FeatureExtractor;
use crate::model::{InputImage, Layer, Vgg19Weights};
use crate::net::Pooling;
use crate::net::{Gram, TargetIdentity};
use crate::onnxruntime::sessions::{DEFAULT_SESSIONS, SessionTable, SharedSession};
use crate::onnxruntime::{self, Provider};

/// A feature map returned by the graph: shape and data.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub struct OrtFeatures {
    environment: &'static Environment,
    weights: Arc<Vgg19Weights>,
    pooling: Pooling,
    identity: TargetIdentity,
    threads: usize,
    requested: Provider,
    /// Set once the CUDA provider failed to start; every later session is a CPU one.
    cuda_failed: AtomicBool,
    sessions: SessionTable<GraphSpec>,
}

fn ort_error(context: &str, err: impl std::fmt::Display) -> Error {
    Error::OnnxRuntime(format!("{context}: {err}"))
}

impl OrtFeatures {
    /// `threads` intra-op threads per run (0: one per available core), on `provider`.
    pub fn new(
        environment: &'static Environment,
        weights: Arc<Vgg19Weights>,
        pooling: Pooling,
        threads: usize,
        provider: Provider,
    ) -> Self {
        let threads = onnxruntime::intra_threads(threads);
        Self {
            environment,
            identity: TargetIdentity::new(&weights, pooling),
            weights,
            pooling,
            threads,
            requested: provider,
            cuda_failed: AtomicBool::new(false),
            sessions: SessionTable::new(DEFAULT_SESSIONS),
        }
    }

    /// Where the next session will run: the requested provider unless CUDA failed.
    pub fn provider(&self) -> Provider {
        match self.requested {
            Provider::Cuda(_) if self.cuda_failed.load(Ordering::Relaxed) => Provider::Cpu,
            requested => requested,
        }
    }

    /// The ONNX Runtime environment this extractor's sessions live in.
    pub fn environment(&self) -> &'static Environment {
        self.environment
    }

    /// The session computing `gram_layers` and `feature_layers` (sorted, deduplicated) and
    /// the provider it runs on.
    fn session(
        &self,
        gram_layers: &[Layer],
        feature_layers: &[Layer],
    ) -> Result<(SharedSession, Provider)> {
        let spec_on = |provider: Provider| {
            let mut spec = GraphSpec {
                gram_layers: gram_layers.to_vec(),
                feature_layers: feature_layers.to_vec(),
                pooling: self.pooling,
                winograd: provider == Provider::Cpu,
            };
            for layers in [&mut spec.gram_layers, &mut spec.feature_layers] {
                layers.sort();
                layers.dedup();
            }
            spec
        };
        let build = |spec: &GraphSpec, provider| {
            let model = features_graph::build(&self.weights, spec);
            onnxruntime::session(self.environment, &model, self.threads, true, provider)
        };
        let provider = self.provider();
        let spec = spec_on(provider);
        match self.sessions.get_or_build(&spec, || build(&spec, provider)) {
            Ok(session) => Ok((session, provider)),
            Err(err) if provider != Provider::Cpu => {
                tracing::warn!(%err, "ONNX Runtime's CUDA provider did not start; the style precompute runs on the CPU");
                self.cuda_failed.store(true, Ordering::Relaxed);
                let spec = spec_on(Provider::Cpu);
                let session = self
                    .sessions
                    .get_or_build(&spec, || build(&spec, Provider::Cpu))?;
                Ok((session, Provider::Cpu))
            }
            Err(err) => Err(err),
        }
    }

    /// Runs the graph once, returning Grams at `gram_layers` and feature maps at
    /// `feature_layers`, each in the order given.
    pub fn extract(
        &self,
        image: &InputImage,
        gram_layers: &[Layer],
        feature_layers: &[Layer],
    ) -> Result<(Vec<Gram>, Vec<FeatureMap>)> {
        let (session, provider) = self.session(gram_layers, feature_layers)?;
        let mut session = session
            .lock()
            .map_err(|_| ort_error("session", "lock poisoned"))?;
        let (_, _, h, w) = image.shape();
        let input = Tensor::from_array((vec![1i64, 3, h as i64, w as i64], image.data.clone()))
            .map_err(|e| ort_error("input tensor", e))?;
        // One pass per style: hand the arena's memory back afterwards rather than holding
        // the largest image's activations next to the optimisation's.
        let options = onnxruntime::run_options(true, provider)?;
        let outputs = session
            .run_with_options(ort::inputs![features_graph::INPUT => input], &options)
            .map_err(|e| ort_error("running the VGG19 graph", e))?;
        let fetch = |name: String| -> Result<FeatureMap> {
            let value = outputs
                .get(&name)
                .ok_or_else(|| ort_error("graph output missing", &name))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| ort_error(&name, e))?;
            Ok(FeatureMap {
                shape: shape.iter().map(|&d| d as usize).collect(),
                data: data.to_vec(),
            })
        };
        let grams = gram_layers
            .iter()
            .map(|&l| {
                let map = fetch(features_graph::gram_output(l))?;
                Ok(Gram {
                    channels: map.shape[0],
                    data: map.data,
                })
            })
            .collect::<Result<_>>()?;
        let features = feature_layers
            .iter()
            .map(|&l| fetch(features_graph::features_output(l)))
            .collect::<Result<_>>()?;
        Ok((grams, features))
    }
}

impl FeatureExtractor for OrtFeatures {
    fn name(&self) -> String {
        format!("onnxruntime-{}", self.provider().name())
    }

    fn identity(&self) -> TargetIdentity {
        self.identity.clone()
    }

    fn maps(&self, image: &InputImage, layers: &[Layer]) -> Result<Vec<candle_core::Tensor>> {
        let (_, maps) = self.extract(image, &[], layers)?;
        maps.into_iter()
            .map(|map| {
                Ok(candle_core::Tensor::from_vec(
                    map.data,
                    map.shape,
                    &candle_core::Device::Cpu,
                )?)
            })
            .collect()
    }

    fn grams(&self, image: &InputImage, layers: &[Layer]) -> Result<Vec<Gram>> {
        if layers.is_empty() {
            return Err(Error::invalid("style_layers", "no style layer given"));
        }
        Ok(self.extract(image, layers, &[])?.0)
    }
}
