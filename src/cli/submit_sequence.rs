//! `stylize submit-sequence`: a shot sent to a server's StylizeSequence stream, frame by
//! frame (each frame's file as it is on disk, its motion as read here), its results written
//! as they arrive, with a progress bar over frames and iterations.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio_stream::StreamExt;

use stylize::image_io::Encoding;
use stylize::motion::ExrMotionChannels;
use stylize::server::proto;

use super::args::{JobArgs, progress_bar};
use super::client::{connect, runtime, status_error, wire_options, wire_styles};
use super::connect::ConnectArgs;
use super::frames::{Shot, ShotArgs};

#[derive(Args)]
pub struct SubmitSequenceArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    shot: ShotArgs,
    /// Style image; repeat for a blend.
    #[arg(long = "style")]
    styles: Vec<PathBuf>,
    /// Key of a registered style; repeatable.
    #[arg(long = "style-key")]
    style_keys: Vec<String>,
    /// Blend weights, one per style (files first, then keys), comma-separated.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    blend: Vec<f64>,
    #[command(flatten)]
    job: JobArgs,
    /// Identifies the shot in the server's logs.
    #[arg(long, default_value = "")]
    request_id: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
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

/// The `position`-th frame's message. Motion kept in the frame's own OpenEXR file travels
/// inside it; other motion is read here and sent as offsets.
fn frame_message(shot: &Shot, position: usize) -> Result<proto::StylizeSequenceRequest> {
    let (_, content) = shot.content_bytes(position)?;
    let in_frame = shot.motion_in_frame(position);
    let (width, height) = stylize::image_io::dimensions(&content, "--frames")?;
    let mask = match shot.mask(position, (width, height))? {
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
    Ok(proto::StylizeSequenceRequest {
        message: Some(proto::stylize_sequence_request::Message::Frame(
            proto::SequenceFrame {
                content,
                motion_to_previous: match in_frame {
                    [Some(channels), _] => Some(in_content(channels)),
                    _ => shot.to_previous(position)?.map(proto::Motion::from),
                },
                motion_to_next: match in_frame {
                    [_, Some(channels)] => Some(in_content(channels)),
                    _ => shot
                        .to_next(shot.numbers[position])?
                        .map(proto::Motion::from),
                },
                mask,
            },
        )),
    })
}

pub fn submit_sequence(args: SubmitSequenceArgs) -> Result<()> {
    let shot = Shot::new(&args.shot)?;
    let format = Encoding::from_path(&shot.out_path(0)?)
        .context("--out")?
        .deepened(args.job.png16);
    let styles = wire_styles(&args.styles, &args.style_keys)?;
    let (iterations, scales) = args.job.counts();
    let options = shot.options(iterations);
    let setup = proto::SequenceSetup {
        request_id: args.request_id.clone(),
        styles,
        blend: args.blend.clone(),
        options: Some(wire_options(&args.job, format)?),
        sequence: Some(proto::SequenceOptions {
            temporal_weight: Some(options.temporal_weight),
            later_iterations: options.later_iterations as u32,
            no_consistency_check: !options.consistency_check,
            display_referred: shot.args().display_referred,
        }),
    };
    let frames = shot.numbers.len();
    let total = iterations * scales + (frames - 1) * options.later_iterations;
    let bar = progress_bar(total as u64, args.quiet)?;
    runtime()?.block_on(async {
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        sender
            .send(proto::StylizeSequenceRequest {
                message: Some(proto::stylize_sequence_request::Message::Setup(setup)),
            })
            .await?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
        args.connect.authorize(&mut request)?;
        let mut client = connect(&args.connect).await?;
        let mut events = client
            .stylize_sequence(request)
            .await
            .map_err(status_error)?
            .into_inner();
        // Frames go out as the server takes them (two ahead at most).
        let reading = {
            let shot = shot.clone();
            tokio::spawn(async move {
                for position in 0..shot.numbers.len() {
                    let message = frame_message(&shot, position)?;
                    if sender.send(message).await.is_err() {
                        break;
                    }
                }
                anyhow::Ok(())
            })
        };
        let mut done_iterations = 0u64;
        let mut delivered = 0;
        while let Some(event) = events.next().await {
            use proto::stylize_sequence_response::Event;
            let event = event.map_err(status_error)?;
            let position = event.frame as usize;
            match event.event {
                Some(Event::Progress(p)) => {
                    bar.set_position(done_iterations + p.iteration as u64);
                    let l = p.losses.unwrap_or_default();
                    bar.set_message(format!(
                        "frame {}/{frames} loss {:.4e} (style {:.3e} temporal {:.3e})",
                        position + 1,
                        l.total,
                        l.style,
                        l.temporal
                    ));
                }
                Some(Event::Result(frame)) => {
                    let result = frame.result.unwrap_or_default();
                    done_iterations += if position == 0 {
                        (iterations * scales) as u64
                    } else {
                        options.later_iterations as u64
                    };
                    bar.set_position(done_iterations);
                    let number = *shot.numbers.get(position).context("the server answered a frame never sent")?;
                    let path = shot.out_path(number)?;
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir).with_context(|| format!("--out: {}", dir.display()))?;
                    }
                    std::fs::write(&path, &result.image)
                        .with_context(|| format!("--out: {}", path.display()))?;
                    let losses = result.delivered_losses.unwrap_or_default();
                    let line = format!(
                        "frame {number}: wrote {} after {} iterations, style {:.4e}, temporal {:.4e}, held {:.1}%, E_warp {}",
                        path.display(),
                        result.iterations,
                        losses.style,
                        losses.temporal,
                        100.0 * frame.held_fraction,
                        frame.warping_error.map_or("-".into(), |e| format!("{e:.2}"))
                    );
                    if bar.is_hidden() {
                        println!("{line}");
                    } else {
                        bar.println(line);
                    }
                    delivered += 1;
                    if delivered == frames {
                        break;
                    }
                }
                _ => {}
            }
        }
        bar.finish();
        reading.await??;
        if delivered < frames {
            bail!("the server closed the stream after {delivered} of {frames} frames");
        }
        Ok(())
    })
}
