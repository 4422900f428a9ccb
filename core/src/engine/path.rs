//! An evaluated point of the objective and the path a line search walks from it (projected
//! onto the pixel box when there is one): what the optimisers and the strong-Wolfe search
//! share.

use candle_core::Tensor;

use super::LossBreakdown;
use super::bounds::PixelBox;
use super::vector::{self, buffer_like, dot};
use crate::error::Result;

/// An evaluated point.
#[derive(Debug, Clone)]
pub struct Point {
    pub x: Tensor,
    pub losses: LossBreakdown,
    pub grad: Tensor,
}

/// Loss and gradient at a point.
pub type Objective<'a> = dyn FnMut(&Tensor) -> Result<(LossBreakdown, Tensor)> + 'a;

/// The point `x` with its loss and gradient.
pub fn evaluated(x: Tensor, evaluate: &mut Objective<'_>) -> Result<Point> {
    let (losses, grad) = evaluate(&x)?;
    Ok(Point { x, losses, grad })
}

/// Points along a direction from a point, projected onto the box when there is one.
pub struct Path<'a> {
    pub from: &'a Tensor,
    pub direction: &'a Tensor,
    pub bounds: Option<&'a PixelBox>,
}

impl Path<'_> {
    /// The point at step `t`, evaluated, and the slope of the loss along the path there
    /// (the gradient against the direction, on the coordinates still inside the box).
    pub fn evaluate_at(&self, t: f64, evaluate: &mut Objective<'_>) -> Result<(Point, f64)> {
        let mut x = buffer_like(self.from)?;
        vector::set_along_path(&mut x, self.bounds, self.from, t, self.direction)?;
        let point = evaluated(x, evaluate)?;
        let slope = match self.bounds {
            Some(bounds) => vector::dot_inside(&point.grad, self.direction, &point.x, bounds)?,
            None => dot(&point.grad, self.direction)?,
        };
        Ok((point, slope))
    }
}
