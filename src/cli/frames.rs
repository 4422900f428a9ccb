//! A shot's files on disk for `stylize sequence` and `submit-sequence`: the frames a run
//! renders (patterns and --frame-range), the motion and masks beside each frame, where the
//! temporal chain continues from, and the sequence flags shared by both commands.

use std::path::{Path, PathBuf};

use super::args::flag_error;
use super::frame_pattern::FramePattern;
use super::frame_range;
use super::view_lut::ViewLutArgs;

use anyhow::{Context, Result, bail};
use clap::Args;

use stylize::colour::View;
use stylize::exr_file::ExrFile;
use stylize::exr_file::{FrameView, Transfer};
use stylize::image_io;
use stylize::motion::{
    ExrMotionChannels, Motion, missing_channel, read_exr, read_exr_frame, read_flo,
};
use stylize::passthrough::{Fields, Passthrough};
use stylize::render::Content;
use stylize::render::sequence::{FrameInput, SequenceOptions};

/// The sequence's own flags.
#[derive(Args, Clone)]
pub struct ShotArgs {
    /// Frames: a path whose file name holds the frame number as `####`, `%04d` or `$F4`,
    /// e.g. `shot/frame_####.exr` (PNG, JPEG, or OpenEXR with a beauty pass). Without
    /// --frame-range, every frame from the first file found to the last, with none missing.
    #[arg(long)]
    pub frames: String,
    /// The frames to render: Open Job Description's range syntax (`1001-1100`,
    /// `1001-1100:2`, `1-3,5,7-20:2`) or `1-100x2`. A shot's frames must be consecutive
    /// (each frame's motion is to the one before); every frame named must exist.
    #[arg(long)]
    pub frame_range: Option<String>,
    /// Output frames, a pattern like --frames (.png, .jpg or .exr); frame N of the input is
    /// written as number N.
    #[arg(long)]
    pub out: String,
    /// The delivered image of the frame before the range, to continue the temporal chain
    /// from (OpenEXR or 16-bit PNG keep it whole). Default: that frame's --out file, when
    /// the shot has that frame (a chunk of a shot split into tasks).
    #[arg(long)]
    pub continue_from: Option<PathBuf>,
    /// Continue the chain from this frame's delivered image instead of the frame just
    /// before the range, along the motion composed over the frames between: a keyframe of a
    /// shot rendered in parallel chunks starts from the shot's middle frame, before or after
    /// it (a range after the frame, or of one frame before it). A keyframe more than a
    /// frame from it runs the still's iterations per scale, at the output size (two thirds
    /// of them with --keyframe-still).
    #[arg(long, conflicts_with = "starts_chain")]
    pub from_frame: Option<u64>,
    /// The keyframe's own still, a pattern like --out (a --starts-chain task of the same
    /// frame writing elsewhere, at once with the frame --from-frame names): the pixels the
    /// motion from that frame cannot vouch for start from the still instead of the content,
    /// and the keyframe runs two thirds of the still's iterations. For a keyframe: a range
    /// of one frame, --from-frame further than the next frame.
    #[arg(long, requires = "from_frame")]
    pub keyframe_still: Option<String>,
    /// The range's one frame, a still (--starts-chain), is a draft: its finest scale runs
    /// two thirds of the still's iterations. A shot rendered in parallel chunks starts from
    /// a draft of its middle frame, written apart (like the keyframes' stills, also drafts);
    /// its keyframes and the middle frame itself continue from it at once (--from-draft).
    #[arg(long, requires = "starts_chain")]
    pub draft: bool,
    /// Continue from a draft of the --from-frame frame instead of its delivered image: a
    /// pattern like --out (where a --draft task wrote it). The range's first frame then runs
    /// as a keyframe (two thirds of the still's iterations, held to the draft), beside that
    /// frame too; a range of that frame itself finishes it.
    #[arg(long, requires = "from_frame", conflicts_with = "continue_from")]
    pub from_draft: Option<String>,
    /// The range's first frame starts the chain as a still, whatever frames come before it
    /// (the middle frame a shot rendered in parallel chunks starts from).
    #[arg(long, conflicts_with = "continue_from")]
    pub starts_chain: bool,
    /// Render the range from its last frame to its first, each frame continuing from the
    /// frame after it (by default the one after the range; --from-frame and --toward-frame
    /// then name frames after and before it): the chunks before a parallel shot's middle
    /// frame. Needs each frame's motion both ways.
    #[arg(long, conflicts_with = "mask")]
    pub backward: bool,
    /// Pull the range's frames toward this frame's delivered image, after the range in the
    /// order it renders (the next chunk's keyframe, written already), more as they near it,
    /// along the motion composed over the frames between: the chunk then joins the next
    /// without a pop.
    #[arg(long)]
    pub toward_frame: Option<u64>,
    /// Each frame's motion to the previous frame: an OpenEXR (read through
    /// --motion-channels) or Middlebury .flo pattern. Default: the frames themselves when
    /// they are OpenEXR (a renderer's Vector pass).
    #[arg(long)]
    pub motion: Option<String>,
    /// Each frame's motion to the next frame, for the consistency check: an OpenEXR or
    /// .flo pattern. Default: the --motion OpenEXR files, through --motion-next-channels,
    /// when they have those channels.
    #[arg(long)]
    pub motion_next: Option<String>,
    /// OpenEXR channels of the motion to the previous frame, `x,y`; a leading `-` negates
    /// one. The default reads Blender's Vector pass.
    #[arg(
        long,
        allow_hyphen_values = true,
        default_value = "ViewLayer.Vector.X,-ViewLayer.Vector.Y"
    )]
    pub motion_channels: String,
    /// OpenEXR channels of the motion to the next frame (Blender's by default).
    #[arg(
        long,
        allow_hyphen_values = true,
        default_value = "-ViewLayer.Vector.Z,ViewLayer.Vector.W"
    )]
    pub motion_next_channels: String,
    /// Occlusion masks overriding the motion's own: a pattern of greyscale images, white
    /// where the previous frame's pixels hold.
    #[arg(long)]
    pub mask: Option<String>,
    /// Weight of the temporal term (0: warm start only).
    #[arg(long, allow_negative_numbers = true, default_value_t = stylize::render::sequence::DEFAULT_TEMPORAL_WEIGHT)]
    pub temporal_weight: f64,
    /// Iterations of every frame after the first, at the output size (default: half of
    /// --iterations).
    #[arg(long)]
    pub later_iterations: Option<usize>,
    /// Hold every pixel whose motion lands inside the previous frame, without checking it
    /// against the previous frame's motion to this one.
    #[arg(long)]
    pub no_consistency_check: bool,
    /// OpenEXR frames are already display-referred (values in [0, 1] shown as they are)
    /// rather than scene-linear.
    #[arg(long)]
    pub display_referred: bool,
}

/// The frames a shot renders: those --frame-range names (each must exist), else every
/// number from the first file found to the last; consecutive either way.
fn shot_numbers(frames: &FramePattern, range: Option<&str>) -> Result<Vec<u64>> {
    let numbers = match range {
        Some(expression) => frame_range::parse(expression)?,
        None => frames.existing()?,
    };
    if let Some(pair) = numbers.windows(2).find(|w| w[1] != w[0] + 1) {
        let missing = pair[0] + 1;
        match range {
            Some(expression) => {
                return Err(super::exit::Usage(format!(
                    "--frame-range: `{expression}` skips frame {missing}: each frame's motion is \
                     to the frame just before it, so a shot's frames must be consecutive"
                ))
                .into());
            }
            None => bail!(
                "--frames: frame {missing} is missing: {} (the shot has frames {} to {}; \
                 --frame-range renders part of it)",
                frames.path(missing).display(),
                numbers[0],
                numbers[numbers.len() - 1]
            ),
        }
    }
    Ok(numbers)
}

/// Refuses, before any work, a frame whose `pattern` file is missing.
fn check_exist(pattern: &FramePattern, numbers: impl IntoIterator<Item = u64>) -> Result<()> {
    for number in numbers {
        let path = pattern.path(number);
        if !path.is_file() {
            bail!(
                "--{}: frame {number} is missing: {}",
                pattern.flag(),
                path.display()
            );
        }
    }
    Ok(())
}

/// `x,y` with optional `-` signs.
fn parse_channels(flag: &str, spec: &str) -> Result<ExrMotionChannels> {
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    let [x, y] = parts[..] else {
        bail!("--{flag}: `{spec}` is not two channel names `x,y`");
    };
    let signed = |name: &str| match name.strip_prefix('-') {
        Some(name) => (name.to_string(), -1.0),
        None => (name.to_string(), 1.0),
    };
    let ((x, x_sign), (y, y_sign)) = (signed(x), signed(y));
    Ok(ExrMotionChannels {
        x,
        y,
        x_sign,
        y_sign,
    })
}

/// Reads one motion file (OpenEXR through `channels`, else .flo), errors naming the flag.
fn read_motion(flag: &str, path: &Path, channels: &ExrMotionChannels) -> Result<Motion> {
    let exr = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("exr"));
    let motion = if exr {
        read_exr(path, channels)
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("--{flag}: {}", path.display()))?;
        read_flo(&bytes, &path.display().to_string(), None)
    };
    motion.with_context(|| format!("--{flag}"))
}

/// Where the temporal chain continues from when a run starts: the frame before the first
/// one it renders, as delivered.
pub struct ChainStart {
    /// That frame's number, when the shot has it (its motion to the next frame is read).
    pub number: Option<u64>,
    /// Its delivered image.
    pub path: PathBuf,
}

/// Where each frame's inputs come from.
#[derive(Clone)]
pub struct Shot {
    pub numbers: Vec<u64>,
    /// The --view the job's flags name.
    view: Option<String>,
    /// The studio's view --view-lut names (overrides --view).
    studio: Option<View>,
    args: ShotArgs,
    frames: FramePattern,
    out: FramePattern,
    /// --keyframe-still.
    keyframe_still: Option<FramePattern>,
    /// --from-draft.
    from_draft: Option<FramePattern>,
    motion: Option<FramePattern>,
    next: Option<(FramePattern, ExrMotionChannels)>,
    mask: Option<FramePattern>,
    channels: ExrMotionChannels,
}

impl Shot {
    /// The shot the flags name; every file a frame needs is checked to exist first.
    pub fn new(args: &ShotArgs, view: Option<&str>) -> Result<Self> {
        let frames = FramePattern::parse("frames", &args.frames)?;
        let numbers = shot_numbers(&frames, args.frame_range.as_deref())?;
        check_exist(&frames, numbers.iter().copied())?;
        let out = FramePattern::parse("out", &args.out)?;
        image_io::Encoding::from_path(&out.path(0)).context("--out")?;
        let motion = match &args.motion {
            Some(pattern) => Some(FramePattern::parse("motion", pattern)?),
            None => frames.has_extension("exr").then(|| frames.clone()),
        };
        if motion.is_none() && numbers.len() > 1 {
            bail!(
                "--motion: the frames are not OpenEXR, so each frame's motion to the previous is needed"
            );
        }
        if let Some(motion) = &motion {
            check_exist(motion, numbers.iter().skip(1).copied())?;
        }
        let mask = match &args.mask {
            Some(pattern) => Some(FramePattern::parse("mask", pattern)?),
            None => None,
        };
        if let Some(mask) = &mask {
            check_exist(mask, numbers.iter().skip(1).copied())?;
        }
        let channels = parse_channels("motion-channels", &args.motion_channels)?;
        let next_channels = parse_channels("motion-next-channels", &args.motion_next_channels)?;
        let next = match (&args.motion_next, &motion) {
            (Some(pattern), _) => {
                let pattern = FramePattern::parse("motion-next", pattern)?;
                check_exist(&pattern, numbers.iter().copied())?;
                Some((pattern, next_channels))
            }
            (None, Some(pattern)) if pattern.has_extension("exr") => {
                let first = pattern.path(numbers[0]);
                stylize::exr_file::has_channel(&first, &next_channels.x)
                    .then(|| (pattern.clone(), next_channels))
            }
            _ => None,
        };
        let (low, high) = (numbers[0], numbers[numbers.len() - 1]);
        let both_ways = |flag: &str| match &next {
            Some(_) => Ok(()),
            None => Err(anyhow::anyhow!(
                "--{flag}: the frames' motion to the next frame is needed too (--motion-next, \
                 or OpenEXR frames with --motion-next-channels)"
            )),
        };
        // Every frame and motion between the range and a frame named outside it.
        let spanned = |flag: &str, frame: u64| -> Result<()> {
            both_ways(flag)?;
            let (from, to) = (frame.min(low), frame.max(high));
            check_exist(&frames, from..=to)?;
            if let Some(motion) = &motion {
                check_exist(motion, from + 1..=to)?;
            }
            if let Some((pattern, _)) = &next {
                check_exist(pattern, from..to)?;
            }
            Ok(())
        };
        // In rendering order (last to first with --backward).
        let (first, last) = if args.backward {
            (high, low)
        } else {
            (low, high)
        };
        let ahead = |a: u64, b: u64| if args.backward { b < a } else { b > a };
        if args.draft && first != last {
            return Err(super::exit::Usage(
                "--draft: a range of one frame (the draft a parallel shot starts from)".into(),
            )
            .into());
        }
        let from_draft = match &args.from_draft {
            Some(pattern) => Some(FramePattern::parse("from-draft", pattern)?),
            None => None,
        };
        // The draft's own frame, finished from it.
        let refines = from_draft.is_some() && first == last && args.from_frame == Some(first);
        if let Some(from) = args.from_frame.filter(|_| !refines) {
            if (low..=high).contains(&from) || (ahead(last, from) && first != last) {
                return Err(super::exit::Usage(format!(
                    "--from-frame: {from} must come before the range {first}-{last} in the \
                     order it renders, or after a range of one frame"
                ))
                .into());
            }
            spanned("from-frame", from)?;
        }
        let keyframe_still = match (&args.keyframe_still, args.from_frame) {
            (None, _) => None,
            (Some(pattern), Some(from)) if first == last && from.abs_diff(first) > 1 => {
                Some(FramePattern::parse("keyframe-still", pattern)?)
            }
            (Some(_), _) => {
                return Err(super::exit::Usage(
                    "--keyframe-still: only for a keyframe: a range of one frame continued \
                     from --from-frame further away than the next frame"
                        .into(),
                )
                .into());
            }
        };
        if let Some(toward) = args.toward_frame {
            if !ahead(last, toward) {
                return Err(super::exit::Usage(format!(
                    "--toward-frame: {toward} does not come after the range's last frame {last} \
                     in the order it renders"
                ))
                .into());
            }
            spanned("toward-frame", toward)?;
        }
        let (motion, channels, next, numbers) = if args.backward {
            both_ways("backward")?;
            // Rendered last to first: a frame's motion to the one rendered before it is its
            // motion to the next frame, and the other way round.
            let (pattern, next_channels) = next.context("--backward")?;
            let previous = motion.map(|pattern| (pattern, channels));
            (
                Some(pattern),
                next_channels,
                previous,
                numbers.into_iter().rev().collect(),
            )
        } else {
            (motion, channels, next, numbers)
        };
        Ok(Self {
            numbers,
            view: view.map(str::to_string),
            studio: None,
            args: args.clone(),
            frames,
            out,
            keyframe_still,
            from_draft,
            motion,
            next,
            mask,
            channels,
        })
    }

    /// What a run says when its keyframe starts from its own still at `path`.
    pub fn keyframe_still_message(&self, path: &Path) -> String {
        format!(
            "keyframe {} starts from its own still where frame {} never showed it: {}",
            self.numbers[0],
            self.chunk_start(),
            path.display()
        )
    }

    /// The keyframe's own still (--keyframe-still), which must be written already: else
    /// the task is requeued (exit 75).
    pub fn keyframe_still(&self) -> Result<Option<PathBuf>> {
        let Some(pattern) = &self.keyframe_still else {
            return Ok(None);
        };
        let path = pattern.path(self.numbers[0]);
        let why = format!(
            "keyframe {} starts from its own still where the motion uncovers what frame {} \
             never showed",
            self.numbers[0],
            self.chunk_start()
        );
        super::exit::written_first("keyframe-still", &path, &why, "still", "")?;
        Ok(Some(path))
    }

    pub fn options(&self, iterations: usize) -> SequenceOptions {
        let defaults = SequenceOptions::for_iterations(iterations);
        SequenceOptions {
            temporal_weight: self.args.temporal_weight,
            later_iterations: self
                .args
                .later_iterations
                .unwrap_or(defaults.later_iterations),
            consistency_check: !self.args.no_consistency_check,
            independent: false,
        }
    }

    /// How the frames are read (and OpenEXR outputs written): --display-referred, else
    /// --view, else the default for the frames' kind (acescct for OpenEXR, as for stills).
    pub fn transfer(&self) -> Transfer {
        if self.args.display_referred {
            return Transfer::DisplayReferred;
        }
        match self.view.as_deref() {
            Some(name) => Transfer::named("view", name).unwrap_or_default(),
            None if self.frames.has_extension("exr") => Transfer::SceneLinearLog,
            None => Transfer::SceneLinear,
        }
    }

    /// The shot read through `lut`'s studio view (checked against the first frame, which
    /// must be OpenEXR), when --view-lut names one.
    pub fn with_view_lut(mut self, lut: &ViewLutArgs) -> Result<Self> {
        let (_, first) = self.content_bytes(0)?;
        self.studio = lut.load(&first)?;
        Ok(self)
    }

    /// How the frames are shown to the optimiser: the studio's view, else `transfer`.
    pub fn view(&self) -> FrameView {
        match &self.studio {
            Some(view) => FrameView::Studio(view.clone()),
            None => self.transfer().into(),
        }
    }

    /// The studio's view, when --view-lut names one.
    pub fn studio(&self) -> Option<&View> {
        self.studio.as_ref()
    }

    /// Frame `number`'s output file.
    pub fn out_path(&self, number: u64) -> PathBuf {
        self.out.path(number)
    }

    /// How many frames, from the first of the range, are written already (each output is
    /// written whole, then renamed, so one that exists is complete).
    pub fn written(&self) -> usize {
        self.numbers
            .iter()
            .take_while(|&&n| self.out_path(n).is_file())
            .count()
    }

    /// Where the chain continues from when the first `done` frames of the range are
    /// written: the last of them; else --continue-from; else, when the shot has the frame
    /// before the range, that frame's output, which must exist (a chunk continues the
    /// chunk before it). `None`: the range starts the shot.
    pub fn chain_start(&self, done: usize) -> Result<Option<ChainStart>> {
        if done > 0 {
            let number = self.numbers[done - 1];
            return Ok(Some(ChainStart {
                number: Some(number),
                path: self.out_path(number),
            }));
        }
        let before = match self.args.from_frame {
            _ if self.args.starts_chain => return Ok(None),
            Some(from) => Some(from),
            None => self
                .behind(self.numbers[0])
                .filter(|&n| self.frames.path(n).is_file()),
        };
        if let (Some(pattern), Some(from)) = (&self.from_draft, before) {
            let path = pattern.path(from);
            let why = format!(
                "frame {} continues from frame {from}'s draft",
                self.numbers[0]
            );
            super::exit::written_first("from-draft", &path, &why, "draft", "")?;
            return Ok(Some(ChainStart {
                number: Some(from),
                path,
            }));
        }
        if let Some(path) = &self.args.continue_from {
            if !path.is_file() {
                bail!("--continue-from: {} does not exist", path.display());
            }
            return Ok(Some(ChainStart {
                number: before,
                path: path.clone(),
            }));
        }
        let Some(before) = before else {
            return Ok(None);
        };
        let path = self.out_path(before);
        let why = format!(
            "frame {} continues the temporal chain from frame {before}'s delivered image",
            self.numbers[0]
        );
        super::exit::written_first("out", &path, &why, "frame", ", or pass --continue-from")?;
        Ok(Some(ChainStart {
            number: Some(before),
            path,
        }))
    }

    /// The frame the range's chain starts from, whichever frame a resumed run continues
    /// after: --from-frame, else the frame before the range when the shot has it, else the
    /// range's first frame (it starts the shot, or --starts-chain).
    pub fn chunk_start(&self) -> u64 {
        let first = self.numbers[0];
        if self.args.starts_chain {
            return first;
        }
        self.args.from_frame.unwrap_or_else(|| {
            self.behind(first)
                .filter(|&n| self.frames.path(n).is_file())
                .unwrap_or(first)
        })
    }

    /// The frame the `position`-th frame's motion to the previous one is composed to: the
    /// --from-frame the range's first frame continues from, when that is not the frame just
    /// before it (`chained`: the run continues from a frame before the range).
    pub fn composed_from(&self, position: usize, chained: bool) -> Option<u64> {
        self.args
            .from_frame
            .filter(|&from| position == 0 && chained && self.behind(self.numbers[0]) != Some(from))
    }

    /// Whether the range's first frame is a keyframe: continued from a frame further than
    /// the next or previous one (--from-frame), so more of it is new. A frame continued from
    /// its neighbour on the other side is a chain's step run backward.
    pub fn starts_keyframe(&self) -> bool {
        self.args
            .from_frame
            .is_some_and(|from| self.continues_draft() || from.abs_diff(self.numbers[0]) > 1)
    }

    /// Whether the range continues from a draft (--from-draft): its first frame is then a
    /// keyframe, or the draft's own frame finished.
    pub fn continues_draft(&self) -> bool {
        self.from_draft.is_some()
    }

    /// The frame rendered just before frame `number` in the range's order (the one before
    /// it, or after it with --backward), if there is such a number.
    pub fn behind(&self, number: u64) -> Option<u64> {
        if self.args.backward {
            number.checked_add(1)
        } else {
            number.checked_sub(1)
        }
    }

    /// The frame rendered just after frame `number` in the range's order.
    pub fn ahead(&self, number: u64) -> u64 {
        if self.args.backward {
            number.saturating_sub(1)
        } else {
            number.saturating_add(1)
        }
    }

    /// The motion of the chain's start to the range's first frame (for the consistency
    /// check): composed over the frames between when it starts further back (--from-frame).
    pub fn chain_to_first(&self, start: &ChainStart) -> Result<Option<Motion>> {
        match start.number {
            Some(number) => self.motion_across(number, self.numbers[0]),
            None => Ok(None),
        }
    }

    /// Where the pixels of frame `from` are in frame `to`: its own motion when `to` is the
    /// next or previous frame, else the frames' motions composed step by step. `None` when
    /// the shot lacks that direction's motion.
    pub fn motion_across(&self, from: u64, to: u64) -> Result<Option<Motion>> {
        // Motions are kept in rendering order: `to_next` steps toward where the range goes.
        let onward = (to > from) != self.args.backward;
        let step = |n: u64| {
            if onward {
                self.to_next(n)
            } else {
                self.to_previous_of(n)
            }
        };
        let mut frames: Vec<u64> = if to > from {
            (from..to).collect()
        } else {
            (to + 1..=from).rev().collect()
        };
        if frames.is_empty() {
            return Ok(None);
        }
        let Some(mut across) = step(frames.remove(0))? else {
            return Ok(None);
        };
        for n in frames {
            match step(n)? {
                Some(motion) => across = stylize::motion::compose(&across, &motion),
                None => return Ok(None),
            }
        }
        Ok(Some(across))
    }

    /// Frame `number`'s motion to the frame before it in the range's order (the next one
    /// with --backward).
    pub fn to_previous_of(&self, number: u64) -> Result<Option<Motion>> {
        match &self.motion {
            Some(pattern) => {
                let path = pattern.path(number);
                Ok(Some(read_motion(pattern.flag(), &path, &self.channels)?))
            }
            None => Ok(None),
        }
    }

    /// The motion of frame `number` to the next frame in the range's order (the previous
    /// one with --backward), if the shot has it.
    pub fn to_next(&self, number: u64) -> Result<Option<Motion>> {
        match &self.next {
            Some((pattern, channels)) => {
                let path = pattern.path(number);
                Ok(Some(read_motion(pattern.flag(), &path, channels)?))
            }
            None => Ok(None),
        }
    }

    /// The `position`-th frame's file, as it is on disk.
    pub fn content_bytes(&self, position: usize) -> Result<(PathBuf, Vec<u8>)> {
        let path = self.frames.path(self.numbers[position]);
        let bytes =
            std::fs::read(&path).with_context(|| format!("--frames: {}", path.display()))?;
        Ok((path, bytes))
    }

    /// What the `position`-th frame carries past its stylisation into an output in
    /// `encoding` at `size` (its alpha; its passes with --keep-passes); refusals name the
    /// flags, `out` the output's.
    pub fn passthrough(
        &self,
        position: usize,
        encoding: image_io::Encoding,
        size: u32,
        keep_passes: bool,
        out: &str,
    ) -> Result<Option<Passthrough>> {
        let (path, bytes) = self.content_bytes(position)?;
        let name = path.display().to_string();
        let (w, h) = image_io::dimensions(&bytes, &name).context("--frames")?;
        let fields = Fields {
            output: out,
            keep_passes: "keep_passes",
            size: "size",
        };
        let output = image_io::fit_longest(w, h, size);
        Passthrough::of(&bytes, &name, keep_passes, encoding, output, fields).map_err(flag_error)
    }

    /// Whether the `position`-th frame follows another in the chain: it is not the first
    /// of the range, or the run continues from the frame before (`chained`).
    fn follows(position: usize, chained: bool) -> bool {
        position > 0 || chained
    }

    /// The `position`-th frame's motion to the previous frame (none when nothing comes
    /// before it).
    pub fn to_previous(&self, position: usize, chained: bool) -> Result<Option<Motion>> {
        if !Self::follows(position, chained) {
            return Ok(None);
        }
        self.to_previous_of(self.numbers[position])
    }

    /// The `position`-th frame's mask (none when nothing comes before it, or without
    /// --mask), which must be `frame` (width, height) in size.
    pub fn mask(
        &self,
        position: usize,
        chained: bool,
        frame: (u32, u32),
    ) -> Result<Option<Vec<f32>>> {
        let Some(pattern) = self
            .mask
            .as_ref()
            .filter(|_| Self::follows(position, chained))
        else {
            return Ok(None);
        };
        let path = pattern.path(self.numbers[position]);
        let bytes = std::fs::read(&path).with_context(|| format!("--mask: {}", path.display()))?;
        let mask =
            image_io::decode_mask(&bytes, &path.display().to_string(), frame).context("--mask")?;
        Ok(Some(mask))
    }

    /// The motions (to the previous frame, to the next) the `position`-th frame's own
    /// OpenEXR file holds: those read from the --frames pattern itself.
    pub fn motion_in_frame(
        &self,
        position: usize,
        chained: bool,
    ) -> [Option<&ExrMotionChannels>; 2] {
        let in_frames =
            |pattern: &FramePattern| *pattern == self.frames && pattern.has_extension("exr");
        let previous = self
            .motion
            .as_ref()
            .filter(|p| Self::follows(position, chained) && in_frames(p));
        let next = self.next.as_ref().filter(|(p, _)| in_frames(p));
        [previous.map(|_| &self.channels), next.map(|(_, c)| c)]
    }

    /// The inputs of the `position`-th frame, decoded: a frame file that holds its own
    /// motion is read once for all of it. `chained`: the run continues from a frame before
    /// the range.
    pub fn frame(&self, position: usize, chained: bool) -> Result<FrameInput> {
        let (path, bytes) = self.content_bytes(position)?;
        let name = path.display().to_string();
        let inside = self.motion_in_frame(position, chained);
        let (content, [to_previous, to_next]) = if inside.iter().any(Option::is_some) {
            let file = ExrFile::open(&bytes, &name).context("--frames")?;
            let flags = ["motion-channels", "motion-next-channels"];
            for (channels, flag) in inside.iter().zip(flags) {
                if let Some(missing) = channels.and_then(|c| missing_channel(&file, c)) {
                    bail!("--{flag}: {name} has no channel {missing}");
                }
            }
            let (image, motions) =
                read_exr_frame(&file, &self.view(), inside).context("--frames")?;
            (Content::Float(image), motions)
        } else {
            let content = match &self.studio {
                Some(studio) if stylize::exr_file::is_exr(&bytes) => {
                    let file = ExrFile::open(&bytes, &name).context("--frames")?;
                    Content::Float(file.display_through(studio).context("--frames")?)
                }
                Some(_) => {
                    bail!("--frames: {name} is not OpenEXR: --view-lut reads scene-linear light")
                }
                None => image_io::decode_content_with(&bytes, &name, self.transfer())
                    .context("--frames")?,
            };
            (content, [None, None])
        };
        let mask = self.mask(position, chained, content.dimensions())?;
        let to_previous = match (self.composed_from(position, chained), to_previous) {
            // The draft's own frame: its pixels stay where they are.
            (Some(from), _) if from == self.numbers[0] => {
                let (w, h) = content.dimensions();
                Some(Motion::still(w as usize, h as usize))
            }
            (Some(from), _) => self.motion_across(self.numbers[0], from)?,
            (None, Some(motion)) => Some(motion),
            (None, None) => self.to_previous(position, chained)?,
        };
        Ok(FrameInput {
            content: Some(content),
            to_previous,
            to_next: match to_next {
                Some(motion) => Some(motion),
                None => self.to_next(self.numbers[position])?,
            },
            mask,
            toward: None,
        })
    }

    /// The delivered image the chain continues from, decoded as this shot's frames are.
    pub fn read_chain_start(&self, start: &ChainStart, flag: &str) -> Result<image::RgbImage> {
        self.read_delivered(&start.path, flag)
    }

    /// A delivered frame's file as the chain continues from it, decoded as this shot's
    /// frames are; errors name `flag`.
    pub fn read_delivered(&self, path: &Path, flag: &str) -> Result<image::RgbImage> {
        let bytes = std::fs::read(path).with_context(|| format!("--{flag}: {}", path.display()))?;
        image_io::decode_viewed(&bytes, &path.display().to_string(), &self.view())
            .with_context(|| format!("--{flag}: continuing from {}", path.display()))
    }

    pub fn args(&self) -> &ShotArgs {
        &self.args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_with_signs() {
        let c = parse_channels("motion-channels", "V.X,-V.Y").unwrap();
        assert_eq!((c.x_sign, c.y_sign), (1.0, -1.0));
        assert!(parse_channels("motion-channels", "V.X").is_err());
    }
}
