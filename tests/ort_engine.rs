//! The ONNX Runtime engine's loss and gradient against candle's in float64, on an image
//! whose odd sides make every pool drop a row or column and whose flat patch makes pooling
//! windows tie (the gradient must go to the first maximum, as in PyTorch).

mod common;

use candle_core::{DType, Device, Tensor};
use stylize::candle::CandleEngine;
use stylize::engine::Pooling;
use stylize::features::FeatureExtractor;
use stylize::onnxruntime::OrtEngine;
use stylize::render::{default_style_taps, single_step_job};

use common::{pattern_image as image, rel, rel_l2};

#[test]
fn ort_gradient_matches_candle_f64_on_odd_sizes_with_ties() {
    let (height, width) = (38, 45);
    let ort = std::sync::Arc::new(common::ort_features(Pooling::Max));
    let engine = OrtEngine::new(ort.environment(), common::shared_weights(), ort.clone(), 0);
    let reference =
        CandleEngine::new(common::weights(), Pooling::Max, &Device::Cpu, DType::F64).unwrap();
    let taps = default_style_taps();
    let style = image(height, width, 2.0);
    let grams = reference.features().grams(&style, &taps).unwrap();
    let job = single_step_job(image(height, width, 0.0), grams);
    let scale = &job.scales[0];
    let x = image(height, width, 1.0);
    let x = Tensor::from_slice(&x.data, (1, 3, height, width), &Device::Cpu).unwrap();
    let (ort_losses, ort_grad) = engine.objective(&job, scale).unwrap().evaluate(&x).unwrap();
    let (losses, grad) = reference
        .objective(&job, scale)
        .unwrap()
        .evaluate(&x.to_dtype(DType::F64).unwrap())
        .unwrap();
    common::measured(
        "ort_engine/loss vs candle f64",
        rel(ort_losses.total, losses.total),
    );
    assert!(
        rel(ort_losses.total, losses.total) < 1e-5,
        "total loss: ONNX Runtime {} vs candle f64 {}",
        ort_losses.total,
        losses.total
    );
    let error = common::measured(
        "ort_engine/gradient vs candle f64",
        rel_l2(&ort_grad, &grad),
    );
    assert!(error < 1e-5, "gradient relative error {error:.3e}");
    assert!(
        tied_windows(&reference, &x) > 0,
        "the flat block should make pooling windows tie"
    );
}

/// 2x2 windows before the first pool whose positive maximum occurs more than once.
fn tied_windows(reference: &CandleEngine, x: &Tensor) -> usize {
    let layer = stylize::model::Layer::new(1, 2).unwrap();
    let acts = reference
        .net()
        .forward(&x.to_dtype(DType::F64).unwrap(), layer, &[layer], false)
        .unwrap();
    let relu = acts.get(layer).unwrap().to_dtype(DType::F32).unwrap();
    let (_, channels, height, width) = relu.dims4().unwrap();
    let values = relu.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut tied = 0;
    for c in 0..channels {
        for y in (0..height - 1).step_by(2) {
            for x in (0..width - 1).step_by(2) {
                let at = |dy: usize, dx: usize| values[(c * height + y + dy) * width + x + dx];
                let window = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                let max = window.iter().copied().fold(f32::MIN, f32::max);
                if max > 0.0 && window.iter().filter(|&&v| v == max).count() > 1 {
                    tied += 1;
                }
            }
        }
    }
    tied
}

/// Asking ONNX Runtime for the CUDA provider either gets it (a GPU and onnxruntime-gpu's
/// library) or says so once and computes on the CPU; both give the CPU provider's Grams.
/// With `STYLIZE_TEST_DEVICE=cuda…` and a CUDA-capable library, the GPU is required.
#[test]
fn a_cuda_precompute_runs_on_cuda_or_falls_back_to_the_cpu_with_equal_grams() {
    use stylize::onnxruntime::{self as ort_runtime, Provider};
    let cpu = common::ort_features(Pooling::Max);
    let cuda = common::ort_features_on(Pooling::Max, Provider::Cuda(0));
    let taps = default_style_taps();
    let gpu_required = std::env::var("STYLIZE_TEST_DEVICE").is_ok_and(|d| d.starts_with("cuda"))
        && ort_runtime::cuda_compiled_in();
    for (height, width) in [(38, 45), (64, 48)] {
        let style = image(height, width, 2.5);
        let want = cpu.grams(&style, &taps).unwrap();
        let got = cuda.grams(&style, &taps).unwrap();
        let tolerance = match cuda.provider() {
            Provider::Cuda(0) => {
                assert!(ort_runtime::cuda_compiled_in());
                assert_eq!(cuda.name(), "onnxruntime-cuda");
                1e-5
            }
            Provider::Cpu => {
                assert!(!gpu_required, "the CUDA provider did not start on a GPU");
                assert_eq!(cuda.name(), "onnxruntime-cpu");
                1e-6
            }
            other => panic!("asked for cuda:0, running on {other:?}"),
        };
        for ((layer, ours), theirs) in taps.iter().zip(&got).zip(&want) {
            assert_eq!(ours.channels, theirs.channels);
            let a = Tensor::from_slice(&ours.data, ours.data.len(), &Device::Cpu).unwrap();
            let b = Tensor::from_slice(&theirs.data, theirs.data.len(), &Device::Cpu).unwrap();
            let error = rel_l2(&a, &b);
            assert!(error < tolerance, "{layer} at {height}x{width}: {error:e}");
        }
    }
    println!(
        "cuda:0 requested, ran on {:?}; library has the CUDA provider: {}",
        cuda.provider(),
        ort_runtime::cuda_compiled_in()
    );
}
