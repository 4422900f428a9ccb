//! `stylize bench`: seconds per forward pass (to relu5_1) in candle and in ONNX Runtime
//! (the style precompute), per full optimisation step (forward + backward + Adam update),
//! and per style-cache hit, at given sizes, plus the process's peak memory.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::cache::{StyleCache, StyleKey, image_digest};
use crate::engine::driver::Evaluate;
use crate::engine::loss::{LayerTarget, Objective, TermWeights, gram};
use crate::engine::optim::{Adam, Optimizer};
use crate::engine::vgg::{Pooling, VggNet};
use crate::engine::{Init, OptimiseJob, OptimizerKind, OrtEngine, ScaleTargets};
use crate::error::Result;
use crate::features::{FeatureExtractor, Gram, OrtFeatures};
use crate::model::{InputImage, Layer, Vgg19Weights};
use crate::render::{default_content_layers, default_style_layers};

/// Timings at one square size.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub size: usize,
    /// Median seconds of a candle forward pass to relu5_1 with the style Grams.
    pub forward_s: f64,
    /// Median seconds of the same precompute in ONNX Runtime, when it is available.
    pub ort_precompute_s: Option<f64>,
    /// Median seconds of a style-cache hit: hashing the decoded style image plus lookup.
    pub cache_hit_s: f64,
    /// Median seconds of one candle step: loss, gradient and Adam update.
    pub step_s: f64,
    /// The same step through ONNX Runtime's loss-and-gradient graph.
    pub ort_step_s: Option<f64>,
    /// Peak resident memory of the process so far (`VmHWM`), if the OS reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident set size of this process, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
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

/// Measures each size in turn, smallest first (peak memory is cumulative).
pub fn run(
    weights: &Vgg19Weights,
    sizes: &[usize],
    repeats: usize,
    device: &Device,
    ort: Option<(&OrtFeatures, &OrtEngine)>,
) -> Result<Vec<BenchRow>> {
    let net = VggNet::new(
        weights,
        Some(Layer::new(5, 1)?),
        Pooling::Max,
        device,
        DType::F32,
    )?;
    let content_layers = default_content_layers();
    let style_layers = default_style_layers();
    let style_taps: Vec<Layer> = style_layers.iter().map(|(l, _)| *l).collect();
    let deepest = Layer::new(5, 1)?;
    let mut rows = Vec::new();
    for &size in sizes {
        let image = Tensor::randn(0f32, 60.0, (1, 3, size, size), device)?;
        let style = Tensor::randn(0f32, 60.0, (1, 3, size, size), device)?;
        let forward_s = time_repeats(repeats, || {
            let acts = net.forward(&style, deepest, &style_taps, false)?;
            for layer in &style_taps {
                gram(acts.get(*layer).expect("tapped layer is kept"))?.to_vec2::<f32>()?;
            }
            Ok(())
        })?;
        let style_host = InputImage {
            height: size,
            width: size,
            data: style.flatten_all()?.to_vec1::<f32>()?,
        };
        let ort_precompute_s = match ort {
            Some((ort, _)) => Some(time_repeats(repeats, || {
                ort.grams(&style_host, &style_taps)?;
                Ok(())
            })?),
            None => None,
        };
        let cache_hit_s = time_cache_hit(size, &style_taps)?;
        let style_acts = net.forward(&style, deepest, &style_taps, false)?;
        let content_acts = net.forward(&image, deepest, &[Layer::new(4, 2)?], false)?;
        let target =
            |acts: &crate::engine::vgg::Activations, layer: Layer, weight: f64, as_gram: bool| {
                let features = acts.get(layer).expect("tapped layer is kept");
                Ok::<_, crate::Error>(LayerTarget {
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
            content: content_layers
                .iter()
                .map(|&(l, w)| target(&content_acts, l, w, false))
                .collect::<Result<_>>()?,
            style: style_layers
                .iter()
                .map(|&(l, w)| target(&style_acts, l, w, true))
                .collect::<Result<_>>()?,
            weights: TermWeights::default(),
        };
        let start = (&image + 1.0)?;
        let step_s = time_steps(&objective, &start, repeats)?;
        let ort_step_s = match ort {
            Some((_, engine)) => {
                let host = |t: &Tensor| -> Result<InputImage> {
                    Ok(InputImage {
                        height: size,
                        width: size,
                        data: t.flatten_all()?.to_vec1::<f32>()?,
                    })
                };
                let style = objective
                    .style
                    .iter()
                    .map(|t| {
                        let channels = t.layer.channels();
                        let data = t.target.flatten_all()?.to_vec1::<f32>()?;
                        Ok((t.layer, t.weight, Gram { channels, data }))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let scale = ScaleTargets {
                    content: host(&image)?,
                    style,
                    iterations: 1,
                };
                let job = OptimiseJob {
                    scales: vec![scale.clone()],
                    content_layers: content_layers.clone(),
                    weights: TermWeights::default(),
                    optimizer: OptimizerKind::Adam { lr: 10.0 },
                    init: Init::Content,
                    preview_every: 0,
                };
                let evaluate = engine.objective(&job, &scale)?;
                Some(time_steps(evaluate.as_ref(), &start, repeats)?)
            }
            None => None,
        };
        rows.push(BenchRow {
            size,
            forward_s,
            ort_precompute_s,
            cache_hit_s,
            step_s,
            ort_step_s,
            peak_rss_bytes: peak_rss_bytes(),
        });
    }
    Ok(rows)
}

/// Median seconds of one full step (loss, gradient, Adam update) from `start`.
fn time_steps(objective: &dyn Evaluate, start: &Tensor, repeats: usize) -> Result<f64> {
    let mut adam = Adam::new(10.0);
    let mut x = start.clone();
    time_repeats(repeats, || {
        let (_, grad) = objective.evaluate(&x)?;
        if let Some(next) = adam.step(&x, &grad)? {
            x = next;
        }
        Ok(())
    })
}

/// A cache hit as a request sees it: digest of the decoded style image, then the lookup.
fn time_cache_hit(size: usize, layers: &[Layer]) -> Result<f64> {
    let image = image::RgbImage::from_fn(size as u32, size as u32, |x, y| {
        image::Rgb([x as u8, y as u8, 7])
    });
    let cache = StyleCache::new(crate::cache::DEFAULT_BUDGET_BYTES);
    let identity = crate::features::TargetIdentity {
        weights: "bench".into(),
        pooling: Pooling::Max,
        gram_normalisation: crate::features::GRAM_NORMALISATION,
    };
    let key = |digest| StyleKey {
        image_sha256: digest,
        longest_side: size as u32,
        layers: layers.to_vec(),
        identity: identity.clone(),
    };
    let grams: Vec<_> = layers
        .iter()
        .map(|l| crate::features::Gram {
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
            debug_assert_eq!(lookup, crate::cache::Lookup::Hit);
        }
        Ok(())
    })?;
    Ok(total / runs as f64)
}
