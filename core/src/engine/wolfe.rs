//! The strong-Wolfe line search of `torch.optim.LBFGS(line_search_fn="strong_wolfe")`:
//! bracketing by safeguarded cubic interpolation, then zooming, until a step satisfies
//! sufficient decrease (`f(t) <= f(0) + c1 t f'(0)`) and curvature (`|f'(t)| <= c2 |f'(0)|`),
//! or the evaluations run out (25), in which case the best point bracketed is taken. Only
//! the accepted point leaves this module.

use super::path::{Objective, Path, Point};
use super::vector::max_abs;
use crate::error::Result;

const C1: f64 = 1e-4;
const C2: f64 = 0.9;
const TOLERANCE_CHANGE: f64 = 1e-9;
const MAX_EVALUATIONS: usize = 25;

/// A trial step with its evaluation.
#[derive(Clone)]
struct Trial {
    t: f64,
    point: Option<Point>,
    f: f64,
    slope: f64,
}

/// The minimiser of the cubic through `(x1, f1, g1)` and `(x2, f2, g2)`, kept within
/// `bounds` (default: between the two points); their midpoint if the cubic has none.
fn cubic_minimum(a: &Trial, b: &Trial, bounds: Option<(f64, f64)>) -> f64 {
    let (lo, hi) = bounds.unwrap_or((a.t.min(b.t), a.t.max(b.t)));
    let d1 = a.slope + b.slope - 3.0 * (a.f - b.f) / (a.t - b.t);
    let d2_square = d1 * d1 - a.slope * b.slope;
    if d2_square < 0.0 {
        return (lo + hi) / 2.0;
    }
    let d2 = d2_square.sqrt();
    let minimum = if a.t <= b.t {
        b.t - (b.t - a.t) * ((b.slope + d2 - d1) / (b.slope - a.slope + 2.0 * d2))
    } else {
        a.t - (a.t - b.t) * ((a.slope + d2 - d1) / (a.slope - b.slope + 2.0 * d2))
    };
    minimum.max(lo).min(hi)
}

/// Searches `path` from `at` (slope `gtd` < 0 there), starting with step `t`; returns the
/// accepted point and its step.
pub fn search(
    path: &Path<'_>,
    at: &Point,
    gtd: f64,
    t: f64,
    evaluate: &mut Objective<'_>,
) -> Result<(Point, f64)> {
    let f0 = at.losses.total;
    let d_norm = max_abs(path.direction)?;
    let mut try_step = |t: f64| -> Result<Trial> {
        let (point, slope) = path.evaluate_at(t, evaluate)?;
        let f = point.losses.total;
        Ok(Trial {
            t,
            point: Some(point),
            f: if f.is_finite() { f } else { f64::INFINITY },
            slope: if slope.is_finite() {
                slope
            } else {
                f64::INFINITY
            },
        })
    };
    let start = Trial {
        t: 0.0,
        point: Some(at.clone()),
        f: f0,
        slope: gtd,
    };
    let mut previous = start.clone();
    let mut current = try_step(t)?;
    let mut evaluations = 1;
    let sufficient = |trial: &Trial| trial.f <= f0 + C1 * trial.t * gtd;
    let curved = |trial: &Trial| trial.slope.abs() <= -C2 * gtd;

    // Bracketing: grow the step until an interval holds an acceptable one.
    let mut bracket: [Trial; 2];
    let mut done = false;
    loop {
        if !sufficient(&current) || (evaluations > 2 && current.f >= previous.f) {
            bracket = [previous, current];
            break;
        }
        if curved(&current) {
            bracket = [current.clone(), current];
            done = true;
            break;
        }
        if current.slope >= 0.0 {
            bracket = [previous, current];
            break;
        }
        if evaluations == MAX_EVALUATIONS {
            bracket = [start.clone(), current];
            break;
        }
        let (min_step, max_step) = (
            current.t + 0.01 * (current.t - previous.t),
            current.t * 10.0,
        );
        let next = cubic_minimum(&previous, &current, Some((min_step, max_step)));
        previous = current;
        current = try_step(next)?;
        evaluations += 1;
    }

    // Zoom: shrink the bracket onto an acceptable step.
    let mut low = usize::from(bracket[0].f > bracket[1].f);
    let mut insufficient_progress = false;
    while !done && evaluations < MAX_EVALUATIONS {
        let (a, b) = (&bracket[0], &bracket[1]);
        if (b.t - a.t).abs() * d_norm < TOLERANCE_CHANGE {
            break;
        }
        let (lo, hi) = (a.t.min(b.t), a.t.max(b.t));
        let mut t = cubic_minimum(a, b, None);
        let eps = 0.1 * (hi - lo);
        if (hi - t).min(t - lo) < eps {
            if insufficient_progress || t >= hi || t <= lo {
                t = if (t - hi).abs() < (t - lo).abs() {
                    hi - eps
                } else {
                    lo + eps
                };
                insufficient_progress = false;
            } else {
                insufficient_progress = true;
            }
        } else {
            insufficient_progress = false;
        }
        let trial = try_step(t)?;
        evaluations += 1;
        let high = 1 - low;
        if !sufficient(&trial) || trial.f >= bracket[low].f {
            bracket[high] = trial;
        } else {
            if curved(&trial) {
                done = true;
            } else if trial.slope * (bracket[high].t - bracket[low].t) >= 0.0 {
                bracket[high] = bracket[low].clone();
            }
            bracket[low] = trial;
        }
        low = usize::from(bracket[0].f > bracket[1].f);
    }
    let [first, second] = bracket;
    let best = if low == 0 { first } else { second };
    tracing::debug!(evaluations, initial = t, accepted = best.t, "line search");
    let t = best.t;
    // A bracket whose best end is the start point gives no step: the start is kept.
    let point = best.point.unwrap_or_else(|| at.clone());
    Ok((point, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LossBreakdown;
    use candle_core::{Device, Tensor};

    /// f(x) = sum(w_i (x_i - c_i)^2 + 0.1 x_i^4): smooth, convex, not quadratic.
    fn objective(x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        let values = x.to_vec1::<f64>()?;
        let weights = [1.0, 10.0, 0.5];
        let centre = [3.0, -1.0, 2.0];
        let mut total = 0.0;
        let mut grad = Vec::new();
        for i in 0..3 {
            let r = values[i] - centre[i];
            total += weights[i] * r * r + 0.1 * values[i].powi(4);
            grad.push(2.0 * weights[i] * r + 0.4 * values[i].powi(3));
        }
        let losses = LossBreakdown {
            total,
            ..Default::default()
        };
        Ok((losses, Tensor::new(grad.as_slice(), x.device())?))
    }

    #[test]
    fn accepted_steps_satisfy_both_strong_wolfe_conditions() {
        let x = Tensor::new(&[0.0f64, 0.0, 0.0], &Device::Cpu).unwrap();
        let (losses, grad) = objective(&x).unwrap();
        let at = Point {
            x: x.clone(),
            losses,
            grad: grad.clone(),
        };
        let direction = grad.neg().unwrap();
        let gtd = crate::engine::optim::dot(&grad, &direction).unwrap();
        let path = Path {
            from: &x,
            direction: &direction,
            bounds: None,
        };
        // From a tiny step (bracketing grows it) and from a huge one (zoom shrinks it).
        for initial in [1e-4, 1.0, 100.0] {
            let mut evaluate = |x: &Tensor| objective(x);
            let (point, t) = search(&path, &at, gtd, initial, &mut evaluate).unwrap();
            let slope = crate::engine::optim::dot(&point.grad, &direction).unwrap();
            assert!(t > 0.0, "{initial}: no step");
            assert!(
                point.losses.total <= at.losses.total + C1 * t * gtd,
                "{initial}: sufficient decrease fails at t = {t}"
            );
            assert!(
                slope.abs() <= -C2 * gtd,
                "{initial}: curvature fails at t = {t}"
            );
        }
    }

    #[test]
    fn the_cubic_minimum_of_a_quadratic_is_exact() {
        // f(t) = (t - 2)^2: f(0) = 4, f'(0) = -4; f(3) = 1, f'(3) = 2.
        let a = Trial {
            t: 0.0,
            point: None,
            f: 4.0,
            slope: -4.0,
        };
        let b = Trial {
            t: 3.0,
            point: None,
            f: 1.0,
            slope: 2.0,
        };
        assert!((cubic_minimum(&a, &b, None) - 2.0).abs() < 1e-12);
        assert!((cubic_minimum(&b, &a, None) - 2.0).abs() < 1e-12);
        assert_eq!(cubic_minimum(&a, &b, Some((2.5, 10.0))), 2.5);
    }
}
