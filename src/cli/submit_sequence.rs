//! `stylize submit-sequence`: a shot (or a chunk of one) sent to a server's StylizeSequence
//! stream, frame by frame with their numbers (each frame's file as it is on disk, its motion
//! as read here), each result written whole and renamed into place as it arrives. A failure
//! the server marks retryable, or a lost replica, is retried with backoff: the shot resumes
//! after the last frame written, continuing the temporal chain from it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tokio_stream::StreamExt;

use stylize::image_io::Encoding;
use stylize::motion::ExrMotionChannels;
use stylize::render::sequence::keyframe_iterations;
use stylize::server::proto;
use stylize::server::routing::retryable;

use super::args::JobArgs;
use super::client::{connect, route, runtime, status_error, wire_options, wire_styles};
use super::connect::ConnectArgs;
use super::frames::{ChainStart, Shot, ShotArgs};
use super::output_file::write_bytes_whole;
use super::progress::{ProgressArgs, Reporter, Step};
use super::retry::{self, Attempt};
use super::toward::TowardFrame;
use super::view_lut::ViewLutArgs;

#[derive(Args)]
pub struct SubmitSequenceArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    shot: ShotArgs,
    #[command(flatten)]
    view_lut: ViewLutArgs,
    /// Style image; repeat for a blend.
    #[arg(long = "style")]
    styles: Vec<PathBuf>,
    /// Key of a registered style; repeatable.
    #[arg(long = "style-key")]
    style_keys: Vec<String>,
    /// Name of a registered style (`stylize styles register --name`); repeatable.
    #[arg(long = "style-name")]
    style_names: Vec<String>,
    /// Blend weights, one per style (files first, then keys, then names), comma-separated.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    blend: Vec<f64>,
    #[command(flatten)]
    job: JobArgs,
    /// Identifies the shot in the server's logs.
    #[arg(long, default_value = "")]
    request_id: String,
    /// Times to resume the shot after a retryable failure (the server's RetryInfo,
    /// UNAVAILABLE, a replica lost mid-shot), after jittered backoff from 1 s to 30 s, on
    /// the next --server when several are given.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// Send every frame of the range again, ignoring frames already written.
    #[arg(long)]
    restart: bool,
    #[command(flatten)]
    progress: ProgressArgs,
}

/// Motion the server reads from the frame's own OpenEXR file (sent once, as the content).
fn in_content(channels: &ExrMotionChannels) -> proto::Motion {
    proto::Motion {
        source: Some(proto::motion::Source::Exr(proto::ExrMotion {
            file: Vec::new(),
            x_channel: channels.x.clone(),
            y_channel: channels.y.clone(),
            negate_x: channels.x_sign < 0.0,
            negate_y: channels.y_sign < 0.0,
        })),
    }
}

/// The `position`-th frame's message, with its number. Motion kept in the frame's own
/// OpenEXR file travels inside it; other motion is read here and sent as offsets.
/// `chained`: the stream continues from a frame before its first.
fn frame_message(
    shot: &Shot,
    position: usize,
    chained: bool,
    toward: Option<&TowardFrame>,
) -> Result<proto::StylizeSequenceRequest> {
    let (_, content) = shot.content_bytes(position)?;
    let in_frame = shot.motion_in_frame(position, chained);
    let (width, height) = stylize::image_io::dimensions(&content, "--frames")?;
    let mask = match shot.mask(position, chained, (width, height))? {
        Some(values) => {
            let grey = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(width, height, |x, y| {
                let v = values[(y * width + x) as usize];
                image::Luma([(v * 65535.0).round() as u16])
            });
            let mut bytes = std::io::Cursor::new(Vec::new());
            grey.write_to(&mut bytes, image::ImageFormat::Png)?;
            bytes.into_inner()
        }
        None => Vec::new(),
    };
    let link = toward.map(|t| t.link(shot, position)).transpose()?;
    Ok(proto::StylizeSequenceRequest {
        message: Some(proto::stylize_sequence_request::Message::Frame(
            proto::SequenceFrame {
                content,
                motion_to_previous: match (shot.composed_from(position, chained), in_frame) {
                    // A keyframe continued from further away: the motion composed here.
                    (Some(from), _) => shot
                        .motion_across(shot.numbers[0], from)?
                        .map(proto::Motion::from),
                    (None, [Some(channels), _]) => Some(in_content(channels)),
                    _ => shot
                        .to_previous(position, chained)?
                        .map(proto::Motion::from),
                },
                motion_to_next: match in_frame {
                    [_, Some(channels)] => Some(in_content(channels)),
                    _ => shot
                        .to_next(shot.numbers[position])?
                        .map(proto::Motion::from),
                },
                mask,
                number: Some(shot.numbers[position]),
                motion_to_toward: link.as_ref().map(|l| l.to_target.clone().into()),
                motion_from_toward: link.and_then(|l| l.from_target).map(proto::Motion::from),
            },
        )),
    })
}

/// The frame a stream continues from, as the setup carries it: its file as written, and
/// its motion to frame `first` (the stream's first: the next, or composed across the frames
/// between for a keyframe) when the shot has it.
fn previous_frame(
    shot: &Shot,
    start: &ChainStart,
    first: u64,
    flag: &str,
) -> Result<proto::PreviousFrame> {
    let image = std::fs::read(&start.path)
        .with_context(|| format!("--{flag}: {}", start.path.display()))?;
    let motion_to_next = match start.number {
        Some(number) => shot.motion_across(number, first)?.map(proto::Motion::from),
        None => None,
    };
    Ok(proto::PreviousFrame {
        image,
        motion_to_next,
        number: start.number,
        draft: false,
    })
}

/// What every attempt of a shot shares.
struct Submission<'a> {
    args: &'a SubmitSequenceArgs,
    shot: &'a Shot,
    setup: proto::SequenceSetup,
    routing_key: Option<String>,
    reporter: Reporter,
    /// The keyframe the frames are pulled toward (--toward-frame).
    toward: Option<std::sync::Arc<TowardFrame>>,
    /// Iterations of the first frame of a stream that starts the shot, and of later frames.
    first_iterations: usize,
    later_iterations: usize,
    scales: usize,
}

impl Submission<'_> {
    /// Iterations of the frames before `position` (for the progress reports).
    fn iterations_before(&self, position: usize) -> u64 {
        (0..position)
            .map(|p| self.iterations_of(p, false) as u64)
            .sum()
    }

    fn iterations_of(&self, position: usize, chained: bool) -> usize {
        match position {
            0 if !chained => self.first_iterations,
            0 if self.shot.starts_keyframe() => keyframe_iterations(
                self.first_iterations / self.scales.max(1),
                !self.setup.keyframe_still.is_empty() || self.shot.continues_draft(),
            ),
            _ => self.later_iterations,
        }
    }

    /// One stream of frames `from..`, continuing from `chain`; how many frames were
    /// written is counted into `delivered`, which survives a failed attempt.
    async fn stream_from(
        &self,
        attempt: u32,
        from: usize,
        chain: Option<&ChainStart>,
        delivered: &mut usize,
    ) -> std::result::Result<(), Attempt> {
        let (shot, frames) = (self.shot, self.shot.numbers.len());
        let chained = chain.is_some();
        let mut setup = self.setup.clone();
        if from > 0 {
            // The keyframe is written: a resumed stream continues from it as a chain.
            setup.keyframe_still.clear();
        }
        if let Some(start) = chain {
            let flag = if from > 0 { "out" } else { "continue-from" };
            let mut previous = previous_frame(shot, start, shot.numbers[from], flag)?;
            // A resumed stream continues from a frame it wrote, not from the draft.
            previous.draft = from == 0 && shot.continues_draft();
            setup.previous = Some(previous);
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let setup = proto::StylizeSequenceRequest {
            message: Some(proto::stylize_sequence_request::Message::Setup(setup)),
        };
        sender.send(setup).await.map_err(anyhow::Error::from)?;
        let mut request =
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
        route(&mut request, self.routing_key.as_deref())?;
        self.args.connect.authorize(&mut request)?;
        let mut client = connect(&self.args.connect.for_attempt(attempt))
            .await
            .map_err(Attempt::connecting)?;
        let mut events = client
            .stylize_sequence(request)
            .await
            .map_err(Attempt::Failed)?
            .into_inner();
        // Frames go out as the server takes them (two ahead at most).
        let reading = {
            let shot = shot.clone();
            let toward = self.toward.clone();
            tokio::spawn(async move {
                for position in from..shot.numbers.len() {
                    let message = frame_message(&shot, position, chained, toward.as_deref())?;
                    if sender.send(message).await.is_err() {
                        break;
                    }
                }
                anyhow::Ok(())
            })
        };
        let mut done_iterations = self.iterations_before(from);
        while *delivered < frames {
            use proto::stylize_sequence_response::Event;
            let Some(event) = events.next().await else {
                break;
            };
            let event = event.map_err(Attempt::Failed)?;
            let position = from + event.frame as usize;
            let number = *shot
                .numbers
                .get(position)
                .context("the server answered a frame never sent")?;
            if event.number != number {
                return Err(anyhow::anyhow!(
                    "the server answered frame {} for frame {number}",
                    event.number
                )
                .into());
            }
            match event.event {
                Some(Event::Progress(p)) => {
                    let l = p.losses.unwrap_or_default();
                    let losses = format!(
                        "loss {:.4e} (style {:.3e} temporal {:.3e})",
                        l.total, l.style, l.temporal
                    );
                    let first = position == 0 && !chained;
                    let step = Step {
                        frame: Some((number, position + 1, frames)),
                        scale: (p.scale as usize + 1, if first { self.scales } else { 1 }),
                        iteration: (p.iteration as usize, p.total as usize),
                        losses: &losses,
                    };
                    self.reporter
                        .step(done_iterations + p.iteration as u64, &step);
                }
                Some(Event::Result(frame)) => {
                    let result = frame.result.unwrap_or_default();
                    done_iterations += self.iterations_of(position, chained) as u64;
                    let path = shot.out_path(number);
                    write_bytes_whole(&path, &result.image).context("--out")?;
                    *delivered = position + 1;
                    let losses = result.delivered_losses.unwrap_or_default();
                    self.reporter.say(&format!(
                        "frame {number}: wrote {} after {} iterations, style {:.4e}, temporal {:.4e}, held {:.1}%, E_warp {}",
                        path.display(),
                        result.iterations,
                        losses.style,
                        losses.temporal,
                        100.0 * frame.held_fraction,
                        frame.warping_error.map_or("-".into(), |e| format!("{e:.2}"))
                    ));
                }
                _ => {}
            }
        }
        drop(events);
        reading
            .await
            .map_err(|e| anyhow::anyhow!("reading frames: {e}"))??;
        if *delivered < frames {
            // A stream that ends early without a status lost its replica.
            return Err(Attempt::Failed(tonic::Status::unavailable(format!(
                "the server closed the stream after frame {}",
                shot.numbers[delivered.saturating_sub(1)]
            ))));
        }
        Ok(())
    }
}

pub fn submit_sequence(args: SubmitSequenceArgs) -> Result<()> {
    let shot = Shot::new(&args.shot, args.job.view.as_deref())?;
    let format = Encoding::from_path(&shot.out_path(0))
        .context("--out")?
        .deepened(args.job.png16);
    let styles = wire_styles(&args.styles, &args.style_keys, &args.style_names)?;
    let routing_key = super::styles::routing_key(&args.connect, &styles)?;
    let (iterations, scales) = args.job.counts();
    let options = shot.options(iterations);
    let setup = proto::SequenceSetup {
        request_id: args.request_id.clone(),
        styles,
        blend: args.blend.clone(),
        options: Some(proto::Options {
            view_lut: args.view_lut.wire(&shot.content_bytes(0)?.1)?,
            ..wire_options(&args.job, format)?
        }),
        sequence: Some(proto::SequenceOptions {
            temporal_weight: Some(options.temporal_weight),
            later_iterations: options.later_iterations as u32,
            no_consistency_check: !options.consistency_check,
            display_referred: shot.args().display_referred,
            backward: shot.args().backward,
        }),
        previous: None,
        toward: None,
        keyframe_still: Vec::new(),
        draft: args.shot.draft,
    };
    let frames = shot.numbers.len();
    // Frames already written are kept (unless --restart); the chain continues from the
    // last of them, or from the frame before the range: both checked before any work.
    let mut delivered = if args.restart { 0 } else { shot.written() };
    if delivered == frames {
        println!(
            "every frame of {} is written already (--restart to redo them)",
            args.shot.out
        );
        return Ok(());
    }
    let first_chain = shot.chain_start(delivered)?;
    let toward = TowardFrame::for_shot(&shot, shot.chunk_start())?;
    let mut setup = setup;
    let keyframe_still = match delivered {
        0 => shot.keyframe_still()?,
        _ => None,
    };
    if let Some(path) = &keyframe_still {
        setup.keyframe_still =
            std::fs::read(path).with_context(|| format!("--keyframe-still: {}", path.display()))?;
    }
    if let Some(toward) = &toward {
        let path = shot.out_path(toward.number);
        setup.toward = Some(proto::TowardFrame {
            image: std::fs::read(&path)
                .with_context(|| format!("--toward-frame: {}", path.display()))?,
            number: toward.number,
            from: Some(shot.chunk_start()),
        });
    }
    let total = iterations * scales + (frames - 1) * options.later_iterations;
    let submission = Submission {
        args: &args,
        shot: &shot,
        setup,
        routing_key,
        reporter: Reporter::new(&args.progress, total as u64)?,
        toward: toward.map(std::sync::Arc::new),
        first_iterations: iterations * scales,
        later_iterations: options.later_iterations,
        scales,
    };
    if let Some(path) = &keyframe_still {
        submission.reporter.say(&shot.keyframe_still_message(path));
    }
    if let Some(toward) = &submission.toward {
        submission.reporter.say(&format!(
            "pulling frames {}-{} toward frame {}",
            shot.numbers[0],
            shot.numbers[frames - 1],
            toward.number
        ));
    }
    runtime()?.block_on(async {
        let mut attempt = 0;
        let mut chain = first_chain;
        loop {
            attempt += 1;
            let from = delivered;
            if let Some(start) = &chain {
                let line = format!("continuing the chain from {}", start.path.display());
                submission.reporter.say(&line);
            }
            match submission
                .stream_from(attempt, from, chain.as_ref(), &mut delivered)
                .await
            {
                Ok(()) => break,
                Err(Attempt::Failed(status)) if attempt <= args.retries && retryable(&status) => {
                    let wait = retry::backoff(attempt, &status);
                    retry::announce(attempt, &status, wait);
                    tokio::time::sleep(wait).await;
                    if delivered > from {
                        chain = shot.chain_start(delivered)?;
                    }
                }
                Err(Attempt::Failed(status)) => return Err(status_error(status)),
                Err(Attempt::Broken(e)) => return Err(e),
            }
        }
        submission.reporter.finish();
        Ok(())
    })
}
