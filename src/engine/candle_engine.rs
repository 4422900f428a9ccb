//! The candle `Engine`: the shared optimisation loop over candle's VGG19 and hand-written
//! backward pass, on one device; the image and optimiser state stay on the device between
//! iterations (only loss scalars come back each iteration).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::driver::{self, Evaluate, Placement};
use super::loss::{LayerTarget, Objective};
use super::vgg::{Pooling, VggNet};
use super::{Engine, LossBreakdown, OptimiseJob, Optimised, ProgressSink, ScaleTargets};
use crate::error::{Error, Result};
use crate::features::CandleFeatures;
use crate::features::candle::device_name;
use crate::model::{InputConvention, Vgg19Weights};

pub struct CandleEngine {
    net: Arc<VggNet>,
    convention: InputConvention,
}

impl Evaluate for Objective<'_> {
    fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        Objective::evaluate(self, x)
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

    /// The loss-and-gradient evaluator for one scale of `job` (as the optimisation uses it).
    pub fn objective(&self, job: &OptimiseJob, scale: &ScaleTargets) -> Result<Objective<'_>> {
        self.scale_objective(job, scale, &self.placement())
    }

    fn scale_objective(
        &self,
        job: &OptimiseJob,
        scale: &ScaleTargets,
        placement: &Placement<'_>,
    ) -> Result<Objective<'_>> {
        let p = placement.upload(&scale.content)?;
        let content_taps: Vec<_> = job.content_layers.iter().map(|(l, _)| *l).collect();
        let mut content = Vec::new();
        if let Some(&deepest) = content_taps.iter().max() {
            let acts = self.net.forward(&p, deepest, &content_taps, false)?;
            for &(layer, weight) in &job.content_layers {
                let target = acts
                    .get(layer)
                    .ok_or_else(|| {
                        Error::invalid("content_layers", format!("{layer} not computed"))
                    })?
                    .clone();
                content.push(LayerTarget {
                    layer,
                    weight,
                    target,
                });
            }
        }
        let style = scale
            .style
            .iter()
            .map(|(layer, weight, gram)| {
                let target = Tensor::from_slice(
                    &gram.data,
                    (gram.channels, gram.channels),
                    self.net.device(),
                )?
                .to_dtype(self.net.dtype())?;
                Ok(LayerTarget {
                    layer: *layer,
                    weight: *weight,
                    target,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Objective {
            net: &self.net,
            content,
            style,
            weights: job.weights,
        })
    }
}

impl Engine for CandleEngine {
    fn name(&self) -> String {
        format!("candle-{}", device_name(self.net.device()))
    }

    fn convention(&self) -> &InputConvention {
        &self.convention
    }

    fn optimise(&self, job: &OptimiseJob, progress: &mut ProgressSink<'_>) -> Result<Optimised> {
        let placement = self.placement();
        driver::optimise(job, progress, &placement, |scale| {
            Ok(Box::new(self.scale_objective(job, scale, &placement)?) as Box<dyn Evaluate + '_>)
        })
    }
}
