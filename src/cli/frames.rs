//! A shot's files on disk for `stylize sequence` and `submit-sequence`: frame patterns with
//! a run of `#` for the number, the motion and masks beside each frame, and the sequence
//! flags shared by both commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use stylize::exr_file::ExrFile;
use stylize::exr_file::Transfer;
use stylize::image_io;
use stylize::motion::{
    ExrMotionChannels, Motion, missing_channel, read_exr, read_exr_frame, read_flo,
};
use stylize::render::sequence::{FrameInput, SequenceOptions};

/// The sequence's own flags.
#[derive(Args, Clone)]
pub struct ShotArgs {
    /// Frames: a path whose file name has a run of `#` for the frame number, e.g.
    /// `shot/frame_####.exr` (PNG, JPEG, or OpenEXR with a beauty pass); every existing
    /// file that matches, in numeric order.
    #[arg(long)]
    pub frames: String,
    /// Output frames, a pattern like --frames (.png, .jpg or .exr); frame N of the input is
    /// written as number N.
    #[arg(long)]
    pub out: String,
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

/// A pattern's path for frame `number`.
pub fn frame_path(flag: &str, pattern: &str, number: u64) -> Result<PathBuf> {
    let (prefix, width, suffix) = split(flag, pattern)?;
    Ok(PathBuf::from(format!("{prefix}{number:0width$}{suffix}")))
}

/// The text before the run of `#`, its length, and the text after.
fn split<'p>(flag: &str, pattern: &'p str) -> Result<(&'p str, usize, &'p str)> {
    let name_start = pattern.rfind('/').map_or(0, |i| i + 1);
    let Some(start) = pattern[name_start..].find('#').map(|i| i + name_start) else {
        bail!("--{flag}: `{pattern}` has no run of # for the frame number");
    };
    let width = pattern[start..].chars().take_while(|&c| c == '#').count();
    Ok((&pattern[..start], width, &pattern[start + width..]))
}

/// The numbers of the files matching `pattern`, ascending.
pub fn frame_numbers(flag: &str, pattern: &str) -> Result<Vec<u64>> {
    let (prefix, width, suffix) = split(flag, pattern)?;
    let dir = Path::new(prefix)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name_prefix = prefix.rsplit('/').next().unwrap_or(prefix);
    let entries = std::fs::read_dir(dir).with_context(|| format!("--{flag}: {}", dir.display()))?;
    let mut numbers = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let digits = name
            .strip_prefix(name_prefix)
            .and_then(|rest| rest.strip_suffix(suffix));
        if let Some(digits) = digits
            && digits.len() >= width
            && digits.chars().all(|c| c.is_ascii_digit())
            && let Ok(number) = digits.parse::<u64>()
            && format!("{number:0width$}") == digits
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    if numbers.is_empty() {
        bail!("--{flag}: no file matches `{pattern}`");
    }
    Ok(numbers)
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

fn is_exr_path(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".exr")
}

/// Reads one motion file (OpenEXR through `channels`, else .flo), errors naming the flag.
fn read_motion(flag: &str, path: &Path, channels: &ExrMotionChannels) -> Result<Motion> {
    let motion = if is_exr_path(&path.to_string_lossy()) {
        read_exr(path, channels)
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("--{flag}: {}", path.display()))?;
        read_flo(&bytes, &path.display().to_string(), None)
    };
    motion.with_context(|| format!("--{flag}"))
}

/// Where each frame's inputs come from.
#[derive(Clone)]
pub struct Shot {
    pub numbers: Vec<u64>,
    args: ShotArgs,
    motion: Option<String>,
    next: Option<(String, ExrMotionChannels)>,
    channels: ExrMotionChannels,
}

impl Shot {
    pub fn new(args: &ShotArgs) -> Result<Self> {
        let numbers = frame_numbers("frames", &args.frames)?;
        split("out", &args.out)?;
        image_io::Encoding::from_path(&frame_path("out", &args.out, 0)?).context("--out")?;
        let motion = args
            .motion
            .clone()
            .or_else(|| is_exr_path(&args.frames).then(|| args.frames.clone()));
        if motion.is_none() && numbers.len() > 1 {
            bail!(
                "--motion: the frames are not OpenEXR, so each frame's motion to the previous is needed"
            );
        }
        let channels = parse_channels("motion-channels", &args.motion_channels)?;
        let next_channels = parse_channels("motion-next-channels", &args.motion_next_channels)?;
        let next = match (&args.motion_next, &motion) {
            (Some(pattern), _) => Some((pattern.clone(), next_channels)),
            (None, Some(pattern)) if is_exr_path(pattern) => {
                let first = frame_path("motion", pattern, numbers[0])?;
                stylize::exr_file::has_channel(&first, &next_channels.x)
                    .then(|| (pattern.clone(), next_channels))
            }
            _ => None,
        };
        Ok(Self {
            numbers,
            args: args.clone(),
            motion,
            next,
            channels,
        })
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

    pub fn transfer(&self) -> Transfer {
        if self.args.display_referred {
            Transfer::DisplayReferred
        } else {
            Transfer::SceneLinear
        }
    }

    pub fn out_path(&self, number: u64) -> Result<PathBuf> {
        frame_path("out", &self.args.out, number)
    }

    /// Frame `number`'s path in another output pattern (named by `flag`).
    pub fn path_in(&self, flag: &str, pattern: &str, number: u64) -> Result<PathBuf> {
        frame_path(flag, pattern, number)
    }

    /// The motion of frame `number` to the next frame, if the shot has it.
    pub fn to_next(&self, number: u64) -> Result<Option<Motion>> {
        match &self.next {
            Some((pattern, channels)) => {
                let path = frame_path("motion-next", pattern, number)?;
                Ok(Some(read_motion("motion-next", &path, channels)?))
            }
            None => Ok(None),
        }
    }

    /// The `position`-th frame's file, as it is on disk.
    pub fn content_bytes(&self, position: usize) -> Result<(PathBuf, Vec<u8>)> {
        let path = frame_path("frames", &self.args.frames, self.numbers[position])?;
        let bytes =
            std::fs::read(&path).with_context(|| format!("--frames: {}", path.display()))?;
        Ok((path, bytes))
    }

    /// The `position`-th frame's motion to the previous frame (none for the first).
    pub fn to_previous(&self, position: usize) -> Result<Option<Motion>> {
        match (&self.motion, position) {
            (Some(pattern), 1..) => {
                let path = frame_path("motion", pattern, self.numbers[position])?;
                Ok(Some(read_motion("motion", &path, &self.channels)?))
            }
            _ => Ok(None),
        }
    }

    /// The `position`-th frame's mask (none for the first, or without --mask), which must
    /// be `frame` (width, height) in size.
    pub fn mask(&self, position: usize, frame: (u32, u32)) -> Result<Option<Vec<f32>>> {
        let Some(pattern) = self.args.mask.as_ref().filter(|_| position > 0) else {
            return Ok(None);
        };
        let path = frame_path("mask", pattern, self.numbers[position])?;
        let bytes = std::fs::read(&path).with_context(|| format!("--mask: {}", path.display()))?;
        let mask =
            image_io::decode_mask(&bytes, &path.display().to_string(), frame).context("--mask")?;
        Ok(Some(mask))
    }

    /// The motions (to the previous frame, to the next) the `position`-th frame's own
    /// OpenEXR file holds: those read from the --frames pattern itself.
    pub fn motion_in_frame(&self, position: usize) -> [Option<&ExrMotionChannels>; 2] {
        let in_frames = |pattern: &str| pattern == self.args.frames && is_exr_path(pattern);
        let previous = self
            .motion
            .as_deref()
            .filter(|p| position > 0 && in_frames(p));
        let next = self.next.as_ref().filter(|(p, _)| in_frames(p));
        [previous.map(|_| &self.channels), next.map(|(_, c)| c)]
    }

    /// The inputs of the `position`-th frame, decoded: a frame file that holds its own
    /// motion is read once for all of it.
    pub fn frame(&self, position: usize) -> Result<FrameInput> {
        let (path, bytes) = self.content_bytes(position)?;
        let name = path.display().to_string();
        let inside = self.motion_in_frame(position);
        let (content, [to_previous, to_next]) = if inside.iter().any(Option::is_some) {
            let file = ExrFile::open(&bytes, &name).context("--frames")?;
            let flags = ["motion-channels", "motion-next-channels"];
            for (channels, flag) in inside.iter().zip(flags) {
                if let Some(missing) = channels.and_then(|c| missing_channel(&file, c)) {
                    bail!("--{flag}: {name} has no channel {missing}");
                }
            }
            read_exr_frame(&file, self.transfer(), inside).context("--frames")?
        } else {
            let image =
                image_io::decode_with(&bytes, &name, self.transfer()).context("--frames")?;
            (image, [None, None])
        };
        let mask = self.mask(position, content.dimensions())?;
        Ok(FrameInput {
            content: Some(content),
            to_previous: match to_previous {
                Some(motion) => Some(motion),
                None => self.to_previous(position)?,
            },
            to_next: match to_next {
                Some(motion) => Some(motion),
                None => self.to_next(self.numbers[position])?,
            },
            mask,
        })
    }

    pub fn args(&self) -> &ShotArgs {
        &self.args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand_and_refuse_without_hashes() {
        assert_eq!(
            frame_path("out", "out/f_####.png", 7).unwrap(),
            PathBuf::from("out/f_0007.png")
        );
        assert_eq!(
            frame_path("out", "a#b/f_##.exr", 123).unwrap(),
            PathBuf::from("a#b/f_123.exr")
        );
        let error = frame_path("out", "out/frame.png", 1).unwrap_err();
        assert!(error.to_string().contains("--out"), "{error}");
        let c = parse_channels("motion-channels", "V.X,-V.Y").unwrap();
        assert_eq!((c.x_sign, c.y_sign), (1.0, -1.0));
        assert!(parse_channels("motion-channels", "V.X").is_err());
    }
}
