//! Gradient-based optimisers over a candle tensor, with PyTorch's semantics: Adam, and
//! L-BFGS with a fixed step or a strong-Wolfe line search; both optionally kept inside the
//! pixel box (projected steps; L-BFGS's two-loop on the coordinates no bound holds). An
//! iteration evaluates the objective as often as its method needs and returns the accepted
//! point with its loss and gradient, so what is reported is always a point that was
//! evaluated. State tensors are plain (never `Var`s), so no autograd graph is kept alive,
//! and are buffers the optimiser owns and updates in place (`vector`): once the history is
//! full an iteration allocates only the points it evaluates.

use std::collections::VecDeque;

use candle_core::Tensor;

use super::bounds::PixelBox;
use super::vector::{self, buffer_like};
use crate::error::Result;

use super::path::evaluated;
pub use super::path::{Objective, Path, Point};
pub use super::vector::{dot, max_abs};

/// One iteration from an evaluated point: the accepted next point, or `None` when the method
/// has stopped (no descent direction is left).
pub trait Optimizer: Send {
    fn iterate(&mut self, at: &Point, evaluate: &mut Objective<'_>) -> Result<Option<Point>>;
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

    /// The next point from `x` and its gradient (PyTorch's `step`), unprojected. The
    /// moments are updated in place.
    pub fn update(&mut self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        self.steps += 1;
        let (mut m, mut v) = match self.moments.take() {
            Some(moments) => moments,
            None => (buffer_like(grad)?, buffer_like(grad)?),
        };
        // m.lerp_(g, 1 - beta1), as PyTorch writes it.
        vector::lerp(&mut m, 1.0 - self.beta1, grad)?;
        vector::decay_square(&mut v, self.beta2, 1.0 - self.beta2, grad)?;
        let bias1 = 1.0 - self.beta1.powi(self.steps);
        let bias2 = 1.0 - self.beta2.powi(self.steps);
        let mut next = x.copy()?;
        vector::adam_step(&mut next, &m, &v, self.lr / bias1, bias2.sqrt(), self.eps)?;
        self.moments = Some((m, v));
        Ok(next)
    }
}

impl Optimizer for Adam {
    fn iterate(&mut self, at: &Point, evaluate: &mut Objective<'_>) -> Result<Option<Point>> {
        let mut next = self.update(&at.x, &at.grad)?;
        if let Some(bounds) = &self.bounds {
            vector::project(&mut next, bounds)?;
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
    /// Curvature pairs, oldest first.
    pairs: VecDeque<Pair>,
    /// Buffers of dropped pairs, reused for new ones.
    spare: Vec<Tensor>,
    /// The search direction's buffer.
    direction: Option<Tensor>,
    /// The two-loop's coefficients, one per pair.
    alphas: Vec<f64>,
    h_diag: f64,
    /// The previous step taken (a buffer of ours), and the gradient it was taken from.
    previous: Option<(Tensor, Tensor)>,
    diagnostics: Vec<PairDiagnostic>,
    line_search: LineSearch,
    bounds: Option<PixelBox>,
}

/// A curvature pair: step s, gradient change y, and 1 / y.s.
struct Pair {
    s: Tensor,
    y: Tensor,
    rho: f64,
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
            spare: Vec::new(),
            direction: None,
            alphas: Vec::new(),
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

    /// A buffer shaped like `like`: a dropped pair's, else a new one.
    fn buffer(&mut self, like: &Tensor) -> Result<Tensor> {
        match self.spare.pop() {
            Some(buffer) => Ok(buffer),
            None => buffer_like(like),
        }
    }

    /// Turns the previous step and the gradient change since into a curvature pair, kept
    /// when `y.s > 1e-10` (PyTorch's rule).
    fn record_pair(&mut self, s: Tensor, previous_grad: &Tensor, grad: &Tensor) -> Result<()> {
        let mut y = self.buffer(grad)?;
        vector::set_difference(&mut y, grad, previous_grad)?;
        let ys = dot(&y, &s)?;
        let kept = ys > 1e-10;
        self.diagnostics.push(PairDiagnostic { s_dot_y: ys, kept });
        if !kept {
            self.spare.extend([s, y]);
            return Ok(());
        }
        if self.pairs.len() == self.history
            && let Some(oldest) = self.pairs.pop_front()
        {
            self.spare.extend([oldest.s, oldest.y]);
        }
        self.h_diag = ys / dot(&y, &y)?;
        self.pairs.push_back(Pair {
            s,
            y,
            rho: 1.0 / ys,
        });
        Ok(())
    }

    /// Writes into `d` the search direction at `at` (restricted to the coordinates no
    /// bound holds) and returns the initial step length.
    fn direction(&mut self, at: &Point, d: &mut Tensor) -> Result<f64> {
        match &self.bounds {
            Some(bounds) => vector::set_free(d, bounds, -1.0, &at.x, &at.grad)?,
            None => vector::set_scaled(d, -1.0, &at.grad)?,
        }
        let Some((s, previous_grad)) = self.previous.take() else {
            // First iteration: steepest descent, step scaled by min(1, 1/sum|g|).
            return Ok((1.0f64).min(1.0 / vector::abs_sum(d)?) * self.lr);
        };
        self.record_pair(s, &previous_grad, &at.grad)?;
        self.alphas.resize(self.pairs.len(), 0.0);
        for (i, pair) in self.pairs.iter().enumerate().rev() {
            self.alphas[i] = dot(&pair.s, d)? * pair.rho;
            vector::axpy(d, -self.alphas[i], &pair.y)?;
        }
        vector::scale(d, self.h_diag)?;
        for (i, pair) in self.pairs.iter().enumerate() {
            let beta = dot(&pair.y, d)? * pair.rho;
            vector::axpy(d, self.alphas[i] - beta, &pair.s)?;
        }
        if let Some(bounds) = &self.bounds {
            vector::zero_held(d, bounds, &at.x, &at.grad)?;
        }
        Ok(self.lr)
    }
}

impl Optimizer for Lbfgs {
    fn iterate(&mut self, at: &Point, evaluate: &mut Objective<'_>) -> Result<Option<Point>> {
        let first = self.previous.is_none();
        let mut d = match self.direction.take() {
            Some(d) => d,
            None => buffer_like(&at.grad)?,
        };
        let mut t = self.direction(at, &mut d)?;
        let gtd = dot(&at.grad, &d)?;
        if gtd > -self.tolerance_change {
            self.direction = Some(d);
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
        let mut step = self.buffer(&at.x)?;
        match self.bounds {
            None => vector::set_scaled(&mut step, t, &d)?,
            Some(_) => vector::set_difference(&mut step, &next.x, &at.x)?,
        }
        self.previous = Some((step, at.grad.clone()));
        self.direction = Some(d);
        Ok(Some(next))
    }
}
