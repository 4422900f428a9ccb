//! Optimising an image, backend-neutral: the `Engine` trait the scheduler and CLI see, the
//! job it runs, the progress it reports, and the optimiser both backends share (the loop,
//! Adam, L-BFGS with strong Wolfe, the pixel box, the tiled evaluation, the memory model,
//! the temporal term, the loss terms). The implementations are `crate::onnxruntime`'s (the
//! CPU default) and `crate::candle`'s (CUDA, and the CPU fallback).

pub mod bounds;
pub mod driver;
pub mod footprint;
pub mod loss;
pub mod mosaic;
pub mod objective;
pub mod optim;
pub mod path;
pub mod temporal;
pub mod tiled;
pub mod vector;
pub mod wolfe;

use std::ops::ControlFlow;
use std::time::Duration;

pub use crate::net::Pooling;
pub use loss::{LossBreakdown, TermWeights};

use crate::error::Result;
use crate::model::{InputConvention, InputImage, Layer};
use crate::net::Gram;
use crate::net::stages::StagedPlan;

/// Which optimiser drives the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// Adam with this learning rate (input-space units; 10 suits the Caffe weights).
    Adam { lr: f64 },
    /// L-BFGS with this many curvature pairs (its step: `optim::LineSearch`, strong Wolfe by
    /// default, or the contract's fixed step).
    Lbfgs { history: usize },
}

impl OptimizerKind {
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Adam { .. } => "adam",
            OptimizerKind::Lbfgs { .. } => "lbfgs",
        }
    }
}

/// Where the optimisation starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    Content,
    /// Gaussian noise in input space, seeded, with this standard deviation in 8-bit levels.
    Noise {
        seed: u64,
        levels: f32,
    },
    /// A given image (resized to the first scale).
    Image(InputImage),
}

/// One scale of a coarse-to-fine run: the content at that size and the style targets.
#[derive(Debug, Clone)]
pub struct ScaleTargets {
    pub content: InputImage,
    pub style: Vec<(Layer, f64, Gram)>,
    pub iterations: usize,
}

/// A fully prepared optimisation: everything in input space, targets precomputed.
#[derive(Debug, Clone)]
pub struct OptimiseJob {
    /// Smallest first; each scale starts from the previous result, upsampled.
    pub scales: Vec<ScaleTargets>,
    pub content_layers: Vec<(Layer, f64)>,
    pub weights: TermWeights,
    pub optimizer: OptimizerKind,
    pub init: Init,
    /// Attach the current image to every Nth progress report (0: never).
    pub preview_every: usize,
    /// Evaluate in tiles whose cores are at most this many pixels on a side (`None`: each
    /// scale in one piece). Tiling bounds memory; the loss and gradient stay exact.
    pub tile_side: Option<usize>,
    /// Stages, deepest first, whose tiles' forward state the tiled evaluation keeps between
    /// its passes (at least one; each kept stage saves its forward passes and holds its
    /// tiles' ReLU masks, pool indices and tapped maps).
    pub kept_stages: usize,
    /// The box the image stays in (`None`: unbounded, the contract's trajectory).
    pub bounds: Option<bounds::PixelBox>,
    /// How L-BFGS chooses its steps.
    pub line_search: optim::LineSearch,
    /// When to stop before the iterations run out.
    pub stop: StopRules,
    /// A sequence frame's temporal term (`None` for stills); its size must be every scale's.
    pub temporal: Option<temporal::TemporalTarget>,
}

/// Stopping before the iterations run out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StopRules {
    /// Stop a scale once the loss fell by less than this fraction over the last
    /// `TOLERANCE_WINDOW` iterations (`None`: never).
    pub tolerance: Option<f64>,
    /// Return the image reached when this much time has passed (`None`: no limit).
    pub time_budget: Option<Duration>,
}

/// Iterations over which `StopRules::tolerance` measures the loss's decrease.
pub const TOLERANCE_WINDOW: usize = 10;

/// Why an optimisation ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StopReason {
    /// Every scale ran its iterations (or its optimiser found no descent direction left).
    #[default]
    Iterations,
    /// The last scale stopped on `tolerance`.
    Tolerance,
    /// The time budget ran out.
    TimeBudget,
}

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Iterations => "iterations",
            StopReason::Tolerance => "tolerance",
            StopReason::TimeBudget => "time_budget",
        }
    }
}

impl OptimiseJob {
    pub fn total_iterations(&self) -> usize {
        self.scales.iter().map(|s| s.iterations).sum()
    }

    /// The deepest layer any term reads.
    pub fn deepest_layer(&self) -> Option<Layer> {
        let style = self.scales.iter().flat_map(|s| s.style.iter().map(|t| t.0));
        self.content_layers.iter().map(|t| t.0).chain(style).max()
    }

    /// How `scale`'s frame is cut for evaluation.
    pub fn tile_plan(&self, scale: &ScaleTargets) -> Result<StagedPlan> {
        let deepest = self
            .deepest_layer()
            .ok_or_else(|| crate::error::Error::invalid("layers", "no content or style layer"))?;
        let (h, w) = (scale.content.height, scale.content.width);
        Ok(match self.tile_side {
            Some(side) => StagedPlan::new(h, w, deepest, Some(side)),
            None => StagedPlan::whole(h, w),
        })
    }
}

/// Reported after each iteration.
#[derive(Debug, Clone)]
pub struct Progress {
    /// 1-based, counted across all scales.
    pub iteration: usize,
    pub total: usize,
    /// 0-based index of the current scale.
    pub scale: usize,
    pub losses: LossBreakdown,
    pub elapsed: Duration,
    /// The image being evaluated, on preview iterations only.
    pub preview: Option<InputImage>,
}

/// The result of an optimisation.
#[derive(Debug, Clone)]
pub struct Optimised {
    pub image: InputImage,
    /// The loss of `image` (it was evaluated).
    pub losses: LossBreakdown,
    pub iterations: usize,
    /// Objective evaluations, initial points and line-search trials included.
    pub evaluations: usize,
    /// Time spent in those evaluations (the rest of the optimisation's time is the
    /// optimiser's own arithmetic, scale changes and progress reports).
    pub evaluating: Duration,
    /// Time building each scale's objective (its content targets' forward pass).
    pub building: Duration,
    pub stopped: StopReason,
}

/// Receives progress; returning `Break` cancels the job (it ends with `Error::Cancelled`).
pub type ProgressSink<'a> = dyn FnMut(&Progress) -> ControlFlow<()> + Send + 'a;

/// An implementation that optimises images: ONNX Runtime's (the CPU default) or candle's
/// (CPU or CUDA).
pub trait Engine: Send + Sync {
    /// Short name for logs and metrics, e.g. `candle-cpu`.
    fn name(&self) -> String;
    /// The input convention of the loaded weights.
    fn convention(&self) -> &InputConvention;
    /// The memory model of a job on this engine (with its paired precompute).
    fn footprint(&self) -> footprint::Footprint;
    fn optimise(&self, job: &OptimiseJob, progress: &mut ProgressSink<'_>) -> Result<Optimised>;
    /// The loss of `image` (in the input convention, at the last scale's size) against the
    /// job's last-scale targets: how a delivered image is scored.
    fn score(&self, job: &OptimiseJob, image: &InputImage) -> Result<LossBreakdown>;
}
