//! The optimisation loop shared by every engine: scales, initialisation, upsampling between
//! scales, the optimiser, progress and cancellation. An engine supplies only the objective
//! (loss and gradient) for each scale.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::objective::{Evaluate, Placement};
use super::optim::{Adam, Lbfgs, Optimizer, Point};
use super::{
    Init, LossBreakdown, OptimiseJob, Optimised, OptimizerKind, Progress, ProgressSink,
    ScaleTargets, StopReason, TOLERANCE_WINDOW,
};
use crate::error::{Error, Result};
use crate::image_io::resize_input;
use crate::model::InputImage;

impl Placement<'_> {
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

/// The loss of `image` under the job's last scale (the size the result is delivered at).
pub fn score<'o>(
    job: &OptimiseJob,
    placement: &Placement<'_>,
    image: &InputImage,
    objective_for: impl FnOnce(&ScaleTargets) -> Result<Box<dyn Evaluate + 'o>>,
) -> Result<LossBreakdown> {
    let scale = job
        .scales
        .last()
        .ok_or_else(|| Error::invalid("scales", "no scale to score against"))?;
    let objective = objective_for(scale)?;
    let objective = with_temporal(objective, job, placement, scale)?;
    Ok(objective.evaluate_and_release(&placement.upload(image)?)?.0)
}

/// `objective` with the job's temporal term, if it has one.
fn with_temporal<'o>(
    objective: Box<dyn Evaluate + 'o>,
    job: &OptimiseJob,
    placement: &Placement<'_>,
    scale: &ScaleTargets,
) -> Result<Box<dyn Evaluate + 'o>> {
    let size = (scale.content.height, scale.content.width);
    super::temporal::attach(objective, job.temporal.as_ref(), placement, size)
}

/// An accepted point must be finite: a finite loss can still come with an overflowed
/// gradient (huge loss weights in float32), and stepping along it would stream garbage.
fn check_finite(point: &Point, iteration: usize) -> Result<()> {
    if !point.losses.is_finite() {
        return Err(Error::NonFinite(format!(
            "loss is {} at iteration {iteration}",
            point.losses.total
        )));
    }
    if !super::vector::abs_sum(&point.grad)?.is_finite() {
        return Err(Error::NonFinite(format!(
            "the gradient is not finite at iteration {iteration} (loss {:e})",
            point.losses.total
        )));
    }
    Ok(())
}

/// Whether the loss fell by less than `tolerance` (relative) over the window.
fn settled(recent: &VecDeque<f64>, tolerance: Option<f64>) -> bool {
    let (Some(tolerance), Some(&first), Some(&last)) = (tolerance, recent.front(), recent.back())
    else {
        return false;
    };
    recent.len() > TOLERANCE_WINDOW && (first - last) <= tolerance * first.abs()
}

/// Runs `job`, asking `objective_for` for each scale's objective. Every reported point was
/// evaluated and accepted by the optimiser; the result is the last accepted point of the
/// last scale, with its losses.
pub fn optimise<'o>(
    job: &OptimiseJob,
    progress: &mut ProgressSink<'_>,
    placement: &Placement<'_>,
    mut objective_for: impl FnMut(&ScaleTargets) -> Result<Box<dyn Evaluate + 'o>>,
) -> Result<Optimised> {
    let start = Instant::now();
    let total = job.total_iterations();
    let mut iteration: usize = 0;
    let mut current: Option<(InputImage, LossBreakdown)> = None;
    let mut stopped = StopReason::Iterations;
    let evaluations = Cell::new(0);
    let evaluating = Cell::new(Duration::ZERO);
    let mut building = Duration::ZERO;
    let out_of_time = || job.stop.time_budget.is_some_and(|b| start.elapsed() >= b);
    let last_scale = job.scales.len().saturating_sub(1);
    for (scale_index, scale) in job.scales.iter().enumerate() {
        // Out of time: only the last scale's size is delivered, so the scales between are
        // skipped (no objective built, nothing evaluated).
        if stopped == StopReason::TimeBudget && scale_index != last_scale {
            continue;
        }
        let content = &scale.content;
        // A trace's span for each scale's optimisation.
        let _scale_span = tracing::debug_span!(
            "optimise_scale",
            scale = scale_index,
            width = content.width,
            height = content.height,
            iterations = scale.iterations
        )
        .entered();
        let start_image = match current.take() {
            None => placement.initial(&job.init, content),
            Some((previous, _)) => resize_input(&previous, content.height, content.width),
        };
        let mut x = placement.upload(&start_image)?;
        if let Some(bounds) = &job.bounds {
            super::vector::project(&mut x, bounds)?;
        }
        let started = Instant::now();
        let objective = with_temporal(objective_for(scale)?, job, placement, scale)?;
        building += started.elapsed();
        // A scale's last iteration hands back the objective's working memory.
        let releasing = Cell::new(scale.iterations <= 1);
        let mut evaluate = |x: &Tensor| {
            evaluations.set(evaluations.get() + 1);
            let started = Instant::now();
            let evaluated = if releasing.get() {
                objective.evaluate_and_release(x)
            } else {
                objective.evaluate(x)
            };
            evaluating.set(evaluating.get() + started.elapsed());
            evaluated
        };
        let (losses, grad) = evaluate(&x)?;
        let mut point = Point { x, losses, grad };
        check_finite(&point, iteration + 1)?;
        // Out of time before the last scale started: the image reached, at the full size.
        if stopped == StopReason::TimeBudget {
            current = Some((placement.download(&point.x)?, point.losses));
            continue;
        }
        let mut optimizer: Box<dyn Optimizer> = match job.optimizer {
            OptimizerKind::Adam { lr } => Box::new(Adam::new(lr).within(job.bounds)),
            OptimizerKind::Lbfgs { history } => Box::new(
                Lbfgs::new(1.0, history)
                    .searching(job.line_search)
                    .within(job.bounds),
            ),
        };
        let mut recent = VecDeque::from([point.losses.total]);
        for step in 0..scale.iterations {
            releasing.set(step + 1 == scale.iterations);
            match optimizer.iterate(&point, &mut evaluate)? {
                Some(next) => point = next,
                None => break,
            }
            iteration += 1;
            check_finite(&point, iteration)?;
            let preview = if job.preview_every > 0 && iteration.is_multiple_of(job.preview_every) {
                Some(placement.download(&point.x)?)
            } else {
                None
            };
            let report = Progress {
                iteration,
                total,
                scale: scale_index,
                losses: point.losses.clone(),
                elapsed: start.elapsed(),
                preview,
            };
            if let ControlFlow::Break(()) = progress(&report) {
                return Err(Error::Cancelled);
            }
            recent.push_back(point.losses.total);
            if recent.len() > TOLERANCE_WINDOW + 1 {
                recent.pop_front();
            }
            if out_of_time() {
                stopped = StopReason::TimeBudget;
                break;
            }
            if settled(&recent, job.stop.tolerance) {
                if scale_index == last_scale {
                    stopped = StopReason::Tolerance;
                }
                break;
            }
        }
        current = Some((placement.download(&point.x)?, point.losses));
    }
    let (image, losses) =
        current.ok_or_else(|| Error::invalid("scales", "no scale to optimise"))?;
    Ok(Optimised {
        image,
        losses,
        iterations: iteration,
        evaluations: evaluations.get(),
        evaluating: evaluating.get(),
        building,
        stopped,
    })
}
