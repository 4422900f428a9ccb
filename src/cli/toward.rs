//! What a chunk of a shot rendered in parallel takes from the keyframe after it
//! (`--toward-frame`): that keyframe's delivered image, each frame's motion to it and back
//! composed over the frames between, and how far along the pull each frame is.

use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result};
use image::RgbImage;

use stylize::motion::{Motion, compose};
use stylize::render::sequence::{TowardLink, ramp};

use super::frames::Shot;

/// The keyframe a chunk is pulled toward and every frame's link to it, by position in the
/// range. The links are composed back from the keyframe, so a frame's link needs every
/// frame's after it; holding them all would keep two frame-size motions per frame (about
/// 33 MB a frame at 1920x1080). Only every `stride`-th pair is kept, about the square root
/// of the range's length, and the links between two kept pairs are composed again from the
/// later one when the first of them is asked for: frames are asked for in order, so each
/// stretch is composed twice at most, and the links are the same as composed in one sweep.
pub struct TowardFrame {
    pub number: u64,
    pub image: RgbImage,
    /// Where the chain the pull ramps over starts.
    start: u64,
    stride: usize,
    /// The pair at each position `stride·k + stride − 1` and at the last one.
    kept: Vec<(usize, Pair)>,
    /// The stretch composed last: its first position and its links.
    stretch: Mutex<(usize, Vec<TowardLink>)>,
}

/// A frame's motion to the keyframe and back (none where a step has no motion back).
#[derive(Clone)]
struct Pair {
    to: Motion,
    back: Option<Motion>,
}

impl TowardFrame {
    /// The pull `--toward-frame` asks for (none without it), for a chunk whose chain starts
    /// from frame `start` (the frame before the range, or the range's first frame when it
    /// starts the shot). The keyframe must be delivered already: else the task is requeued
    /// (exit 75).
    pub fn for_shot(shot: &Shot, start: u64) -> Result<Option<Self>> {
        let Some(number) = shot.args().toward_frame else {
            return Ok(None);
        };
        let path = shot.out_path(number);
        let why =
            format!("the range is pulled toward frame {number}'s delivered image (--toward-frame)");
        super::exit::written_first("out", &path, &why, "keyframe", "")?;
        let image = shot.read_delivered(&path, "toward-frame")?;
        Self::along(shot, start, number, image).map(Some)
    }

    /// The pull toward frame `number`, delivered as `image`, of the range of `shot` whose
    /// chain starts from frame `start`.
    fn along(shot: &Shot, start: u64, number: u64, image: RgbImage) -> Result<Self> {
        let frames = shot.numbers.len();
        let stride = (frames as f64).sqrt().ceil().max(1.0) as usize;
        let mut kept = Vec::with_capacity(frames / stride + 1);
        let mut sweep = Sweep::over(shot, number, &shot.numbers)?;
        while let Some((position, pair)) = sweep.next_pair()? {
            if position + 1 == frames || position % stride == stride - 1 {
                kept.push((position, pair.clone()));
            }
        }
        kept.reverse();
        Ok(Self {
            number,
            image,
            start,
            stride,
            kept,
            stretch: Mutex::new((0, Vec::new())),
        })
    }

    /// The links of frames `numbers` (consecutive in the range's order, before `toward`)
    /// of a chunk whose chain starts from frame `start`, to frame `toward`, all at once
    /// (the bench's short chunks).
    pub fn links(shot: &Shot, start: u64, toward: u64, numbers: &[u64]) -> Result<Vec<TowardLink>> {
        Sweep::over(shot, toward, numbers)?.links(start, toward)
    }

    /// The link of the range's `position`-th frame of `shot` (the shot this was made for).
    pub fn link(&self, shot: &Shot, position: usize) -> Result<TowardLink> {
        let mut stretch = self.stretch.lock().unwrap_or_else(PoisonError::into_inner);
        let (first, links) = &*stretch;
        if !(position >= *first && position < first + links.len()) {
            let first = position - position % self.stride;
            let (last, pair) = self
                .kept
                .iter()
                .find(|(kept, _)| *kept >= position)
                .context("a frame past the range's end")?;
            let numbers = &shot.numbers[first..=*last];
            let links =
                Sweep::from_pair(shot, numbers, pair.clone()).links(self.start, self.number)?;
            *stretch = (first, links);
        }
        let (first, links) = &*stretch;
        Ok(links[position - first].clone())
    }
}

/// The pairs of frames `numbers`, from the last back to the first, each composed from the
/// one after it.
struct Sweep<'a> {
    shot: &'a Shot,
    numbers: &'a [u64],
    /// The pair of `numbers[next]`, once the sweep has reached it.
    pair: Option<Pair>,
    /// The position of `pair`.
    next: usize,
}

impl<'a> Sweep<'a> {
    /// Over `numbers`, the last of which is linked to `toward` along the composed motion.
    fn over(shot: &'a Shot, toward: u64, numbers: &'a [u64]) -> Result<Self> {
        let Some(&last) = numbers.last() else {
            return Ok(Self::from_pair_at(shot, numbers, None, 0));
        };
        let pair = Pair {
            to: motion_or_refuse(shot.motion_across(last, toward)?)?,
            back: shot.motion_across(toward, last)?,
        };
        Ok(Self::from_pair(shot, numbers, pair))
    }

    /// Over `numbers`, the last of which has `pair`.
    fn from_pair(shot: &'a Shot, numbers: &'a [u64], pair: Pair) -> Self {
        Self::from_pair_at(shot, numbers, Some(pair), numbers.len().saturating_sub(1))
    }

    fn from_pair_at(shot: &'a Shot, numbers: &'a [u64], pair: Option<Pair>, next: usize) -> Self {
        Self {
            shot,
            numbers,
            pair,
            next,
        }
    }

    /// Every frame's link to `toward`, in the range's order, for a chain starting from frame
    /// `start`.
    fn links(mut self, start: u64, toward: u64) -> Result<Vec<TowardLink>> {
        let mut links = Vec::with_capacity(self.numbers.len());
        while let Some((position, pair)) = self.next_pair()? {
            links.push(TowardLink {
                to_target: pair.to,
                from_target: pair.back,
                share: ramp(start, self.numbers[position], toward),
            });
        }
        links.reverse();
        Ok(links)
    }

    /// The next frame's position and pair, going back; none past the first frame.
    fn next_pair(&mut self) -> Result<Option<(usize, Pair)>> {
        let Some(pair) = self.pair.take() else {
            return Ok(None);
        };
        let position = self.next;
        if position > 0 {
            let n = self.numbers[position - 1];
            let to = compose(&motion_or_refuse(self.shot.to_next(n)?)?, &pair.to);
            let back = match (&pair.back, self.shot.to_previous_of(self.shot.ahead(n))?) {
                (Some(back), Some(step)) => Some(compose(back, &step)),
                _ => None,
            };
            self.pair = Some(Pair { to, back });
            self.next = position - 1;
        }
        Ok(Some((position, pair)))
    }
}

fn motion_or_refuse(motion: Option<Motion>) -> Result<Motion> {
    motion.ok_or_else(|| {
        anyhow::anyhow!(
            "--toward-frame: the frames' motion to the next frame is needed (--motion-next, \
             or OpenEXR frames with --motion-next-channels)"
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::frames::ShotArgs;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        shot: ShotArgs,
    }

    /// The orbit shot's frames `range` (with `extra` flags), pulled toward frame `toward`.
    fn shot(range: &str, toward: u64, extra: &[&str]) -> Shot {
        let toward = toward.to_string();
        let mut argv = vec![
            "test",
            "--frames",
            "tests/data/orbit/frame_####.exr",
            "--out",
            "unused_####.png",
            "--frame-range",
            range,
            "--toward-frame",
            &toward,
        ];
        argv.extend_from_slice(extra);
        let flags = Flags::try_parse_from(argv).unwrap();
        Shot::new(&flags.shot, None).unwrap()
    }

    /// Frames asked for in order, then out of it: every link is the one composed in one
    /// sweep, while only every third pair and one stretch are held.
    #[test]
    fn links_composed_again_from_kept_pairs_are_the_ones_of_one_sweep() {
        for (shot, start, toward) in [
            (shot("2-8", 9, &["--from-frame", "1"]), 1, 9),
            (
                shot("9-15", 8, &["--backward", "--from-frame", "16"]),
                16,
                8,
            ),
        ] {
            let all = TowardFrame::links(&shot, start, toward, &shot.numbers).unwrap();
            let pull = TowardFrame::along(&shot, start, toward, RgbImage::new(1, 1)).unwrap();
            assert_eq!(pull.stride, 3);
            let kept: Vec<usize> = pull.kept.iter().map(|(position, _)| *position).collect();
            assert_eq!(kept, [2, 5, 6]);
            for position in (0..all.len()).chain([1, 6, 0]) {
                let link = pull.link(&shot, position).unwrap();
                let expected = &all[position];
                assert_eq!(link.to_target, expected.to_target, "frame {position}");
                assert_eq!(link.from_target, expected.from_target, "frame {position}");
                assert_eq!(link.share, expected.share, "frame {position}");
                assert!(pull.stretch.lock().unwrap().1.len() <= pull.stride);
            }
            // The definition: the last frame's motion across to the keyframe, and each frame
            // before it its step to the next frame, then the next frame's link.
            let (last, before) = (shot.numbers[6], shot.numbers[5]);
            let across = shot.motion_across(last, toward).unwrap().unwrap();
            assert_eq!(all[6].to_target, across);
            let step = shot.to_next(before).unwrap().unwrap();
            assert_eq!(all[5].to_target, compose(&step, &across));
            // Frames further from the keyframe compose more steps: no two links alike.
            assert_ne!(all[0].to_target, all[1].to_target);
            assert!(all[0].share < all[6].share);
        }
    }
}
