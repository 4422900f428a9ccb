//! `stylize bench`: prints the benchmark table.

use std::sync::Arc;

use anyhow::{Result, bail};
use candle_core::Device;
use clap::Args;

use stylize::engine::{OrtEngine, Pooling};
use stylize::features::select;

use super::args::WeightsArgs;

#[derive(Args)]
pub struct BenchArgs {
    /// Square sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,512")]
    sizes: Vec<usize>,
    /// Timed repetitions per measurement (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[command(flatten)]
    weights: WeightsArgs,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if args.sizes.iter().any(|&s| !(16..=4096).contains(&s)) {
        bail!("--sizes: each size must be within 16..=4096");
    }
    let weights = Arc::new(args.weights.load()?);
    let ort = match select::ort_features(&args.weights.models_dir, weights.clone(), Pooling::Max) {
        Ok(ort) => {
            let ort = Arc::new(ort);
            let engine = OrtEngine::new(ort.environment(), weights.clone(), ort.clone(), 0);
            Some((ort, engine))
        }
        Err(err) => {
            println!("ONNX Runtime unavailable ({err}); its column is empty");
            None
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "stylize bench: f32, VGG19 to relu5_1 (5 style Grams), {threads} threads, median of {} runs",
        args.repeats
    );
    println!(
        "{:>6} {:>13} {:>13} {:>8} {:>13} {:>11} {:>8} {:>12} {:>12}",
        "size",
        "candle fwd s",
        "ort precomp s",
        "ort/cnd",
        "candle step s",
        "ort step s",
        "ort/cnd",
        "cache hit ms",
        "peak RSS MiB"
    );
    let rows = stylize::bench::run(
        &weights,
        &args.sizes,
        args.repeats,
        &Device::Cpu,
        ort.as_ref().map(|(f, e)| (f.as_ref(), e)),
    )?;
    for row in rows {
        let peak = row.peak_rss_bytes.map_or("n/a".to_string(), |b| {
            format!("{:.0}", b as f64 / (1 << 20) as f64)
        });
        let (ort_s, ratio) = match row.ort_precompute_s {
            Some(s) => (format!("{s:.3}"), format!("{:.2}", s / row.forward_s)),
            None => ("n/a".into(), "n/a".into()),
        };
        let (ort_step, step_ratio) = match row.ort_step_s {
            Some(s) => (format!("{s:.3}"), format!("{:.2}", s / row.step_s)),
            None => ("n/a".into(), "n/a".into()),
        };
        println!(
            "{:>6} {:>13.3} {:>13} {:>8} {:>13.3} {:>11} {:>8} {:>12.4} {:>12}",
            row.size,
            row.forward_s,
            ort_s,
            ratio,
            row.step_s,
            ort_step,
            step_ratio,
            row.cache_hit_s * 1e3,
            peak
        );
    }
    Ok(())
}
