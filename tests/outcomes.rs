//! What clients saw against what `/metrics` says: a mixed run of successes, refusals by the
//! handlers and by the transport, failures during the job, a client deadline, a client
//! cancel and shots (StylizeSequence streams, one count each), tallied by the clients' own
//! statuses and compared with the outcome counters.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::server::{STYLE, Server, collect, registration, request, until};
use common::shots::{framed, setup, shared, shot_over_grpc};
use stylize::server::proto::{self, stylize_event::Event};
use tonic::Code;

/// The outcome label a client's final status is counted under.
fn outcome(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "diverged",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Cancelled => "cancelled",
        Code::Unavailable => "unavailable",
        other => panic!("no client here expects {other:?}"),
    }
}

/// A message of the wrong type for Stylize: field 1 (request_id, a string) as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbled {
    #[prost(uint64, tag = "1")]
    request_id: u64,
}

#[derive(Default)]
struct Tally(BTreeMap<&'static str, f64>);

impl Tally {
    fn saw(&mut self, code: Code) {
        *self.0.entry(outcome(code)).or_default() += 1.0;
    }

    fn job(&mut self, result: Result<Vec<Event>, tonic::Status>) {
        self.saw(result.map(|_| Code::Ok).unwrap_or_else(|s| s.code()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_clients_saw_is_counted_under_its_outcome() {
    let server = Server::start(&["--workers", "1", "--max-message-bytes", "400000"]);
    let mut client = server.client().await;
    let (mut stylize, mut register) = (Tally::default(), Tally::default());

    // Successes.
    for iterations in [1, 2] {
        stylize.job(collect(&mut client, request(iterations)).await);
    }
    // Refused by validation.
    let mut bad = request(1);
    bad.options.as_mut().unwrap().size = 100_000;
    stylize.job(collect(&mut client, bad).await);
    // Refused by the transport: a message that does not decode, and one over the limit.
    let mut raw = tonic::client::Grpc::new(server.channel().await);
    raw.ready().await.unwrap();
    let garbled = raw
        .server_streaming(
            tonic::Request::new(Garbled { request_id: 7 }),
            http::uri::PathAndQuery::from_static("/stylize.v1.Stylizer/Stylize"),
            tonic_prost::ProstCodec::<Garbled, proto::StylizeEvent>::default(),
        )
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(garbled.code(), Code::InvalidArgument, "{garbled:?}");
    stylize.saw(garbled.code());
    let mut oversized = request(1);
    oversized.content = vec![0; 500_000];
    let refused = collect(&mut client, oversized).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-message-bytes"),
        "{refused:?}"
    );
    stylize.saw(refused.code());
    // Failed while running: the result is too large; the weights make it diverge.
    let mut large = request(1);
    large.options.as_mut().unwrap().size = 1024;
    stylize.job(collect(&mut client, large).await);
    let mut diverging = request(3);
    diverging.options.as_mut().unwrap().style_weight = Some(1e37);
    stylize.job(collect(&mut client, diverging).await);
    // The client's deadline passes mid-job.
    let mut timed = tonic::Request::new(request(10_000));
    timed.set_timeout(Duration::from_millis(1500));
    let mut stream = client.stylize(timed).await.unwrap().into_inner();
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a 10000-iteration job finished within its deadline"),
            Err(status) => break status,
        }
    };
    stylize.saw(ended.code());
    // The client hangs up mid-job.
    let mut stream = client.stylize(request(10_000)).await.unwrap().into_inner();
    until(&mut stream, |e| matches!(e, Event::Progress(_))).await;
    drop(stream);
    stylize.saw(Code::Cancelled);

    // Shots count once each, under the status their client gets: one complete, one refused
    // at frames[1] after frame 0 was delivered, one refused at its setup, one closed after
    // its setup (complete, with no frames). Frames have their own counter.
    let still_frame = |t| proto::SequenceFrame {
        content: std::fs::read(shared(t, "png")).unwrap(),
        ..Default::default()
    };
    let other_size = proto::SequenceFrame {
        content: common::server::CONTENT.to_vec(),
        ..Default::default()
    };
    let mut no_styles = setup(2);
    if let Some(proto::stylize_sequence_request::Message::Setup(s)) = &mut no_styles.message {
        s.styles.clear();
    }
    let shots = [
        vec![setup(2), framed(still_frame(1))],
        vec![setup(2), framed(still_frame(1)), framed(other_size)],
        vec![no_styles],
        vec![setup(2)],
    ];
    for messages in shots {
        let (_, failure) = shot_over_grpc(&server, messages).await;
        stylize.saw(failure.map_or(Code::Ok, |status| status.code()));
    }
    server
        .metric_becomes("stylize_sequence_frames_total", 2.0)
        .await;

    // RegisterStyle: one registered, one undecodable image, one over the limit.
    for image in [STYLE.to_vec(), b"not an image".to_vec(), vec![0; 500_000]] {
        let answer = client.register_style(registration(&image)).await;
        register.saw(answer.map(|_| Code::Ok).unwrap_or_else(|s| s.code()));
    }

    // Every kind of outcome happened, and /metrics agrees with the clients, per outcome.
    let kinds: Vec<_> = stylize.0.keys().copied().collect();
    assert_eq!(
        kinds,
        [
            "cancelled",
            "deadline_exceeded",
            "diverged",
            "invalid_argument",
            "ok",
            "resource_exhausted"
        ]
    );
    let settled = Instant::now();
    loop {
        let counted = |family: &str, tally: &Tally| {
            tally
                .0
                .keys()
                .map(|outcome| server.metric(&format!("{family}{{outcome=\"{outcome}\"}}")))
                .collect::<Vec<_>>()
        };
        let seen = |tally: &Tally| tally.0.values().copied().collect::<Vec<_>>();
        let (jobs, registrations) = (
            counted("stylize_requests_total", &stylize),
            counted("stylize_register_style_total", &register),
        );
        if jobs == seen(&stylize) && registrations == seen(&register) {
            break;
        }
        // The cancel is counted when the worker notices, within an iteration.
        assert!(
            settled.elapsed() < Duration::from_secs(5),
            "clients saw {:?} and {:?}; /metrics says {jobs:?} and {registrations:?}",
            stylize.0,
            register.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for outcome in [
        "internal",
        "unavailable",
        "unauthenticated",
        "unimplemented",
    ] {
        let series = format!("stylize_requests_total{{outcome=\"{outcome}\"}}");
        assert_eq!(server.metric(&series), 0.0, "{series}");
    }
    assert_eq!(
        server.metric("stylize_register_style_duration_seconds_count"),
        3.0
    );
}
