//! The StylizeSequence stream: reads the setup and then frames from the client, turns each
//! frame into a scheduler job through the shot's `SequenceState`, and streams each frame's
//! events tagged with its index, then its result as soon as it is done. Frames run one at a
//! time (each starts from the previous result); a client that hangs up cancels the frame
//! being optimised within one iteration. A shot holds one of the places stills use only
//! while its setup or a frame is being worked on; an idle shot ends after
//! `--sequence-idle-seconds`, at its deadline, or when the server drains. It never ends OK
//! with a frame missing, and it counts as one request, under its final status.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::convert::{self, JobTemplate, Limits, in_field};
use super::proto;
use super::status;
use crate::cache::view_luts::ViewLutCache;
use crate::error::quoted;
use crate::error::{Error, Result};
use crate::exr_file::ExrFile;
use crate::exr_file::{FrameView, Transfer};
use crate::image_io;
use crate::motion::{ExrMotionChannels, Motion, missing_channel, read_exr_frame, read_flo};
use crate::passthrough::{Fields, Passthrough};
use crate::registry::StyleRegistry;
use crate::render::Content;
use crate::render::sequence::{
    DEFAULT_TEMPORAL_WEIGHT, FrameInput, FrameJob, SequenceOptions, SequenceState, TowardLink,
    ramp, warping_error,
};
use crate::scheduler::{JobEvent, Scheduler};
use crate::telemetry::metrics::{self as names, outcome};
use image::RgbImage;

pub type SequenceStream =
    Pin<Box<dyn Stream<Item = Result<proto::StylizeSequenceResponse, Status>> + Send>>;

/// What every frame of a shot shares: the job settings (its content replaced per frame),
/// how OpenEXR frames are read, the shot's state, and the number of the last frame (or of
/// the frame the shot continues from).
struct Shot {
    template: JobTemplate,
    /// The shot's view: named (or sent), else the default for its first frame (`None`
    /// until it comes).
    view: Option<FrameView>,
    /// Whether each frame's other passes are copied into its OpenEXR result.
    keep_passes: bool,
    state: SequenceState,
    last_number: Option<u64>,
    /// The OpenEXR frame the shot continues from, until the first frame decides the view
    /// it is read through.
    previous_exr: Option<Vec<u8>>,
    /// The frame the shot's frames are pulled toward (`setup.toward`): its file until the
    /// first frame decides the view, its number and where the pull starts from (`None`:
    /// the first frame's number).
    toward: Option<Toward>,
    /// The still's iterations per scale: a keyframe's.
    keyframe_iterations: usize,
    /// The keyframe's own still (`setup.keyframe_still`), until the first frame decides the
    /// view it is read through.
    keyframe_still: Option<Vec<u8>>,
    /// The frame continued from is a draft (`setup.previous.draft`).
    from_draft: bool,
    order: Order,
}

/// The order a shot's frames come in: numbers rising, or falling for a chunk rendered
/// backward (`sequence.backward`).
#[derive(Clone, Copy)]
struct Order {
    backward: bool,
}

impl Order {
    /// Whether frame `b` comes after frame `a` in this order.
    fn ahead(self, a: u64, b: u64) -> bool {
        if self.backward { b < a } else { b > a }
    }

    /// The frame after `number` in this order.
    fn next(self, number: u64) -> u64 {
        if self.backward {
            number.saturating_sub(1)
        } else {
            number.saturating_add(1)
        }
    }
}

/// `setup.toward` as the shot keeps it.
struct Toward {
    file: Option<Vec<u8>>,
    number: u64,
    from: Option<u64>,
}

impl Shot {
    /// The view frames are read through: the one already chosen, else the default for
    /// `content` (the first frame's), which then holds for the whole shot.
    fn view_for(&mut self, content: &[u8]) -> FrameView {
        let view = self
            .view
            .get_or_insert_with(|| Transfer::default_for(content).into())
            .clone();
        self.template.output = self.template.output.through(view.transfer());
        view
    }
}

/// A delivered frame (`bytes`, a request's `field`) as the chain continues from it: decoded
/// to 8 bits through the shot's view.
fn decode_delivered(
    bytes: &[u8],
    field: &str,
    limits: &Limits,
    view: &FrameView,
) -> Result<RgbImage> {
    convert::check_pixels(bytes, field, limits)?;
    image_io::decode_viewed(bytes, field, view).map_err(|e| in_field(field, e))
}

/// The frame a shot split into tasks continues from, decoded into `state`. Its motion to
/// the next frame is at the frames' size (checked when the first frame comes).
fn continue_from(
    previous: proto::PreviousFrame,
    state: &mut SequenceState,
    limits: &Limits,
    view: &FrameView,
) -> Result<()> {
    let field = "setup.previous.image";
    if previous.image.is_empty() {
        return Err(Error::invalid(
            field,
            "no image: the delivered frame is needed",
        ));
    }
    let image = decode_delivered(&previous.image, field, limits, view)?;
    // At the frames' size, checked against the first frame's when it comes.
    let to_next = previous
        .motion_to_next
        .as_ref()
        .map(|m| motion(m, "setup.previous.motion_to_next", true, None))
        .transpose()?;
    state.resume_after(0, image, to_next);
    if previous.draft {
        state.continue_from_draft();
    }
    Ok(())
}

/// `setup.toward`, checked: an image within the limits, a number after the frame the shot
/// continues from (`last`), a pull that starts no later than it ends.
fn pulled_toward(
    toward: proto::TowardFrame,
    last: Option<u64>,
    order: Order,
    limits: &Limits,
) -> Result<Toward> {
    let field = "setup.toward.image";
    if toward.image.is_empty() {
        return Err(Error::invalid(
            field,
            "no image: the delivered frame is needed",
        ));
    }
    convert::check_pixels(&toward.image, field, limits)?;
    let from = toward.from.or(last);
    if let Some(from) = from.filter(|&from| !order.ahead(from, toward.number)) {
        return Err(Error::invalid(
            "setup.toward.number",
            format!(
                "{} does not come after frame {from}, where the shot continues",
                toward.number
            ),
        ));
    }
    Ok(Toward {
        file: Some(toward.image),
        number: toward.number,
        from,
    })
}

/// The shot's settings from its setup message. Runs on a blocking thread (styles decode).
fn shot(
    mut setup: proto::SequenceSetup,
    request_id: String,
    deadline: Option<Instant>,
    limits: &Limits,
    registry: &StyleRegistry,
    convention: crate::model::InputConvention,
    views: &ViewLutCache,
) -> Result<Shot> {
    let wire = setup.sequence.unwrap_or_default();
    let previous = setup.previous.take();
    let toward = setup.toward.take();
    let keyframe_still = Some(std::mem::take(&mut setup.keyframe_still)).filter(|s| !s.is_empty());
    let draft = setup.draft;
    if draft && previous.is_some() {
        return Err(Error::invalid(
            "setup.draft",
            "a draft is a still: it cannot continue from setup.previous",
        ));
    }
    let from_draft = previous.as_ref().is_some_and(|p| p.draft);
    if from_draft && previous.as_ref().is_some_and(|p| p.number.is_none()) {
        return Err(Error::invalid(
            "setup.previous.number",
            "a draft's frame number is needed (setup.previous.draft)",
        ));
    }
    if let Some(still) = &keyframe_still {
        if previous.is_none() {
            return Err(Error::invalid(
                "setup.keyframe_still",
                "a keyframe continues from setup.previous, which is not set",
            ));
        }
        convert::check_pixels(still, "setup.keyframe_still", limits)?;
    }
    let view_name = setup
        .options
        .as_ref()
        .map(|o| o.view.clone())
        .unwrap_or_default();
    let keep_passes = setup.options.as_ref().is_some_and(|o| o.keep_passes);
    let wire_lut = setup.options.as_mut().and_then(|o| o.view_lut.take());
    let template = convert::job_template(setup.into(), request_id, deadline, limits, registry)?;
    // Each frame brings its content; what holds for any frame is checked now.
    template.styling.validate().map_err(convert::in_request)?;
    let defaults = SequenceOptions::for_iterations(template.styling.options.iterations);
    let options = SequenceOptions {
        temporal_weight: wire.temporal_weight.unwrap_or(DEFAULT_TEMPORAL_WEIGHT),
        later_iterations: match wire.later_iterations {
            0 => defaults.later_iterations,
            n => n as usize,
        },
        consistency_check: !wire.no_consistency_check,
        independent: false,
    };
    if options.later_iterations > limits.max_iterations {
        return Err(Error::invalid(
            "sequence.later_iterations",
            format!(
                "{} exceeds the limit of {}",
                options.later_iterations, limits.max_iterations
            ),
        ));
    }
    options.validate().map_err(|e| match e {
        Error::InvalidOption { field, reason } => {
            Error::invalid(format!("sequence.{field}"), reason)
        }
        other => other,
    })?;
    // A shot reads its frames through one view (its frames are held to each other through
    // it, so it is the shot's, not each frame's): the one named, else the default for the
    // kind of frame the shot continues from or, failing that, of its first frame.
    let named = match (wire.display_referred, view_name.as_str()) {
        _ if wire_lut.is_some() => None,
        (true, _) => Some(Transfer::DisplayReferred),
        (false, "") => None,
        (false, name) => Some(Transfer::named("options.view", name)?),
    };
    let named = match wire_lut {
        Some(lut) => Some(FrameView::Studio(convert::parse_view_lut(&lut, views)?)),
        None => named.map(FrameView::from),
    };
    let mut state = SequenceState::new(template.styling.clone(), options, convention)?;
    if draft {
        state.draft();
    }
    let last_number = previous.as_ref().and_then(|p| p.number);
    let order = Order {
        backward: wire.backward,
    };
    let toward = toward
        .map(|toward| pulled_toward(toward, last_number, order, limits))
        .transpose()?;
    let keyframe_iterations = template.styling.options.iterations;
    let mut shot = Shot {
        toward,
        keyframe_iterations,
        keyframe_still,
        from_draft,
        order,
        template,
        view: named,
        keep_passes,
        state,
        last_number,
        previous_exr: None,
    };
    if let Some(previous) = previous {
        // Checked and decoded now; an OpenEXR image is decoded again through the shot's view
        // once the first frame decides it (the continued frame's own kind may differ from
        // the frames': a PNG output of OpenEXR frames, say).
        let view = match &shot.view {
            Some(view) => view.clone(),
            None => Transfer::default_for(&previous.image).into(),
        };
        if shot.view.is_none() && crate::exr_file::is_exr(&previous.image) {
            shot.previous_exr = Some(previous.image.clone());
        }
        continue_from(previous, &mut shot.state, limits, &view)?;
    }
    Ok(shot)
}

/// A motion message as a field of offsets for a `frame` (width, height) frame; errors name
/// `field`. An OpenEXR or `.flo` file of another size is refused from its header, before
/// decoding.
/// An `exr` source without a file reads the frame's content and is decoded with it
/// (`content_with_motion`).
fn motion(
    wire: &proto::Motion,
    field: &str,
    to_next: bool,
    frame: Option<(usize, usize)>,
) -> Result<Motion> {
    use proto::motion::Source;
    let named = |e: Error| in_field(field, e);
    match &wire.source {
        Some(Source::Flow(flow)) => Ok(Motion {
            width: flow.width as usize,
            height: flow.height as usize,
            dx: flow.dx.clone(),
            dy: flow.dy.clone(),
        }),
        Some(Source::Flo(bytes)) => read_flo(bytes, field, frame).map_err(named),
        Some(Source::Exr(exr)) => {
            let channels = exr_channels(exr, to_next);
            crate::motion::decode_exr(&exr.file, field, &channels, frame).map_err(named)
        }
        None => Err(Error::invalid(field, "no flow, flo or exr source is set")),
    }
}

/// An `exr` source's channels: those it names, else Blender's Vector pass.
fn exr_channels(exr: &proto::ExrMotion, to_next: bool) -> ExrMotionChannels {
    if exr.x_channel.is_empty() && exr.y_channel.is_empty() {
        return if to_next {
            ExrMotionChannels::blender_to_next()
        } else {
            ExrMotionChannels::blender_to_previous()
        };
    }
    let sign = |negate: bool| if negate { -1.0 } else { 1.0 };
    ExrMotionChannels {
        x: exr.x_channel.clone(),
        y: exr.y_channel.clone(),
        x_sign: sign(exr.negate_x),
        y_sign: sign(exr.negate_y),
    }
}

/// The channels a motion message reads from the frame's own content: an `exr` source with
/// no file (a renderer's multipart frame, sent once); `None` for any other source.
fn in_content(wire: &proto::Motion, to_next: bool) -> Option<ExrMotionChannels> {
    match &wire.source {
        Some(proto::motion::Source::Exr(exr)) if exr.file.is_empty() => {
            Some(exr_channels(exr, to_next))
        }
        _ => None,
    }
}

/// The frame's content and the motions (to the previous frame, to the next) its own
/// OpenEXR file holds, decoded in one pass; `field` names a frame's fields in errors.
fn content_with_motion(
    frame: &proto::SequenceFrame,
    field: &dyn Fn(&str) -> String,
    limits: &Limits,
    view: &FrameView,
    wanted: [Option<ExrMotionChannels>; 2],
) -> Result<(Content, [Option<Motion>; 2])> {
    let names = ["motion_to_previous", "motion_to_next"];
    let content = field("content");
    if !crate::exr_file::is_exr(&frame.content) {
        let first = names[wanted.iter().position(Option::is_some).unwrap_or(0)];
        return Err(Error::invalid(
            field(first),
            "an exr source without a file reads the content, which is not OpenEXR",
        ));
    }
    convert::check_pixels(&frame.content, &content, limits)?;
    let file = ExrFile::open(&frame.content, &content).map_err(|e| in_field(&content, e))?;
    for (channels, name) in wanted.iter().zip(names) {
        if let Some(missing) = channels.as_ref().and_then(|c| missing_channel(&file, c)) {
            return Err(Error::invalid(
                field(name),
                format!("the content has no channel {}", quoted(missing)),
            ));
        }
    }
    let (image, motions) = read_exr_frame(&file, view, wanted.each_ref().map(Option::as_ref))
        .map_err(|e| in_field(&content, e))?;
    Ok((Content::Float(image), motions))
}

/// The number of the frame `index` brings: its own, which must follow the last in the
/// shot's order (the first frame of a shot continued from another frame may be anywhere
/// else: a keyframe continued from a frame further away), else the one after the last (0
/// for a shot's first). A first frame continued from a draft may be the draft's own frame
/// (`repeat`).
fn frame_number(
    given: Option<u64>,
    index: usize,
    last: Option<u64>,
    order: Order,
    repeat: bool,
) -> Result<u64> {
    let next = last.map_or(0, |n| order.next(n));
    match (given, last) {
        (Some(number), Some(last)) if index == 0 && (number != last || repeat) => Ok(number),
        (Some(number), Some(last)) if !order.ahead(last, number) => Err(Error::invalid(
            format!("frames[{index}].number"),
            format!("{number} does not follow the previous frame's {last}"),
        )),
        (Some(number), _) => Ok(number),
        (None, _) => Ok(next),
    }
}

/// Decodes one frame message and prepares its job, with the frame's number. Runs on a
/// blocking thread.
fn frame_job(
    frame: proto::SequenceFrame,
    shot: &mut Shot,
    limits: &Limits,
) -> Result<PreparedFrame> {
    let index = shot.state.next_index();
    let number = frame_number(
        frame.number,
        index,
        shot.last_number,
        shot.order,
        shot.from_draft,
    )?;
    let field = |name: &str| format!("frames[{index}].{name}");
    let wires = [&frame.motion_to_previous, &frame.motion_to_next];
    let wanted = [false, true].map(|to_next| {
        wires[to_next as usize]
            .as_ref()
            .and_then(|m| in_content(m, to_next))
    });
    // A later frame's size is the shot's: checked from the header, before decoding.
    if !frame.content.is_empty() {
        let content = field("content");
        let size = crate::image_io::dimensions(&frame.content, &content);
        shot.state
            .check_frame_size(size.map_err(|e| in_field(&content, e))?)?;
    }
    let view = shot.view_for(&frame.content);
    if let Some(previous) = shot.previous_exr.take() {
        let image = decode_delivered(&previous, "setup.previous.image", limits, &view)?;
        shot.state.delivered_as(image);
    }
    if let Some(file) = shot.toward.as_mut().and_then(|t| t.file.take()) {
        let image = decode_delivered(&file, "setup.toward.image", limits, &view)?;
        shot.state.pull_toward(image);
    }
    let order = shot.order;
    if let Some(toward) = shot
        .toward
        .as_ref()
        .filter(|t| !order.ahead(number, t.number))
    {
        return Err(Error::invalid(
            field("number"),
            format!(
                "{number} is not before setup.toward's frame {}",
                toward.number
            ),
        ));
    }
    // A first frame further than one frame from the one the shot continues from, or
    // continued from a draft, is a keyframe: it runs the still's iterations at the output
    // size (two thirds of them with its own still, `setup.keyframe_still`, or from a draft).
    let keyframe = index == 0
        && shot
            .last_number
            .is_some_and(|last| shot.from_draft || number.abs_diff(last) > 1);
    // The draft's own frame, finished: its pixels stay where they are.
    let refined = index == 0 && shot.from_draft && shot.last_number == Some(number);
    if keyframe {
        shot.state.next_runs(shot.keyframe_iterations);
    }
    if let Some(still) = shot.keyframe_still.take() {
        if !keyframe {
            return Err(Error::invalid(
                "setup.keyframe_still",
                format!(
                    "frame {number} is not a keyframe: it is not further than the next frame \
                     from setup.previous.number"
                ),
            ));
        }
        let image = decode_delivered(&still, "setup.keyframe_still", limits, &view)?;
        shot.state.keyframe_still(image);
    }
    if view.studio().is_some() && !crate::exr_file::is_exr(&frame.content) {
        return Err(Error::invalid(
            field("content"),
            "not OpenEXR: the shot's studio view turns scene-linear light into a picture",
        ));
    }
    let (content, [to_previous, to_next]) = if wanted.iter().any(Option::is_some) {
        content_with_motion(&frame, &field, limits, &view, wanted)?
    } else {
        let content = field("content");
        let max = limits.max_pixels;
        let transfer = view.transfer();
        let image = image_io::decode_content_field(&frame.content, &content, max, transfer)?;
        (image, [None, None])
    };
    let size = content.dimensions();
    let other = |read: Option<Motion>, name: &str, to_next: bool| match read {
        Some(motion) => Ok(Some(motion)),
        None => wires[to_next as usize]
            .as_ref()
            .map(|m| {
                let frame = (size.0 as usize, size.1 as usize);
                motion(m, &field(name), to_next, Some(frame))
            })
            .transpose(),
    };
    let frame_size = (size.0 as usize, size.1 as usize);
    let toward = match (&mut shot.toward, &frame.motion_to_toward) {
        (Some(toward), Some(wire)) => {
            let from = *toward.from.get_or_insert(number);
            let from_target = frame
                .motion_from_toward
                .as_ref()
                .map(|m| motion(m, &field("motion_from_toward"), false, Some(frame_size)));
            Some(TowardLink {
                to_target: motion(wire, &field("motion_to_toward"), true, Some(frame_size))?,
                from_target: from_target.transpose()?,
                share: ramp(from, number, toward.number),
            })
        }
        (None, Some(_)) => {
            return Err(Error::invalid(
                field("motion_to_toward"),
                "the shot has no frame to pull toward (setup.toward)",
            ));
        }
        _ => None,
    };
    let to_previous = match other(to_previous, "motion_to_previous", false)? {
        None if refined => Some(Motion::still(frame_size.0, frame_size.1)),
        given => given,
    };
    let input = FrameInput {
        content: Some(content),
        to_previous,
        to_next: other(to_next, "motion_to_next", true)?,
        mask: if frame.mask.is_empty() {
            None
        } else {
            let field = field("mask");
            let mask = crate::image_io::decode_mask(&frame.mask, &field, size);
            Some(mask.map_err(|e| in_field(&field, e))?)
        },
        toward,
    };
    let job = shot.state.prepare_frame(input).map_err(|e| match e {
        Error::InvalidOption { field, reason }
            if field.starts_with("previous.") || field.starts_with("toward.") =>
        {
            Error::invalid(format!("setup.{field}"), reason)
        }
        other => other,
    })?;
    let output = image_io::fit_longest(size.0, size.1, job.request.options.size);
    let passthrough = Passthrough::of(
        &frame.content,
        &field("content"),
        shot.keep_passes,
        shot.template.output,
        output,
        Fields {
            output: "options.output_format",
            keep_passes: "options.keep_passes",
            size: "options.size",
        },
    )?;
    Ok(PreparedFrame {
        number,
        job,
        passthrough,
    })
}

/// A frame decoded and ready to queue: its number, its job, and what its content carries
/// past the stylisation.
struct PreparedFrame {
    number: u64,
    job: FrameJob,
    passthrough: Option<Passthrough>,
}

/// A job event as the sequence stream carries it, tagged with the frame's index and number;
/// `None` for the result (sent separately).
fn tagged(
    index: usize,
    number: u64,
    event: JobEvent,
) -> Option<Result<proto::StylizeSequenceResponse, Status>> {
    use proto::stylize_event::Event as In;
    use proto::stylize_sequence_response::Event as Out;
    let event = match convert::event(event) {
        Ok(proto::StylizeEvent { event }) => event?,
        Err(status) => return Some(Err(status)),
    };
    let event = match event {
        In::Queued(e) => Out::Queued(e),
        In::Started(e) => Out::Started(e),
        In::Progress(e) => Out::Progress(e),
        In::Preview(e) => Out::Preview(e),
        In::Result(_) => return None,
    };
    Some(Ok(proto::StylizeSequenceResponse {
        frame: index as u32,
        event: Some(event),
        number,
    }))
}

/// How a server keeps shots: how many may be open at once, and how long one may wait for
/// its next frame.
#[derive(Debug, Clone, Copy)]
pub struct ShotLimits {
    pub max_open: usize,
    pub idle: Duration,
}

impl Default for ShotLimits {
    fn default() -> Self {
        Self {
            max_open: 16,
            idle: Duration::from_secs(300),
        }
    }
}

/// What runs a shot: the scheduler, the limits, the style registry, the places every
/// request shares, and the server's drain signal.
#[derive(Clone)]
pub struct Runner {
    pub scheduler: Scheduler,
    pub limits: Limits,
    pub registry: Arc<StyleRegistry>,
    /// Studio views shots sent, parsed once each (shared with stills).
    pub views: Arc<ViewLutCache>,
    /// The places stills and frames share (`workers + max_queue`): a shot holds one while
    /// its setup decodes and while a frame decodes, waits or runs, never while it is idle.
    pub places: Arc<Semaphore>,
    pub shots: ShotLimits,
    /// Becomes true when the server starts draining.
    pub draining: watch::Receiver<bool>,
    /// What this replica is (its engine and device label each shot's span).
    pub info: Arc<proto::ServerInfoResponse>,
}

type Outbound = mpsc::Sender<Result<proto::StylizeSequenceResponse, Status>>;

/// What the wait for a shot's next message ended with.
enum Next {
    Frame(Box<proto::SequenceFrame>),
    /// The client closed its side: the shot is complete.
    End,
    /// The shot ends with this status (a bad or unreadable message, the deadline, the idle
    /// limit, the drain).
    Ends(Status),
}

/// A refusal of `frames[index]` as the stream's final status: the error's own status,
/// its message prefixed with the frame unless it already names one.
fn frame_status(index: usize, error: Error) -> Status {
    let named = status(error);
    if named.message().contains("frames[") {
        named
    } else {
        Status::new(
            named.code(),
            format!("frames[{index}]: {}", named.message()),
        )
    }
}

/// A status from reading the client's stream, for the message `waited` names (the setup or
/// `frames[i]`): tonic's size limit and decoding errors reworded as the gRPC conventions
/// want them (as `tally` does for calls).
fn unreadable(waited: &str, read: Status) -> Status {
    let message = match read.code() {
        tonic::Code::OutOfRange => {
            return Status::resource_exhausted(format!(
                "{waited} is larger than this server's --max-message-bytes"
            ));
        }
        tonic::Code::Internal if read.message().starts_with("failed to decode") => {
            return Status::invalid_argument(format!(
                "{waited} is not a valid StylizeSequenceRequest"
            ));
        }
        _ => read.message().to_string(),
    };
    Status::new(read.code(), format!("{waited}: {}", quoted(&message)))
}

/// A shot's slot among `--max-open-shots`, counted in the open-shots gauge while held.
pub struct OpenShot {
    _slot: OwnedSemaphorePermit,
}

impl OpenShot {
    /// A slot from `slots`, or `TooManyShots` naming how many there are.
    pub fn take(slots: &Arc<Semaphore>, max_open: usize) -> Result<Self> {
        let permit = slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyShots(max_open))?;
        metrics::gauge!(names::OPEN_SHOTS).increment(1.0);
        Ok(Self { _slot: permit })
    }
}

impl Drop for OpenShot {
    fn drop(&mut self) {
        metrics::gauge!(names::OPEN_SHOTS).decrement(1.0);
    }
}

impl Runner {
    /// Reads the setup (holding a place while its styles decode), then streams the shot
    /// from a task that ends when the client closes its stream, hangs up, a frame fails,
    /// the shot idles past its limit, its deadline passes, or the server drains. `open` is
    /// the shot's slot among `--max-open-shots`, held for its whole length.
    pub async fn start(
        self,
        mut inbound: Streaming<proto::StylizeSequenceRequest>,
        deadline: Option<Instant>,
        open: OpenShot,
        caller: tonic::metadata::MetadataMap,
    ) -> std::result::Result<SequenceStream, Status> {
        use proto::stylize_sequence_request::Message;
        // A stream that sends nothing holds its slot only until the idle limit.
        let mut draining = self.draining.clone();
        let first = self
            .receive(&mut inbound, "the setup", 0, deadline, &mut draining)
            .await?;
        let Some(proto::StylizeSequenceRequest {
            message: Some(Message::Setup(setup)),
        }) = first
        else {
            return Err(status(Error::invalid(
                "setup",
                "the first message must be a SequenceSetup",
            )));
        };
        let place = self.take_place().map_err(status)?;
        let request_id = super::request_id(&setup.request_id);
        let span = super::request_span!("stylize_sequence", &request_id, &self.info, &caller);
        super::record_job(&span, setup.options.as_ref());
        let (limits, registry) = (self.limits.clone(), self.registry.clone());
        let convention = self.scheduler.backends().engine.convention().clone();
        let views = self.views.clone();
        let decoding = span.clone();
        let shot = tokio::task::spawn_blocking(move || {
            decoding.in_scope(|| {
                shot(
                    setup, request_id, deadline, &limits, &registry, convention, &views,
                )
            })
        })
        .await
        .map_err(|e| Status::internal(format!("setup decoding panicked: {e}")))?
        .map_err(status)?;
        drop(place);
        let (out, events) = mpsc::channel(16);
        tokio::spawn(
            async move {
                let _open = open;
                let ended = self.frames(shot, inbound, deadline, &out).await;
                // The shot counts once, under the status its client gets.
                let outcome = match &ended {
                    Ok(()) => outcome::OK,
                    Err(status) => super::outcome_of_code(status.code()),
                };
                names::count_request(outcome);
                if let Err(status) = ended {
                    tracing::info!(code = ?status.code(), message = status.message(), "shot ended");
                    let _ = out.send(Err(status)).await;
                }
            }
            .instrument(span),
        );
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            events,
        )))
    }

    fn take_place(&self) -> Result<OwnedSemaphorePermit> {
        super::take_place(&self.scheduler, &self.places)
    }

    /// Runs frames until the shot ends: `Ok` when the client closed its stream after its
    /// last frame, else the status the shot ends with (`CANCELLED` when the client is gone).
    async fn frames(
        &self,
        mut shot: Shot,
        mut inbound: Streaming<proto::StylizeSequenceRequest>,
        deadline: Option<Instant>,
        out: &Outbound,
    ) -> std::result::Result<(), Status> {
        let mut draining = self.draining.clone();
        loop {
            let index = shot.state.next_index();
            let frame = match self
                .next(&mut inbound, index, deadline, &mut draining)
                .await
            {
                Next::Frame(frame) => *frame,
                Next::End => return Ok(()),
                Next::Ends(status) => return Err(status),
            };
            let place = self.take_place().map_err(|e| frame_status(index, e))?;
            shot = self.frame(shot, frame, out, place).await?;
        }
    }

    /// Waits for the shot's next frame (`frames[index]`), at most until the idle limit, the
    /// deadline or the drain, whichever comes first.
    async fn next(
        &self,
        inbound: &mut Streaming<proto::StylizeSequenceRequest>,
        index: usize,
        deadline: Option<Instant>,
        draining: &mut watch::Receiver<bool>,
    ) -> Next {
        use proto::stylize_sequence_request::Message;
        let waited = format!("frames[{index}]");
        match self
            .receive(inbound, &waited, index, deadline, draining)
            .await
        {
            Err(status) => Next::Ends(status),
            Ok(None) => Next::End,
            Ok(Some(proto::StylizeSequenceRequest {
                message: Some(Message::Frame(frame)),
            })) => Next::Frame(Box::new(frame)),
            Ok(Some(_)) => Next::Ends(status(Error::invalid(
                waited,
                "after the setup, every message must be a SequenceFrame",
            ))),
        }
    }

    /// The stream's next message (`None`: the client closed its side), or the status the
    /// shot ends with: the idle limit, the deadline or the drain came first, or the message
    /// was unreadable (oversized, undecodable, a broken stream), so a shot never ends OK
    /// with frames missing. `waited` names the message in the status; `index` is the next
    /// frame's.
    async fn receive(
        &self,
        inbound: &mut Streaming<proto::StylizeSequenceRequest>,
        waited: &str,
        index: usize,
        deadline: Option<Instant>,
        draining: &mut watch::Receiver<bool>,
    ) -> std::result::Result<Option<proto::StylizeSequenceRequest>, Status> {
        let idle_until = tokio::time::Instant::now() + self.shots.idle;
        let until = match deadline {
            Some(d) => idle_until.min(tokio::time::Instant::from_std(d)),
            None => idle_until,
        };
        let received = tokio::select! {
            received = tokio::time::timeout_at(until, inbound.message()) => received,
            _ = draining.wait_for(|drain| *drain) => {
                return Err(status(Error::ShotHandedBack(index)));
            }
        };
        match received {
            Err(_) if until < idle_until => Err(status(Error::DeadlineExceeded(format!(
                "before {waited} arrived"
            )))),
            Err(_) => Err(status(Error::ShotIdle(self.shots.idle.as_secs_f64()))),
            Ok(Ok(message)) => Ok(message),
            Ok(Err(read)) => Err(unreadable(waited, read)),
        }
    }

    /// One frame, holding `place` until it is done: decode, queue, forward its events,
    /// record its result. The shot back when the frame was delivered, else the status the
    /// shot ends with.
    async fn frame(
        &self,
        shot: Shot,
        frame: proto::SequenceFrame,
        out: &Outbound,
        place: OwnedSemaphorePermit,
    ) -> std::result::Result<Shot, Status> {
        let _place = place;
        let started = Instant::now();
        let index = shot.state.next_index();
        let limits = self.limits.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let mut shot = shot;
            let job = frame_job(frame, &mut shot, &limits);
            (shot, job)
        })
        .await;
        let (mut shot, prepared) = match prepared {
            Ok((shot, Ok(prepared))) => (shot, prepared),
            Ok((_, Err(e))) => return Err(frame_status(index, e)),
            Err(e) => {
                return Err(Status::internal(format!(
                    "frames[{index}]: decoding panicked: {e}"
                )));
            }
        };
        let PreparedFrame {
            number,
            job,
            passthrough,
        } = prepared;
        let mut spec =
            shot.template
                .frame_job(job.index, job.request.clone(), job.temporal.clone());
        let restored = passthrough.is_some();
        spec.passthrough = passthrough;
        spec.view = shot.view.as_ref().and_then(|v| v.studio().cloned());
        // A trace's span for the frame: its optimisation and encoding nest in it. Without
        // traces it does not exist, and the job logs under the shot's span as before.
        let frame_span = tracing::debug_span!("frame", index, number);
        let job_span = if frame_span.is_disabled() {
            tracing::Span::current()
        } else {
            frame_span
        };
        let submitted = self
            .scheduler
            .submit(spec, job_span)
            .map_err(|e| frame_status(index, e))?;
        let gone = || Status::cancelled("the client went away");
        let mut events = Box::pin(submitted.events.into_stream());
        while let Some(event) = events.next().await {
            let output = match event {
                JobEvent::Finished(output) => output,
                JobEvent::Failed(e) => return Err(frame_status(index, e)),
                event => {
                    if let Some(message) = tagged(job.index, number, event)
                        && out.send(message).await.is_err()
                    {
                        // Dropping the events cancels the job within one iteration.
                        return Err(gone());
                    }
                    continue;
                }
            };
            shot.state.delivered(&job, &output.pixels);
            if restored {
                // The chain goes on from the result as the client has it (alpha put back),
                // as a stream continuing from that result would.
                let view = shot.view.clone().unwrap_or(Transfer::default().into());
                let delivered = decode_delivered(&output.image, "result", &self.limits, &view)
                    .map_err(|e| frame_status(index, e))?;
                shot.state.delivered_as(delivered);
            }
            shot.last_number = Some(number);
            let e_warp = job
                .warped_previous
                .as_ref()
                .and_then(|(warped, certainty)| warping_error(&output.pixels, warped, certainty));
            let temporal = job.temporal.as_ref().map(|_| output.delivered.temporal);
            let seconds = started.elapsed().as_secs_f64();
            names::count_frame(seconds, temporal);
            tracing::info!(frame = job.index, number, seconds, "frame delivered");
            let result = match convert::event(JobEvent::Finished(output)) {
                Ok(proto::StylizeEvent {
                    event: Some(proto::stylize_event::Event::Result(result)),
                }) => result,
                Ok(_) => return Err(Status::internal("a finished frame without a result")),
                Err(status) => return Err(status),
            };
            let message = proto::StylizeSequenceResponse {
                frame: job.index as u32,
                event: Some(proto::stylize_sequence_response::Event::Result(
                    proto::FrameResult {
                        result: Some(result),
                        held_fraction: job.certain,
                        warping_error: e_warp,
                        number,
                    },
                )),
                number,
            };
            return match out.send(Ok(message)).await {
                Ok(()) => Ok(shot),
                Err(_) => Err(gone()),
            };
        }
        Err(Status::internal(format!(
            "frames[{index}]: the job ended without an outcome"
        )))
    }
}
