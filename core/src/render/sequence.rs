//! A shot: frames stylised in order so brush strokes stay where the motion takes them
//! (Ruder, Dosovitskiy and Brox, 2016). Frame 0 is a still. Each later frame starts from the
//! previous delivered frame warped along the motion to it (pixels the motion cannot vouch for
//! start from their content shifted by the stylisation around them), runs at the output size
//! only, and adds the temporal term on the pixels that are certain: inside the previous frame, consistent with the previous frame's
//! motion to this one when that is given, or as an explicit mask says.

use image::RgbImage;

use super::Content;
use super::options::{InitChoice, RenderRequest, Styling};
use super::plan::plan_memory;
use super::start_image::{from_planes, planes, start_from_still, warm_start};
use super::still::{Rendered, StyleSource, render_frame};
use crate::engine::temporal::TemporalTarget;
use crate::engine::{Engine, ProgressSink};
use crate::error::{Error, Result};
use crate::image_io::{fit_longest, resize_exact};
use crate::model::InputConvention;
use crate::motion::{Motion, consistent, warp_cubic};

/// Ruder et al.'s temporal weight for the Caffe weights' loss scale.
pub const DEFAULT_TEMPORAL_WEIGHT: f64 = 1e3;

/// How much more firmly a keyframe is held to the frame it starts from than a frame to the
/// one before it. Measured on the orbit shot at 128 px, draft, 4 chunks: the parallel
/// method's warping error 1.88x the chain's at 1x, 1.73x at 10x, 1.94x at 100x; at 256 px,
/// standard, keyframes continued from the middle frame's draft (`DRAFT_SHARE`): 10x held
/// the frame beside the middle one at 1.128x its still's style loss, 3x at 1.069x (the
/// worst join 1.33x and 1.52x the median frame's, the warping error 1.33x the chain's
/// both).
pub const KEYFRAME_HOLD: f64 = 3.0;

/// The share of the still's iterations at the output size a draft runs (`SequenceState::
/// draft`): the middle frame of a shot rendered in parallel chunks, which every keyframe and
/// the frame itself then continue from at once (a keyframe's `FILLED_KEYFRAME_SHARE`). On
/// the orbit shot at 256 px, standard, K = 4: two thirds kept every frame's style loss
/// within 1.07x its still's; half gave 1.15x, a third 1.27x.
pub const DRAFT_SHARE: f64 = 2.0 / 3.0;

/// The share of the still's iterations a keyframe runs when the pixels its motion cannot
/// vouch for start from its own still (`SequenceState::keyframe_still`): only the seams
/// between the held and the still's pixels are left to settle (`start_image::STILL_FEATHER`
/// blends them at the start). Measured on the orbit shot at 256 px, standard (the still's 30
/// iterations per scale), the furthest keyframe's style loss against its still's: 1.155x at
/// 15 iterations (1.197x with a hard switch to the still), 1.019x at 25 (hard switch), 1.222x
/// at 30 starting from the content instead.
pub const FILLED_KEYFRAME_SHARE: f64 = 2.0 / 3.0;

/// What a sequence adds to a still's options.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceOptions {
    /// The temporal term's weight (0: warm start only).
    pub temporal_weight: f64,
    /// Iterations of every frame after the first, at the output size (the first frame runs
    /// the still's scales and iterations).
    pub later_iterations: usize,
    /// Check a frame's motion to the previous frame against the previous frame's motion to
    /// this one, when both are given (Ruder's criterion), and hold only consistent pixels.
    pub consistency_check: bool,
    /// Stylise every frame as an independent still (the flickering baseline a sequence is
    /// measured against); the warped previous frame is still reported, for `warping_error`.
    pub independent: bool,
}

impl SequenceOptions {
    /// The defaults for a still whose scales run `iterations` each: later frames run half of
    /// one scale's iterations, from the warped previous frame.
    pub fn for_iterations(iterations: usize) -> Self {
        Self {
            temporal_weight: DEFAULT_TEMPORAL_WEIGHT,
            later_iterations: iterations.div_ceil(2).max(1),
            consistency_check: true,
            independent: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temporal_weight.is_finite() && self.temporal_weight >= 0.0) {
            return Err(Error::invalid(
                "temporal_weight",
                format!("{} must be finite and >= 0", self.temporal_weight),
            ));
        }
        if self.later_iterations == 0 {
            return Err(Error::invalid("later_iterations", "must be at least 1"));
        }
        Ok(())
    }
}

/// One frame as a pipeline hands it over: the content at the shot's size and, after the
/// first, where its pixels were in the previous frame.
#[derive(Debug, Clone, Default)]
pub struct FrameInput {
    /// Display values at the precision the frame had (`Content`).
    pub content: Option<Content>,
    /// Pixel (x, y) of this frame was at (x + dx, y + dy) in the previous frame.
    pub to_previous: Option<Motion>,
    /// Pixel (x, y) of this frame will be at (x + dx, y + dy) in the next frame.
    pub to_next: Option<Motion>,
    /// Per-pixel certainty in [0, 1] overriding the one derived from the motion.
    pub mask: Option<Vec<f32>>,
    /// How the frame reaches the frame it is pulled toward, when the shot has one
    /// (`SequenceState::pull_toward`).
    pub toward: Option<TowardLink>,
}

/// A frame's link to the later frame its chunk is pulled toward (the next chunk's keyframe,
/// delivered already): where its pixels are in that frame, that frame's motion back (for the
/// consistency check) and how far along the pull the frame is.
#[derive(Debug, Clone)]
pub struct TowardLink {
    /// Pixel (x, y) of this frame is at (x + dx, y + dy) in the toward frame.
    pub to_target: Motion,
    /// Pixel (x, y) of the toward frame is at (x + dx, y + dy) in this frame.
    pub from_target: Option<Motion>,
    /// The share in [0, 1] of the temporal term that holds the frame to the toward frame
    /// rather than to the previous one: `ramp` rises from the chunk's start to its end.
    pub share: f32,
}

/// `share` of `iterations`, rounded, at least one.
fn share_of(iterations: usize, share: f64) -> usize {
    ((iterations as f64 * share).round() as usize).max(1)
}

/// The iterations of a keyframe whose still runs `still_iterations` per scale: all of them
/// at the output size, or `FILLED_KEYFRAME_SHARE` of them when it starts from more than the
/// content (`filled`: its own still, or a draft of the frame it continues from).
pub fn keyframe_iterations(still_iterations: usize, filled: bool) -> usize {
    if filled {
        share_of(still_iterations, FILLED_KEYFRAME_SHARE)
    } else {
        still_iterations.max(1)
    }
}

/// The pull's share for frame `number` of a chunk continuing from frame `start` toward
/// frame `toward` (later, or earlier for a chunk rendered backward): rising linearly from 0
/// at `start` to 1 at `toward`.
pub fn ramp(start: u64, number: u64, toward: u64) -> f32 {
    if toward == start {
        return 1.0;
    }
    (number.abs_diff(start) as f64 / toward.abs_diff(start) as f64).min(1.0) as f32
}

/// A finished frame.
#[derive(Debug, Clone)]
pub struct FrameRendered {
    pub index: usize,
    pub rendered: Rendered,
    /// The fraction of pixels the temporal term held (0 for the first frame).
    pub certain: f64,
    /// The warped previous frame with its certainty (none for the first frame): what
    /// `warping_error` compares the frame with.
    pub warped_previous: Option<(RgbImage, Vec<f32>)>,
}

/// The frame before the one being stylised.
struct Previous {
    output: RgbImage,
    to_next: Option<Motion>,
}

/// A frame ready to render: its request (the still's for the first frame, a warm start at
/// the output size for later ones) and its temporal target.
#[derive(Debug, Clone)]
pub struct FrameJob {
    pub index: usize,
    pub request: RenderRequest,
    pub temporal: Option<TemporalTarget>,
    /// The fraction of pixels the temporal term holds (0 for the first frame).
    pub certain: f64,
    /// The warped previous frame and its certainty (none for the first frame).
    pub warped_previous: Option<(RgbImage, Vec<f32>)>,
    /// This frame's motion to the next, kept for the next frame's consistency check.
    pub to_next: Option<Motion>,
}

/// Where a shot is between frames: its settings, its frame size, and the last delivered
/// frame. Turns each incoming frame into a `FrameJob`; whoever renders it reports the
/// delivered image back with `delivered`.
pub struct SequenceState {
    base: Styling,
    options: SequenceOptions,
    convention: InputConvention,
    /// The shot's frame size, set by the first frame.
    size: Option<(u32, u32)>,
    previous: Option<Previous>,
    /// The delivered frame the shot's frames are pulled toward, when it has one.
    toward: Option<RgbImage>,
    /// Iterations for one frame (its index) instead of `later_iterations`.
    once: Option<(usize, usize)>,
    /// The keyframe's own still, which the pixels its motion cannot vouch for start from.
    keyframe_still: Option<RgbImage>,
    /// The first frame is a draft (`draft`).
    draft: bool,
    /// The frame continued from is a draft (`continue_from_draft`).
    from_draft: bool,
    next_index: usize,
}

impl SequenceState {
    /// `base` carries the styles, blend and still options (each frame brings its content);
    /// `convention` is the engine's.
    pub fn new(
        base: Styling,
        options: SequenceOptions,
        convention: InputConvention,
    ) -> Result<Self> {
        base.validate()?;
        options.validate()?;
        Ok(Self {
            base,
            options,
            convention,
            size: None,
            previous: None,
            toward: None,
            once: None,
            keyframe_still: None,
            draft: false,
            from_draft: false,
            next_index: 0,
        })
    }

    /// Whether frames are stylised as independent stills.
    pub fn independent(&self) -> bool {
        self.options.independent
    }

    /// The index the next frame will have.
    pub fn next_index(&self) -> usize {
        self.next_index
    }

    /// Continues a shot after frame `index - 1` was delivered as `output` (e.g. read back
    /// from disk when a run resumes); `to_next` is that frame's motion to the next, if any.
    pub fn resume_after(&mut self, index: usize, output: RgbImage, to_next: Option<Motion>) {
        self.next_index = index;
        self.previous = Some(Previous { output, to_next });
    }

    /// Pulls every following frame toward `image`, a frame further on in the shot's order
    /// and delivered already (the next chunk's keyframe); each frame then brings its
    /// `TowardLink`.
    pub fn pull_toward(&mut self, image: RgbImage) {
        self.toward = Some(image);
    }

    /// Runs the next frame as a keyframe warm-started from a frame further away: for
    /// `iterations` instead of `later_iterations` (more of it is new), its held pixels held
    /// `KEYFRAME_HOLD` times as firmly (keyframes stylised apart agree where the frame they
    /// start from shows).
    pub fn next_runs(&mut self, iterations: usize) {
        self.once = Some((self.next_index, iterations.max(1)));
    }

    /// The next frame, a keyframe (`next_runs`), has its own still `image` (rendered at once
    /// with the frame it continues from): the pixels the motion cannot vouch for start from
    /// the still rather than from the content, and the keyframe runs
    /// `FILLED_KEYFRAME_SHARE` of its iterations. Refused with the frame unless it is a
    /// keyframe.
    pub fn keyframe_still(&mut self, image: RgbImage) {
        self.keyframe_still = Some(image);
    }

    /// The shot's first frame, a still, is a draft: its finest scale runs `DRAFT_SHARE` of
    /// the iterations. A shot rendered in parallel chunks starts from a draft of its middle
    /// frame, which its keyframes and the frame itself continue from at once
    /// (`continue_from_draft`).
    pub fn draft(&mut self) {
        self.draft = true;
    }

    /// The frame continued from (`resume_after`) is a draft (`draft`): the next frame, a
    /// keyframe (`next_runs`) even beside the draft's frame, runs `FILLED_KEYFRAME_SHARE` of
    /// its iterations; it may be that frame itself, finished (its motion to the draft then
    /// none).
    pub fn continue_from_draft(&mut self) {
        self.from_draft = true;
    }

    /// The iterations of frame `index`: a keyframe's (`next_runs`), fewer when it starts
    /// from its own still or a draft; else `later_iterations`.
    fn iterations_of(&self, index: usize) -> usize {
        match self.once {
            Some((once, iterations)) if once == index => {
                keyframe_iterations(iterations, self.keyframe_still.is_some() || self.from_draft)
            }
            _ => self.options.later_iterations,
        }
    }

    /// Refuses a next frame of `size` (width, height) when the shot's frames are another
    /// size, naming `frames[i].content`; callers with only a header check it before decoding.
    pub fn check_frame_size(&self, size: (u32, u32)) -> Result<()> {
        match self.size.filter(|&shot| shot != size) {
            Some(shot) => Err(Error::invalid(
                format!("frames[{}].content", self.next_index),
                format!(
                    "{}x{} differs from the shot's {}x{}",
                    size.0, size.1, shot.0, shot.1
                ),
            )),
            None => Ok(()),
        }
    }

    /// Checks the next frame (errors name `frames[i].field`) and prepares its job.
    pub fn prepare_frame(&self, frame: FrameInput) -> Result<FrameJob> {
        let index = self.next_index;
        let field = |name: &str| format!("frames[{index}].{name}");
        let content = frame
            .content
            .ok_or_else(|| Error::invalid(field("content"), "no content image"))?;
        let size = content.dimensions();
        self.check_frame_size(size)?;
        let (w, h) = (size.0 as usize, size.1 as usize);
        for (name, motion) in [
            ("motion_to_previous", &frame.to_previous),
            ("motion_to_next", &frame.to_next),
        ] {
            if let Some(motion) = motion {
                motion.check(&field(name), w, h)?;
            }
        }
        if let Some(mask) = &frame.mask {
            check_mask(mask, &field("mask"), w, h)?;
        }
        match (&frame.toward, &self.toward) {
            (Some(link), Some(_)) => {
                link.to_target.check(&field("motion_to_toward"), w, h)?;
                if let Some(back) = &link.from_target {
                    back.check(&field("motion_from_toward"), w, h)?;
                }
                if !(0.0..=1.0).contains(&link.share) {
                    return Err(Error::invalid(
                        field("toward_share"),
                        format!("{} is outside [0, 1]", link.share),
                    ));
                }
            }
            (Some(_), None) => {
                return Err(Error::invalid(
                    field("motion_to_toward"),
                    "the shot has no frame to pull toward (setup.toward)",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    field("motion_to_toward"),
                    "needed when the shot is pulled toward a later frame (setup.toward)",
                ));
            }
            (None, None) => {}
        }
        let keyframe = matches!(self.once, Some((once, _)) if once == index);
        if self.keyframe_still.is_some() && !(keyframe && self.previous.is_some()) {
            return Err(Error::invalid(
                "keyframe_still",
                format!(
                    "frame {index} is not a keyframe (one continued from a frame further \
                     away than the next)"
                ),
            ));
        }
        let mut job = FrameJob {
            index,
            request: self.base.with_content(content),
            temporal: None,
            certain: 0.0,
            warped_previous: None,
            to_next: frame.to_next,
        };
        let Some(previous) = &self.previous else {
            if self.draft {
                let options = &mut job.request.options;
                options.last_scale_iterations = Some(share_of(options.iterations, DRAFT_SHARE));
            }
            return Ok(job);
        };
        let to_previous = frame.to_previous.as_ref().ok_or_else(|| {
            Error::invalid(
                field("motion_to_previous"),
                "frames after the first need their motion to the previous frame",
            )
        })?;
        let forward = previous
            .to_next
            .as_ref()
            .filter(|_| self.options.consistency_check);
        let output_size = fit_longest(size.0, size.1, job.request.options.size);
        check_aspect("previous.image", previous.output.dimensions(), output_size)?;
        if let Some(forward) = &previous.to_next {
            forward.check("previous.motion_to_next", w, h)?;
        }
        let (warped, certainty) = warp_previous(
            &previous.output,
            to_previous,
            forward,
            frame.mask.as_deref(),
            output_size,
        );
        job.certain = certainty.iter().map(|&c| c as f64).sum::<f64>() / certainty.len() as f64;
        if !self.options.independent {
            let (held, held_certainty) = match (&frame.toward, &self.toward) {
                (Some(link), Some(target)) => {
                    let back = link
                        .from_target
                        .as_ref()
                        .filter(|_| self.options.consistency_check);
                    check_aspect("toward.image", target.dimensions(), output_size)?;
                    let (pulled, pulled_certainty) =
                        warp_previous(target, &link.to_target, back, None, output_size);
                    blend_targets(
                        (&warped, &certainty),
                        (&pulled, &pulled_certainty),
                        link.share,
                    )
                }
                _ => (warped.clone(), certainty.clone()),
            };
            let options = &mut job.request.options;
            options.scales = 1;
            options.iterations = self.iterations_of(index);
            let start = match &self.keyframe_still {
                Some(still) => {
                    check_aspect("keyframe_still", still.dimensions(), output_size)?;
                    let still = resize_exact(still, output_size.0, output_size.1);
                    start_from_still(&still, &held, &held_certainty)
                }
                None => warm_start(&job.request.content.to_8bit(), &held, &held_certainty),
            };
            options.init = InitChoice::Image(start);
            job.temporal = Some(TemporalTarget {
                warped: self.convention.to_input(&held),
                certainty: held_certainty,
                weight: self.options.temporal_weight * if keyframe { KEYFRAME_HOLD } else { 1.0 },
            });
        }
        job.warped_previous = Some((warped, certainty));
        Ok(job)
    }

    /// The frame last recorded as delivered is continued from as `output`: what a reader of
    /// its file gets back, where that is not the optimiser's image (its alpha put back).
    pub fn delivered_as(&mut self, output: RgbImage) {
        if let Some(previous) = &mut self.previous {
            previous.output = output;
        }
    }

    /// Records frame `job` as delivered as `output`; the next frame follows it.
    pub fn delivered(&mut self, job: &FrameJob, output: &RgbImage) {
        self.keyframe_still = None;
        self.from_draft = false;
        self.size = Some(job.request.content.dimensions());
        self.previous = Some(Previous {
            output: output.clone(),
            to_next: job.to_next.clone(),
        });
        self.next_index = job.index + 1;
    }
}

/// Stylises a shot's frames one at a time, in order, in this process.
pub struct SequenceRenderer<'a> {
    state: SequenceState,
    engine: &'a dyn Engine,
    styles: StyleSource<'a>,
    budget: Option<u64>,
}

impl<'a> SequenceRenderer<'a> {
    /// See `SequenceState::new`; `budget` is the memory plan's (`None`: unlimited).
    pub fn new(
        base: Styling,
        options: SequenceOptions,
        engine: &'a dyn Engine,
        styles: StyleSource<'a>,
        budget: Option<u64>,
    ) -> Result<Self> {
        let state = SequenceState::new(base, options, engine.convention().clone())?;
        Ok(Self {
            state,
            engine,
            styles,
            budget,
        })
    }

    pub fn state(&mut self) -> &mut SequenceState {
        &mut self.state
    }

    /// Stylises the next frame.
    pub fn frame(
        &mut self,
        frame: FrameInput,
        progress: &mut ProgressSink<'_>,
    ) -> Result<FrameRendered> {
        let job = self.state.prepare_frame(frame)?;
        let plan = plan_memory(&job.request, &self.engine.footprint(), self.budget)?;
        let rendered = render_frame(
            &job.request,
            job.temporal.clone(),
            self.engine,
            self.styles,
            &plan,
            progress,
        )?;
        self.state.delivered(&job, &rendered.image);
        Ok(FrameRendered {
            index: job.index,
            rendered,
            certain: job.certain,
            warped_previous: job.warped_previous,
        })
    }
}

/// What a frame pulled two ways is held to: the previous frame's warp (`previous`) and the
/// toward frame's (`toward`), each with its certainty, mixed per pixel by their shares
/// (`1 - share` and `share`) among the pixels each vouches for. A pixel either vouches for
/// is held as firmly as the firmer of the two; a pixel only one vouches for takes that one.
fn blend_targets(
    previous: (&RgbImage, &[f32]),
    toward: (&RgbImage, &[f32]),
    share: f32,
) -> (RgbImage, Vec<f32>) {
    let mut held = previous.0.clone();
    let mut certainty = Vec::with_capacity(previous.1.len());
    for (i, (pixel, pulled)) in held.pixels_mut().zip(toward.0.pixels()).enumerate() {
        let (cp, ct) = (previous.1[i], toward.1[i]);
        let (a, b) = ((1.0 - share) * cp, share * ct);
        certainty.push(cp.max(ct));
        let (a, b) = if a + b > 0.0 {
            (a, b)
        } else {
            // Only the side with no share vouches: it holds the pixel alone.
            (cp, ct)
        };
        if a + b > 0.0 {
            for c in 0..3 {
                let mixed = (a * pixel[c] as f32 + b * pulled[c] as f32) / (a + b);
                pixel[c] = mixed.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    (held, certainty)
}

/// Refuses a previous frame (one a run continues from) of another shape than the frames:
/// it is scaled to the output size, which must not distort it by more than 2%.
fn check_aspect(field: &str, (pw, ph): (u32, u32), (ow, oh): (u32, u32)) -> Result<()> {
    let skew = (pw as f64 * oh as f64 - ph as f64 * ow as f64).abs() / (ph as f64 * oh as f64);
    if skew > 0.02 {
        return Err(Error::invalid(
            field,
            format!("{pw}x{ph} is not the shape of the shot's {ow}x{oh} output"),
        ));
    }
    Ok(())
}

fn check_mask(mask: &[f32], field: &str, w: usize, h: usize) -> Result<()> {
    if mask.len() != w * h {
        return Err(Error::invalid(
            field,
            format!("{} values for {w}x{h} pixels", mask.len()),
        ));
    }
    if let Some(i) = mask.iter().position(|v| !(0.0..=1.0).contains(v)) {
        return Err(Error::invalid(
            field,
            format!(
                "{} at pixel ({}, {}) is outside [0, 1]",
                mask[i],
                i % w,
                i / w
            ),
        ));
    }
    Ok(())
}

/// The previous delivered frame warped to this frame at the output size `(width, height)`
/// along `to_previous` (given at the frame's size; sampled by the cubic, which keeps the
/// strokes a bilinear warp would blur frame after frame: on the orbit shot at 256 px the
/// chain's worst style loss went from 1.28x its still's to 1.14x), with each pixel's certainty: the explicit
/// `mask` where given, else Ruder's consistency with the previous frame's motion to this one
/// (`forward`) where given, else whether the pixel was inside the previous frame. A pixel
/// outside the previous frame is never certain.
pub fn warp_previous(
    previous_output: &RgbImage,
    to_previous: &Motion,
    forward: Option<&Motion>,
    mask: Option<&[f32]>,
    (width, height): (u32, u32),
) -> (RgbImage, Vec<f32>) {
    let (ow, oh) = (width as usize, height as usize);
    let backward = to_previous.resized(ow, oh);
    let previous = resize_exact(previous_output, width, height);
    let (warped, inside) = warp_cubic(&planes(&previous), 3, &backward);
    let held: Vec<f32> = match (mask, forward) {
        (Some(mask), _) => resize_plane(mask, to_previous.width, to_previous.height, ow, oh),
        (None, Some(forward)) => consistent(&backward, &forward.resized(ow, oh))
            .into_iter()
            .map(|c| f32::from(u8::from(c)))
            .collect(),
        (None, None) => vec![1.0; ow * oh],
    };
    let certainty = held
        .iter()
        .zip(&inside)
        .map(|(&c, &inside)| if inside { c } else { 0.0 })
        .collect();
    (from_planes(&warped, ow, oh), certainty)
}

/// A certainty plane at another size (nearest sample: a certainty stays 0 or 1).
fn resize_plane(plane: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    if (w, h) == (ow, oh) {
        return plane.to_vec();
    }
    (0..ow * oh)
        .map(|i| {
            let x = ((i % ow) * w / ow).min(w - 1);
            let y = ((i / ow) * h / oh).min(h - 1);
            plane[y * w + x]
        })
        .collect()
}

/// Ruder et al.'s `E_warp` between two delivered frames: the mean over certain pixels
/// (certainty ≥ 0.5) of `‖O_t − warp(O_{t−1})‖²` in 8-bit levels, summed over channels.
/// `None` when no pixel is certain.
pub fn warping_error(
    output: &RgbImage,
    warped_previous: &RgbImage,
    certainty: &[f32],
) -> Option<f64> {
    let mut sum = 0.0;
    let mut count = 0usize;
    for ((a, b), &c) in output.pixels().zip(warped_previous.pixels()).zip(certainty) {
        if c >= 0.5 {
            sum += (0..3)
                .map(|k| (a[k] as f64 - b[k] as f64).powi(2))
                .sum::<f64>();
            count += 1;
        }
    }
    (count > 0).then(|| sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pull_rises_from_the_chunks_start_to_the_frame_it_pulls_toward() {
        assert_eq!(ramp(4, 5, 8), 0.25);
        assert_eq!(ramp(4, 7, 8), 0.75);
        assert_eq!(ramp(4, 8, 8), 1.0);
        assert_eq!(ramp(4, 4, 8), 0.0);
        // Nothing to rise over: the frame is the one pulled toward.
        assert_eq!(ramp(8, 8, 8), 1.0);
        // A chunk rendered backward, from frame 8 toward frame 4.
        assert_eq!(ramp(8, 7, 4), 0.25);
    }

    #[test]
    fn a_frame_pulled_two_ways_mixes_where_both_vouch_and_follows_either_alone() {
        let previous = RgbImage::from_pixel(4, 1, image::Rgb([100, 100, 100]));
        let toward = RgbImage::from_pixel(4, 1, image::Rgb([200, 0, 40]));
        // Pixel 0: both vouch; 1: only the previous frame; 2: only the toward frame;
        // 3: neither.
        let (cp, ct) = ([1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]);
        let (held, certainty) = blend_targets((&previous, &cp), (&toward, &ct), 0.25);
        assert_eq!(held.get_pixel(0, 0).0, [125, 75, 85]);
        assert_eq!(held.get_pixel(1, 0).0, [100, 100, 100]);
        assert_eq!(held.get_pixel(2, 0).0, [200, 0, 40]);
        assert_eq!(certainty, [1.0, 1.0, 1.0, 0.0]);
        // At the end of the pull, a pixel only the previous frame vouches for still holds it.
        let (held, _) = blend_targets((&previous, &cp), (&toward, &ct), 1.0);
        assert_eq!(held.get_pixel(0, 0).0, [200, 0, 40]);
        assert_eq!(held.get_pixel(1, 0).0, [100, 100, 100]);
    }

    /// A shot of 64x32 frames with one style, at `iterations` per scale over two scales.
    fn shot(iterations: usize) -> SequenceState {
        let base = Styling {
            styles: vec![RgbImage::from_pixel(16, 16, image::Rgb([90, 40, 10]))],
            blend: Vec::new(),
            options: super::super::RenderOptions {
                size: 64,
                scales: 2,
                iterations,
                ..Default::default()
            },
        };
        let options = SequenceOptions::for_iterations(iterations);
        SequenceState::new(base, options, InputConvention::caffe()).unwrap()
    }

    fn frame(to_previous: Option<Motion>) -> FrameInput {
        FrameInput {
            content: Some(Content::Rgb8(RgbImage::from_pixel(
                64,
                32,
                image::Rgb([120, 130, 140]),
            ))),
            to_previous,
            to_next: None,
            mask: None,
            toward: None,
        }
    }

    #[test]
    fn a_draft_stops_its_finest_scale_early_and_what_continues_from_it_runs_as_a_keyframe() {
        // The draft: a still whose finest scale runs two thirds of the iterations.
        let mut draft = shot(30);
        draft.draft();
        let job = draft.prepare_frame(frame(None)).unwrap();
        assert_eq!(job.request.options.iterations, 30);
        assert_eq!(job.request.options.last_scale_iterations, Some(20));
        assert!(job.temporal.is_none());
        // Not a draft: the still's every scale runs them all.
        let job = shot(30).prepare_frame(frame(None)).unwrap();
        assert_eq!(job.request.options.last_scale_iterations, None);

        // The frame beside the draft's, continued from it: a keyframe of two thirds of the
        // still's iterations at the output size, held KEYFRAME_HOLD times as firmly.
        let drafted = RgbImage::from_pixel(64, 32, image::Rgb([10, 200, 30]));
        let mut beside = shot(30);
        beside.resume_after(0, drafted.clone(), None);
        beside.continue_from_draft();
        beside.next_runs(30);
        let job = beside
            .prepare_frame(frame(Some(Motion::still(64, 32))))
            .unwrap();
        assert_eq!(job.request.options.scales, 1);
        assert_eq!(job.request.options.iterations, 20);
        let temporal = job.temporal.expect("held to the draft");
        assert_eq!(temporal.weight, DEFAULT_TEMPORAL_WEIGHT * KEYFRAME_HOLD);
        // The draft's own frame, finished: nothing moves, so every pixel is held and starts
        // from the draft.
        assert_eq!(job.certain, 1.0);
        assert_eq!(job.request.options.init, InitChoice::Image(drafted));
        // A frame continued from a delivered frame next to it is a chain's step.
        let mut step = shot(30);
        step.resume_after(0, RgbImage::new(64, 32), None);
        let job = step
            .prepare_frame(frame(Some(Motion::still(64, 32))))
            .unwrap();
        assert_eq!(job.request.options.iterations, 15);
        assert_eq!(job.temporal.expect("held").weight, DEFAULT_TEMPORAL_WEIGHT);
    }
}
