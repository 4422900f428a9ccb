//! The ONNX Runtime `Engine` for CPUs: each iteration runs the generated
//! loss-and-gradient graph (see `onnx_loss`) and the shared loop updates the image with the
//! same Adam / L-BFGS code as the candle engine. Max pooling only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor as OrtTensor;

use super::driver::{self, Evaluate, Placement};
use super::onnx_loss::{self, LossSpec};
use super::{Engine, LossBreakdown, OptimiseJob, Optimised, ProgressSink, ScaleTargets};
use crate::error::{Error, Result};
use crate::features::OrtFeatures;
use crate::features::ort_runtime::{self, Provider};
use crate::model::{InputConvention, Layer, Vgg19Weights};

fn ort_error(context: &str, err: impl std::fmt::Display) -> Error {
    Error::OnnxRuntime(format!("{context}: {err}"))
}

pub struct OrtEngine {
    environment: &'static Environment,
    weights: Arc<Vgg19Weights>,
    features: Arc<OrtFeatures>,
    threads: usize,
    sessions: Mutex<HashMap<String, Arc<Mutex<Session>>>>,
}

impl OrtEngine {
    /// `features` supplies the content targets; `threads` 0 means one per core.
    pub fn new(
        environment: &'static Environment,
        weights: Arc<Vgg19Weights>,
        features: Arc<OrtFeatures>,
        threads: usize,
    ) -> Self {
        let threads = ort_runtime::intra_threads(threads);
        Self {
            environment,
            weights,
            features,
            threads,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn session(&self, spec: &LossSpec) -> Result<Arc<Mutex<Session>>> {
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| ort_error("sessions", "lock poisoned"))?;
        if let Some(session) = sessions.get(&spec.key()) {
            return Ok(session.clone());
        }
        let model = onnx_loss::build(&self.weights, spec);
        // The loss graph's Winograd operators are CPU kernels: this engine runs on the CPU.
        let session = Arc::new(Mutex::new(ort_runtime::session(
            self.environment,
            &model,
            self.threads,
            true,
            Provider::Cpu,
        )?));
        sessions.insert(spec.key(), session.clone());
        Ok(session)
    }

    /// The loss-and-gradient evaluator for one scale of `job`.
    pub fn objective(&self, job: &OptimiseJob, scale: &ScaleTargets) -> Result<Box<dyn Evaluate>> {
        Ok(Box::new(self.scale_objective(job, scale)?))
    }

    fn scale_objective(&self, job: &OptimiseJob, scale: &ScaleTargets) -> Result<OrtObjective> {
        let spec = LossSpec {
            content: job.content_layers.clone(),
            style: scale.style.iter().map(|(l, w, _)| (*l, *w)).collect(),
            weights: job.weights,
        };
        let content_layers: Vec<Layer> = spec.content.iter().map(|(l, _)| *l).collect();
        let mut targets = Vec::new();
        if !content_layers.is_empty() {
            let (_, maps) = self
                .features
                .extract(&scale.content, &[], &content_layers)?;
            for (layer, map) in content_layers.iter().zip(maps) {
                let shape: Vec<i64> = map.shape.iter().map(|&d| d as i64).collect();
                let tensor = OrtTensor::from_array((shape, map.data))
                    .map_err(|e| ort_error("content target", e))?;
                targets.push((onnx_loss::content_input(*layer), tensor));
            }
        }
        for (layer, _, gram) in &scale.style {
            let c = gram.channels as i64;
            let tensor = OrtTensor::from_array((vec![c, c], gram.data.clone()))
                .map_err(|e| ort_error("style target", e))?;
            targets.push((onnx_loss::style_input(*layer), tensor));
        }
        Ok(OrtObjective {
            session: self.session(&spec)?,
            targets,
            spec,
        })
    }
}

struct OrtObjective {
    session: Arc<Mutex<Session>>,
    targets: Vec<(String, OrtTensor<f32>)>,
    spec: LossSpec,
}

impl Evaluate for OrtObjective {
    fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        self.run(x, false)
    }

    fn evaluate_and_release(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        self.run(x, true)
    }
}

impl OrtObjective {
    /// One pass of the loss graph; `release` shrinks the session's memory arena afterwards.
    fn run(&self, x: &Tensor, release: bool) -> Result<(LossBreakdown, Tensor)> {
        let (n, c, h, w) = x.dims4()?;
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        let image = OrtTensor::from_array((vec![n as i64, c as i64, h as i64, w as i64], data))
            .map_err(|e| ort_error("image", e))?;
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> =
            vec![(onnx_loss::IMAGE.to_string(), image.into())];
        for (name, tensor) in &self.targets {
            inputs.push((name.clone(), tensor.into()));
        }
        let mut session = self
            .session
            .lock()
            .map_err(|_| ort_error("session", "lock poisoned"))?;
        let options = ort_runtime::run_options(release, Provider::Cpu)?;
        let outputs = session
            .run_with_options(inputs, &options)
            .map_err(|e| ort_error("running the loss graph", e))?;
        let scalar = |name: &str| -> Result<f64> {
            let value = outputs
                .get(name)
                .ok_or_else(|| ort_error("output missing", name))?;
            let (_, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| ort_error(name, e))?;
            data.first()
                .map(|v| *v as f64)
                .ok_or_else(|| ort_error(name, "empty"))
        };
        let mut losses = LossBreakdown::default();
        for (layer, weight) in &self.spec.content {
            let value = scalar(&onnx_loss::content_loss(*layer))?;
            losses.content += weight * value;
            losses.content_per_layer.push(value);
        }
        for (layer, weight) in &self.spec.style {
            let value = scalar(&onnx_loss::style_loss(*layer))?;
            losses.style += weight * value;
            losses.style_per_layer.push(value);
        }
        losses.tv = scalar(onnx_loss::TV)?;
        let weights = self.spec.weights;
        losses.total = weights.content * losses.content
            + weights.style * losses.style
            + weights.tv * losses.tv;
        let grad = outputs
            .get(onnx_loss::GRAD)
            .ok_or_else(|| ort_error("output missing", onnx_loss::GRAD))?;
        let (_, grad) = grad
            .try_extract_tensor::<f32>()
            .map_err(|e| ort_error(onnx_loss::GRAD, e))?;
        let grad = Tensor::from_slice(grad, (n, c, h, w), &Device::Cpu)?;
        Ok((losses, grad))
    }
}

impl Engine for OrtEngine {
    fn name(&self) -> String {
        "onnxruntime-cpu".to_string()
    }

    fn convention(&self) -> &InputConvention {
        &self.weights.convention
    }

    fn optimise(&self, job: &OptimiseJob, progress: &mut ProgressSink<'_>) -> Result<Optimised> {
        let placement = Placement {
            device: &Device::Cpu,
            dtype: DType::F32,
            convention: &self.weights.convention,
        };
        driver::optimise(job, progress, &placement, |scale| {
            self.objective(job, scale)
        })
    }
}
