//! The temporal term of sequence frames (issue 16): its loss against a float64 sum written
//! out here, its gradient against central differences, and the same term added exactly by
//! both engines, whole and tiled.

mod common;

use candle_core::{DType, Device, Tensor};
use stylize::candle::CandleEngine;
use stylize::engine::objective::{Evaluate, Placement};
use stylize::engine::temporal::{TemporalTarget, attach};
use stylize::engine::{LossBreakdown, OptimiseJob, Pooling};
use stylize::features::FeatureExtractor;
use stylize::model::{InputConvention, InputImage};
use stylize::onnxruntime::OrtEngine;
use stylize::render::{default_style_taps, single_step_job};

use common::pattern_image;

const WEIGHT: f64 = 37.5;

/// A certainty with zeros (occluded), ones and fractions (an explicit soft mask).
fn certainty(height: usize, width: usize) -> Vec<f32> {
    (0..height * width)
        .map(|i| match i % 7 {
            0 | 3 => 0.0,
            5 => 0.25,
            _ => 1.0,
        })
        .collect()
}

fn target(height: usize, width: usize) -> TemporalTarget {
    TemporalTarget {
        warped: pattern_image(height, width, 4.0),
        certainty: certainty(height, width),
        weight: WEIGHT,
    }
}

/// `1/D Σ c (x − w)²` and its gradient `2·weight/D · c (x − w)`, in float64 loops.
fn reference(x: &InputImage, target: &TemporalTarget) -> (f64, Vec<f64>) {
    let plane = x.height * x.width;
    let d = x.data.len() as f64;
    let mut loss = 0.0;
    let mut grad = vec![0.0; x.data.len()];
    for (i, (&xi, &wi)) in x.data.iter().zip(&target.warped.data).enumerate() {
        let c = target.certainty[i % plane] as f64;
        let diff = xi as f64 - wi as f64;
        loss += c * diff * diff;
        grad[i] = 2.0 * target.weight / d * c * diff;
    }
    (loss / d, grad)
}

/// An objective that is zero everywhere, so only the temporal term is left.
struct Zero;

impl Evaluate for Zero {
    fn evaluate(&self, x: &Tensor) -> stylize::Result<(LossBreakdown, Tensor)> {
        Ok((LossBreakdown::default(), x.zeros_like()?))
    }
}

fn placement<'a>(convention: &'a InputConvention, dtype: DType) -> Placement<'a> {
    Placement {
        device: &Device::Cpu,
        dtype,
        convention,
    }
}

fn upload(image: &InputImage, dtype: DType) -> Tensor {
    Tensor::from_slice(&image.data, image.shape(), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn temporal_term_matches_float64_sum_and_central_differences() {
    let (h, w) = (9, 13);
    let convention = InputConvention::caffe();
    let placement = placement(&convention, DType::F64);
    let target = target(h, w);
    let objective = attach(Box::new(Zero), Some(&target), &placement, (h, w)).unwrap();
    let x = pattern_image(h, w, 1.0);
    let (losses, grad) = objective.evaluate(&upload(&x, DType::F64)).unwrap();
    let (expected, expected_grad) = reference(&x, &target);
    assert!((losses.temporal - expected).abs() <= 1e-12 * expected);
    assert!((losses.total - WEIGHT * expected).abs() <= 1e-12 * WEIGHT * expected);
    let grad = values(&grad);
    for (i, (&g, &e)) in grad.iter().zip(&expected_grad).enumerate() {
        assert!(
            (g - e).abs() <= 1e-12 * e.abs().max(1e-9),
            "element {i}: {g} vs {e}"
        );
    }
    // Central differences of the total (the term is quadratic: no truncation error), over
    // certain, occluded and fractional pixels of every channel.
    let at = |i: usize, delta: f32| {
        let mut moved = x.clone();
        moved.data[i] += delta;
        objective
            .evaluate(&upload(&moved, DType::F64))
            .unwrap()
            .0
            .total
    };
    let plane = h * w;
    for i in [
        0,
        1,
        5,
        40,
        plane + 3,
        plane + 12,
        2 * plane + 19,
        3 * plane - 1,
    ] {
        let numeric = (at(i, 0.5) - at(i, -0.5)) / 1.0;
        assert!(
            (numeric - grad[i]).abs() <= 1e-9 * grad[i].abs().max(1e-6),
            "element {i}: analytic {} numeric {numeric}",
            grad[i]
        );
    }
    // Occluded pixels feel nothing.
    assert_eq!(grad[0], 0.0);
    assert_eq!(grad[plane + 3], 0.0);
}

#[test]
fn a_target_of_another_size_or_a_bad_weight_is_refused() {
    let convention = InputConvention::caffe();
    let placement = placement(&convention, DType::F32);
    let target = target(9, 13);
    let error = attach(Box::new(Zero), Some(&target), &placement, (9, 14))
        .err()
        .unwrap();
    assert!(error.to_string().contains("temporal"), "{error}");
    let mut short = target.clone();
    short.certainty.pop();
    let error = attach(Box::new(Zero), Some(&short), &placement, (9, 13))
        .err()
        .unwrap();
    assert!(error.to_string().contains("certainties"), "{error}");
    let mut nan = target;
    nan.weight = f64::NAN;
    let error = attach(Box::new(Zero), Some(&nan), &placement, (9, 13))
        .err()
        .unwrap();
    assert!(error.to_string().contains("temporal_weight"), "{error}");
}

/// A job on a 30x36 pattern with the default style layers and the temporal target.
fn job(features: &dyn FeatureExtractor, tile_side: Option<usize>) -> OptimiseJob {
    let (h, w) = (30, 36);
    let grams = features
        .grams(&pattern_image(h, w, 2.0), &default_style_taps())
        .unwrap();
    let mut job = single_step_job(pattern_image(h, w, 0.0), grams);
    job.tile_side = tile_side;
    job.temporal = Some(target(h, w));
    job
}

/// `evaluator`'s loss and gradient with and without the job's temporal term.
fn with_and_without(
    evaluator: &dyn Evaluate,
    with: &dyn Evaluate,
    x: &Tensor,
) -> ((LossBreakdown, Vec<f64>), (LossBreakdown, Vec<f64>)) {
    let (plain, plain_grad) = evaluator.evaluate(x).unwrap();
    let (added, added_grad) = with.evaluate(x).unwrap();
    ((plain, values(&plain_grad)), (added, values(&added_grad)))
}

#[test]
fn both_engines_add_the_term_exactly_whole_and_tiled() {
    let candle =
        CandleEngine::new(common::weights(), Pooling::Max, &Device::Cpu, DType::F32).unwrap();
    let ort_features = std::sync::Arc::new(common::ort_features(Pooling::Max));
    let ort = OrtEngine::new(
        ort_features.environment(),
        common::shared_weights(),
        ort_features.clone(),
        0,
    );
    let features = candle.features();
    let convention = InputConvention::caffe();
    let placement = placement(&convention, DType::F32);
    let x_image = pattern_image(30, 36, 1.0);
    let x = upload(&x_image, DType::F32);
    let target = target(30, 36);
    let (expected, expected_grad) = reference(&x_image, &target);
    for tile_side in [None, Some(16)] {
        let job = job(&features, tile_side);
        let scale = &job.scales[0];
        for name in ["candle", "ort"] {
            let make = || match name {
                "candle" => candle.evaluator(&job, scale).unwrap(),
                _ => ort.evaluator(&job, scale).unwrap(),
            };
            let with = attach(make(), job.temporal.as_ref(), &placement, (30, 36)).unwrap();
            let ((plain, plain_grad), (added, added_grad)) =
                with_and_without(make().as_ref(), with.as_ref(), &x);
            let what = format!("{name}, tiles {tile_side:?}");
            assert!(
                (added.temporal - expected).abs() <= 1e-6 * expected,
                "{what}: {} vs {expected}",
                added.temporal
            );
            let total = plain.total + WEIGHT * expected;
            assert!(
                (added.total - total).abs() <= 1e-6 * total,
                "{what}: {} vs {total}",
                added.total
            );
            assert_eq!(added.style, plain.style, "{what}");
            let scale_of = expected_grad.iter().fold(0f64, |m, g| m.max(g.abs()));
            for (i, ((a, p), e)) in added_grad
                .iter()
                .zip(&plain_grad)
                .zip(&expected_grad)
                .enumerate()
            {
                // Float32 gradients: the term is added to the network's gradient in place.
                let tolerance = 1e-5 * p.abs().max(scale_of);
                assert!(
                    (a - p - e).abs() <= tolerance,
                    "{what}, element {i}: {} vs {e}",
                    a - p
                );
            }
        }
    }
    // The term reads no layer: a job with no temporal target is left as it was.
    let plain_job = {
        let mut job = job(&features, None);
        job.temporal = None;
        job
    };
    let scale = &plain_job.scales[0];
    let unchanged = attach(
        candle.evaluator(&plain_job, scale).unwrap(),
        None,
        &placement,
        (30, 36),
    )
    .unwrap();
    let (losses, _) = unchanged.evaluate(&x).unwrap();
    assert_eq!(losses.temporal, 0.0);
}
