//! The candle `Engine`: runs the optimisation loop on one device, scale by scale, keeping
//! the image and optimiser state on the device between iterations (only loss scalars come
//! back each iteration).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::loss::{LayerTarget, Objective};
use super::optim::{Adam, Lbfgs, Optimizer};
use super::vgg::{Pooling, VggNet};
use super::{Engine, Init, OptimiseJob, Optimised, OptimizerKind, Progress, ProgressSink};
use crate::error::{Error, Result};
use crate::features::candle::{device_name, upload};
use crate::features::{CandleFeatures, Gram};
use crate::image_io::resize_input;
use crate::model::{InputConvention, InputImage, Vgg19Weights};

pub struct CandleEngine {
    net: Arc<VggNet>,
    convention: InputConvention,
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

    fn initial(&self, init: &Init, content: &InputImage) -> Result<InputImage> {
        Ok(match init {
            Init::Content => content.clone(),
            Init::Image(image) => resize_input(image, content.height, content.width),
            Init::Noise { seed, levels } => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(*seed);
                let plane = content.height * content.width;
                let c = &self.convention;
                let data = (0..3 * plane)
                    .map(|i| {
                        let n: f32 = StandardNormal.sample(&mut rng);
                        n * levels * c.pixel_range / 255.0 / c.std[i / plane]
                    })
                    .collect();
                InputImage {
                    data,
                    ..content.clone()
                }
            }
        })
    }

    fn download(&self, x: &Tensor) -> Result<InputImage> {
        let (_, _, height, width) = x.dims4()?;
        let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(InputImage {
            height,
            width,
            data,
        })
    }

    fn gram_tensor(&self, gram: &Gram) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &gram.data,
            (gram.channels, gram.channels),
            self.net.device(),
        )?
        .to_dtype(self.net.dtype())?)
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
        let start = Instant::now();
        let total = job.total_iterations();
        let mut iteration: usize = 0;
        let mut current: Option<InputImage> = None;
        let mut last_losses = None;
        for (scale_index, scale) in job.scales.iter().enumerate() {
            let content = &scale.content;
            let start_image = match current.take() {
                None => self.initial(&job.init, content)?,
                Some(previous) => resize_input(&previous, content.height, content.width),
            };
            let mut x = upload(&start_image, &self.net)?;
            let p = upload(content, &self.net)?;
            let content_taps: Vec<_> = job.content_layers.iter().map(|(l, _)| *l).collect();
            let mut content_targets = Vec::new();
            if let Some(&deepest) = content_taps.iter().max() {
                let acts = self.net.forward(&p, deepest, &content_taps, false)?;
                for &(layer, weight) in &job.content_layers {
                    let target = acts
                        .get(layer)
                        .ok_or_else(|| {
                            Error::invalid("content_layers", format!("{layer} not computed"))
                        })?
                        .clone();
                    content_targets.push(LayerTarget {
                        layer,
                        weight,
                        target,
                    });
                }
            }
            let style_targets = scale
                .style
                .iter()
                .map(|(layer, weight, gram)| {
                    Ok(LayerTarget {
                        layer: *layer,
                        weight: *weight,
                        target: self.gram_tensor(gram)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let objective = Objective {
                net: &self.net,
                content: content_targets,
                style: style_targets,
                weights: job.weights,
            };
            let mut optimizer: Box<dyn Optimizer> = match job.optimizer {
                OptimizerKind::Adam { lr } => Box::new(Adam::new(lr)),
                OptimizerKind::Lbfgs { history } => Box::new(Lbfgs::new(1.0, history)),
            };
            for _ in 0..scale.iterations {
                let (losses, grad) = objective.evaluate(&x)?;
                if !losses.is_finite() {
                    return Err(Error::NonFinite(format!(
                        "loss is {} at iteration {}",
                        losses.total,
                        iteration + 1
                    )));
                }
                iteration += 1;
                let preview =
                    if job.preview_every > 0 && iteration.is_multiple_of(job.preview_every) {
                        Some(self.download(&x)?)
                    } else {
                        None
                    };
                let report = Progress {
                    iteration,
                    total,
                    scale: scale_index,
                    losses: losses.clone(),
                    elapsed: start.elapsed(),
                    preview,
                };
                last_losses = Some(losses);
                if let ControlFlow::Break(()) = progress(&report) {
                    return Err(Error::Cancelled);
                }
                match optimizer.step(&x, &grad)? {
                    Some(next) => x = next,
                    None => break,
                }
            }
            current = Some(self.download(&x)?);
        }
        let image = current.ok_or_else(|| Error::invalid("scales", "no scale to optimise"))?;
        Ok(Optimised {
            image,
            losses: last_losses.unwrap_or_default(),
            iterations: iteration,
        })
    }
}
