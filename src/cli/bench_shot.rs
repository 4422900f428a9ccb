//! `stylize bench --shot`: one shot rendered three ways in this process, each task timed on
//! its own: every frame as an independent still, the sequential chain, and the parallel
//! method in K chunks (docs/sequences.md: drafts of the middle frame and of the keyframes'
//! stills; then the keyframes and the middle frame itself continued from its draft; then
//! every chunk from its keyframe, pulled toward the next). Prints the
//! critical path (the slowest task of each stage, summed), the CPU time, the whole-shot
//! warping error (`render::coherence`), the worst join against the median frame and each
//! frame's style loss against its still's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use image::RgbImage;

use stylize::motion::Motion;
use stylize::render::coherence::warping_error;
use stylize::render::sequence::{SequenceOptions, SequenceRenderer, TowardLink};
use stylize::render::{StyleSource, Styling};

use super::args::{BackendArgs, JobArgs, StyleArgs, flag_error};
use super::frames::{ChainStart, Shot, ShotArgs};
use super::toward::TowardFrame;

/// What `--shot` takes from the bench's flags.
pub struct ShotBench<'a> {
    pub frames: &'a str,
    pub chunks: usize,
    pub quality: &'a str,
    pub size: u32,
    /// Times the chain and the parallel method run, in turn (each task's fastest kept).
    pub repeat: usize,
    pub style: Option<&'a Path>,
    pub out_dir: Option<&'a Path>,
}

/// The in-process job a shot task runs, parsed as `stylize sequence` parses its flags.
#[derive(Parser)]
struct ShotJob {
    #[command(flatten)]
    shot: ShotArgs,
    #[command(flatten)]
    styles: StyleArgs,
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    backend: BackendArgs,
}

/// One frame as a method delivered it.
#[derive(Clone)]
struct Delivered {
    image: RgbImage,
    style: f64,
    /// The objective's evaluations that rendered it (an iteration may take several).
    evaluations: usize,
    /// Where the renderer spent its time on it.
    phases: Phases,
}

/// A frame's (or a task's) time inside the renderer, by phase, in seconds.
#[derive(Clone, Copy, Default)]
struct Phases {
    /// The style targets (computed for every frame: the bench's styles are not cached).
    precompute: f64,
    evaluating: f64,
    /// Building the objective per scale.
    building: f64,
    /// The optimiser's own work between evaluations.
    optimiser: f64,
    /// Scoring the delivered image.
    score: f64,
}

impl Phases {
    fn of(stats: &stylize::render::RenderStats) -> Self {
        let evaluating = stats.evaluating.as_secs_f64();
        let building = stats.building.as_secs_f64();
        Self {
            precompute: stats.precompute.as_secs_f64(),
            evaluating,
            building,
            optimiser: (stats.optimise.as_secs_f64() - evaluating - building).max(0.0),
            score: stats.score.as_secs_f64(),
        }
    }

    fn total(frames: &[&Delivered]) -> Self {
        frames.iter().fold(Self::default(), |sum, f| Self {
            precompute: sum.precompute + f.phases.precompute,
            evaluating: sum.evaluating + f.phases.evaluating,
            building: sum.building + f.phases.building,
            optimiser: sum.optimiser + f.phases.optimiser,
            score: sum.score + f.phases.score,
        })
    }

    /// The phases and what `wall` spent outside them (reading frames, warping, composing
    /// motion, preparing the start image).
    fn said(&self, wall: f64) -> String {
        let inside =
            self.precompute + self.evaluating + self.building + self.optimiser + self.score;
        format!(
            "evaluating {:.1} s, precompute {:.1} s, building {:.1} s, optimiser {:.1} s, \
             score {:.1} s, outside the renderer {:.1} s",
            self.evaluating,
            self.precompute,
            self.building,
            self.optimiser,
            self.score,
            wall - inside
        )
    }
}

/// One task's cost.
#[derive(Clone, Copy, Default)]
struct Cost {
    wall: f64,
    cpu: f64,
}

impl Cost {
    fn add(self, other: Cost) -> Cost {
        Cost {
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
        }
    }

    /// The faster of two runs of the same task.
    fn fastest(self, other: Cost) -> Cost {
        if other.wall < self.wall { other } else { self }
    }
}

/// This process's CPU time so far, user and system, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Runs `task`, measuring it.
fn timed<T>(task: impl FnOnce() -> Result<T>) -> Result<(T, Cost)> {
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let value = task()?;
    let cost = Cost {
        wall: wall.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu,
    };
    Ok((value, cost))
}

/// The chunk whose first frame a shot rendered in parallel starts from (a still): the
/// middle one, so no keyframe is further than half the shot from it.
pub fn middle_chunk(chunks: usize) -> usize {
    chunks / 2
}

/// The first frame of each chunk, by position: `chunks` contiguous chunks as Open Job
/// Description's CONTIGUOUS chunking splits a range (even sizes, the leftover frames spread
/// across the chunks).
pub fn chunk_starts(frames: usize, chunks: usize) -> Vec<usize> {
    let chunks = chunks.clamp(1, frames.max(1));
    let (small, left) = (frames / chunks, frames % chunks);
    let mut sizes = vec![small; chunks];
    for i in 0..left {
        sizes[i * chunks / left] += 1;
    }
    sizes
        .iter()
        .scan(0, |start, size| {
            let this = *start;
            *start += size;
            Some(this)
        })
        .collect()
}

struct Bench<'a> {
    shot: &'a Shot,
    /// The whole shot's flags and view, which each task's are made from.
    args: &'a ShotArgs,
    view: Option<&'a str>,
    renderer: &'a dyn Fn(SequenceOptions) -> Result<SequenceRenderer<'a>>,
    options: SequenceOptions,
    /// The still's iterations per scale (a keyframe runs them at the output size).
    keyframe_iterations: usize,
}

impl Bench<'_> {
    /// Renders `shot`'s frames at `positions` in order on `renderer`, which continues as
    /// set up (`chained`: from a frame before them), each with its link in `toward` (by
    /// position) when the shot is pulled.
    fn frames(
        shot: &Shot,
        renderer: &mut SequenceRenderer<'_>,
        positions: std::ops::Range<usize>,
        chained: bool,
        toward: Option<&[TowardLink]>,
    ) -> Result<Vec<Delivered>> {
        let mut delivered = Vec::new();
        for position in positions {
            let mut frame = shot.frame(position, chained)?;
            frame.toward = toward.map(|links| links[position].clone());
            let rendered = renderer
                .frame(frame, &mut |_| std::ops::ControlFlow::Continue(()))
                .map_err(flag_error)?;
            delivered.push(Delivered {
                image: rendered.rendered.image,
                style: rendered.rendered.delivered.style,
                evaluations: rendered.rendered.evaluations,
                phases: Phases::of(&rendered.rendered.stats),
            });
        }
        Ok(delivered)
    }

    /// Every frame as an independent still, one task each.
    fn stills(&self) -> Result<(Vec<Delivered>, Vec<Cost>)> {
        let mut renderer = (self.renderer)(SequenceOptions {
            independent: true,
            ..self.options.clone()
        })?;
        let mut frames = Vec::new();
        let mut costs = Vec::new();
        for position in 0..self.shot.numbers.len() {
            let (mut one, cost) = timed(|| {
                Self::frames(
                    self.shot,
                    &mut renderer,
                    position..position + 1,
                    false,
                    None,
                )
            })?;
            frames.append(&mut one);
            costs.push(cost);
        }
        Ok((frames, costs))
    }

    /// The sequential chain: one task.
    fn chain(&self) -> Result<(Vec<Delivered>, Cost)> {
        let mut renderer = (self.renderer)(self.options.clone())?;
        let frames = 0..self.shot.numbers.len();
        timed(|| Self::frames(self.shot, &mut renderer, frames, false, None))
    }

    /// The shot as one task of the parallel method sees it: its flags as the template's
    /// task passes them.
    fn task_shot(&self, task: &Task) -> Result<Shot> {
        let mut args = self.args.clone();
        args.frame_range = Some(format!("{}-{}", task.range.0, task.range.1));
        args.backward = task.backward;
        args.from_frame = task.from;
        args.toward_frame = task.toward;
        args.starts_chain = task.starts_chain;
        args.draft = task.draft;
        // Read from the drafts already rendered (`task`), not from files.
        args.keyframe_still = task.with_still.then(|| "keyframe-still_####.png".into());
        args.from_draft = task.from_draft.then(|| "draft_####.png".into());
        Shot::new(&args, self.view)
    }

    /// Runs `task` in this process as `stylize sequence` would, continuing from (and
    /// pulled toward) the frames in `done`, or from a draft in `drafts` (a keyframe from its
    /// own still there too); returns its frames by number.
    fn task(
        &self,
        task: &Task,
        done: &BTreeMap<u64, Delivered>,
        drafts: &BTreeMap<u64, Delivered>,
    ) -> Result<Vec<(u64, Delivered)>> {
        let shot = self.task_shot(task)?;
        let mut renderer = (self.renderer)(self.options.clone())?;
        let image = |frames: &BTreeMap<u64, Delivered>, number: u64| {
            frames
                .get(&number)
                .map(|d| d.image.clone())
                .with_context(|| format!("frame {number} is not rendered yet"))
        };
        let delivered = |number: u64| image(done, number);
        if task.draft {
            renderer.state().draft();
        }
        let chained = !task.starts_chain;
        if chained {
            let start = shot.chunk_start();
            let from = ChainStart {
                number: Some(start),
                path: Default::default(),
            };
            let to_first = shot.chain_to_first(&from)?;
            let state = renderer.state();
            let continued = match task.from_draft {
                true => image(drafts, start)?,
                false => delivered(start)?,
            };
            state.resume_after(0, continued, to_first);
            if task.from_draft {
                state.continue_from_draft();
            }
            if shot.starts_keyframe() {
                state.next_runs(self.keyframe_iterations);
            }
            if task.with_still {
                state.keyframe_still(image(drafts, shot.numbers[0])?);
            }
        }
        let links = match task.toward {
            Some(toward) => {
                renderer.state().pull_toward(delivered(toward)?);
                let start = shot.chunk_start();
                Some(TowardFrame::links(&shot, start, toward, &shot.numbers)?)
            }
            None => None,
        };
        let positions = 0..shot.numbers.len();
        let frames = Self::frames(&shot, &mut renderer, positions, chained, links.as_deref())?;
        Ok(shot.numbers.iter().copied().zip(frames).collect())
    }

    /// `chain`, saying what it cost (the `run`-th time).
    fn chain_reported(&self, run: usize) -> Result<(Vec<Delivered>, Cost)> {
        eprintln!("bench --shot: the sequential chain (run {run})");
        let (chain, cost) = self.chain()?;
        eprintln!(
            "bench --shot: the chain: {:.1} s, {} evaluations (its first frame {}); {}",
            cost.wall,
            chain.iter().map(|f| f.evaluations).sum::<usize>(),
            chain[0].evaluations,
            Phases::total(&chain.iter().collect::<Vec<_>>()).said(cost.wall)
        );
        Ok((chain, cost))
    }

    /// `parallel`, saying so (the `run`-th time).
    fn parallel_reported(
        &self,
        chunks: usize,
        run: usize,
    ) -> Result<(Vec<Delivered>, Vec<Vec<Cost>>)> {
        eprintln!("bench --shot: the parallel method, {chunks} chunks (run {run})");
        self.parallel(chunks)
    }

    /// The parallel method in `chunks` chunks, stage by stage, each task timed alone.
    /// Returns the frames in order and each stage's task costs.
    fn parallel(&self, chunks: usize) -> Result<(Vec<Delivered>, Vec<Vec<Cost>>)> {
        let (mut done, mut drafts) = (BTreeMap::new(), BTreeMap::new());
        let mut stages = Vec::new();
        for stage in plan(&self.shot.numbers, chunks) {
            let mut costs = Vec::new();
            for task in &stage {
                let (frames, cost) = timed(|| self.task(task, &done, &drafts))?;
                eprintln!(
                    "bench --shot: task {}-{}{}: {:.1} s, {} evaluations; {}",
                    task.range.0,
                    task.range.1,
                    if task.draft { " (draft)" } else { "" },
                    cost.wall,
                    frames.iter().map(|(_, f)| f.evaluations).sum::<usize>(),
                    Phases::total(&frames.iter().map(|(_, f)| f).collect::<Vec<_>>())
                        .said(cost.wall)
                );
                if task.draft {
                    drafts.extend(frames);
                } else {
                    done.extend(frames);
                }
                costs.push(cost);
            }
            stages.push(costs);
        }
        let frames = done.into_values().collect::<Vec<_>>();
        if frames.len() != self.shot.numbers.len() {
            bail!("the parallel method left frames out");
        }
        Ok((frames, stages))
    }
}

/// One task of the parallel method: the flags its `stylize sequence` (or
/// `submit-sequence`) gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The frames, first and last (rendered last to first when `backward`).
    pub range: (u64, u64),
    pub backward: bool,
    pub from: Option<u64>,
    pub toward: Option<u64>,
    pub starts_chain: bool,
    /// A draft, written apart from the shot's frames (--draft): the middle frame's, which
    /// the keyframes and the frame itself continue from (--from-draft), or a keyframe's
    /// still (--keyframe-still; a still drafted the same way).
    pub draft: bool,
    /// A keyframe starting from its own still (--keyframe-still).
    pub with_still: bool,
    /// Continued from the middle frame's draft (--from-draft): a keyframe, or the middle
    /// frame itself.
    pub from_draft: bool,
}

impl Task {
    fn frames(range: (u64, u64)) -> Self {
        Self {
            range,
            backward: false,
            from: None,
            toward: None,
            starts_chain: false,
            draft: false,
            with_still: false,
            from_draft: false,
        }
    }
}

/// The parallel method's stages for a shot of frames `numbers` in `chunks` chunks, as
/// the Open Job Description template runs them: a draft of the middle chunk's first frame
/// (a still whose finest scale stops early), and beside it the stills of the keyframes
/// further than the next frame from it, drafted the same way; every other chunk's keyframe
/// from the middle frame's draft (the first frame of a chunk after the middle one, the last
/// frame of one before it), starting from its own still where the motion uncovers what the
/// middle frame never showed, and at once the middle frame finished from its draft; then
/// every chunk's other frames from its keyframe, away from the middle frame (backward
/// before it), pulled toward the next chunk's keyframe that way.
pub fn plan(numbers: &[u64], chunks: usize) -> Vec<Vec<Task>> {
    let starts = chunk_starts(numbers.len(), chunks);
    let middle_index = middle_chunk(starts.len());
    let middle = numbers[starts[middle_index]];
    let bounds: Vec<(u64, u64)> = starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let end = starts.get(k + 1).map_or(numbers.len(), |&next| next) - 1;
            (numbers[start], numbers[end])
        })
        .collect();
    let draft = |frame: u64| Task {
        starts_chain: true,
        draft: true,
        ..Task::frames((frame, frame))
    };
    let from_draft = |frame: u64, with_still: bool| Task {
        from: Some(middle),
        with_still,
        from_draft: true,
        ..Task::frames((frame, frame))
    };
    let mut first = vec![draft(middle)];
    let mut keyframes = Vec::new();
    let mut rest = Vec::new();
    for (k, &(start, end)) in bounds.iter().enumerate() {
        let before = k < middle_index;
        if k == middle_index {
            keyframes.push(from_draft(middle, false));
        } else {
            let keyframe = if before { end } else { start };
            // A keyframe next to the middle frame: nothing new to fill.
            let with_still = keyframe.abs_diff(middle) > 1;
            if with_still {
                first.push(draft(keyframe));
            }
            keyframes.push(from_draft(keyframe, with_still));
        }
        if end == start {
            continue;
        }
        rest.push(if before {
            Task {
                backward: true,
                toward: (k > 0).then(|| start - 1),
                ..Task::frames((start, end - 1))
            }
        } else {
            Task {
                toward: (k + 1 < bounds.len()).then(|| end + 1),
                ..Task::frames((start + 1, end))
            }
        });
    }
    vec![first, keyframes, rest]
}

/// The warping error of each frame after the first, by position (index 0: frame 2).
fn frame_errors(shot: &Shot, frames: &[RgbImage]) -> Result<Vec<f64>> {
    let mut errors = Vec::new();
    for position in 1..frames.len() {
        let (back, forth) = motions(shot, position)?;
        let error =
            warping_error(&frames[position], &frames[position - 1], &back, &forth).unwrap_or(0.0);
        errors.push(error);
    }
    Ok(errors)
}

/// The motion of the `position`-th frame to the previous one and back.
fn motions(shot: &Shot, position: usize) -> Result<(Motion, Motion)> {
    let number = shot.numbers[position];
    let back = shot.to_previous_of(number)?;
    let forth = shot.to_next(number - 1)?;
    match (back, forth) {
        (Some(back), Some(forth)) => Ok((back, forth)),
        _ => bail!("--shot: the warping error needs each frame's motion both ways"),
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The rendered frames themselves at the output size, as the renderer shows them (OpenEXR
/// through the sRGB transfer, Blender's 'Standard' view): the floor a stylised shot is
/// measured against, in the same 8-bit levels.
fn rendered_frames(args: &ShotArgs, size: (u32, u32)) -> Result<Vec<RgbImage>> {
    let shown = Shot::new(args, Some("srgb"))?;
    (0..shown.numbers.len())
        .map(|position| {
            let content = shown.frame(position, false)?.content.context("--shot")?;
            Ok(stylize::image_io::resize_exact(
                &content.to_8bit(),
                size.0,
                size.1,
            ))
        })
        .collect()
}

fn write_frames(dir: &Path, name: &str, shot: &Shot, frames: &[Delivered]) -> Result<()> {
    for (number, frame) in shot.numbers.iter().zip(frames) {
        let path = dir.join(format!("{name}_{number:04}.png"));
        frame
            .image
            .save(&path)
            .with_context(|| format!("--out-dir: {}", path.display()))?;
    }
    Ok(())
}

pub fn run(bench: ShotBench<'_>) -> Result<()> {
    if bench.chunks < 2 {
        bail!("--chunks: at least 2 (one chunk is the sequential chain)");
    }
    let scratch = std::env::temp_dir().join(format!("stylize-bench-shot-{}", std::process::id()));
    let mut argv: Vec<String> = vec![
        "bench".into(),
        "--frames".into(),
        bench.frames.into(),
        "--out".into(),
        scratch.join("unused_####.png").display().to_string(),
        "--quality".into(),
        bench.quality.into(),
        "--size".into(),
        bench.size.to_string(),
    ];
    if let Some(style) = bench.style {
        argv.extend(["--style".into(), style.display().to_string()]);
    }
    let job = ShotJob::try_parse_from(&argv).context("--shot")?;
    let shot = Shot::new(&job.shot, job.job.view.as_deref()).context("--shot")?;
    let frames = shot.numbers.len();
    if bench.chunks > frames {
        bail!("--chunks: {} chunks for {frames} frames", bench.chunks);
    }
    let options = job.job.options()?;
    let keyframe_iterations = options.iterations;
    let sequence_options = shot.options(options.iterations);
    let base = Styling {
        styles: job.styles.read()?,
        blend: job.styles.blend.clone(),
        options,
    };
    let backends = job.backend.build()?;
    let source = StyleSource::uncached(backends.features.as_ref());
    let renderer = |options: SequenceOptions| {
        SequenceRenderer::new(
            base.clone(),
            options,
            backends.engine.as_ref(),
            source,
            None,
        )
        .map_err(flag_error)
    };
    let bench_run = Bench {
        shot: &shot,
        args: &job.shot,
        view: job.job.view.as_deref(),
        renderer: &renderer,
        options: sequence_options,
        keyframe_iterations,
    };
    eprintln!("bench --shot: {frames} frames, stills first");
    let (stills, still_costs) = bench_run.stills()?;
    // The chain and the method in turn, `repeat` times: each task's fastest run is kept
    // (the frames are the same every time).
    let (chain, mut chain_cost) = bench_run.chain_reported(1)?;
    let (parallel, mut stages) = bench_run.parallel_reported(bench.chunks, 1)?;
    for run in 2..=bench.repeat {
        chain_cost = chain_cost.fastest(bench_run.chain_reported(run)?.1);
        let again = bench_run.parallel_reported(bench.chunks, run)?.1;
        for (stage, costs) in stages.iter_mut().zip(again) {
            for (cost, other) in stage.iter_mut().zip(costs) {
                *cost = cost.fastest(other);
            }
        }
    }

    let size = chain[0].image.dimensions();
    let images = |frames: &[Delivered]| frames.iter().map(|f| f.image.clone()).collect::<Vec<_>>();
    let rendered_errors = frame_errors(&shot, &rendered_frames(&job.shot, size)?)?;
    let still_errors = frame_errors(&shot, &images(&stills))?;
    let chain_errors = frame_errors(&shot, &images(&chain))?;
    let parallel_errors = frame_errors(&shot, &images(&parallel))?;
    let joins: Vec<usize> = chunk_starts(frames, bench.chunks)[1..].to_vec();
    let style_ratio = |frames: &[Delivered]| {
        frames
            .iter()
            .zip(&stills)
            .map(|(f, s)| f.style / s.style)
            .collect::<Vec<f64>>()
    };
    let (chain_style, parallel_style) = (style_ratio(&chain), style_ratio(&parallel));
    let worst = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
    let critical: f64 = stages
        .iter()
        .map(|stage| stage.iter().map(|c| c.wall).fold(0.0, f64::max))
        .sum();
    let parallel_cpu: f64 = stages.iter().flatten().map(|c| c.cpu).sum();
    let stills_cost = still_costs.iter().fold(Cost::default(), |a, &c| a.add(c));
    let stills_critical = still_costs.iter().map(|c| c.wall).fold(0.0, f64::max);
    // Join frames (a keyframe after the chunk before it) against the median of the others.
    let join_errors: Vec<f64> = joins.iter().map(|&p| parallel_errors[p - 1]).collect();
    let others: Vec<f64> = parallel_errors
        .iter()
        .enumerate()
        .filter(|(i, _)| !joins.contains(&(i + 1)))
        .map(|(_, &e)| e)
        .collect();
    let others_median = median(others);

    println!(
        "shot {}: {frames} frames at {}x{}, --quality {}, {} chunks (joins at frames {})",
        bench.frames,
        size.0,
        size.1,
        bench.quality,
        bench.chunks,
        joins
            .iter()
            .map(|&p| shot.numbers[p].to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| method | critical path (s) | CPU (s) | warping error (whole shot) | worst join / median | style loss / still's (worst) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| rendered frames | - | - | {:.2} | - | - |",
        mean(&rendered_errors)
    );
    println!(
        "| stills ({frames} tasks) | {stills_critical:.1} | {:.1} | {:.2} | - | 1.000 |",
        stills_cost.cpu,
        mean(&still_errors)
    );
    println!(
        "| sequential chain (1 task) | {:.1} | {:.1} | {:.2} | - | {:.3} |",
        chain_cost.wall,
        chain_cost.cpu,
        mean(&chain_errors),
        worst(&chain_style)
    );
    println!(
        "| parallel, K = {} (stages of {}, {}, {} tasks) | {critical:.1} | {parallel_cpu:.1} | {:.2} | {:.3} | {:.3} |",
        bench.chunks,
        stages[0].len(),
        stages[1].len(),
        stages[2].len(),
        mean(&parallel_errors),
        worst(&join_errors) / others_median,
        worst(&parallel_style)
    );
    println!(
        "parallel / chain: critical path {:.3}x, CPU {:.3}x, warping error {:.3}x; chain: {:.1}x lower than stills', {:.2}x the rendered frames'",
        critical / chain_cost.wall,
        parallel_cpu / chain_cost.cpu,
        mean(&parallel_errors) / mean(&chain_errors),
        mean(&still_errors) / mean(&chain_errors),
        mean(&chain_errors) / mean(&rendered_errors)
    );
    println!(
        "stages (slowest task, s): drafts {:.1}, keyframes and the middle frame {:.1}, chunks {:.1}",
        stages[0].iter().map(|c| c.wall).fold(0.0, f64::max),
        stages[1].iter().map(|c| c.wall).fold(0.0, f64::max),
        stages[2].iter().map(|c| c.wall).fold(0.0, f64::max)
    );
    println!(
        "| frame | rendered | chain | parallel | chain style / still | parallel style / still |"
    );
    println!("|---|---|---|---|---|---|");
    for position in 0..frames {
        let error = |errors: &[f64]| {
            position
                .checked_sub(1)
                .map_or("-".to_string(), |i| format!("{:.2}", errors[i]))
        };
        let mark = if joins.contains(&position) {
            " (join)"
        } else {
            ""
        };
        println!(
            "| {}{mark} | {} | {} | {} | {:.3} | {:.3} |",
            shot.numbers[position],
            error(&rendered_errors),
            error(&chain_errors),
            error(&parallel_errors),
            chain_style[position],
            parallel_style[position]
        );
    }
    if let Some(dir) = bench.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("--out-dir: {}", dir.display()))?;
        write_frames(dir, "still", &shot, &stills)?;
        write_frames(dir, "chain", &shot, &chain)?;
        write_frames(dir, "parallel", &shot, &parallel)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Task, chunk_starts, plan};

    #[test]
    fn a_shot_in_four_chunks_starts_from_its_middle_and_renders_away_from_it() {
        let numbers: Vec<u64> = (1..=16).collect();
        let stages = plan(&numbers, 4);
        let task = |range, backward, from, toward| Task {
            range,
            backward,
            from,
            toward,
            starts_chain: false,
            draft: false,
            with_still: false,
            from_draft: false,
        };
        let draft = |number| Task {
            starts_chain: true,
            draft: true,
            ..task((number, number), false, None, None)
        };
        // Drafts of the middle frame and, beside it, of the stills of the keyframes further
        // than the next frame from it.
        assert_eq!(stages[0], [draft(9), draft(4), draft(13)]);
        // Chunks 1-4 and 5-8 are before the middle frame: their keyframes are their last
        // frames; 13-16 is after it: its first. Frame 8 is next to 9: nothing to fill from a
        // still. Frame 9 itself is finished from its draft at once.
        let from_draft = |number, with_still| Task {
            with_still,
            from_draft: true,
            ..task((number, number), false, Some(9), None)
        };
        assert_eq!(
            stages[1],
            [
                from_draft(4, true),
                from_draft(8, false),
                from_draft(9, false),
                from_draft(13, true),
            ]
        );
        assert_eq!(
            stages[2],
            [
                task((1, 3), true, None, None),
                task((5, 7), true, None, Some(4)),
                task((10, 12), false, None, Some(13)),
                task((14, 16), false, None, None),
            ]
        );
        // Every frame is delivered once.
        let mut rendered: Vec<u64> = stages
            .iter()
            .flatten()
            .filter(|t| !t.draft)
            .flat_map(|t| t.range.0..=t.range.1)
            .collect();
        rendered.sort();
        assert_eq!(rendered, numbers);
    }

    #[test]
    fn chunks_split_a_shot_as_contiguous_as_even_as_can_be() {
        assert_eq!(chunk_starts(16, 4), [0, 4, 8, 12]);
        // Open Job Description's split of 10 frames into chunks of at most 4: 4, 3, 3.
        assert_eq!(chunk_starts(10, 3), [0, 4, 7]);
        assert_eq!(chunk_starts(11, 4), [0, 3, 6, 9]);
        assert_eq!(chunk_starts(3, 5), [0, 1, 2]);
    }
}
