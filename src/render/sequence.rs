//! A shot: frames stylised in order so brush strokes stay where the motion takes them
//! (Ruder, Dosovitskiy and Brox, 2016). Frame 0 is a still. Each later frame starts from the
//! previous delivered frame warped along the motion to it (pixels the motion cannot vouch for
//! start from the content), runs at the output size only, and adds the temporal term on the
//! pixels that are certain: inside the previous frame, consistent with the previous frame's
//! motion to this one when that is given, or as an explicit mask says.

use image::RgbImage;

use super::options::{InitChoice, RenderRequest};
use super::plan::plan_memory;
use super::still::{Rendered, StyleSource, render_frame};
use crate::engine::temporal::TemporalTarget;
use crate::engine::{Engine, ProgressSink};
use crate::error::{Error, Result};
use crate::image_io::{fit_longest, resize_exact};
use crate::model::InputConvention;
use crate::motion::{Motion, consistent, warp};

/// Ruder et al.'s temporal weight for the Caffe weights' loss scale.
pub const DEFAULT_TEMPORAL_WEIGHT: f64 = 1e3;

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
    pub content: Option<RgbImage>,
    /// Pixel (x, y) of this frame was at (x + dx, y + dy) in the previous frame.
    pub to_previous: Option<Motion>,
    /// Pixel (x, y) of this frame will be at (x + dx, y + dy) in the next frame.
    pub to_next: Option<Motion>,
    /// Per-pixel certainty in [0, 1] overriding the one derived from the motion.
    pub mask: Option<Vec<f32>>,
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
    base: RenderRequest,
    options: SequenceOptions,
    convention: InputConvention,
    /// The shot's frame size, set by the first frame.
    size: Option<(u32, u32)>,
    previous: Option<Previous>,
    next_index: usize,
}

impl SequenceState {
    /// `base` carries the styles, blend and still options (its content is ignored: each
    /// frame brings its own); `convention` is the engine's.
    pub fn new(
        base: RenderRequest,
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

    /// Checks the next frame (errors name `frames[i].field`) and prepares its job.
    pub fn prepare_frame(&self, frame: FrameInput) -> Result<FrameJob> {
        let index = self.next_index;
        let field = |name: &str| format!("frames[{index}].{name}");
        let content = frame
            .content
            .ok_or_else(|| Error::invalid(field("content"), "no content image"))?;
        let size = content.dimensions();
        if let Some(shot) = self.size.filter(|&shot| shot != size) {
            return Err(Error::invalid(
                field("content"),
                format!(
                    "{}x{} differs from the shot's {}x{}",
                    size.0, size.1, shot.0, shot.1
                ),
            ));
        }
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
        let mut job = FrameJob {
            index,
            request: RenderRequest {
                content,
                ..self.base.clone()
            },
            temporal: None,
            certain: 0.0,
            warped_previous: None,
            to_next: frame.to_next,
        };
        let Some(previous) = &self.previous else {
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
        let (warped, certainty) = warp_previous(
            &previous.output,
            to_previous,
            forward,
            frame.mask.as_deref(),
            output_size,
        );
        job.certain = certainty.iter().map(|&c| c as f64).sum::<f64>() / certainty.len() as f64;
        if !self.options.independent {
            let options = &mut job.request.options;
            options.scales = 1;
            options.iterations = self.options.later_iterations;
            options.init = InitChoice::Image(warm_start(&job.request.content, &warped, &certainty));
            job.temporal = Some(TemporalTarget {
                warped: self.convention.to_input(&warped),
                certainty: certainty.clone(),
                weight: self.options.temporal_weight,
            });
        }
        job.warped_previous = Some((warped, certainty));
        Ok(job)
    }

    /// Records frame `job` as delivered as `output`; the next frame follows it.
    pub fn delivered(&mut self, job: &FrameJob, output: &RgbImage) {
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
        base: RenderRequest,
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
/// along `to_previous` (given at the frame's size), with each pixel's certainty: the explicit
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
    let (warped, inside) = warp(&planes(&previous), 3, &backward);
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

/// The starting image of a later frame: the warped previous output where certain, the
/// content (at the output size) elsewhere.
fn warm_start(content: &RgbImage, warped: &RgbImage, certainty: &[f32]) -> RgbImage {
    let mut start = resize_exact(content, warped.width(), warped.height());
    for ((pixel, held), &c) in start.pixels_mut().zip(warped.pixels()).zip(certainty) {
        if c >= 0.5 {
            *pixel = *held;
        }
    }
    start
}

/// An RGB image as three channel-major float planes.
fn planes(image: &RgbImage) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = pixel[c] as f32;
        }
    }
    out
}

fn from_planes(planes: &[f32], width: usize, height: usize) -> RgbImage {
    let plane = width * height;
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let i = y as usize * width + x as usize;
        image::Rgb([0, 1, 2].map(|c| planes[c * plane + i].round().clamp(0.0, 255.0) as u8))
    })
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
