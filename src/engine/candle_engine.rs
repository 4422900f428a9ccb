//! The candle `Engine`: the shared optimisation loop over candle's VGG19 and hand-written
//! backward pass, on one device; the image and optimiser state stay on the device between
//! iterations (only loss scalars come back each iteration).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::driver::{self, Evaluate, Placement};
use super::loss::{LayerTarget, Objective, content_targets, style_targets};
use super::tiled::{TapTerm, TileForward, TilePasses, TileRun, TiledObjective, frame_features};
use super::{Engine, LossBreakdown, OptimiseJob, Optimised, ProgressSink, ScaleTargets};
use crate::error::{Error, Result};
use crate::features::CandleFeatures;
use crate::features::candle::device_name;
use crate::model::{InputConvention, Layer, Vgg19Weights};
use crate::net::Pooling;
use crate::net::tiling::{TilePlan, Window, core_gram_sum};
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

fn deepest_of(layers: impl IntoIterator<Item = Layer>) -> Result<Layer> {
    layers
        .into_iter()
        .max()
        .ok_or_else(|| Error::invalid("layers", "no content or style layer given"))
}

impl TilePasses for CandlePasses<'_> {
    type State = Activations;

    fn features(&self, tile_image: &Tensor, layers: &[Layer]) -> Result<Vec<Tensor>> {
        self.net.tapped(tile_image, layers)
    }

    fn forward(
        &self,
        tile_image: &Tensor,
        content: &[Layer],
        style: &[(Layer, Window)],
        run: TileRun,
    ) -> Result<TileForward<Activations>> {
        let taps: Vec<Layer> = content
            .iter()
            .copied()
            .chain(style.iter().map(|(l, _)| *l))
            .collect();
        let acts = self.net.forward(
            tile_image,
            deepest_of(taps.iter().copied())?,
            &taps,
            run.keep,
        )?;
        let map = |layer: Layer| {
            acts.get(layer)
                .ok_or_else(|| Error::invalid("layers", format!("{layer} not computed")))
        };
        let content_maps = content
            .iter()
            .map(|&l| map(l).cloned())
            .collect::<Result<_>>()?;
        let gram_sums = style
            .iter()
            .map(|&(l, core)| core_gram_sum(map(l)?, core))
            .collect::<Result<_>>()?;
        Ok(TileForward {
            content_maps,
            gram_sums,
            state: run.keep.then_some(acts),
        })
    }

    fn backward(
        &self,
        acts: Activations,
        cores: &[Window],
        terms: &[TapTerm],
        _run: TileRun,
    ) -> Result<Tensor> {
        let tap_grads = terms
            .iter()
            .zip(cores)
            .map(|(term, &core)| {
                let features = acts.get(term.layer()).ok_or_else(|| {
                    Error::invalid("layers", format!("{} not computed", term.layer()))
                })?;
                Ok((term.layer(), term.gradient(features, core)?))
            })
            .collect::<Result<Vec<_>>>()?;
        self.net.backward(&acts, &tap_grads)
    }
}

impl<P: TilePasses> Evaluate for TiledObjective<P> {
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
        let plan = TilePlan::whole(scale.content.height, scale.content.width);
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
                kept_states: job.kept_states,
            })
        })
    }

    /// Content targets (the frame's feature maps, computed tile by tile under `plan`) and
    /// style targets (the Grams, on the device).
    fn targets(
        &self,
        job: &OptimiseJob,
        scale: &ScaleTargets,
        plan: &TilePlan,
        placement: &Placement<'_>,
    ) -> Result<(Vec<LayerTarget>, Vec<LayerTarget>)> {
        let p = placement.upload(&scale.content)?;
        let content_taps: Vec<_> = job.content_layers.iter().map(|(l, _)| *l).collect();
        let maps = if content_taps.is_empty() {
            Vec::new()
        } else {
            let passes = CandlePasses { net: &self.net };
            frame_features(&passes, &p, plan, &content_taps)?
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

    fn footprint(&self) -> super::footprint::Footprint {
        super::footprint::Footprint::CANDLE_CPU
    }

    fn optimise(&self, job: &OptimiseJob, progress: &mut ProgressSink<'_>) -> Result<Optimised> {
        let placement = self.placement();
        driver::optimise(job, progress, &placement, |scale| {
            self.evaluator_on(job, scale, &placement)
        })
    }
}
