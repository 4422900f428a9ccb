//! StylizeSequence over loopback for the tests: the shared Blender shot's frames and motion,
//! a setup, frames as messages, and a whole shot sent as one call.

use std::path::PathBuf;

use stylize::motion::{ExrMotionChannels, read_exr};
use stylize::server::proto;
use tokio_stream::StreamExt;

use super::server::Server;

/// Frame `t` (from 1) of the shared rolling-ball shot, as `png` or `exr`.
pub fn shared(t: usize, ext: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../shared/sequences/rolling-ball/frame_{t:04}.{ext}"
    ))
}

/// Frame `t`'s Blender motion as offsets, to the next frame or the previous one.
pub fn flow(t: usize, to_next: bool) -> proto::Motion {
    let channels = if to_next {
        ExrMotionChannels::blender_to_next()
    } else {
        ExrMotionChannels::blender_to_previous()
    };
    read_exr(&shared(t, "exr"), &channels).unwrap().into()
}

/// A setup at 64 px with `iterations` for the first frame and 2 for the later ones.
pub fn setup(iterations: u32) -> proto::StylizeSequenceRequest {
    proto::StylizeSequenceRequest {
        message: Some(proto::stylize_sequence_request::Message::Setup(
            proto::SequenceSetup {
                request_id: "shot".into(),
                styles: vec![proto::StyleInput {
                    source: Some(proto::style_input::Source::Image(
                        super::server::STYLE.to_vec(),
                    )),
                }],
                blend: vec![],
                options: Some(proto::Options {
                    size: 64,
                    iterations,
                    ..Default::default()
                }),
                sequence: Some(proto::SequenceOptions {
                    later_iterations: 2,
                    ..Default::default()
                }),
                previous: None,
                toward: None,
                keyframe_still: Vec::new(),
                draft: false,
            },
        )),
    }
}

/// Frame `t` with its motion both ways (none to the previous for the first).
pub fn frame_message(t: usize) -> proto::SequenceFrame {
    proto::SequenceFrame {
        content: std::fs::read(shared(t, "png")).unwrap(),
        motion_to_previous: (t > 1).then(|| flow(t, false)),
        motion_to_next: Some(flow(t, true)),
        mask: vec![],
        number: None,
        ..Default::default()
    }
}

pub fn framed(frame: proto::SequenceFrame) -> proto::StylizeSequenceRequest {
    proto::StylizeSequenceRequest {
        message: Some(proto::stylize_sequence_request::Message::Frame(frame)),
    }
}

/// Sends `messages` as one StylizeSequence call; the events until the stream ends, and
/// the final status if it failed.
pub async fn shot_over_grpc(
    server: &Server,
    messages: Vec<proto::StylizeSequenceRequest>,
) -> (Vec<proto::StylizeSequenceResponse>, Option<tonic::Status>) {
    let mut client = server.client().await;
    let outbound = tokio_stream::iter(messages);
    let mut stream = match client.stylize_sequence(outbound).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (vec![], Some(status)),
    };
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => events.push(event),
            Err(status) => return (events, Some(status)),
        }
    }
    (events, None)
}
