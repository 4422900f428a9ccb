//! The ONNX Runtime implementation of `FeatureExtractor`: runs the generated VGG19 graph
//! (see `onnx_graph`) on the CPU or the CUDA execution provider. One session per distinct
//! set of outputs, built on first use and kept. When the CUDA provider cannot start (no
//! driver, a CPU-only library), the extractor says so once and carries on on the CPU.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use super::onnx_graph::{self, GraphSpec};
use super::ort_runtime::{self, Provider};
use super::{FeatureExtractor, Gram, TargetIdentity};
use crate::engine::Pooling;
use crate::error::{Error, Result};
use crate::model::{InputImage, Layer, Vgg19Weights};

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
    sessions: Mutex<HashMap<GraphSpec, Arc<Mutex<Session>>>>,
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
        let threads = ort_runtime::intra_threads(threads);
        Self {
            environment,
            identity: TargetIdentity::new(&weights, pooling),
            weights,
            pooling,
            threads,
            requested: provider,
            cuda_failed: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
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
    ) -> Result<(Arc<Mutex<Session>>, Provider)> {
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
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| ort_error("session table", "lock poisoned"))?;
        let mut provider = self.provider();
        let mut spec = spec_on(provider);
        if let Some(session) = sessions.get(&spec) {
            return Ok((session.clone(), provider));
        }
        let build = |spec: &GraphSpec, provider| {
            let model = onnx_graph::build(&self.weights, spec);
            ort_runtime::session(self.environment, &model, self.threads, true, provider)
        };
        let session = match build(&spec, provider) {
            Ok(session) => session,
            Err(err) if provider != Provider::Cpu => {
                tracing::warn!(%err, "ONNX Runtime's CUDA provider did not start; the style precompute runs on the CPU");
                self.cuda_failed.store(true, Ordering::Relaxed);
                provider = Provider::Cpu;
                spec = spec_on(provider);
                match sessions.get(&spec) {
                    Some(session) => return Ok((session.clone(), provider)),
                    None => build(&spec, provider)?,
                }
            }
            Err(err) => return Err(err),
        };
        let session = Arc::new(Mutex::new(session));
        sessions.insert(spec, session.clone());
        Ok((session, provider))
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
        let options = ort_runtime::run_options(true, provider)?;
        let outputs = session
            .run_with_options(ort::inputs![onnx_graph::INPUT => input], &options)
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
                let map = fetch(onnx_graph::gram_output(l))?;
                Ok(Gram {
                    channels: map.shape[0],
                    data: map.data,
                })
            })
            .collect::<Result<_>>()?;
        let features = feature_layers
            .iter()
            .map(|&l| fetch(onnx_graph::features_output(l)))
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

    fn grams(&self, image: &InputImage, layers: &[Layer]) -> Result<Vec<Gram>> {
        if layers.is_empty() {
            return Err(Error::invalid("style_layers", "no style layer given"));
        }
        Ok(self.extract(image, layers, &[])?.0)
    }
}
