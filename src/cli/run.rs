//! `stylize run`: one stylisation on this machine, with a progress bar.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use stylize::engine::Progress;
use stylize::image_io;
use stylize::passthrough::{Fields, Passthrough};
use stylize::render::{self, RenderRequest, StyleSource};

use super::args::{
    BackendArgs, DEMO_CONTENT, JobArgs, StyleArgs, byte_count, flag_error, loss_message,
    memory_budget, read_flag_file,
};
use super::progress::{ProgressArgs, Reporter, Step};
use super::view_lut::ViewLutArgs;

#[derive(Args)]
pub struct RunArgs {
    /// Content image (PNG, JPEG or OpenEXR; its alpha passes through). Default: the embedded
    /// demo photo.
    #[arg(long)]
    content: Option<PathBuf>,
    #[command(flatten)]
    styles: StyleArgs,
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    backend: BackendArgs,
    /// Output file: .png, .jpg/.jpeg or .exr.
    #[arg(long, default_value = "stylized.png")]
    out: PathBuf,
    #[command(flatten)]
    progress: ProgressArgs,
    /// Memory this run may use, e.g. `3GiB` (default: the cgroup's limit, else physical
    /// memory, less 512 MiB); frames that do not fit are evaluated in tiles.
    #[arg(long, value_parser = byte_count)]
    memory_budget: Option<usize>,
    #[command(flatten)]
    view_lut: ViewLutArgs,
    /// Print one JSON line with the peak resident memory, seconds per iteration and tiles
    /// (what `stylize bench --frames` reads).
    #[arg(long, hide = true)]
    report: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    let (bytes, name) = match args.content.as_deref() {
        Some(path) => (read_flag_file("content", path)?, path.display().to_string()),
        None => (DEMO_CONTENT.to_vec(), "demo content".to_string()),
    };
    let transfer = match args.job.view.as_deref() {
        Some(name) => stylize::exr_file::Transfer::named("view", name).map_err(flag_error)?,
        None => stylize::exr_file::Transfer::default_for(&bytes),
    };
    let encoding = image_io::Encoding::from_path(&args.out)
        .context("--out")?
        .deepened(args.job.png16)
        .through(transfer);
    let lut = args.view_lut.load(&bytes)?;
    let content = match &lut {
        Some(view) => {
            let file = stylize::exr_file::ExrFile::open(&bytes, &name).context("--content")?;
            file.display_through(view).context("--content")?.into()
        }
        None => image_io::decode_content_with(&bytes, &name, transfer).context("--content")?,
    };
    let styles = args.styles.read()?;
    let request = RenderRequest {
        content,
        styles,
        blend: args.styles.blend,
        options: args.job.options()?,
    };
    request.validate().map_err(flag_error)?;
    let output_size = image_io::fit_longest(
        request.content.width(),
        request.content.height(),
        request.options.size,
    );
    let passthrough = Passthrough::of(
        &bytes,
        &name,
        args.job.keep_passes,
        encoding,
        output_size,
        Fields {
            output: "out",
            keep_passes: "keep_passes",
            size: "size",
        },
    )
    .map_err(flag_error)?;
    let budget = memory_budget(args.memory_budget)?;
    let backends = args.backend.build()?;
    let footprint = backends.engine.footprint();
    let for_job = budget.bytes.saturating_sub(footprint.resident);
    let plan = render::plan_memory(&request, &footprint, Some(for_job)).map_err(flag_error)?;
    let source = StyleSource::uncached(backends.features.as_ref());
    let total = request.options.iterations * request.options.scales;
    let reporter = Reporter::new(&args.progress, total as u64)?;
    let mut marks: Vec<std::time::Duration> = Vec::new();
    let scales = request.options.scales;
    let mut on_progress = |p: &Progress| {
        marks.push(p.elapsed);
        let l = &p.losses;
        let losses = loss_message(p.scale, l.total, l.content, l.style, l.tv);
        let step = Step {
            frame: None,
            scale: (p.scale + 1, scales),
            iteration: (p.iteration, p.total),
            losses: &losses,
        };
        reporter.step(p.iteration as u64, &step);
        ControlFlow::Continue(())
    };
    tracing::info!(
        engine = %backends.engine.name(),
        precompute = %backends.features.name(),
        size = request.options.size,
        tiles = plan.tiles,
        kept_stages = plan.kept_stages,
        lbfgs_history = plan.history,
        memory_estimate_mib = plan.estimate >> 20,
        budget_mib = budget.bytes >> 20,
        "stylising"
    );
    let rendered = render::render_planned(
        &request,
        backends.engine.as_ref(),
        source,
        &plan,
        &mut on_progress,
    )
    .map_err(flag_error)?;
    reporter.finish();
    let encoded = image_io::Delivered {
        image: &rendered.image,
        deep: &rendered.deep,
    }
    .encode_through(encoding, lut.as_ref())
    .context("--out")?;
    let encoded = match &passthrough {
        Some(passthrough) => passthrough.apply(encoded, encoding).context("--content")?,
        None => encoded,
    };
    std::fs::write(&args.out, encoded).with_context(|| format!("--out: {}", args.out.display()))?;
    if args.report {
        // Between the first and the last iteration when there are two or more (the first
        // also computed the content targets).
        let per_iteration = match (marks.first(), marks.last()) {
            (Some(first), Some(last)) if marks.len() > 1 => {
                (*last - *first).as_secs_f64() / (marks.len() - 1) as f64
            }
            (_, Some(only)) => only.as_secs_f64(),
            _ => 0.0,
        };
        println!(
            "{}",
            serde_json::json!({
                "peak_rss_bytes": crate::bench::peak_rss_bytes(),
                "seconds_per_iteration": per_iteration,
                "tiles": plan.tiles,
                "kept_stages": plan.kept_stages,
                "estimate_bytes": plan.estimate + footprint.resident,
            })
        );
    }
    println!(
        "wrote {} ({}x{}) after {} iterations (stopped on {}) in {:.1}s, final loss {:.4e}, 8-bit image {:.4e}",
        args.out.display(),
        rendered.image.width(),
        rendered.image.height(),
        rendered.iterations,
        rendered.stopped.name(),
        rendered.stats.optimise.as_secs_f64(),
        rendered.losses.total,
        rendered.delivered.total
    );
    Ok(())
}
