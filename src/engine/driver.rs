//! The optimisation loop shared by every engine: scales, initialisation, upsampling between
//! scales, the optimiser, progress and cancellation. An engine supplies only the objective
//! (loss and gradient) for each scale.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::optim::{Adam, Lbfgs, Optimizer};
use super::{
    Init, LossBreakdown, OptimiseJob, Optimised, OptimizerKind, Progress, ProgressSink,
    ScaleTargets,
};
use crate::error::{Error, Result};
use crate::image_io::resize_input;
use crate::model::{InputConvention, InputImage};

/// Loss and gradient at a point, for one scale's targets.
pub trait Evaluate {
    fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)>;

    /// `evaluate`, then hand back working memory kept for the next evaluation (called on a
    /// scale's last iteration, so an idle server does not hold its largest job's buffers).
    fn evaluate_and_release(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        self.evaluate(x)
    }
}

/// Where the image lives while it is optimised.
pub struct Placement<'a> {
    pub device: &'a Device,
    pub dtype: DType,
    pub convention: &'a InputConvention,
}

impl Placement<'_> {
    pub fn upload(&self, image: &InputImage) -> Result<Tensor> {
        Ok(Tensor::from_slice(&image.data, image.shape(), self.device)?.to_dtype(self.dtype)?)
    }

    pub fn download(&self, x: &Tensor) -> Result<InputImage> {
        let (_, _, height, width) = x.dims4()?;
        let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(InputImage {
            height,
            width,
            data,
        })
    }

    fn initial(&self, init: &Init, content: &InputImage) -> InputImage {
        match init {
            Init::Content => content.clone(),
            Init::Image(image) => resize_input(image, content.height, content.width),
            Init::Noise { seed, levels } => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(*seed);
                let plane = content.height * content.width;
                let c = self.convention;
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
        }
    }
}

/// Runs `job`, asking `objective_for` for each scale's objective.
pub fn optimise<'o>(
    job: &OptimiseJob,
    progress: &mut ProgressSink<'_>,
    placement: &Placement<'_>,
    mut objective_for: impl FnMut(&ScaleTargets) -> Result<Box<dyn Evaluate + 'o>>,
) -> Result<Optimised> {
    let start = Instant::now();
    let total = job.total_iterations();
    let mut iteration: usize = 0;
    let mut current: Option<InputImage> = None;
    let mut last_losses = None;
    for (scale_index, scale) in job.scales.iter().enumerate() {
        let content = &scale.content;
        let start_image = match current.take() {
            None => placement.initial(&job.init, content),
            Some(previous) => resize_input(&previous, content.height, content.width),
        };
        let mut x = placement.upload(&start_image)?;
        let objective = objective_for(scale)?;
        let mut optimizer: Box<dyn Optimizer> = match job.optimizer {
            OptimizerKind::Adam { lr } => Box::new(Adam::new(lr)),
            OptimizerKind::Lbfgs { history } => Box::new(Lbfgs::new(1.0, history)),
        };
        for step in 0..scale.iterations {
            let (losses, grad) = if step + 1 == scale.iterations {
                objective.evaluate_and_release(&x)?
            } else {
                objective.evaluate(&x)?
            };
            if !losses.is_finite() {
                return Err(Error::NonFinite(format!(
                    "loss is {} at iteration {}",
                    losses.total,
                    iteration + 1
                )));
            }
            // A finite loss can still come with an overflowed gradient (huge loss weights
            // in float32); stepping along it would stream a garbage image.
            let grad_sum = grad.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !grad_sum.is_finite() {
                return Err(Error::NonFinite(format!(
                    "the gradient is not finite at iteration {} (loss {:e})",
                    iteration + 1,
                    losses.total
                )));
            }
            iteration += 1;
            let preview = if job.preview_every > 0 && iteration.is_multiple_of(job.preview_every) {
                Some(placement.download(&x)?)
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
        current = Some(placement.download(&x)?);
    }
    let image = current.ok_or_else(|| Error::invalid("scales", "no scale to optimise"))?;
    Ok(Optimised {
        image,
        losses: last_losses.unwrap_or_default(),
        iterations: iteration,
    })
}
