//! The ONNX Runtime `Engine` for CPUs: each iteration runs the generated
//! loss-and-gradient graph (see `onnx_loss`) over the whole frame, or the tiled evaluation
//! (`tiled`) over the tile forward and backward graphs (the precompute's feature graph gives
//! the content targets); the shared loop
//! updates the image with the same Adam / L-BFGS code as the candle engine. Max pooling only.
//! Sessions depend on the layers alone (weights are inputs) and live in a small bounded table.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use ort::environment::Environment;
use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor as OrtTensor};

use super::loss_graph::{self, LossSpec, StageSpec};
use crate::engine::driver;
use crate::engine::loss::{content_targets, style_targets};
use crate::engine::objective::{Evaluate, Placement};
use crate::engine::tiled::{
    StageForward, StagePasses, TapTerm, TileRun, TiledObjective, frame_features,
};
use crate::engine::{Engine, LossBreakdown, OptimiseJob, Optimised, ProgressSink, ScaleTargets};
use crate::error::{Error, Result};
use crate::features::FeatureExtractor;
use crate::model::{InputConvention, InputImage, Layer, Vgg19Weights};
use crate::net::stages::{Stage, StagedPlan};
use crate::net::tiling::Window;
use crate::onnxruntime::OrtFeatures;
use crate::onnxruntime::sessions::{SessionTable, SharedSession};
use crate::onnxruntime::{self, Provider};

fn ort_error(context: &str, err: impl std::fmt::Display) -> Error {
    Error::OnnxRuntime(format!("{context}: {err}"))
}

/// Which loss graph a session runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Graph {
    WholeFrame(LossSpec),
    StageForward(StageSpec),
    StageBackward(StageSpec),
}

/// Loss sessions kept: a tiled job uses a forward and a backward graph per stage (five
/// stages to relu5_1), and the whole-frame graph serves untiled scales.
pub const LOSS_SESSIONS: usize = 12;

pub struct OrtEngine {
    environment: &'static Environment,
    weights: Arc<Vgg19Weights>,
    features: Arc<OrtFeatures>,
    threads: usize,
    sessions: SessionTable<Graph>,
}

type Inputs<'a> = Vec<(String, SessionInputValue<'a>)>;

fn ort_tensor(shape: &[usize], data: Vec<f32>, what: &str) -> Result<OrtTensor<f32>> {
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    OrtTensor::from_array((shape, data)).map_err(|e| ort_error(what, e))
}

fn ort_scalar(value: f64, what: &str) -> Result<OrtTensor<f32>> {
    ort_tensor(&[], vec![value as f32], what)
}

/// A candle tensor's values as an ONNX Runtime tensor of the same shape.
fn from_candle(t: &Tensor, what: &str) -> Result<OrtTensor<f32>> {
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    ort_tensor(t.dims(), data, what)
}

impl OrtEngine {
    /// `features` supplies the content targets; `threads` 0 means one per core.
    pub fn new(
        environment: &'static Environment,
        weights: Arc<Vgg19Weights>,
        features: Arc<OrtFeatures>,
        threads: usize,
    ) -> Self {
        let threads = onnxruntime::intra_threads(threads);
        Self {
            environment,
            weights,
            features,
            threads,
            sessions: SessionTable::new(LOSS_SESSIONS),
        }
    }

    /// Loss-graph sessions held now (bounded).
    pub fn sessions_held(&self) -> usize {
        self.sessions.len()
    }

    fn session(&self, graph: Graph) -> Result<SharedSession> {
        self.sessions.get_or_build(&graph, || {
            let model = match &graph {
                Graph::WholeFrame(spec) => loss_graph::build(&self.weights, spec),
                Graph::StageForward(spec) => loss_graph::build_stage_forward(&self.weights, spec),
                Graph::StageBackward(spec) => loss_graph::build_stage_backward(&self.weights, spec),
            };
            // The loss graphs' Winograd operators are CPU kernels: this engine runs on the CPU.
            onnxruntime::session(self.environment, &model, self.threads, true, Provider::Cpu)
        })
    }

    /// The untiled loss-and-gradient evaluator for one scale of `job`.
    pub fn objective(
        &self,
        job: &OptimiseJob,
        scale: &ScaleTargets,
    ) -> Result<Box<dyn Evaluate + '_>> {
        let plan = StagedPlan::whole(scale.content.height, scale.content.width);
        self.evaluator_under(job, scale, plan)
    }

    /// The evaluator the optimisation uses for one scale of `job`: tiled when the job's plan
    /// cuts the frame, else the whole-frame graph.
    pub fn evaluator(
        &self,
        job: &OptimiseJob,
        scale: &ScaleTargets,
    ) -> Result<Box<dyn Evaluate + '_>> {
        self.evaluator_under(job, scale, job.tile_plan(scale)?)
    }

    /// The evaluator for one scale under `plan`: the whole-frame graph for one tile, the
    /// tiled evaluation otherwise.
    fn evaluator_under<'a>(
        &'a self,
        job: &OptimiseJob,
        scale: &ScaleTargets,
        plan: StagedPlan,
    ) -> Result<Box<dyn Evaluate + 'a>> {
        let spec = LossSpec {
            content: job.content_layers.iter().map(|(l, _)| *l).collect(),
            style: scale.style.iter().map(|(l, _, _)| *l).collect(),
        };
        let passes = OrtPasses { engine: self };
        let maps = if spec.content.is_empty() {
            Vec::new()
        } else if plan.is_whole() {
            self.features.maps(&scale.content, &spec.content)?
        } else {
            let x = Tensor::from_slice(&scale.content.data, scale.content.shape(), &Device::Cpu)?;
            frame_features(&passes, &x, &plan, &spec.content, &spec.style)?
        };
        let content = content_targets(&job.content_layers, maps);
        let style = style_targets(&scale.style, &Device::Cpu, DType::F32)?;
        if !plan.is_whole() {
            return Ok(Box::new(TiledObjective {
                passes,
                plan,
                content,
                style,
                weights: job.weights,
                kept_stages: job.kept_stages,
            }));
        }
        let w = job.weights;
        let mut inputs = Vec::new();
        for t in &content {
            inputs.push((
                loss_graph::content_input(t.layer),
                from_candle(&t.target, "content target")?,
            ));
            let coef = 2.0 * w.content * t.weight;
            inputs.push((
                loss_graph::content_coef(t.layer),
                ort_scalar(coef, "content coefficient")?,
            ));
        }
        for t in &style {
            let c = t.layer.channels() as f64;
            inputs.push((
                loss_graph::style_input(t.layer),
                from_candle(&t.target, "style target")?,
            ));
            let coef = 4.0 * w.style * t.weight / (c * c);
            inputs.push((
                loss_graph::style_coef(t.layer),
                ort_scalar(coef, "style coefficient")?,
            ));
        }
        inputs.push((
            loss_graph::TV_COEF.to_string(),
            ort_scalar(2.0 * w.tv, "tv coefficient")?,
        ));
        Ok(Box::new(OrtObjective {
            session: self.session(Graph::WholeFrame(spec))?,
            inputs,
            content: job.content_layers.clone(),
            style: scale.style.iter().map(|(l, w, _)| (*l, *w)).collect(),
            weights: job.weights,
        }))
    }
}

/// The whole-frame graph with its fixed inputs (targets and coefficients).
struct OrtObjective {
    session: SharedSession,
    inputs: Vec<(String, OrtTensor<f32>)>,
    content: Vec<(Layer, f64)>,
    style: Vec<(Layer, f64)>,
    weights: crate::engine::TermWeights,
}

impl Evaluate for OrtObjective {
    fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        self.run(x, false)
    }

    fn evaluate_and_release(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        self.run(x, true)
    }
}

/// Runs `session` on `inputs`; `release` shrinks its arena afterwards. `read` takes what it
/// needs from the outputs.
fn run_session<T>(
    session: &SharedSession,
    inputs: Inputs<'_>,
    release: bool,
    read: impl FnOnce(ort::session::SessionOutputs<'_>) -> Result<T>,
) -> Result<T> {
    let mut session = session
        .lock()
        .map_err(|_| ort_error("session", "lock poisoned"))?;
    let options = onnxruntime::run_options(release, Provider::Cpu)?;
    let outputs = session
        .run_with_options(inputs, &options)
        .map_err(|e| ort_error("running the loss graph", e))?;
    read(outputs)
}

/// The values of the named output.
fn output_values<'a, T: ort::value::PrimitiveTensorElementType>(
    outputs: &'a ort::session::SessionOutputs<'_>,
    name: &str,
) -> Result<&'a [T]> {
    let value = outputs
        .get(name)
        .ok_or_else(|| ort_error("output missing", name))?;
    let (_, data) = value
        .try_extract_tensor::<T>()
        .map_err(|e| ort_error(name, e))?;
    Ok(data)
}

/// The named float output as a tensor on the CPU with `shape`.
fn output_tensor(
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
    shape: (usize, usize, usize, usize),
) -> Result<Tensor> {
    Ok(Tensor::from_slice(
        output_values::<f32>(outputs, name)?,
        shape,
        &Device::Cpu,
    )?)
}

fn image_input(x: &Tensor) -> Result<OrtTensor<f32>> {
    from_candle(x, "image")
}

impl OrtObjective {
    fn run(&self, x: &Tensor, release: bool) -> Result<(LossBreakdown, Tensor)> {
        let shape = x.dims4()?;
        let mut inputs: Inputs<'_> = vec![(loss_graph::IMAGE.to_string(), image_input(x)?.into())];
        for (name, tensor) in &self.inputs {
            inputs.push((name.clone(), tensor.into()));
        }
        run_session(&self.session, inputs, release, |outputs| {
            let outputs = &outputs;
            let scalar = |name: &str| -> Result<f64> {
                output_values::<f64>(outputs, name)?
                    .first()
                    .copied()
                    .ok_or_else(|| ort_error(name, "empty"))
            };
            let mut losses = LossBreakdown::default();
            for (layer, weight) in &self.content {
                let value = scalar(&loss_graph::content_loss(*layer))?;
                losses.content += weight * value;
                losses.content_per_layer.push(value);
            }
            for (layer, weight) in &self.style {
                let value = scalar(&loss_graph::style_loss(*layer))?;
                losses.style += weight * value;
                losses.style_per_layer.push(value);
            }
            losses.tv = scalar(loss_graph::TV)?;
            let w = self.weights;
            losses.total = w.content * losses.content + w.style * losses.style + w.tv * losses.tv;
            Ok((losses, output_tensor(outputs, loss_graph::GRAD, shape)?))
        })
    }
}

/// ONNX Runtime's per-tile passes: each stage's forward and backward graphs.
struct OrtPasses<'a> {
    engine: &'a OrtEngine,
}

/// The forward graph's outputs the backward graph reads, by name.
type TileState = Vec<(String, DynValue)>;

impl StagePasses for OrtPasses<'_> {
    type State = TileState;

    fn forward(
        &self,
        stage: Stage,
        input: &Tensor,
        content: &[Layer],
        style: &[(Layer, Window)],
        run: TileRun,
    ) -> Result<StageForward<TileState>> {
        let spec = StageSpec {
            stage,
            content: content.to_vec(),
            style: style.iter().map(|(l, _)| *l).collect(),
        };
        let session = self.engine.session(Graph::StageForward(spec))?;
        let (_, _, height, width) = input.dims4()?;
        let input = from_candle(input, "stage input")?;
        let mut inputs: Inputs<'_> = vec![(loss_graph::STAGE_INPUT.to_string(), (&input).into())];
        for &(layer, core) in style {
            let mask = ort_tensor(
                &[1, 1, height, width],
                core_mask(core, height, width),
                "core mask",
            )?;
            inputs.push((loss_graph::core_mask(layer), mask.into()));
        }
        let channels = stage.channels();
        // The arena is handed back after the stage's last tile: kept, it would outlive the
        // job in the session table.
        let mut forward = run_session(&session, inputs, run.last, |mut outputs| {
            let map = (1, channels, height, width);
            let content_maps = content
                .iter()
                .map(|&layer| {
                    let kept = loss_graph::state_relu(layer);
                    let name = if outputs.contains_key(&kept) {
                        kept
                    } else {
                        loss_graph::map_output(layer)
                    };
                    output_tensor(&outputs, &name, map)
                })
                .collect::<Result<_>>()?;
            let gram_sums = style
                .iter()
                .map(|&(layer, _)| {
                    let values = output_values::<f32>(&outputs, &loss_graph::core_gram(layer))?;
                    let gram = Tensor::from_slice(values, (channels, channels), &Device::Cpu)?;
                    Ok(gram.to_dtype(DType::F64)?)
                })
                .collect::<Result<_>>()?;
            let output = if stage.pooled_after {
                let pooled = (1, channels, height / 2, width / 2);
                Some(output_tensor(&outputs, loss_graph::STAGE_OUTPUT, pooled)?)
            } else {
                None
            };
            let state = if run.keep {
                let names: Vec<String> = outputs
                    .keys()
                    .filter(|name| name.starts_with(loss_graph::STATE_PREFIX))
                    .map(str::to_string)
                    .collect();
                let state: TileState = names
                    .into_iter()
                    .filter_map(|name| outputs.remove(&name).map(|value| (name, value)))
                    .collect();
                Some(state)
            } else {
                None
            };
            Ok(StageForward {
                content_maps,
                gram_sums,
                output,
                state,
            })
        })?;
        // The backward graph recomputes the first convolution from the input it keeps.
        if let Some(state) = forward.state.as_mut()
            && loss_graph::recomputes_first(stage)
        {
            state.push((loss_graph::STAGE_INPUT.to_string(), input.into_dyn()));
        }
        Ok(forward)
    }

    fn backward(
        &self,
        stage: Stage,
        state: TileState,
        terms: &[TapTerm],
        output_grad: Option<&Tensor>,
        run: TileRun,
    ) -> Result<Tensor> {
        let mut spec = StageSpec {
            stage,
            content: Vec::new(),
            style: Vec::new(),
        };
        // Its last layer's ReLU mask (or, when that is recomputed, its input) has the
        // tile's size.
        let sized = [
            loss_graph::state_mask(stage.last),
            loss_graph::STAGE_INPUT.into(),
        ];
        let (_, value) = state
            .iter()
            .find(|(n, _)| sized.contains(n))
            .ok_or_else(|| ort_error("tile state missing", &sized[0]))?;
        let (height, width) = match value.shape()[..] {
            [_, _, h, w] => (h as usize, w as usize),
            _ => return Err(ort_error("tile state", "a map is not 4-dimensional")),
        };
        let mut inputs: Inputs<'_> = Vec::new();
        for term in terms {
            match term {
                TapTerm::Style { layer, matrix } => {
                    spec.style.push(*layer);
                    inputs.push((
                        loss_graph::style_matrix(*layer),
                        from_candle(matrix, "style matrix")?.into(),
                    ));
                }
                TapTerm::Content {
                    layer,
                    coef,
                    target,
                } => {
                    spec.content.push(*layer);
                    inputs.push((
                        loss_graph::content_input(*layer),
                        from_candle(target, "content target")?.into(),
                    ));
                    inputs.push((
                        loss_graph::content_coef(*layer),
                        ort_scalar(*coef, "content coefficient")?.into(),
                    ));
                }
            }
        }
        if let Some(grad) = output_grad {
            inputs.push((
                loss_graph::OUTPUT_GRAD.to_string(),
                from_candle(grad, "output gradient")?.into(),
            ));
        }
        for (name, value) in state {
            inputs.push((name, value.into()));
        }
        let session = self.engine.session(Graph::StageBackward(spec))?;
        let shape = (1, stage.in_channels(), height, width);
        run_session(&session, inputs, run.last, |outputs| {
            output_tensor(&outputs, loss_graph::GRAD, shape)
        })
    }
}

/// 1 inside `core`, 0 elsewhere, over an `height` x `width` map.
fn core_mask(core: Window, height: usize, width: usize) -> Vec<f32> {
    let mut mask = vec![0f32; height * width];
    for row in core.top..core.top + core.height {
        mask[row * width + core.left..][..core.width].fill(1.0);
    }
    mask
}

impl Engine for OrtEngine {
    fn name(&self) -> String {
        "onnxruntime-cpu".to_string()
    }

    fn convention(&self) -> &InputConvention {
        &self.weights.convention
    }

    fn footprint(&self) -> crate::engine::footprint::Footprint {
        crate::engine::footprint::Footprint::ORT_CPU
    }

    fn optimise(&self, job: &OptimiseJob, progress: &mut ProgressSink<'_>) -> Result<Optimised> {
        let placement = Placement {
            device: &Device::Cpu,
            dtype: DType::F32,
            convention: &self.weights.convention,
        };
        driver::optimise(job, progress, &placement, |scale| {
            self.evaluator(job, scale)
        })
    }

    fn score(&self, job: &OptimiseJob, image: &InputImage) -> Result<LossBreakdown> {
        let placement = Placement {
            device: &Device::Cpu,
            dtype: DType::F32,
            convention: &self.weights.convention,
        };
        driver::score(job, &placement, image, |scale| self.evaluator(job, scale))
    }
}
