//! The tiled evaluation equals the untiled one: loss and gradient, candle (float64 and
//! float32) and ONNX Runtime, on odd sizes whose pools drop edge rows, with default and
//! non-default layers; and ONNX Runtime's loss sessions depend on the layers, not the weights.

mod common;

use candle_core::{DType, Device, Tensor};
use stylize::candle::CandleEngine;
use stylize::engine::{LossBreakdown, OptimiseJob, Pooling, TermWeights};
use stylize::features::FeatureExtractor;
use stylize::model::Layer;
use stylize::onnxruntime::OrtEngine;
use stylize::render::single_step_job;

use common::{pattern_image, rel, rel_l2};

fn layers(names: &[&str]) -> Vec<Layer> {
    names.iter().map(|n| n.parse().unwrap()).collect()
}

/// A one-step job on a `height` x `width` pattern with the given layers, style Grams from
/// `grams_of` (another pattern), cut into cores of `tile_side`.
fn job(
    height: usize,
    width: usize,
    content: &[Layer],
    style: &[Layer],
    grams_of: &dyn FeatureExtractor,
    tile_side: Option<usize>,
) -> OptimiseJob {
    let grams = grams_of
        .grams(&pattern_image(height, width, 2.0), style)
        .unwrap();
    let mut job = single_step_job(pattern_image(height, width, 0.0), Vec::new());
    job.scales[0].style = style
        .iter()
        .zip(grams)
        .enumerate()
        .map(|(i, (l, g))| (*l, 1.0 + 0.25 * i as f64, g))
        .collect();
    job.content_layers = content.iter().map(|l| (*l, 1.5)).collect();
    job.weights = TermWeights {
        content: 5.0,
        style: 100.0,
        tv: 1e-3,
    };
    job.tile_side = tile_side;
    // The two deepest stages keep their forward state between the passes; the others run it again.
    job.kept_stages = 2;
    job
}

fn point(height: usize, width: usize, dtype: DType) -> Tensor {
    let x = pattern_image(height, width, 1.0);
    Tensor::from_slice(&x.data, (1, 3, height, width), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn assert_same(
    what: &str,
    (tiled, tiled_grad): &(LossBreakdown, Tensor),
    (whole, whole_grad): &(LossBreakdown, Tensor),
    loss_tol: f64,
    grad_tol: f64,
) {
    for (name, a, b) in [
        ("total", tiled.total, whole.total),
        ("content", tiled.content, whole.content),
        ("style", tiled.style, whole.style),
        ("tv", tiled.tv, whole.tv),
    ] {
        common::measured(&format!("tiling/{what} {name} loss"), rel(a, b));
        assert!(
            rel(a, b) <= loss_tol,
            "{what}: {name} loss tiled {a} vs whole {b} (rel {:.2e})",
            rel(a, b)
        );
    }
    // Per layer, against the whole style term: a layer whose Grams nearly match its
    // target has a tiny loss made of cancelling float32 differences.
    for (a, b) in tiled.style_per_layer.iter().zip(&whole.style_per_layer) {
        common::measured(
            &format!("tiling/{what} a style layer"),
            (a - b).abs() / whole.style.abs(),
        );
        assert!(
            (a - b).abs() <= loss_tol * whole.style.abs(),
            "{what}: a style layer {a} vs {b}"
        );
    }
    let error = common::measured(
        &format!("tiling/{what} gradient"),
        rel_l2(tiled_grad, whole_grad),
    );
    assert!(
        error <= grad_tol,
        "{what}: gradient relative L2 {error:.3e}"
    );
}

fn candle_case(
    engine: &CandleEngine,
    (height, width): (usize, usize),
    content: &[Layer],
    style: &[Layer],
    tile_side: usize,
    (loss_tol, grad_tol): (f64, f64),
) {
    let features = engine.features();
    let tiled_job = job(height, width, content, style, &features, Some(tile_side));
    let plan = tiled_job.tile_plan(&tiled_job.scales[0]).unwrap();
    assert!(plan.tiles() >= 4, "{} tiles", plan.tiles());
    let whole_job = OptimiseJob {
        tile_side: None,
        ..tiled_job.clone()
    };
    let x = point(height, width, engine.net().dtype());
    let tiled = engine
        .evaluator(&tiled_job, &tiled_job.scales[0])
        .unwrap()
        .evaluate(&x)
        .unwrap();
    let whole = engine
        .evaluator(&whole_job, &whole_job.scales[0])
        .unwrap()
        .evaluate(&x)
        .unwrap();
    let what = format!(
        "candle {:?} {height}x{width}/{tile_side}",
        engine.net().dtype()
    );
    assert_same(&what, &tiled, &whole, loss_tol, grad_tol);
}

#[test]
fn candle_tiled_equals_untiled_in_float64() {
    let engine =
        CandleEngine::new(common::weights(), Pooling::Max, &Device::Cpu, DType::F64).unwrap();
    // Non-default layers, relu5_1's 16-pixel grid and 80-pixel halo, odd sides.
    candle_case(
        &engine,
        (97, 139),
        &layers(&["relu3_2"]),
        &layers(&["relu1_2", "relu2_1", "relu4_3", "relu5_1"]),
        32,
        (1e-11, 1e-10),
    );
}

#[test]
fn candle_tiled_equals_untiled_in_float32() {
    let engine =
        CandleEngine::new(common::weights(), Pooling::Max, &Device::Cpu, DType::F32).unwrap();
    candle_case(
        &engine,
        (150, 203),
        &layers(&["relu4_2"]),
        &layers(&["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]),
        64,
        (1e-6, 1e-5),
    );
    // Average pooling takes the same path. On a frame this small the style term is a
    // difference of nearly equal float32 Grams (its value 69, its parts ~1e4), so two
    // float32 evaluations agree to 2e-6; the float64 test above shows the tiling is exact.
    let avg = CandleEngine::new(
        common::weights(),
        Pooling::Average,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    candle_case(
        &avg,
        (71, 90),
        &layers(&["relu2_2"]),
        &layers(&["relu1_1", "relu3_3"]),
        16,
        (4e-6, 1e-5),
    );
}

fn ort_engine() -> OrtEngine {
    let ort = std::sync::Arc::new(common::ort_features(Pooling::Max));
    OrtEngine::new(ort.environment(), common::shared_weights(), ort.clone(), 0)
}

#[test]
fn ort_tiled_equals_untiled_and_candle() {
    let engine = ort_engine();
    let reference =
        CandleEngine::new(common::weights(), Pooling::Max, &Device::Cpu, DType::F64).unwrap();
    let features = reference.features();
    // Kept stages: the deepest only, two, every one.
    for ((height, width), content, style, side, kept) in [
        (
            (150, 203),
            layers(&["relu4_2"]),
            layers(&["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]),
            64,
            1,
        ),
        (
            (480, 640),
            layers(&["relu4_2"]),
            layers(&["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]),
            256,
            2,
        ),
        (
            (83, 121),
            layers(&["relu2_2", "relu3_1"]),
            layers(&["relu1_2", "relu3_1", "relu4_4"]),
            24,
            usize::MAX,
        ),
        // One stage, whose only convolution the backward graph computes again.
        ((45, 58), layers(&["relu1_1"]), layers(&["relu1_1"]), 16, 1),
    ] {
        let mut tiled_job = job(height, width, &content, &style, &features, Some(side));
        tiled_job.kept_stages = kept;
        let whole_job = OptimiseJob {
            tile_side: None,
            ..tiled_job.clone()
        };
        let scale = &tiled_job.scales[0];
        assert!(tiled_job.tile_plan(scale).unwrap().tiles() >= 4);
        let x = point(height, width, DType::F32);
        let tiled = engine
            .evaluator(&tiled_job, scale)
            .unwrap()
            .evaluate(&x)
            .unwrap();
        let whole = engine
            .evaluator(&whole_job, scale)
            .unwrap()
            .evaluate(&x)
            .unwrap();
        let what = format!("onnxruntime {height}x{width}/{side}, {kept} kept");
        assert_same(&what, &tiled, &whole, 1e-6, 1e-5);
        // The small frames also agree with candle in float64 (the fixtures' precision). On
        // the large one the pattern's fine detail holds near-ties that float32 and float64
        // break differently at ReLUs and pools, whatever the tiling.
        if height * width < 50_000 {
            let reference_point = reference
                .evaluator(&whole_job, scale)
                .unwrap()
                .evaluate(&x.to_dtype(DType::F64).unwrap())
                .unwrap();
            let what = format!("{what} vs candle f64");
            assert_same(&what, &tiled, &reference_point, 1e-5, 1e-5);
        }
    }
}

#[test]
fn ort_sessions_depend_on_layers_not_weights() {
    let engine = ort_engine();
    let reference =
        CandleEngine::new(common::weights(), Pooling::Max, &Device::Cpu, DType::F64).unwrap();
    let (height, width) = (40, 52);
    let style = layers(&["relu1_1", "relu2_1"]);
    let base = job(
        height,
        width,
        &layers(&["relu2_2"]),
        &style,
        &reference.features(),
        None,
    );
    let x = point(height, width, DType::F32);
    for k in 0..12 {
        let mut job = base.clone();
        job.weights.style = 100.0 + k as f64;
        job.weights.content = 5.0 * (1 + k % 3) as f64;
        let (losses, grad) = engine
            .evaluator(&job, &job.scales[0])
            .unwrap()
            .evaluate(&x)
            .unwrap();
        let (expected, expected_grad) = reference
            .evaluator(&job, &job.scales[0])
            .unwrap()
            .evaluate(&x.to_dtype(DType::F64).unwrap())
            .unwrap();
        assert!(rel(losses.total, expected.total) < 1e-5, "weights {k}");
        assert!(rel_l2(&grad, &expected_grad) < 1e-5, "weights {k}");
    }
    assert_eq!(engine.sessions_held(), 1, "one structure, one session");
    // A new structure adds a session; the table stays bounded.
    for extra in [
        "relu3_1", "relu3_2", "relu3_3", "relu3_4", "relu4_1", "relu4_2",
    ] {
        let job = job(
            height,
            width,
            &layers(&[extra]),
            &style,
            &reference.features(),
            None,
        );
        engine
            .evaluator(&job, &job.scales[0])
            .unwrap()
            .evaluate(&x)
            .unwrap();
    }
    assert!(engine.sessions_held() <= stylize::onnxruntime::engine::LOSS_SESSIONS);
}
