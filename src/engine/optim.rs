//! Gradient-based optimisers over a candle tensor, with PyTorch's semantics: Adam, and
//! L-BFGS with a fixed step or a strong-Wolfe line search; both optionally kept inside the
//! pixel box (projected steps; L-BFGS's two-loop on the coordinates no bound holds). An
//! iteration evaluates the objective as often as its method needs and returns the accepted
//! point with its loss and gradient, so what is reported is always a point that was
//! evaluated. State tensors are plain (never `Var`s), so no autograd graph is kept alive.

use std::collections::VecDeque;

use candle_core::{DType, Tensor};

use super::LossBreakdown;
use super::bounds::PixelBox;
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

/// One iteration from an evaluated point: the accepted next point, or `None` when the method
/// has stopped (no descent direction is left).
pub trait Optimizer: Send {
    fn iterate(&mut self, at: &Point, evaluate: &mut Objective<'_>) -> Result<Option<Point>>;
}

fn evaluated(x: Tensor, evaluate: &mut Objective<'_>) -> Result<Point> {
    let (losses, grad) = evaluate(&x)?;
    Ok(Point { x, losses, grad })
}

/// The largest absolute value in `t`.
pub(super) fn max_abs(t: &Tensor) -> Result<f64> {
    Ok(t.abs()?
        .max_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

pub(super) fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok((a * b)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

/// `torch.optim.Adam` without weight decay: bias-corrected moments; with bounds, each step
/// is projected onto the box.
pub struct Adam {
    lr: f64,
    bounds: Option<PixelBox>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    steps: i32,
    moments: Option<(Tensor, Tensor)>,
}

impl Adam {
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            steps: 0,
            moments: None,
            bounds: None,
        }
    }

    /// Kept inside `bounds` (`None`: unbounded).
    pub fn within(mut self, bounds: Option<PixelBox>) -> Self {
        self.bounds = bounds;
        self
    }

    /// The next point from `x` and its gradient (PyTorch's `step`), unprojected.
    pub fn update(&mut self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        self.steps += 1;
        let (m, v) = match self.moments.take() {
            Some((m, v)) => (m, v),
            None => (grad.zeros_like()?, grad.zeros_like()?),
        };
        // m.lerp_(g, 1 - beta1), as PyTorch writes it.
        let m = (&m + ((grad - &m)? * (1.0 - self.beta1))?)?;
        let v = ((&v * self.beta2)? + (grad.sqr()? * (1.0 - self.beta2))?)?;
        let bias1 = 1.0 - self.beta1.powi(self.steps);
        let bias2 = 1.0 - self.beta2.powi(self.steps);
        let denom = ((v.sqrt()? / bias2.sqrt())? + self.eps)?;
        let next = (x - ((&m / denom)? * (self.lr / bias1))?)?;
        self.moments = Some((m, v));
        Ok(next)
    }
}

impl Optimizer for Adam {
    fn iterate(&mut self, at: &Point, evaluate: &mut Objective<'_>) -> Result<Option<Point>> {
        let mut next = self.update(&at.x, &at.grad)?;
        if let Some(bounds) = &self.bounds {
            next = bounds.project(&next)?;
        }
        evaluated(next, evaluate).map(Some)
    }
}

/// The first strong-Wolfe trial step inside the box moves the largest coordinate by this
/// share of the box's narrowest channel interval.
const FIRST_MOVE: f64 = 0.05;

/// How L-BFGS chooses its step along a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineSearch {
    /// The fixed step `lr` (PyTorch's `line_search_fn=None`, the contract's trajectory).
    Fixed,
    /// PyTorch's `line_search_fn="strong_wolfe"`: sufficient decrease and curvature.
    StrongWolfe,
}

/// `torch.optim.LBFGS`: fixed step `lr` or a strong-Wolfe line search; with bounds, the
/// two-loop runs on the coordinates no bound holds and steps are projected onto the box
/// (curvature pairs are the steps actually taken).
pub struct Lbfgs {
    lr: f64,
    history: usize,
    tolerance_change: f64,
    /// Curvature pairs (s, y, 1 / y.s), oldest first.
    pairs: VecDeque<(Tensor, Tensor, f64)>,
    h_diag: f64,
    /// The previous step taken, and the gradient it was taken from.
    previous: Option<(Tensor, Tensor)>,
    diagnostics: Vec<PairDiagnostic>,
    line_search: LineSearch,
    bounds: Option<PixelBox>,
}

/// What happened to each candidate curvature pair (kept when `y.s > 1e-10`).
#[derive(Debug, Clone, PartialEq)]
pub struct PairDiagnostic {
    pub s_dot_y: f64,
    pub kept: bool,
}

impl Lbfgs {
    /// The contract's settings: history 100, `tolerance_change = -1`.
    pub fn new(lr: f64, history: usize) -> Self {
        Self {
            lr,
            history: history.max(1),
            tolerance_change: -1.0,
            pairs: VecDeque::new(),
            h_diag: 1.0,
            previous: None,
            diagnostics: Vec::new(),
            line_search: LineSearch::Fixed,
            bounds: None,
        }
    }

    /// Steps chosen by `line_search`.
    pub fn searching(mut self, line_search: LineSearch) -> Self {
        self.line_search = line_search;
        self
    }

    /// Kept inside `bounds` (`None`: unbounded).
    pub fn within(mut self, bounds: Option<PixelBox>) -> Self {
        self.bounds = bounds;
        self
    }

    pub fn diagnostics(&self) -> &[PairDiagnostic] {
        &self.diagnostics
    }

    /// The search direction at a point with gradient `grad` (restricted to the coordinates
    /// where `free` is 1), and the initial step length.
    fn direction(&mut self, grad: &Tensor, free: Option<&Tensor>) -> Result<(Tensor, f64)> {
        let descent = match free {
            Some(free) => (grad * free)?,
            None => grad.clone(),
        };
        let Some((s, prev_grad)) = self.previous.take() else {
            // First iteration: steepest descent, step scaled by min(1, 1/sum|g|).
            let abs_sum = descent
                .abs()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            return Ok((descent.neg()?, (1.0f64).min(1.0 / abs_sum) * self.lr));
        };
        let y = (grad - &prev_grad)?;
        let ys = dot(&y, &s)?;
        let kept = ys > 1e-10;
        self.diagnostics.push(PairDiagnostic { s_dot_y: ys, kept });
        if kept {
            if self.pairs.len() == self.history {
                self.pairs.pop_front();
            }
            self.h_diag = ys / dot(&y, &y)?;
            self.pairs.push_back((s, y, 1.0 / ys));
        }
        let mut q = descent.neg()?;
        let mut alphas = vec![0.0; self.pairs.len()];
        for (i, (s, y, ro)) in self.pairs.iter().enumerate().rev() {
            alphas[i] = dot(s, &q)? * ro;
            q = (q - (y * alphas[i])?)?;
        }
        let mut r = (q * self.h_diag)?;
        for (i, (s, y, ro)) in self.pairs.iter().enumerate() {
            let beta = dot(y, &r)? * ro;
            r = (r + (s * (alphas[i] - beta))?)?;
        }
        if let Some(free) = free {
            r = (r * free)?;
        }
        Ok((r, self.lr))
    }
}

impl Optimizer for Lbfgs {
    fn iterate(&mut self, at: &Point, evaluate: &mut Objective<'_>) -> Result<Option<Point>> {
        let free = match &self.bounds {
            Some(bounds) => Some(bounds.free(&at.x, &at.grad)?),
            None => None,
        };
        let first = self.previous.is_none();
        let (d, mut t) = self.direction(&at.grad, free.as_ref())?;
        let gtd = dot(&at.grad, &d)?;
        if gtd > -self.tolerance_change {
            return Ok(None);
        }
        // PyTorch's first trial step, min(1, 1/sum|g|) lr, is about five decades short at
        // style-transfer loss scales, and the search spends ~6 evaluations growing it. Inside
        // the box the scale is known: the first trial moves the largest coordinate by a
        // twentieth of the box.
        if let (true, LineSearch::StrongWolfe, Some(bounds)) =
            (first, self.line_search, &self.bounds)
        {
            let largest = max_abs(&d)?;
            if largest > 0.0 {
                t = FIRST_MOVE * bounds.width() / largest;
            }
        }
        let path = Path {
            from: &at.x,
            direction: &d,
            bounds: self.bounds.as_ref(),
        };
        let (next, t) = match self.line_search {
            LineSearch::Fixed => (path.evaluate_at(t, evaluate)?.0, t),
            LineSearch::StrongWolfe => super::wolfe::search(&path, at, gtd, t, evaluate)?,
        };
        // The step actually taken: exactly `t d` without bounds (PyTorch's pair), the
        // projected difference with them.
        let step = match self.bounds {
            None => (&d * t)?,
            Some(_) => (&next.x - &at.x)?,
        };
        self.previous = Some((step, at.grad.clone()));
        Ok(Some(next))
    }
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
        let mut x = (self.from + (self.direction * t)?)?;
        let mut moving = self.direction.clone();
        if let Some(bounds) = self.bounds {
            x = bounds.project(&x)?;
            moving = (moving * bounds.inside(&x)?)?;
        }
        let point = evaluated(x, evaluate)?;
        let slope = dot(&point.grad, &moving)?;
        Ok((point, slope))
    }
}
