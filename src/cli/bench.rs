//! `stylize bench`: prints the benchmark table.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;

use stylize::backends::DeviceChoice;
use stylize::backends::precompute as select;
use stylize::engine::Pooling;
use stylize::model::Vgg19Weights;
use stylize::onnxruntime::OrtEngine;
use stylize::onnxruntime::OrtFeatures;
use stylize::onnxruntime::Provider;

use super::args::{WeightsArgs, byte_count};

#[derive(Args)]
pub struct BenchArgs {
    /// Square sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,512")]
    sizes: Vec<usize>,
    /// Timed repetitions per measurement (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Also run the identical step in PyTorch (`scripts/torch_reference.py step`) and print the ratios;
    /// uses `$STYLIZE_PYTHON` (default python3), which needs `torch` installed.
    #[arg(long)]
    compare_torch: bool,
    /// Measure this many times; with --compare-torch, PyTorch and stylize alternate each
    /// round and the median of the per-round ratios is printed.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also time candle (the CUDA path's code) on the CPU: slow, and its memory is not
    /// counted in the peak printed for the ONNX Runtime path.
    #[arg(long)]
    with_candle: bool,
    /// Where to run: cpu, cuda or cuda:N. On a GPU "ours" is candle on that GPU and PyTorch
    /// runs there too; on the CPU it is the ONNX Runtime path.
    #[arg(long, env = "STYLIZE_DEVICE", default_value = "cpu")]
    device: String,
    /// Instead of the step table: whole jobs at these frame sizes (e.g.
    /// `512x512,1920x1080,2048x2048,4096x2160`), peak memory and seconds per iteration,
    /// tiled and (where it fits) untiled, each in its own process.
    #[arg(long, value_delimiter = ',')]
    frames: Vec<String>,
    /// Tile core side for --frames' tiled runs (default: 512, or the plan for
    /// --memory-budget when that is given).
    #[arg(long)]
    tile_size: Option<u32>,
    /// Plan --frames' tiled runs for this budget (e.g. `5.5GiB`, a 6 GiB pod less the
    /// reserve): tiles and kept tile states as a server with this budget would choose.
    #[arg(long, value_parser = byte_count)]
    memory_budget: Option<usize>,
    /// Iterations per --frames job.
    #[arg(long, default_value_t = 2)]
    iterations: usize,
    /// Instead of the step table: PyTorch's plain Gatys run (torch.optim.LBFGS from the
    /// content; `$STYLIZE_PYTHON` must import torch) and then each quality preset (draft,
    /// standard, final) on --content x --style at each of --sizes, every delivered 8-bit
    /// image scored with the contract loss: wall time, score and their ratios to PyTorch's.
    #[arg(long, requires_all = ["content", "style"])]
    presets: bool,
    /// The content image for --presets.
    #[arg(long)]
    content: Option<PathBuf>,
    /// The style image for --presets.
    #[arg(long)]
    style: Option<PathBuf>,
    /// PyTorch's L-BFGS iterations for --presets (0: no PyTorch run, the presets alone).
    #[arg(long, default_value_t = 300)]
    torch_iterations: usize,
    /// Write --presets' delivered images here (`pytorch-256.png`, `standard-256.png`, ...).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Instead of the step table: this shot (a frames pattern, OpenEXR with its Vector
    /// pass) rendered as stills, as the sequential chain and in --chunks parallel chunks,
    /// every task timed alone: critical path, CPU time, warping error, joins and style loss
    /// per frame (docs/sequences.md). Takes --style and --out-dir.
    #[arg(long)]
    shot: Option<String>,
    /// Chunks for --shot's parallel method.
    #[arg(long, default_value_t = 4)]
    chunks: usize,
    /// Quality preset for --shot.
    #[arg(long, default_value = "standard", value_parser = ["draft", "standard", "final"])]
    quality: String,
    /// Longest side of --shot's outputs.
    #[arg(long, default_value_t = 256)]
    shot_size: u32,
    /// Time --shot's chain and parallel method this many times, in turn, and keep each
    /// task's fastest run: this machine's speed drifts by 10-20% over minutes, which one
    /// run of each cannot tell from a method's cost. The frames are the same every time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    repeat: u32,
    /// Engine for --frames.
    #[arg(long, default_value = "auto", value_parser = ["auto", "ort", "candle"])]
    engine: String,
    #[command(flatten)]
    weights: WeightsArgs,
}

/// One size measured by PyTorch.
#[derive(serde::Deserialize)]
struct TorchRow {
    size: usize,
    forward_s: f64,
    step_s: f64,
    peak_rss_mib: f64,
    #[serde(default)]
    peak_gpu_mib: Option<f64>,
}

/// Runs the PyTorch reference, or explains why it cannot.
fn torch_rows(sizes: &[usize], repeats: usize, device: &str) -> Result<Vec<TorchRow>, String> {
    let mut args: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--repeats".into(),
        repeats.to_string(),
        "--device".into(),
        device.into(),
    ]);
    super::torch::run_reference("step", &args)
}

/// One round: our figures, then PyTorch's (measured just before) when asked for.
struct Round {
    ours: Vec<OurRow>,
    torch: Option<Result<Vec<TorchRow>, String>>,
}

/// Our figures at one size in one round.
struct OurRow {
    size: usize,
    precompute_s: f64,
    step_s: f64,
    /// A real render job (ONNX Runtime path only).
    job: Option<crate::bench::JobFigure>,
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_string(), |b| {
        format!("{:.0}", b as f64 / (1 << 20) as f64)
    })
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if let Some(frames) = &args.shot {
        return super::bench_shot::run(super::bench_shot::ShotBench {
            frames,
            chunks: args.chunks,
            quality: &args.quality,
            size: args.shot_size,
            repeat: args.repeat as usize,
            style: args.style.as_deref(),
            out_dir: args.out_dir.as_deref(),
        });
    }
    if !args.frames.is_empty() {
        let frames = args
            .frames
            .iter()
            .map(|f| super::bench_frames::parse_frame(f))
            .collect::<Result<Vec<_>>>()?;
        if args.iterations == 0 {
            bail!("--iterations: must be at least 1");
        }
        return super::bench_frames::frames_table(
            &frames,
            args.tile_size,
            args.memory_budget,
            args.iterations,
            &args.engine,
        );
    }
    if args.sizes.iter().any(|&s| !(16..=4096).contains(&s)) {
        bail!("--sizes: each size must be within 16..=4096");
    }
    if !(1..=20).contains(&args.rounds) {
        bail!("--rounds: must be within 1..=20");
    }
    let device_choice: DeviceChoice = args.device.parse().context("--device")?;
    let device = device_choice.open().context("--device")?;
    let torch_device = match device_choice {
        DeviceChoice::Cuda(n) => format!("cuda:{n}"),
        _ if device.is_cuda() => "cuda:0".to_string(),
        _ => "cpu".to_string(),
    };
    let weights = Arc::new(args.weights.load()?);
    let provider = Provider::for_device(&device);
    let ort = if device.is_cpu() {
        match select::ort_features(
            &args.weights.models_dir,
            weights.clone(),
            Pooling::Max,
            provider,
        ) {
            Ok(ort) => {
                let ort = Arc::new(ort);
                let engine = OrtEngine::new(ort.environment(), weights.clone(), ort.clone(), 0);
                Some((ort, engine))
            }
            Err(err) => {
                println!("ONNX Runtime unavailable ({err}); measuring candle only");
                None
            }
        }
    } else {
        None
    };
    if args.presets {
        let Some((features, engine)) = &ort else {
            bail!(
                "--presets: runs the ONNX Runtime engine on the CPU (--device cpu), unavailable here"
            );
        };
        let (Some(content), Some(style)) = (&args.content, &args.style) else {
            bail!("--presets: needs --content and --style");
        };
        let run = super::bench_quality::QualityRun {
            content,
            style,
            images: (
                stylize::image_io::load(content).context("--content")?,
                stylize::image_io::load(style).context("--style")?,
            ),
            sizes: &args.sizes,
            torch_iterations: args.torch_iterations,
            out_dir: args.out_dir.as_deref(),
        };
        return super::bench_quality::quality_table(&run, &weights, features, engine);
    }
    // On a GPU the server precomputes with ONNX Runtime's CUDA provider when it starts.
    let ort_gpu = if device.is_cpu() {
        None
    } else {
        gpu_precompute(&args.weights.models_dir, &weights, provider)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let path = match (&ort, &ort_gpu, device.is_cpu()) {
        (Some(_), _, _) => "ONNX Runtime on the CPU".to_string(),
        (None, _, true) => "candle on the CPU".to_string(),
        (None, Some(_), false) => {
            format!("candle on {torch_device}, precompute by ONNX Runtime's CUDA provider")
        }
        (None, None, false) => format!("candle on {torch_device}"),
    };
    println!(
        "stylize bench ({path}): f32, VGG19 to relu5_1 (content + 5 style Grams + TV, Adam), {threads} threads, median of {} runs per figure",
        args.repeats
    );
    let mut rounds: Vec<Round> = Vec::new();
    for round in 1..=args.rounds {
        // PyTorch runs first, while this process is idle (no ONNX Runtime threads spinning).
        let torch = args
            .compare_torch
            .then(|| torch_rows(&args.sizes, args.repeats, &torch_device));
        let mut ours = Vec::new();
        for &size in &args.sizes {
            let (precompute_s, step_s, job) = match &ort {
                Some((features, engine)) => {
                    let t = crate::bench::measure_ort(features, engine, size, args.repeats)?;
                    let job = crate::bench::measure_job(engine, features.as_ref(), size)?;
                    (t.precompute_s, t.step_s, Some(job))
                }
                None => {
                    let t = crate::bench::measure_candle(&weights, size, args.repeats, &device)?;
                    let precompute_s = match &ort_gpu {
                        Some(features) => {
                            crate::bench::measure_precompute(features.as_ref(), size, args.repeats)?
                        }
                        None => t.forward_s,
                    };
                    (precompute_s, t.step_s, None)
                }
            };
            ours.push(OurRow {
                size,
                precompute_s,
                step_s,
                job,
            });
        }
        print_round(round, &ours, torch.as_ref());
        rounds.push(Round { ours, torch });
    }
    println!(
        "peak RSS of this process: {} MiB",
        mib(crate::bench::peak_rss_bytes())
    );
    if args.compare_torch {
        print_summary(&args.sizes, &rounds);
    }
    let cache_hits: Vec<String> = args
        .sizes
        .iter()
        .map(|&size| {
            let layers = stylize::render::default_style_taps();
            let hit = crate::bench::time_cache_hit(size, &layers)?;
            Ok(format!("{size}²: {:.3} ms", hit * 1e3))
        })
        .collect::<Result<_>>()?;
    println!(
        "style-cache hit (hash the decoded image + lookup): {}",
        cache_hits.join(", ")
    );
    if args.with_candle && ort.is_some() {
        println!("candle (the CUDA path's code) on this CPU:");
        println!("{:>6} {:>14} {:>12}", "size", "forward s", "step s");
        for &size in &args.sizes {
            let t = crate::bench::measure_candle(&weights, size, args.repeats, &Device::Cpu)?;
            println!("{size:>6} {:>14.3} {:>12.3}", t.forward_s, t.step_s);
        }
    }
    Ok(())
}

/// ONNX Runtime's extractor on the GPU, if its CUDA provider starts (else candle's forward
/// pass stands for the precompute, as it does in the server).
fn gpu_precompute(
    models_dir: &std::path::Path,
    weights: &Arc<Vgg19Weights>,
    provider: Provider,
) -> Option<Arc<OrtFeatures>> {
    match select::ort_features(models_dir, weights.clone(), Pooling::Max, provider) {
        Ok(features) => {
            let started = stylize::backends::gpu_precompute_starts(Arc::new(features));
            if started.is_none() {
                println!("ONNX Runtime's CUDA provider did not start; the precompute is candle's");
            }
            started
        }
        Err(err) => {
            println!("ONNX Runtime unavailable ({err}); the precompute is candle's");
            None
        }
    }
}

fn print_round(round: usize, ours: &[OurRow], torch: Option<&Result<Vec<TorchRow>, String>>) {
    println!("round {round}:");
    let torch = match torch {
        Some(Ok(rows)) => Some(rows),
        Some(Err(reason)) => {
            println!("  no PyTorch comparison: {reason}");
            None
        }
        None => None,
    };
    println!(
        "{:>6} {:>14} {:>14} {:>8} {:>10} {:>10} {:>8} {:>16}",
        "size",
        "our precompute",
        "torch forward",
        "ratio",
        "our step",
        "torch step",
        "ratio",
        "torch peak MiB"
    );
    for row in ours {
        let t = torch.and_then(|rows| rows.iter().find(|t| t.size == row.size));
        let cell = |ours: f64, theirs: Option<f64>| match theirs {
            Some(v) => (format!("{v:.3}"), format!("{:.2}", ours / v)),
            None => ("-".into(), "-".into()),
        };
        let (fwd, fwd_ratio) = cell(row.precompute_s, t.map(|t| t.forward_s));
        let (step, step_ratio) = cell(row.step_s, t.map(|t| t.step_s));
        println!(
            "{:>6} {:>14.3} {:>14} {:>8} {:>10.3} {:>10} {:>8} {:>16}",
            row.size,
            row.precompute_s,
            fwd,
            fwd_ratio,
            row.step_s,
            step,
            step_ratio,
            t.map_or("-".into(), |t| format!(
                "{:.0}",
                t.peak_gpu_mib.unwrap_or(t.peak_rss_mib)
            ))
        );
    }
    for row in ours {
        if let Some(job) = row.job {
            println!(
                "{:>6} job: {:.3} s/iteration (L-BFGS, {} iterations, one scale) = {:.2}x the step; {} evaluations of {:.3} s ({:.2}x), objective built in {:.2} s; the optimiser's own {:.1} ms/iteration = {:.3}x the step",
                row.size,
                job.seconds_per_iteration,
                job.iterations,
                job.seconds_per_iteration / row.step_s,
                job.evaluations,
                job.seconds_per_evaluation,
                job.seconds_per_evaluation / row.step_s,
                job.building_s,
                job.overhead_per_iteration * 1e3,
                job.overhead_per_iteration / row.step_s
            );
        }
    }
}

/// The median over rounds of each per-round ratio (each round's figures are measured
/// minutes apart at most, so slow spells on a shared machine hit both sides alike).
fn print_summary(sizes: &[usize], rounds: &[Round]) {
    for &size in sizes {
        let mut step = Vec::new();
        let mut precompute = Vec::new();
        for Round { ours, torch } in rounds {
            let (Some(o), Some(Ok(torch))) = (ours.iter().find(|r| r.size == size), torch) else {
                continue;
            };
            if let Some(t) = torch.iter().find(|t| t.size == size) {
                step.push(o.step_s / t.step_s);
                precompute.push(o.precompute_s / t.forward_s);
            }
        }
        if step.is_empty() {
            continue;
        }
        println!(
            "{size}²: median over {} rounds: step {:.2}x PyTorch, precompute {:.2}x PyTorch's forward",
            step.len(),
            crate::bench::median(step),
            crate::bench::median(precompute)
        );
    }
}
