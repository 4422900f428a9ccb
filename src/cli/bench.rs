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
    /// Also run the identical step in PyTorch (scripts/torch_step.py) and print the ratios;
    /// uses `$STYLIZE_PYTHON` (default python3), which needs `torch` installed.
    #[arg(long)]
    compare_torch: bool,
    #[command(flatten)]
    weights: WeightsArgs,
}

const TORCH_SCRIPT: &str = include_str!("../../scripts/torch_step.py");

/// One size measured by PyTorch.
#[derive(serde::Deserialize)]
struct TorchRow {
    size: usize,
    forward_s: f64,
    step_s: f64,
    peak_rss_mib: f64,
}

/// Runs the PyTorch reference, or explains why it cannot.
fn torch_rows(sizes: &[usize], repeats: usize) -> Result<Vec<TorchRow>, String> {
    let python = std::env::var("STYLIZE_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import torch"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "PyTorch is not importable by `{python}` (pip install torch, or set STYLIZE_PYTHON)"
        ));
    }
    let script = std::env::temp_dir().join(format!("stylize-torch-step-{}.py", std::process::id()));
    std::fs::write(&script, TORCH_SCRIPT).map_err(|e| e.to_string())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let output = std::process::Command::new(&python)
        .arg(&script)
        .args(sizes.iter().map(|s| s.to_string()))
        .args([
            "--repeats",
            &repeats.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .output();
    let _ = std::fs::remove_file(&script);
    let output = output.map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|e| format!("{e}: {line}")))
        .collect()
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if args.sizes.iter().any(|&s| !(16..=4096).contains(&s)) {
        bail!("--sizes: each size must be within 16..=4096");
    }
    // PyTorch runs first, while this process is idle (no ONNX Runtime threads spinning).
    let torch = args
        .compare_torch
        .then(|| torch_rows(&args.sizes, args.repeats));
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
    let ours: Vec<(usize, f64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r.size,
                r.ort_step_s.unwrap_or(r.step_s),
                r.ort_precompute_s.unwrap_or(r.forward_s),
            )
        })
        .collect();
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
    if let Some(torch) = torch {
        compare_torch(&ours, torch);
    }
    Ok(())
}

/// Prints our step and precompute against PyTorch's, measured now on this machine.
fn compare_torch(ours: &[(usize, f64, f64)], torch: Result<Vec<TorchRow>, String>) {
    let torch = match torch {
        Ok(rows) => rows,
        Err(reason) => {
            println!("no PyTorch comparison: {reason}");
            return;
        }
    };
    println!(
        "against PyTorch (same step: VGG19 to relu5_1, content + 5 Grams + TV, Adam), same threads:"
    );
    println!(
        "{:>6} {:>10} {:>10} {:>8} {:>14} {:>14} {:>8} {:>14}",
        "size",
        "our step",
        "torch step",
        "ratio",
        "our precompute",
        "torch forward",
        "ratio",
        "torch RSS MiB"
    );
    for (size, step, precompute) in ours {
        if let Some(t) = torch.iter().find(|t| t.size == *size) {
            println!(
                "{:>6} {:>10.3} {:>10.3} {:>8.2} {:>14.3} {:>14.3} {:>8.2} {:>14.0}",
                size,
                step,
                t.step_s,
                step / t.step_s,
                precompute,
                t.forward_s,
                precompute / t.forward_s,
                t.peak_rss_mib
            );
        }
    }
}
