//! The temporal term of a sequence frame (Ruder, Dosovitskiy and Brox, 2016): the image is
//! pulled towards the previous stylised frame warped along the motion, on the pixels the
//! motion can vouch for. `L_t = 1/D · Σ c·(x − w)²` over the image's D elements, with `w` the
//! warped previous frame and `c` the per-pixel certainty (0 where occluded, outside the
//! previous frame or inconsistent; 1 elsewhere); it enters the total as `weight · L_t`.
//! The term reads pixels only, so it wraps any engine's objective, whole or tiled, and adds
//! its exact gradient `2·weight/D · c·(x − w)`.

use candle_core::{DType, Tensor};

use super::LossBreakdown;
use super::objective::{Evaluate, Placement};
use crate::error::{Error, Result};
use crate::model::InputImage;

/// What a frame's image is held to: the warped previous frame, in the input convention, and
/// how certain each pixel's motion is.
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalTarget {
    pub warped: InputImage,
    /// One value in [0, 1] per pixel, row-major, `warped.height * warped.width` of them.
    pub certainty: Vec<f32>,
    /// The term's weight in the total loss.
    pub weight: f64,
}

impl TemporalTarget {
    /// Checks the target's parts agree with each other and with a `height` x `width` scale.
    pub fn check(&self, height: usize, width: usize) -> Result<()> {
        let (h, w) = (self.warped.height, self.warped.width);
        if (h, w) != (height, width) {
            return Err(Error::invalid(
                "temporal",
                format!("the warped frame is {w}x{h}, the scale {width}x{height}"),
            ));
        }
        if self.certainty.len() != h * w {
            return Err(Error::invalid(
                "temporal",
                format!("{} certainties for {w}x{h} pixels", self.certainty.len()),
            ));
        }
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(Error::invalid(
                "temporal_weight",
                format!("{} must be finite and >= 0", self.weight),
            ));
        }
        Ok(())
    }
}

/// An objective with the temporal term added.
struct WithTemporal<'o> {
    inner: Box<dyn Evaluate + 'o>,
    warped: Tensor,
    /// The certainty, one plane broadcast over the channels.
    certainty: Tensor,
    weight: f64,
}

impl WithTemporal<'_> {
    fn add(
        &self,
        (mut losses, grad): (LossBreakdown, Tensor),
        x: &Tensor,
    ) -> Result<(LossBreakdown, Tensor)> {
        let difference = (x - &self.warped)?;
        let weighted = difference.broadcast_mul(&self.certainty)?;
        let elements = x.elem_count() as f64;
        let sum = (weighted.to_dtype(DType::F64)? * difference.to_dtype(DType::F64)?)?
            .sum_all()?
            .to_scalar::<f64>()?;
        losses.temporal = sum / elements;
        losses.total += self.weight * losses.temporal;
        let grad = (grad + (weighted * (2.0 * self.weight / elements))?)?;
        Ok((losses, grad))
    }
}

impl Evaluate for WithTemporal<'_> {
    fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        self.add(self.inner.evaluate(x)?, x)
    }

    fn evaluate_and_release(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        self.add(self.inner.evaluate_and_release(x)?, x)
    }
}

/// `objective` with `target`'s term added, or unchanged when there is no target.
pub fn attach<'o>(
    objective: Box<dyn Evaluate + 'o>,
    target: Option<&TemporalTarget>,
    placement: &Placement<'_>,
    (height, width): (usize, usize),
) -> Result<Box<dyn Evaluate + 'o>> {
    let Some(target) = target else {
        return Ok(objective);
    };
    target.check(height, width)?;
    let certainty = Tensor::from_slice(&target.certainty, (1, 1, height, width), placement.device)?
        .to_dtype(placement.dtype)?;
    Ok(Box::new(WithTemporal {
        inner: objective,
        warped: placement.upload(&target.warped)?,
        certainty,
        weight: target.weight,
    }))
}
