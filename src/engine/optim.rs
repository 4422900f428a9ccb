//! Gradient-based optimisers over a candle tensor, with PyTorch's semantics, in ask/tell
//! form: the caller evaluates loss and gradient at `x`, the optimiser returns the next `x`.
//! State tensors are plain (never `Var`s), so no autograd graph is kept alive.

use std::collections::VecDeque;

use candle_core::{DType, Tensor};

use crate::error::Result;

/// One optimiser step: the next point, or `None` when the method has stopped
/// (L-BFGS found no descent direction).
pub trait Optimizer: Send {
    fn step(&mut self, x: &Tensor, grad: &Tensor) -> Result<Option<Tensor>>;
}

fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok((a * b)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
}

/// `torch.optim.Adam` without weight decay: bias-corrected moments.
pub struct Adam {
    lr: f64,
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
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, x: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
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
        Ok(Some(next))
    }
}

/// `torch.optim.LBFGS` with `line_search_fn=None` and fixed step `lr`.
pub struct Lbfgs {
    lr: f64,
    history: usize,
    tolerance_change: f64,
    /// Curvature pairs (s, y, 1 / y.s), oldest first.
    pairs: VecDeque<(Tensor, Tensor, f64)>,
    h_diag: f64,
    /// Previous direction and step length, and the gradient they were taken from.
    previous: Option<(Tensor, f64, Tensor)>,
    diagnostics: Vec<PairDiagnostic>,
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
        }
    }

    pub fn diagnostics(&self) -> &[PairDiagnostic] {
        &self.diagnostics
    }

    fn direction(&mut self, grad: &Tensor) -> Result<(Tensor, f64)> {
        let Some((d, t, prev_grad)) = self.previous.take() else {
            // First iteration: steepest descent, step scaled by min(1, 1/sum|g|).
            let abs_sum = grad
                .abs()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            return Ok((grad.neg()?, (1.0f64).min(1.0 / abs_sum) * self.lr));
        };
        let y = (grad - &prev_grad)?;
        let s = (d * t)?;
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
        let mut q = grad.neg()?;
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
        Ok((r, self.lr))
    }
}

impl Optimizer for Lbfgs {
    fn step(&mut self, x: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (d, t) = self.direction(grad)?;
        let gtd = dot(grad, &d)?;
        if gtd > -self.tolerance_change {
            return Ok(None);
        }
        let next = (x + (&d * t)?)?;
        self.previous = Some((d, t, grad.clone()));
        Ok(Some(next))
    }
}
