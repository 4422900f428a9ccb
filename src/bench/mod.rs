//! `stylize bench`'s measurements: seconds per style precompute (forward pass to relu5_1
//! with the Grams) and per full optimisation step (forward + backward + Adam update) in ONNX
//! Runtime and in candle, per style-cache hit, and the process's peak memory.

pub mod loadgen;
pub mod quality;

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use stylize::cache::{StyleCache, StyleKey, image_digest};
use stylize::candle::Objective;
use stylize::engine::loss::{LayerTarget, TermWeights};
use stylize::engine::objective::Evaluate;
use stylize::engine::optim::Adam;
use stylize::error::Result;
use stylize::features::FeatureExtractor;
use stylize::model::{InputImage, Layer, Vgg19Weights};
use stylize::net::Pooling;
use stylize::net::gram;
use stylize::net::vgg::VggNet;
use stylize::onnxruntime::OrtFeatures;
use stylize::onnxruntime::engine::OrtEngine;
use stylize::render::{
    default_content_layers, default_style_layers, default_style_taps, single_step_job,
};

/// The ONNX Runtime path at one square size: what a request on a CPU node runs.
#[derive(Debug, Clone, Copy)]
pub struct OrtTimes {
    /// Median seconds of the style precompute (forward pass to relu5_1 and the five Grams).
    pub precompute_s: f64,
    /// Median seconds of one full step: loss-and-gradient graph plus the Adam update.
    pub step_s: f64,
}

/// The same work in candle (the CUDA path's code, here on the CPU).
#[derive(Debug, Clone, Copy)]
pub struct CandleTimes {
    pub forward_s: f64,
    pub step_s: f64,
}

/// Peak resident set size of this process, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The middle value (the upper one of an even count).
pub fn median(samples: Vec<f64>) -> f64 {
    quantile(&samples, 0.5).expect("a median of at least one sample")
}

/// The `q` quantile (0..=1) of `samples` by nearest rank (halves round up); `None` when
/// there are none.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * q.clamp(0.0, 1.0)).round() as usize])
}

fn time_repeats(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64());
    }
    Ok(median(samples))
}

/// A seeded random image in input space (standard deviation 60, like centred pixels).
fn random_image(size: usize, seed: u64) -> Result<InputImage> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0f32, 60.0).expect("a positive standard deviation");
    Ok(InputImage {
        height: size,
        width: size,
        data: (0..3 * size * size)
            .map(|_| normal.sample(&mut rng))
            .collect(),
    })
}

/// Times one style precompute (the default layers' Grams) at `size` with `features`.
pub fn measure_precompute(
    features: &dyn FeatureExtractor,
    size: usize,
    repeats: usize,
) -> Result<f64> {
    let style = random_image(size, 2)?;
    let taps = default_style_taps();
    time_repeats(repeats, || features.grams(&style, &taps).map(drop))
}

/// Times the ONNX Runtime precompute and step at `size`.
pub fn measure_ort(
    features: &OrtFeatures,
    engine: &OrtEngine,
    size: usize,
    repeats: usize,
) -> Result<OrtTimes> {
    let precompute_s = measure_precompute(features, size, repeats)?;
    let content = random_image(size, 1)?;
    let grams = features.grams(&random_image(size, 2)?, &default_style_taps())?;
    let job = single_step_job(content.clone(), grams);
    let evaluate = engine.objective(&job, &job.scales[0])?;
    let start = (Tensor::from_slice(&content.data, (1, 3, size, size), &Device::Cpu)? + 1.0)?;
    let step_s = time_steps(evaluate.as_ref(), &start, repeats)?;
    // A job's last iteration hands the loss graph's working memory back; so does this.
    evaluate.evaluate_and_release(&start)?;
    Ok(OrtTimes {
        precompute_s,
        step_s,
    })
}

/// Times candle's forward pass (with the Grams) and step at `size` on `device`.
pub fn measure_candle(
    weights: &Vgg19Weights,
    size: usize,
    repeats: usize,
    device: &Device,
) -> Result<CandleTimes> {
    let deepest = Layer::new(5, 1)?;
    let net = VggNet::new(weights, Some(deepest), Pooling::Max, device, DType::F32)?;
    let taps = default_style_taps();
    let upload = |image: &InputImage| {
        Tensor::from_slice(&image.data, (1, 3, size, size), device).map_err(stylize::Error::from)
    };
    let (image, style) = (
        upload(&random_image(size, 1)?)?,
        upload(&random_image(size, 2)?)?,
    );
    let forward_s = time_repeats(repeats, || {
        let acts = net.forward(&style, deepest, &taps, false)?;
        for layer in &taps {
            gram(acts.get(*layer).expect("tapped layer is kept"))?.to_vec2::<f32>()?;
        }
        Ok(())
    })?;
    let style_acts = net.forward(&style, deepest, &taps, false)?;
    let content_acts = net.forward(&image, deepest, &[Layer::new(4, 2)?], false)?;
    let target =
        |acts: &stylize::net::vgg::Activations, layer: Layer, weight: f64, as_gram: bool| {
            let features = acts.get(layer).expect("tapped layer is kept");
            Ok::<_, stylize::Error>(LayerTarget {
                layer,
                weight,
                target: if as_gram {
                    gram(features)?
                } else {
                    features.clone()
                },
            })
        };
    let objective = Objective {
        net: &net,
        content: default_content_layers()
            .iter()
            .map(|&(l, w)| target(&content_acts, l, w, false))
            .collect::<Result<_>>()?,
        style: default_style_layers()
            .iter()
            .map(|&(l, w)| target(&style_acts, l, w, true))
            .collect::<Result<_>>()?,
        weights: TermWeights::default(),
    };
    let step_s = time_steps(&objective, &(&image + 1.0)?, repeats)?;
    Ok(CandleTimes { forward_s, step_s })
}

/// Median seconds of one full step (loss, gradient, Adam update) from `start`.
fn time_steps(objective: &dyn Evaluate, start: &Tensor, repeats: usize) -> Result<f64> {
    let mut adam = Adam::new(10.0);
    let mut x = start.clone();
    time_repeats(repeats, || {
        let (_, grad) = objective.evaluate(&x)?;
        x = adam.update(&x, &grad)?;
        Ok(())
    })
}

/// Iterations of the bench's render job (the job figure).
pub const JOB_ITERATIONS: usize = 30;

/// A real render job's figures.
#[derive(Debug, Clone, Copy)]
pub struct JobFigure {
    /// The optimisation's wall time over its iterations.
    pub seconds_per_iteration: f64,
    pub iterations: usize,
    /// Objective evaluations, the initial point's and line-search trials included.
    pub evaluations: usize,
    /// Mean seconds of one evaluation within the job.
    pub seconds_per_evaluation: f64,
    /// Seconds building the scale's objective (the content targets' forward pass).
    pub building_s: f64,
    /// Seconds per iteration outside the evaluations and the building: the optimiser's own
    /// arithmetic and the progress reports.
    pub overhead_per_iteration: f64,
}

/// A real render job at `size` (one scale, the server's default L-BFGS, `JOB_ITERATIONS`
/// iterations): the optimisation's wall time over its iterations, so the optimiser's own
/// arithmetic and line-search evaluations count, unlike the step's. Its images are the
/// step's (as 8-bit pixels), so both evaluate the same kind of data.
pub fn measure_job(
    engine: &dyn stylize::engine::Engine,
    features: &dyn FeatureExtractor,
    size: usize,
) -> Result<JobFigure> {
    let side = size as u32;
    let image =
        |seed: u64| Ok::<_, stylize::Error>(engine.convention().to_rgb(&random_image(size, seed)?));
    let request = stylize::render::RenderRequest {
        content: image(1)?.into(),
        styles: vec![image(2)?],
        blend: vec![],
        options: stylize::render::RenderOptions {
            size: side,
            iterations: JOB_ITERATIONS,
            ..Default::default()
        },
    };
    let rendered = quality::render_timed(engine, features, &request)?.rendered;
    let [optimise, evaluating, building_s] = [
        rendered.stats.optimise,
        rendered.stats.evaluating,
        rendered.stats.building,
    ]
    .map(|d| d.as_secs_f64());
    let iterations = rendered.iterations.max(1) as f64;
    Ok(JobFigure {
        seconds_per_iteration: optimise / iterations,
        iterations: rendered.iterations,
        evaluations: rendered.evaluations,
        seconds_per_evaluation: evaluating / rendered.evaluations.max(1) as f64,
        building_s,
        overhead_per_iteration: (optimise - evaluating - building_s) / iterations,
    })
}

/// A cache hit as a request sees it: digest of the decoded style image, then the lookup.
pub fn time_cache_hit(size: usize, layers: &[Layer]) -> Result<f64> {
    let image = image::RgbImage::from_fn(size as u32, size as u32, |x, y| {
        image::Rgb([x as u8, y as u8, 7])
    });
    let cache = StyleCache::new(stylize::cache::DEFAULT_BUDGET_BYTES);
    let identity = stylize::net::TargetIdentity {
        weights: "bench".into(),
        pooling: Pooling::Max,
        gram_normalisation: stylize::net::GRAM_NORMALISATION,
    };
    let key = |digest| StyleKey {
        image_sha256: digest,
        longest_side: size as u32,
        layers: layers.to_vec(),
        identity: identity.clone(),
    };
    let grams: Vec<_> = layers
        .iter()
        .map(|l| stylize::net::Gram {
            channels: l.channels(),
            data: vec![0.5; l.channels() * l.channels()],
        })
        .collect();
    cache.get_or_compute(&key(image_digest(&image)), || Ok(grams))?;
    let runs = 200;
    let total = time_repeats(1, || {
        for _ in 0..runs {
            let (_, lookup) =
                cache.get_or_compute(&key(image_digest(&image)), || unreachable!())?;
            debug_assert_eq!(lookup, stylize::cache::Lookup::Hit);
        }
        Ok(())
    })?;
    Ok(total / runs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank_and_the_upper_median() {
        let samples = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&samples, 0.0), Some(1.0));
        assert_eq!(quantile(&samples, 0.5), Some(3.0));
        assert_eq!(quantile(&samples, 1.0), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(median(samples.to_vec()), 3.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
