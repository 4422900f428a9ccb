//! Shots (StylizeSequence) and multipart OpenEXR against hostile clients: every input is
//! sized from its header before it is decoded, idle streams give their places back and
//! end, a shot never ends OK with frames missing, and a drain tells waiting shots at once.

mod common;

use std::time::{Duration, Instant};

use common::bombs::{exr_parts, png_declaring};
use common::server::{Server, collect, peak_rss_kib, registration, request};
use common::shots::{frame_message, framed, setup, shared, shot_over_grpc};
use stylize::server::proto::{self, stylize_sequence_response::Event};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// A frame of the shot without motion (a shot's first frame needs none).
fn still_frame(t: usize) -> proto::SequenceFrame {
    proto::SequenceFrame {
        content: std::fs::read(shared(t, "png")).unwrap(),
        ..Default::default()
    }
}

fn exr_motion(file: Vec<u8>) -> proto::Motion {
    proto::Motion {
        source: Some(proto::motion::Source::Exr(proto::ExrMotion {
            file,
            x_channel: "Vector.R".into(),
            y_channel: "Vector.G".into(),
            ..Default::default()
        })),
    }
}

/// A `.flo` file of `width x height` zero offsets.
fn flo(width: i32, height: i32) -> Vec<u8> {
    let mut bytes = 202021.25f32.to_le_bytes().to_vec();
    bytes.extend(width.to_le_bytes());
    bytes.extend(height.to_le_bytes());
    bytes.resize(12 + 8 * (width * height) as usize, 0);
    bytes
}

fn refused(status: Option<tonic::Status>, code: Code, words: &[&str]) {
    let status = status.expect("a refusal");
    assert_eq!(status.code(), code, "{status:?}");
    for word in words {
        assert!(
            status.message().contains(word),
            "`{}` should say {word}",
            status.message()
        );
    }
}

fn with_style_image(image: Vec<u8>) -> proto::StylizeRequest {
    proto::StylizeRequest {
        styles: vec![proto::StyleInput {
            source: Some(proto::style_input::Source::Image(image)),
        }],
        ..request(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_is_sized_from_its_header_before_it_is_decoded() {
    let server = Server::start(&["--workers", "1", "--memory-budget", "3GiB"]);
    // Warm: the model loaded, one frame and one still run.
    let (_, failure) = shot_over_grpc(&server, vec![setup(2), framed(still_frame(1))]).await;
    assert!(failure.is_none(), "{failure:?}");
    collect(&mut server.client().await, request(1))
        .await
        .unwrap();
    let baseline = peak_rss_kib(server.child.id());

    // A 20000x20000 greyscale mask (400 M values; 60 bytes).
    let mask_bomb = proto::SequenceFrame {
        mask: png_declaring(20_000, 20_000, 0),
        ..still_frame(1)
    };
    let (_, failure) = shot_over_grpc(&server, vec![setup(2), framed(mask_bomb)]).await;
    refused(
        failure,
        Code::InvalidArgument,
        &["frames[0].mask", "20000x20000, the frame 256x144"],
    );
    // Motion files of another size than the frame: OpenEXR (4096x2048 floats, a few KB
    // compressed) and .flo.
    let exr_bomb = proto::SequenceFrame {
        motion_to_previous: Some(exr_motion(exr_parts(&[("Vector", 4096, 2048)]))),
        ..still_frame(2)
    };
    let flo_of_another_size = proto::SequenceFrame {
        motion_to_previous: Some(proto::Motion {
            source: Some(proto::motion::Source::Flo(flo(512, 288))),
        }),
        ..still_frame(2)
    };
    for (bad, size) in [(exr_bomb, "4096x2048"), (flo_of_another_size, "512x288")] {
        let (events, failure) =
            shot_over_grpc(&server, vec![setup(2), framed(still_frame(1)), framed(bad)]).await;
        refused(
            failure,
            Code::InvalidArgument,
            &[
                "frames[1].motion_to_previous",
                &format!("{size}, the frame 256x144"),
            ],
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e.event, Some(Event::Result(_))))
        );
    }
    // A multipart OpenEXR whose first part is 1x1 and whose colour part is 4000x4000
    // (3.8x the default --max-pixels; 1.6 MB run-length encoded): refused as every image it
    // could be.
    let multipart = exr_parts(&[("Thumb", 1, 1), ("ViewLayer.Combined", 4000, 4000)]);
    assert!(multipart.len() < 4 << 20, "{} bytes", multipart.len());
    let (_, failure) = shot_over_grpc(
        &server,
        vec![
            setup(2),
            framed(proto::SequenceFrame {
                content: multipart.clone(),
                ..Default::default()
            }),
        ],
    )
    .await;
    refused(
        failure,
        Code::InvalidArgument,
        &["frames[0].content", "4000x4000"],
    );
    let mut client = server.client().await;
    let mut as_init = request(1);
    if let Some(options) = as_init.options.as_mut() {
        options.init = proto::Init::Image as i32;
        options.init_image = multipart.clone();
    }
    let stills = [
        (
            proto::StylizeRequest {
                content: multipart.clone(),
                ..request(1)
            },
            "content",
        ),
        (with_style_image(multipart.clone()), "styles"),
        (as_init, "options.init_image"),
    ];
    for (bad, field) in stills {
        let status = collect(&mut client, bad).await.unwrap_err();
        refused(Some(status), Code::InvalidArgument, &[field, "4000x4000"]);
    }
    let status = client
        .register_style(registration(&multipart))
        .await
        .unwrap_err();
    refused(Some(status), Code::InvalidArgument, &["image", "4000x4000"]);

    // Decoded, the mask alone is 1.6 GB and the colour part 192 MB of floats; the peak did
    // not grow at all at 1 and 2 threads.
    let grown = peak_rss_kib(server.child.id()).saturating_sub(baseline);
    common::measured("shot_hostile/peak growth MiB", grown as f64 / 1024.0);
    assert!(grown < 64 * 1024, "peak memory grew by {grown} KiB");
    assert!(
        peak_rss_kib(server.child.id()) < 3 << 20,
        "within --memory-budget"
    );
}

/// Opens a shot that sends its setup (unless `setup_first` is false) and then nothing, with
/// an optional deadline; the task ends with the status the stream ends with.
async fn idle_shot(
    server: &Server,
    setup_first: bool,
    timeout: Option<Duration>,
) -> tokio::task::JoinHandle<Result<tonic::Status, tonic::Status>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    if setup_first {
        sender.send(setup(2)).await.unwrap();
    }
    let mut client = server.client().await;
    let (answered, answer) = tokio::sync::oneshot::channel();
    let shot = tokio::spawn(async move {
        let _open = sender;
        let mut call = tonic::Request::new(ReceiverStream::new(receiver));
        if let Some(timeout) = timeout {
            call.set_timeout(timeout);
        }
        let opened = client.stylize_sequence(call).await;
        let _ = answered.send(());
        let mut events = opened?.into_inner();
        while let Some(event) = events.next().await {
            event?;
        }
        Ok(tonic::Status::ok("ended"))
    });
    // A set-up shot is open once the server answered its setup (setups that arrive together
    // share the places while their styles decode, as stills do).
    if setup_first {
        let _ = answer.await;
    }
    shot
}

/// The status an idle shot ended with.
async fn ended(
    shot: tokio::task::JoinHandle<Result<tonic::Status, tonic::Status>>,
) -> tonic::Status {
    match shot.await.unwrap() {
        Ok(ok) => panic!("an idle shot ended {ok:?}"),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_shots_give_their_places_back_and_end() {
    let server = Server::start(&[
        "--workers",
        "1",
        "--max-queue",
        "2",
        "--max-open-shots",
        "5",
        "--sequence-idle-seconds",
        "6",
    ]);
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(idle_shot(&server, true, None).await);
    }
    let silent = idle_shot(&server, false, None).await;
    let deadline_opened = Instant::now();
    let deadline = idle_shot(&server, true, Some(Duration::from_secs(2))).await;
    // Five shots open, none with a frame: a sixth is one too many, and every place is free
    // for stills (1 running and 2 waiting, sent together).
    server.metric_becomes("stylize_open_shots", 5.0).await;
    let sixth = idle_shot(&server, true, None).await;
    refused(
        Some(ended(sixth).await),
        Code::ResourceExhausted,
        &["--max-open-shots"],
    );
    let mut stills = Vec::new();
    for _ in 0..3 {
        let mut client = server.client().await;
        stills.push(tokio::spawn(async move {
            collect(&mut client, request(2)).await
        }));
    }
    for still in stills {
        still.await.unwrap().unwrap();
    }
    // The stream's deadline ends its shot, before the idle limit.
    refused(
        Some(ended(deadline).await),
        Code::DeadlineExceeded,
        &["before frames[0] arrived"],
    );
    let at = common::seconds_since("shot_hostile/2 s deadline, shot ended s", deadline_opened);
    // 2.43-2.62 s at 1 and 2 threads (read after the stills above have run).
    assert!(at < 4.5, "the 2 s deadline ended the shot after {at:.1} s");
    // The idle limit ends the others, set up or not.
    for shot in idle.into_iter().chain([silent]) {
        refused(
            Some(ended(shot).await),
            Code::DeadlineExceeded,
            &["--sequence-idle-seconds"],
        );
    }
    // 6.01-6.06 s at 1 and 2 threads.
    let at = common::seconds_since("shot_hostile/6 s idle limit, shots ended s", opened);
    assert!(
        (5.0..30.0).contains(&at),
        "the 6 s idle limit ended the shots after {at:.1} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shot_never_ends_ok_with_frames_missing() {
    let server = Server::start(&["--workers", "1", "--max-message-bytes", "3000000"]);
    let undecodable = proto::SequenceFrame {
        content: b"not an image".to_vec(),
        ..frame_message(3)
    };
    let oversized = proto::SequenceFrame {
        content: vec![0; 4_000_000],
        ..frame_message(3)
    };
    for (bad, code, words) in [
        (
            undecodable,
            Code::InvalidArgument,
            ["frames[2].content", "image"],
        ),
        (
            oversized.clone(),
            Code::ResourceExhausted,
            ["frames[2]", "--max-message-bytes"],
        ),
    ] {
        let messages = vec![
            setup(2),
            framed(frame_message(1)),
            framed(frame_message(2)),
            framed(bad),
            framed(frame_message(4)),
        ];
        let (events, failure) = shot_over_grpc(&server, messages).await;
        refused(failure, code, &words);
        // The frames before stay delivered.
        let delivered: Vec<u32> = events
            .iter()
            .filter(|e| matches!(e.event, Some(Event::Result(_))))
            .map(|e| e.frame)
            .collect();
        assert_eq!(delivered, [0, 1]);
    }
    let (events, failure) = shot_over_grpc(&server, vec![setup(2), framed(oversized)]).await;
    refused(
        failure,
        Code::ResourceExhausted,
        &["frames[0]", "--max-message-bytes"],
    );
    assert!(events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_tells_waiting_shots_at_once() {
    let mut server = Server::start(&["--workers", "1"]);
    let waiting = idle_shot(&server, true, None).await;
    // The shot is set up and waits for its first frame.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let terminated = Instant::now();
    server.terminate();
    refused(
        Some(ended(waiting).await),
        Code::Unavailable,
        &["frames[0]", "another replica"],
    );
    // 0.006-0.008 s at 1 and 2 threads.
    let told = common::seconds_since("shot_hostile/drain told s", terminated);
    assert!(told < 1.0, "told after {told:.2} s");
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            terminated.elapsed() < Duration::from_secs(20),
            "still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let stopped = common::seconds_since("shot_hostile/drain stopped s", terminated);
    // The transport's 5 s wait for open connections is not needed any more: 0.03-0.05 s at 1
    // and 2 threads.
    assert!(stopped < 4.0, "stopped after {stopped:.2} s");
    assert!(
        !server.log().contains("no worker is alive"),
        "{}",
        server.log()
    );
}
