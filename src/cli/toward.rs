//! What a chunk of a shot rendered in parallel takes from the keyframe after it
//! (`--toward-frame`): that keyframe's delivered image, each frame's motion to it and back
//! composed over the frames between, and how far along the pull each frame is.

use anyhow::Result;
use image::RgbImage;

use stylize::motion::{Motion, compose};
use stylize::render::sequence::{TowardLink, ramp};

use super::frames::Shot;

/// The keyframe a chunk is pulled toward and every frame's link to it, by position in the
/// range.
pub struct TowardFrame {
    pub number: u64,
    pub image: RgbImage,
    links: Vec<TowardLink>,
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
        let links = Self::links(shot, start, number, &shot.numbers)?;
        Ok(Some(Self {
            number,
            image,
            links,
        }))
    }

    /// The links of frames `numbers` (consecutive in the range's order, before `toward`)
    /// of a chunk whose chain starts from frame `start`, to frame `toward`: the motions composed once, back from
    /// `toward`, and kept (two per frame, at the frames' size).
    pub fn links(shot: &Shot, start: u64, toward: u64, numbers: &[u64]) -> Result<Vec<TowardLink>> {
        let Some(&last) = numbers.last() else {
            return Ok(Vec::new());
        };
        let mut to = motion_or_refuse(shot.motion_across(last, toward)?)?;
        let mut back = shot.motion_across(toward, last)?;
        let mut links = Vec::with_capacity(numbers.len());
        for &n in numbers.iter().rev() {
            if n != last {
                to = compose(&motion_or_refuse(shot.to_next(n)?)?, &to);
                back = match (back, shot.to_previous_of(shot.ahead(n))?) {
                    (Some(back), Some(step)) => Some(compose(&back, &step)),
                    _ => None,
                };
            }
            links.push(TowardLink {
                to_target: to.clone(),
                from_target: back.clone(),
                share: ramp(start, n, toward),
            });
        }
        links.reverse();
        Ok(links)
    }

    /// The link of the range's `position`-th frame.
    pub fn link(&self, position: usize) -> TowardLink {
        self.links[position].clone()
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
