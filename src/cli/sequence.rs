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
use stylize::render::sequence::{FrameRendered, SequenceOptions, SequenceRenderer, warping_error};
use stylize::render::{StyleSource, Styling};

use super::args::{
    BackendArgs, JobArgs, StyleArgs, byte_count, flag_error, memory_budget, progress_bar,
};
use super::frames::{Shot, ShotArgs};

#[derive(Args)]
pub struct SequenceArgs {
    #[command(flatten)]
    shot: ShotArgs,
    #[command(flatten)]
    styles: StyleArgs,
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    backend: BackendArgs,
    /// Stylise every frame again, ignoring frames already written.
    #[arg(long)]
    restart: bool,
    /// Afterwards, stylise every frame as an independent still (the first frame's settings)
    /// into this pattern and print the comparison: E_warp, seconds and style loss per frame.
    #[arg(long)]
    compare_stills: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
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
    /// The output pattern and the flag that named it.
    out: (&'a str, &'a str),
    bar: &'a indicatif::ProgressBar,
    first_iterations: usize,
    later_iterations: usize,
    /// PNG frames at 16 bits per channel.
    png16: bool,
}

impl Pass<'_> {
    /// Stylises frames `from..` with `renderer`, writing each as it finishes.
    fn run(&self, renderer: &mut SequenceRenderer<'_>, from: usize) -> Result<Vec<FrameFigures>> {
        let shot = self.shot;
        let frames = shot.numbers.len();
        let mut figures = Vec::new();
        let mut finished = self.bar.position();
        for position in from..frames {
            let number = shot.numbers[position];
            let frame = shot.frame(position)?;
            let mut on_progress = |p: &Progress| {
                self.bar.set_position(finished + p.iteration as u64);
                self.bar.set_message(format!(
                    "frame {}/{frames} loss {:.4e} (style {:.3e} temporal {:.3e})",
                    position + 1,
                    p.losses.total,
                    p.losses.style,
                    p.losses.temporal
                ));
                ControlFlow::Continue(())
            };
            let rendered = renderer
                .frame(frame, &mut on_progress)
                .map_err(flag_error)?;
            finished += self.iterations_of(position, renderer) as u64;
            self.bar.set_position(finished);
            let (flag, pattern) = self.out;
            let path = shot.path_in(flag, pattern, number)?;
            let delivered = image_io::Delivered {
                image: &rendered.rendered.image,
                deep: &rendered.rendered.deep,
            };
            write_whole(delivered, &path, self.png16).with_context(|| format!("--{flag}"))?;
            let measured = FrameFigures::of(&rendered);
            let line = frame_line(number, &rendered, &measured, &path);
            if self.bar.is_hidden() {
                println!("{line}");
            } else {
                self.bar.println(line);
            }
            figures.push(measured);
        }
        Ok(figures)
    }

    fn iterations_of(&self, position: usize, renderer: &mut SequenceRenderer<'_>) -> usize {
        if position == 0 || renderer.state().independent() {
            self.first_iterations
        } else {
            self.later_iterations
        }
    }
}

/// Writes `image` whole, then renames it into place: a stopped run never leaves half a frame
/// to resume from.
fn write_whole(image: image_io::Delivered<'_>, path: &Path, deep: bool) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("png");
    let partial = path.with_extension(format!("partial.{extension}"));
    image.save(
        &partial,
        image_io::Encoding::from_path(path)?.deepened(deep),
    )?;
    std::fs::rename(&partial, path).with_context(|| path.display().to_string())?;
    Ok(())
}

pub fn run(args: SequenceArgs) -> Result<()> {
    let shot = Shot::new(&args.shot)?;
    if let Some(pattern) = &args.compare_stills {
        image_io::Encoding::from_path(&shot.path_in("compare-stills", pattern, 0)?)
            .context("--compare-stills")?;
    }
    let options = args.job.options()?;
    let shot_options = shot.options(options.iterations);
    let base = Styling {
        styles: args.styles.read()?,
        blend: args.styles.blend,
        options,
    };
    // The first frame is checked before anything runs (the others as they come).
    base.with_content(shot.frame(0)?.content.context("--frames")?)
        .validate()
        .map_err(flag_error)?;
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
    // Frames already written, in order from the first, are kept unless --restart.
    let done = if args.restart {
        0
    } else {
        shot.numbers
            .iter()
            .take_while(|&&n| shot.out_path(n).is_ok_and(|p| p.exists()))
            .count()
    };
    if done > 0 && done < shot.numbers.len() {
        let number = shot.numbers[done - 1];
        let path = shot.out_path(number)?;
        let bytes = std::fs::read(&path).with_context(|| format!("--out: {}", path.display()))?;
        let output = image_io::decode_with(&bytes, &path.display().to_string(), shot.transfer())
            .with_context(|| format!("--out: resuming from {}", path.display()))?;
        renderer
            .state()
            .resume_after(done, output, shot.to_next(number)?);
        println!("resuming after frame {number} ({done} frames written)");
    }
    let frames = shot.numbers.len();
    let first_iterations = base.options.iterations * base.options.scales;
    let later_iterations = shot_options.later_iterations;
    let sequence_total = (done..frames)
        .map(|p| {
            if p == 0 {
                first_iterations
            } else {
                later_iterations
            }
        })
        .sum::<usize>();
    let stills_total = args
        .compare_stills
        .as_ref()
        .map_or(0, |_| frames * first_iterations);
    let bar = progress_bar((sequence_total + stills_total) as u64, args.quiet)?;
    let pass = |out| Pass {
        shot: &shot,
        out,
        bar: &bar,
        first_iterations,
        later_iterations,
        png16: args.job.png16,
    };
    let sequence = pass(("out", &args.shot.out)).run(&mut renderer, done)?;
    if done == frames {
        println!(
            "every frame of {} is written already (--restart to redo them)",
            args.shot.out
        );
    }
    if let Some(pattern) = &args.compare_stills {
        let mut stills = renderer_with(SequenceOptions {
            independent: true,
            ..shot_options
        })?;
        let independent = pass(("compare-stills", pattern)).run(&mut stills, 0)?;
        bar.finish_and_clear();
        if done > 0 {
            println!(
                "(the sequence resumed: its figures cover frames {}.. only)",
                done + 1
            );
        }
        print!("{}", comparison(&sequence, &independent));
    } else {
        bar.finish();
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
