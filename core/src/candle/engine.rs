//! The candle `Engine`: the shared optimisation loop over candle's VGG19 and hand-written
//! backward pass, on one device; the image and optimiser state stay on the device between
//! iterations (only loss scalars come back each iteration).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::objective::Objective;
use crate::candle::features::CandleFeatures;
use crate::candle::features::device_name;
use crate::engine::driver;
use crate::engine::loss::{LayerTarget, content_targets, style_targets};
use crate::engine::objective::{Evaluate, Placement};
use crate::engine::tiled::{
    StageForward, StagePasses, TapTerm, TileRun, TiledObjective, frame_features,
};
use crate::engine::{Engine, LossBreakdown, OptimiseJob, Optimised, ProgressSink, ScaleTargets};
use crate::error::{Error, Result};
use crate::model::{InputConvention, InputImage, Layer, Vgg19Weights};
use crate::net::Pooling;
use crate::net::stages::{Stage, StagedPlan};
use crate::net::tiling::{Window, core_gram_sum};
use crate::net::vgg::{Activations, VggNet};

pub struct CandleEngine {
    net: Arc<VggNet>,
    convention: InputConvention,
}

impl Evaluate for Objective<'_> {
    fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        Objective::evaluate(self, x)
    }
}

/// candle's per-tile passes: the shared network's forward, and its hand-written backward.
pub struct CandlePasses<'a> {
    pub net: &'a VggNet,
}

impl StagePasses for CandlePasses<'_> {
    type State = Activations;

    fn forward(
        &self,
        stage: Stage,
        input: &Tensor,
        content: &[Layer],
        style: &[(Layer, Window)],
        run: TileRun,
    ) -> Result<StageForward<Activations>> {
        let taps: Vec<Layer> = content
            .iter()
            .copied()
            .chain(style.iter().map(|(l, _)| *l))
            .collect();
        let (acts, output) = self.net.stage_forward(input, stage, &taps, run.keep)?;
        let content_maps = content
            .iter()
            .map(|&l| map_of(&acts, l).cloned())
            .collect::<Result<_>>()?;
        let gram_sums = style
            .iter()
            .map(|&(l, core)| core_gram_sum(map_of(&acts, l)?, core))
            .collect::<Result<_>>()?;
        Ok(StageForward {
            content_maps,
            gram_sums,
            output,
            state: run.keep.then_some(acts),
        })
    }

    fn backward(
        &self,
        stage: Stage,
        acts: Activations,
        terms: &[TapTerm],
        output_grad: Option<&Tensor>,
        _run: TileRun,
    ) -> Result<Tensor> {
        let tap_grads = terms
            .iter()
            .map(|term| Ok((term.layer(), term.gradient(map_of(&acts, term.layer())?)?)))
            .collect::<Result<Vec<_>>>()?;
        self.net
            .stage_backward(&acts, stage, &tap_grads, output_grad)
    }
}

/// A forward pass's map at `layer`.
fn map_of(acts: &Activations, layer: Layer) -> Result<&Tensor> {
    acts.get(layer)
        .ok_or_else(|| Error::invalid("layers", format!("{layer} not computed")))
}

impl<P: StagePasses> Evaluate for TiledObjective<P> {
    fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        TiledObjective::evaluate(self, x)
    }
}

impl CandleEngine {
    /// Loads all 16 convolutions onto `device` in `dtype` (F32 in production; F64 for
    /// reference checks).
    pub fn new(
        weights: &Vgg19Weights,
        pooling: Pooling,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        Ok(Self {
            net: Arc::new(VggNet::new(weights, None, pooling, device, dtype)?),
            convention: weights.convention.clone(),
        })
    }

    pub fn net(&self) -> &Arc<VggNet> {
        &self.net
    }

    /// A feature extractor sharing this engine's network (no second copy of the weights).
    pub fn features(&self) -> CandleFeatures {
        CandleFeatures::new(self.net.clone())
    }

    fn placement(&self) -> Placement<'_> {
        Placement {
            device: self.net.device(),
            dtype: self.net.dtype(),
            convention: &self.convention,
        }
    }

    /// The untiled loss-and-gradient evaluator for one scale of `job`.
    pub fn objective(&self, job: &OptimiseJob, scale: &ScaleTargets) -> Result<Objective<'_>> {
        let plan = StagedPlan::whole(scale.content.height, scale.content.width);
        let (content, style) = self.targets(job, scale, &plan, &self.placement())?;
        Ok(Objective {
            net: &self.net,
            content,
            style,
            weights: job.weights,
        })
    }

    /// The evaluator the optimisation uses for one scale of `job`: tiled when the job's plan
    /// cuts the frame, else the untiled objective.
    pub fn evaluator(
        &self,
        job: &OptimiseJob,
        scale: &ScaleTargets,
    ) -> Result<Box<dyn Evaluate + '_>> {
        self.evaluator_on(job, scale, &self.placement())
    }

    fn evaluator_on(
        &self,
        job: &OptimiseJob,
        scale: &ScaleTargets,
        placement: &Placement<'_>,
    ) -> Result<Box<dyn Evaluate + '_>> {
        let plan = job.tile_plan(scale)?;
        let (content, style) = self.targets(job, scale, &plan, placement)?;
        Ok(if plan.is_whole() {
            Box::new(Objective {
                net: &self.net,
                content,
                style,
                weights: job.weights,
            })
        } else {
            Box::new(TiledObjective {
                passes: CandlePasses { net: &self.net },
                plan,
                content,
                style,
                weights: job.weights,
                kept_stages: job.kept_stages,
            })
        })
    }

    /// Content targets (the frame's feature maps, computed tile by tile under `plan`) and
    /// style targets (the Grams, on the device).
    fn targets(
        &self,
        job: &OptimiseJob,
        scale: &ScaleTargets,
        plan: &StagedPlan,
        placement: &Placement<'_>,
    ) -> Result<(Vec<LayerTarget>, Vec<LayerTarget>)> {
        let p = placement.upload(&scale.content)?;
        let content_taps: Vec<_> = job.content_layers.iter().map(|(l, _)| *l).collect();
        let style_taps: Vec<_> = scale.style.iter().map(|(l, _, _)| *l).collect();
        let maps = if content_taps.is_empty() {
            Vec::new()
        } else if plan.is_whole() {
            self.net.tapped(&p, &content_taps)?
        } else {
            let passes = CandlePasses { net: &self.net };
            frame_features(&passes, &p, plan, &content_taps, &style_taps)?
        };
        let content = content_targets(&job.content_layers, maps);
        let style = style_targets(&scale.style, self.net.device(), self.net.dtype())?;
        Ok((content, style))
    }
}

impl Engine for CandleEngine {
    fn name(&self) -> String {
        format!("candle-{}", device_name(self.net.device()))
    }

    fn convention(&self) -> &InputConvention {
        &self.convention
    }

    fn footprint(&self) -> crate::engine::footprint::Footprint {
        crate::engine::footprint::Footprint::CANDLE_CPU
    }

    fn optimise(&self, job: &OptimiseJob, progress: &mut ProgressSink<'_>) -> Result<Optimised> {
        let placement = self.placement();
        driver::optimise(job, progress, &placement, |scale| {
            self.evaluator_on(job, scale, &placement)
        })
    }

    fn score(&self, job: &OptimiseJob, image: &InputImage) -> Result<LossBreakdown> {
        let placement = self.placement();
        driver::score(job, &placement, image, |scale| {
            self.evaluator_on(job, scale, &placement)
        })
    }
}
