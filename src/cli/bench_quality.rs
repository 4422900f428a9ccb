//! `stylize bench --quality`: a plain PyTorch Gatys run (`scripts/torch_gatys.py`:
//! `torch.optim.LBFGS`, 300 iterations from the content, the contract's losses and weights)
//! and then each stylize preset on the same pair and size. Every delivered 8-bit image is
//! scored with the contract loss on the same targets; prints wall times, scores and their
//! ratios to PyTorch's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use image::RgbImage;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use stylize::bench::quality::{pair_request, run_preset, score_reference};
use stylize::engine::OrtEngine;
use stylize::features::OrtFeatures;
use stylize::image_io;
use stylize::model::{InputImage, Vgg19Weights, store};
use stylize::render::output_scale_inputs;
use stylize::render::preset::Quality;

const GATYS_SCRIPT: &str = include_str!("../../scripts/torch_gatys.py");

/// What the quality benchmark runs.
pub struct QualityRun<'a> {
    pub content: &'a Path,
    pub style: &'a Path,
    pub sizes: &'a [usize],
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
    let content = image_io::load(run.content).context("--content")?;
    let style = image_io::load(run.style).context("--style")?;
    if let Some(dir) = run.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("--out-dir {}", dir.display()))?;
    }
    let scratch =
        Scratch(std::env::temp_dir().join(format!("stylize-quality-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0)?;
    let weights_path = scratch.0.join("weights.safetensors");
    store::save(weights, &weights_path)?;
    println!(
        "stylize bench --quality: {} x {}, PyTorch torch.optim.LBFGS ({} iterations, lr 1, history 100, from the content) vs each preset; {} threads each; \"8-bit\" is the delivered image's contract loss",
        run.content.display(),
        run.style.display(),
        run.torch_iterations,
        super::torch::threads(),
    );
    for &size in run.sizes {
        let side = size as u32;
        let reference = pair_request(&content, &style, side, None);
        let (content_input, style_inputs) = output_scale_inputs(&reference, &weights.convention);
        let inputs_path = scratch.0.join(format!("inputs-{size}.safetensors"));
        let result_path = scratch.0.join(format!("result-{size}.safetensors"));
        write_inputs(&inputs_path, &content_input, &style_inputs[0])?;
        let args = [&weights_path, &inputs_path, &result_path]
            .map(|p| p.display().to_string())
            .into_iter()
            .chain([
                "--iterations".into(),
                run.torch_iterations.to_string(),
                "--threads".into(),
                super::torch::threads().to_string(),
            ])
            .collect::<Vec<_>>();
        let torch: TorchGatys = super::torch::run_script("torch-gatys", GATYS_SCRIPT, &args)
            .map_err(anyhow::Error::msg)?
            .pop()
            .context("the PyTorch script printed nothing")?;
        let torch_image = weights
            .convention
            .to_rgb(&read_result(&result_path, &content_input)?);
        save(run.out_dir, "pytorch", size, &torch_image)?;
        let torch_score = score_reference(engine, features, &content, &style, &torch_image)?;
        let mut rows = vec![Row {
            name: "pytorch".into(),
            seconds: torch.targets_s + torch.optimise_s,
            iterations: torch.iterations,
            float_loss: torch.loss,
            delivered: torch_score.total,
        }];
        for quality in Quality::ALL {
            let request = pair_request(&content, &style, side, Some(quality));
            let done = run_preset(engine, features, &request)?;
            save(run.out_dir, quality.name(), size, &done.rendered.image)?;
            rows.push(Row {
                name: quality.name().into(),
                seconds: done.seconds,
                iterations: done.rendered.iterations,
                float_loss: done.rendered.losses.total,
                delivered: done.rendered.delivered.total,
            });
        }
        print_size(size, &rows);
    }
    Ok(())
}

fn print_size(size: usize, rows: &[Row]) {
    println!(
        "{:>6} {:>9} {:>9} {:>11} {:>11} {:>11} {:>12} {:>12}",
        "size", "run", "wall s", "iterations", "float loss", "8-bit", "time ratio", "score ratio"
    );
    let torch = &rows[0];
    for row in rows {
        println!(
            "{size:>6} {:>9} {:>9.1} {:>11} {:>11.4e} {:>11.4e} {:>12.3} {:>12.3}",
            row.name,
            row.seconds,
            row.iterations,
            row.float_loss,
            row.delivered,
            row.seconds / torch.seconds,
            row.delivered / torch.delivered
        );
    }
}
