//! `stylize bench --presets`: a plain PyTorch Gatys run (`scripts/torch_reference.py gatys`:
//! `torch.optim.LBFGS`, 300 iterations from the content, the contract's losses and weights)
//! and then each stylize preset on the same pair and size. Every delivered 8-bit image is
//! scored with the contract loss on the same targets; prints wall times, scores and their
//! ratios to PyTorch's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use image::RgbImage;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::bench::quality::{pair_request, render_timed, score_reference};
use stylize::model::{InputImage, Vgg19Weights, store};
use stylize::onnxruntime::engine::OrtEngine;
use stylize::onnxruntime::features::OrtFeatures;
use stylize::render::output_scale_inputs;
use stylize::render::preset::Quality;

/// What the quality benchmark runs.
pub struct QualityRun<'a> {
    pub content: &'a Path,
    pub style: &'a Path,
    /// The content and style, loaded.
    pub images: (RgbImage, RgbImage),
    pub sizes: &'a [usize],
    /// PyTorch's iterations (0: no PyTorch run, the presets alone).
    pub torch_iterations: usize,
    /// Where each delivered image is written (`None`: nowhere).
    pub out_dir: Option<&'a Path>,
}

/// PyTorch's figures for one size.
#[derive(serde::Deserialize)]
struct TorchGatys {
    targets_s: f64,
    optimise_s: f64,
    loss: f64,
    iterations: usize,
}

/// A scratch directory removed when dropped, error or not.
struct Scratch(PathBuf);

impl Scratch {
    /// Where the weights are written for PyTorch.
    fn weights(&self) -> PathBuf {
        self.0.join("weights.safetensors")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_inputs(path: &Path, content: &InputImage, style: &InputImage) -> Result<()> {
    let bytes = [content, style].map(|image| store::f32_bytes(&image.data));
    let views = [("content", content, &bytes[0]), ("style", style, &bytes[1])]
        .into_iter()
        .map(|(name, image, data)| {
            let (n, c, h, w) = image.shape();
            Ok((name, TensorView::new(Dtype::F32, vec![n, c, h, w], data)?))
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::write(path, safetensors::serialize(views, None)?)
        .with_context(|| path.display().to_string())
}

fn read_result(path: &Path, like: &InputImage) -> Result<InputImage> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let tensors = SafeTensors::deserialize(&bytes)?;
    let view = tensors.tensor("result")?;
    let (n, c, h, w) = like.shape();
    if view.dtype() != Dtype::F32 || view.shape() != [n, c, h, w] {
        bail!(
            "PyTorch's result is {:?} {:?}, expected F32 {:?}",
            view.dtype(),
            view.shape(),
            like.shape()
        );
    }
    Ok(InputImage {
        height: h,
        width: w,
        data: store::le_floats(view.data()),
    })
}

/// One line of the table.
struct Row {
    name: String,
    seconds: f64,
    iterations: usize,
    float_loss: f64,
    delivered: f64,
}

fn save(out_dir: Option<&Path>, name: &str, size: usize, image: &RgbImage) -> Result<()> {
    if let Some(dir) = out_dir {
        let path = dir.join(format!("{name}-{size}.png"));
        image
            .save(&path)
            .with_context(|| path.display().to_string())?;
    }
    Ok(())
}

pub fn quality_table(
    run: &QualityRun<'_>,
    weights: &Arc<Vgg19Weights>,
    features: &OrtFeatures,
    engine: &OrtEngine,
) -> Result<()> {
    let (content, style) = &run.images;
    if let Some(dir) = run.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("--out-dir {}", dir.display()))?;
    }
    let scratch =
        Scratch(std::env::temp_dir().join(format!("stylize-quality-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0)?;
    store::save(weights, &scratch.weights())?;
    let reference = match run.torch_iterations {
        0 => "each preset (no PyTorch run)".to_string(),
        n => format!(
            "PyTorch torch.optim.LBFGS ({n} iterations, lr 1, history 100, from the content) vs each preset"
        ),
    };
    println!(
        "stylize bench --presets: {} x {}, {reference}; {} threads; \"8-bit\" is the delivered image's contract loss",
        run.content.display(),
        run.style.display(),
        super::torch::threads(),
    );
    for &size in run.sizes {
        let mut rows = Vec::new();
        if run.torch_iterations > 0 {
            rows.push(reference_row(
                run, size, &scratch, weights, features, engine,
            )?);
        }
        let has_reference = !rows.is_empty();
        for quality in Quality::ALL {
            let request = pair_request(content, style, size as u32, Some(quality));
            let done = render_timed(engine, features, &request)?;
            save(run.out_dir, quality.name(), size, &done.rendered.image)?;
            rows.push(Row {
                name: quality.name().into(),
                seconds: done.seconds,
                iterations: done.rendered.iterations,
                float_loss: done.rendered.losses.total,
                delivered: done.rendered.delivered.total,
            });
        }
        print_size(size, &rows, has_reference);
    }
    Ok(())
}

/// PyTorch's run at `size` on stylize's inputs, its image scored like ours.
fn reference_row(
    run: &QualityRun<'_>,
    size: usize,
    scratch: &Scratch,
    weights: &Vgg19Weights,
    features: &OrtFeatures,
    engine: &OrtEngine,
) -> Result<Row> {
    let (content, style) = (&run.images.0, &run.images.1);
    let reference = pair_request(content, style, size as u32, None);
    let (content_input, style_inputs) = output_scale_inputs(&reference, &weights.convention);
    let inputs_path = scratch.0.join(format!("inputs-{size}.safetensors"));
    let result_path = scratch.0.join(format!("result-{size}.safetensors"));
    write_inputs(&inputs_path, &content_input, &style_inputs[0])?;
    let args = [&scratch.weights(), &inputs_path, &result_path]
        .map(|p| p.display().to_string())
        .into_iter()
        .chain(["--iterations".into(), run.torch_iterations.to_string()])
        .collect::<Vec<_>>();
    let torch: TorchGatys = super::torch::run_reference("gatys", &args)
        .map_err(anyhow::Error::msg)?
        .pop()
        .context("the PyTorch script printed nothing")?;
    let image = weights
        .convention
        .to_rgb(&read_result(&result_path, &content_input)?);
    save(run.out_dir, "pytorch", size, &image)?;
    let score = score_reference(engine, features, content, style, &image)?;
    Ok(Row {
        name: "pytorch".into(),
        seconds: torch.targets_s + torch.optimise_s,
        iterations: torch.iterations,
        float_loss: torch.loss,
        delivered: score.total,
    })
}

/// The table at one size; the ratios are to the first row when it is PyTorch's.
fn print_size(size: usize, rows: &[Row], has_reference: bool) {
    println!(
        "{:>6} {:>9} {:>9} {:>11} {:>11} {:>11} {:>12} {:>12}",
        "size", "run", "wall s", "iterations", "float loss", "8-bit", "time ratio", "score ratio"
    );
    let ratio = |ours: f64, theirs: f64| {
        if has_reference {
            format!("{:.3}", ours / theirs)
        } else {
            "-".into()
        }
    };
    for row in rows {
        println!(
            "{size:>6} {:>9} {:>9.1} {:>11} {:>11.4e} {:>11.4e} {:>12} {:>12}",
            row.name,
            row.seconds,
            row.iterations,
            row.float_loss,
            row.delivered,
            ratio(row.seconds, rows[0].seconds),
            ratio(row.delivered, rows[0].delivered)
        );
    }
}
