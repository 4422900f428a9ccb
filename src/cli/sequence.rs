//! `stylize sequence`: a shot stylised in this process, frame after frame, each later frame
//! warm-started from the previous one along the motion, with a progress bar over frames and
//! iterations. A restarted run resumes after the last frame it wrote. `--compare-stills`
//! then stylises every frame again as an independent still and prints how the two compare
//! (warping error, time, style loss).

use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;

use stylize::engine::Progress;
use stylize::image_io;
use stylize::passthrough::Passthrough;
use stylize::render::sequence::{
    FrameRendered, SequenceOptions, SequenceRenderer, keyframe_iterations, warping_error,
};
use stylize::render::{StyleSource, Styling};

use super::args::{BackendArgs, JobArgs, StyleArgs, byte_count, flag_error, memory_budget};
use super::frame_pattern::FramePattern;
use super::frames::{Shot, ShotArgs};
use super::output_file;
use super::progress::{ProgressArgs, Reporter, Step};
use super::toward::TowardFrame;
use super::view_lut::ViewLutArgs;

#[derive(Args)]
pub struct SequenceArgs {
    #[command(flatten)]
    shot: ShotArgs,
    #[command(flatten)]
    styles: StyleArgs,
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    view_lut: ViewLutArgs,
    #[command(flatten)]
    backend: BackendArgs,
    /// Stylise every frame again, ignoring frames already written.
    #[arg(long)]
    restart: bool,
    /// Afterwards, stylise every frame as an independent still (the first frame's settings)
    /// into this pattern and print the comparison: E_warp, seconds and style loss per frame.
    #[arg(long)]
    compare_stills: Option<String>,
    #[command(flatten)]
    progress: ProgressArgs,
    /// Memory this run may use, e.g. `3GiB` (default: detected, as for `stylize run`).
    #[arg(long, value_parser = byte_count)]
    memory_budget: Option<usize>,
}

/// What one finished frame measured.
struct FrameFigures {
    seconds: f64,
    iterations: usize,
    style: f64,
    e_warp: Option<f64>,
}

impl FrameFigures {
    fn of(frame: &FrameRendered) -> Self {
        let r = &frame.rendered;
        Self {
            seconds: (r.stats.precompute + r.stats.optimise + r.stats.score).as_secs_f64(),
            iterations: r.iterations,
            style: r.delivered.style,
            e_warp: frame
                .warped_previous
                .as_ref()
                .and_then(|(warped, certainty)| warping_error(&r.image, warped, certainty)),
        }
    }
}

/// One line per finished frame.
fn frame_line(number: u64, frame: &FrameRendered, figures: &FrameFigures, path: &Path) -> String {
    format!(
        "frame {number}: wrote {} after {} iterations in {:.1}s, style {:.4e}, temporal {:.4e}, \
         held {:.1}%, E_warp {}",
        path.display(),
        figures.iterations,
        figures.seconds,
        figures.style,
        frame.rendered.delivered.temporal,
        100.0 * frame.certain,
        figures
            .e_warp
            .map_or("-".to_string(), |e| format!("{e:.2}")),
    )
}

/// The pieces one pass over the shot needs.
struct Pass<'a> {
    shot: &'a Shot,
    /// The keyframe the frames are pulled toward (--toward-frame).
    toward: Option<&'a TowardFrame>,
    /// Iterations of each frame, by position.
    iterations: Vec<usize>,
    /// The output pattern.
    out: &'a FramePattern,
    reporter: &'a Reporter,
    /// Iterations of the run's passes already done.
    done: &'a std::cell::Cell<u64>,
    /// The run continues the chain from a frame before the range.
    chained: bool,
    first_scales: usize,
    /// PNG frames at 16 bits per channel.
    png16: bool,
    /// The longest side of the outputs (--size).
    size: u32,
    /// --keep-passes.
    keep_passes: bool,
}

impl Pass<'_> {
    /// Stylises frames `from..` with `renderer`, writing each as it finishes.
    fn run(&self, renderer: &mut SequenceRenderer<'_>, from: usize) -> Result<Vec<FrameFigures>> {
        let shot = self.shot;
        let frames = shot.numbers.len();
        let mut figures = Vec::new();
        for position in from..frames {
            let number = shot.numbers[position];
            let mut frame = shot.frame(position, self.chained)?;
            frame.toward = self.toward.map(|t| t.link(shot, position)).transpose()?;
            let path = self.out.path(number);
            let encoding = self.encoding(&path)?;
            let flag = self.out.flag();
            let passthrough =
                shot.passthrough(position, encoding, self.size, self.keep_passes, flag)?;
            let finished = self.done.get();
            let first = position == 0 && !self.chained || renderer.state().independent();
            let scales = if first { self.first_scales } else { 1 };
            let mut on_progress = |p: &Progress| {
                let losses = format!(
                    "loss {:.4e} (style {:.3e} temporal {:.3e})",
                    p.losses.total, p.losses.style, p.losses.temporal
                );
                let step = Step {
                    frame: Some((number, position + 1, frames)),
                    scale: (p.scale + 1, scales),
                    iteration: (p.iteration, p.total),
                    losses: &losses,
                };
                self.reporter.step(finished + p.iteration as u64, &step);
                ControlFlow::Continue(())
            };
            let rendered = renderer
                .frame(frame, &mut on_progress)
                .map_err(flag_error)?;
            let spent = self.iterations[position];
            self.done.set(finished + spent as u64);
            let delivered = image_io::Delivered {
                image: &rendered.rendered.image,
                deep: &rendered.rendered.deep,
            };
            write_whole(
                delivered,
                &path,
                encoding,
                shot.studio(),
                passthrough.as_ref(),
            )
            .with_context(|| format!("--{flag}"))?;
            if passthrough.is_some() {
                // The chain goes on from the file as written (alpha put back), as a later
                // task continuing from it would.
                let written = shot.read_delivered(&path, flag)?;
                renderer.state().delivered_as(written);
            }
            let measured = FrameFigures::of(&rendered);
            self.reporter
                .say(&frame_line(number, &rendered, &measured, &path));
            figures.push(measured);
        }
        Ok(figures)
    }
}

impl Pass<'_> {
    /// How the output at `path` is encoded.
    fn encoding(&self, path: &Path) -> Result<image_io::Encoding> {
        let encoding = image_io::Encoding::from_path(path)
            .with_context(|| format!("--{}", self.out.flag()))?;
        Ok(encoding.deepened(self.png16).through(self.shot.transfer()))
    }
}

/// Writes `image` whole, then renames it into place: a stopped run never leaves half a frame
/// to resume from. An OpenEXR output returns through `view` when it is a studio's;
/// `passthrough` puts back what the frame carried (alpha, passes).
fn write_whole(
    image: image_io::Delivered<'_>,
    path: &Path,
    encoding: image_io::Encoding,
    view: Option<&stylize::colour::View>,
    passthrough: Option<&Passthrough>,
) -> Result<()> {
    let mut bytes = image.encode_through(encoding, view)?;
    if let Some(passthrough) = passthrough {
        bytes = passthrough.apply(bytes, encoding)?;
    }
    output_file::write_bytes_whole(path, &bytes)
}

pub fn run(args: SequenceArgs) -> Result<()> {
    let shot = Shot::new(&args.shot, args.job.view.as_deref())?.with_view_lut(&args.view_lut)?;
    let out = FramePattern::parse("out", &args.shot.out)?;
    let compare = match &args.compare_stills {
        Some(pattern) => {
            let pattern = FramePattern::parse("compare-stills", pattern)?;
            image_io::Encoding::from_path(&pattern.path(0)).context("--compare-stills")?;
            Some(pattern)
        }
        None => None,
    };
    let options = args.job.options()?;
    let shot_options = shot.options(options.iterations);
    let base = Styling {
        styles: args.styles.read()?,
        blend: args.styles.blend,
        options,
    };
    // Frames already written, in order from the first of the range, are kept unless
    // --restart; the chain continues from the last of them, or from the frame before the
    // range (checked before any work).
    let done = if args.restart { 0 } else { shot.written() };
    let frames = shot.numbers.len();
    let chain = if done < frames {
        shot.chain_start(done)?
    } else {
        None
    };
    // The first frame is checked before anything runs (the others as they come).
    base.with_content(
        shot.frame(0, chain.is_some())?
            .content
            .context("--frames")?,
    )
    .validate()
    .map_err(flag_error)?;
    for pattern in std::iter::once(&out).chain(&compare) {
        let encoding =
            image_io::Encoding::from_path(&pattern.path(shot.numbers[0]))?.through(shot.transfer());
        let size = base.options.size;
        shot.passthrough(0, encoding, size, args.job.keep_passes, pattern.flag())?;
    }
    let budget = memory_budget(args.memory_budget)?;
    let backends = args.backend.build()?;
    let for_job = budget
        .bytes
        .saturating_sub(backends.engine.footprint().resident);
    let source = StyleSource::uncached(backends.features.as_ref());
    let renderer_with = |options: SequenceOptions| {
        SequenceRenderer::new(
            base.clone(),
            options,
            backends.engine.as_ref(),
            source,
            Some(for_job),
        )
        .map_err(flag_error)
    };
    let mut renderer = renderer_with(shot_options.clone())?;
    if shot.args().draft {
        renderer.state().draft();
    }
    let first_scales = base.options.scales;
    let first_iterations = base.options.iterations * first_scales;
    let later_iterations = shot_options.later_iterations;
    let chained = chain.is_some();
    // A keyframe continued from a frame further back (--from-frame) runs the still's
    // iterations per scale: more of it is new than of a frame following the one before.
    let keyframe = done == 0 && shot.starts_keyframe();
    let keyframe_still = if keyframe {
        shot.keyframe_still()?
    } else {
        None
    };
    let keyframe_runs = keyframe_iterations(
        base.options.iterations,
        keyframe_still.is_some() || shot.continues_draft(),
    );
    let iterations_at = |p: usize| match p {
        0 if !chained => first_iterations,
        0 if keyframe => keyframe_runs,
        _ => later_iterations,
    };
    let sequence_total = (done..frames).map(iterations_at).sum::<usize>();
    let stills_total = compare.as_ref().map_or(0, |_| frames * first_iterations);
    let reporter = Reporter::new(&args.progress, (sequence_total + stills_total) as u64)?;
    if let Some(start) = &chain {
        let output =
            shot.read_chain_start(start, if done > 0 { "out" } else { "continue-from" })?;
        let to_next = if done > 0 {
            shot.to_next(shot.numbers[done - 1])?
        } else {
            shot.chain_to_first(start)?
        };
        renderer.state().resume_after(done, output, to_next);
        if keyframe {
            // The still's iterations per scale; the state takes its share with a still or
            // from a draft.
            renderer.state().next_runs(base.options.iterations);
            if shot.continues_draft() {
                renderer.state().continue_from_draft();
            }
            if let Some(path) = &keyframe_still {
                let still = shot.read_delivered(path, "keyframe-still")?;
                renderer.state().keyframe_still(still);
                reporter.say(&shot.keyframe_still_message(path));
            }
        }
        reporter.say(&match (done, start.number) {
            (1.., Some(number)) => format!("resuming after frame {number} ({done} frames written)"),
            (_, Some(number)) => format!(
                "continuing the chain from frame {number}: {}",
                start.path.display()
            ),
            (_, None) => format!("continuing the chain from {}", start.path.display()),
        });
    }
    let toward = if done < frames {
        TowardFrame::for_shot(&shot, shot.chunk_start())?
    } else {
        None
    };
    if let Some(toward) = &toward {
        renderer.state().pull_toward(toward.image.clone());
        reporter.say(&format!(
            "pulling frames {}-{} toward frame {}",
            shot.numbers[0],
            shot.numbers[frames - 1],
            toward.number
        ));
    }
    let done_iterations = std::cell::Cell::new(0);
    let pass = |out, chained, toward, iterations| Pass {
        shot: &shot,
        toward,
        iterations,
        out,
        reporter: &reporter,
        done: &done_iterations,
        chained,
        first_scales,
        png16: args.job.png16,
        size: base.options.size,
        keep_passes: args.job.keep_passes,
    };
    let chain_iterations = (0..frames).map(iterations_at).collect();
    let sequence =
        pass(&out, chained, toward.as_ref(), chain_iterations).run(&mut renderer, done)?;
    if done == frames {
        reporter.say(&format!(
            "every frame of {} is written already (--restart to redo them)",
            args.shot.out
        ));
    }
    if let Some(pattern) = &compare {
        let mut stills = renderer_with(SequenceOptions {
            independent: true,
            ..shot_options
        })?;
        let independent =
            pass(pattern, false, None, vec![first_iterations; frames]).run(&mut stills, 0)?;
        reporter.finish();
        if done > 0 {
            println!(
                "(the sequence resumed: its figures cover frames {}.. only)",
                done + 1
            );
        }
        print!("{}", comparison(&sequence, &independent));
    } else {
        reporter.finish();
    }
    Ok(())
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

/// The table the README quotes: each mode's mean E_warp, seconds and iterations per frame,
/// style loss, and the sequence's ratios to the stills.
fn comparison(sequence: &[FrameFigures], stills: &[FrameFigures]) -> String {
    let row = |name: &str, f: &[FrameFigures]| {
        let later = |f: &[FrameFigures]| {
            f.iter()
                .skip(1)
                .map(|x| x.iterations as f64)
                .collect::<Vec<_>>()
        };
        (
            name.to_string(),
            mean(f.iter().filter_map(|x| x.e_warp)),
            mean(f.iter().map(|x| x.seconds)),
            f.iter().map(|x| x.seconds).sum::<f64>(),
            mean(later(f).into_iter()),
            mean(f.iter().map(|x| x.style)),
        )
    };
    let rows = [row("stills", stills), row("sequence", sequence)];
    let mut out = String::from(
        "| mode | E_warp (8-bit², mean) | seconds per frame | shot seconds | iterations per later frame | style loss (mean) |\n|---|---|---|---|---|---|\n",
    );
    for (name, e_warp, per_frame, shot, later, style) in &rows {
        out += &format!(
            "| {name} | {e_warp:.2} | {per_frame:.2} | {shot:.1} | {later:.1} | {style:.4e} |\n"
        );
    }
    let worst_style = sequence
        .iter()
        .zip(stills)
        .map(|(s, i)| s.style / i.style)
        .fold(0f64, f64::max);
    let (s, q) = (&rows[0], &rows[1]);
    out += &format!(
        "sequence / stills: E_warp {:.3}x ({:.1}x lower), shot time {:.3}x, later-frame iterations {:.3}x, style loss per frame at most {:.3}x\n",
        q.1 / s.1,
        s.1 / q.1,
        q.3 / s.3,
        q.4 / s.4,
        worst_style
    );
    out
}
