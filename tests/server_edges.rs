//! The server's edges under hostile or careless clients: messages that name the right field,
//! registrations beside a full queue, requests that arrive together, connections that never
//! start their handshake, and reflection questions about things that do not exist.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::server::{Server, collect, occupy_worker_and_queue, registration, request};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_field_and_registrations_do_not_queue_behind_stills() {
    let server = Server::start(&["--workers", "1", "--max-queue", "1"]);
    let mut client = server.client().await;
    let mut many_scales = registration(common::server::STYLE);
    many_scales.scales = 100;
    let refused = client.register_style(many_scales).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("scales") && !refused.message().contains("iterations"),
        "{}",
        refused.message()
    );
    let mut forever = request(1);
    if let Some(options) = forever.options.as_mut() {
        options.time_budget_seconds = 1e300;
    }
    let refused = collect(&mut client, forever).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("options.time_budget_seconds")
            && refused.message().contains("beyond the longest allowed"),
        "{}",
        refused.message()
    );
    // The worker runs a job and the queue is full: stills are refused, a registration is not.
    let (_running, _queued) = occupy_worker_and_queue(&mut client).await;
    let full = collect(&mut client, request(1)).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    client
        .register_style(registration(common::server::STYLE))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_together_are_not_refused_before_the_worker_wakes() {
    let server = Server::start(&["--workers", "1", "--max-queue", "2"]);
    // Warm, so the three arrive at an idle worker.
    collect(&mut server.client().await, request(1))
        .await
        .unwrap();
    // Each round starts as the last one's answers arrive: the worker must be free by then.
    for round in 0..8 {
        let mut calls = Vec::new();
        for _ in 0..3 {
            let mut client = server.client().await;
            calls.push(tokio::spawn(async move {
                collect(&mut client, request(1)).await
            }));
        }
        for call in calls {
            let answer = call.await.unwrap();
            assert!(answer.is_ok(), "round {round}: {answer:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_starts_its_handshake_is_closed() {
    let server = Server::start(&[]);
    let opened = Instant::now();
    let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // Served meanwhile: the gate holds only the silent connection.
    collect(&mut server.client().await, request(1))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = silent.read(&mut byte);
    // 10.0 s at 1 and 2 threads.
    let closed = common::seconds_since("server_edges/silent connection closed s", opened);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the server sent {read:?}"
    );
    assert!(
        (9.0..20.0).contains(&closed),
        "closed after {closed:.1} s (the handshake timeout is 10 s)"
    );
    server
        .metric_becomes("stylize_handshake_timeouts_total", 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_answers_unknown_names_in_the_stream_with_a_bounded_echo() {
    let server = Server::start(&[]);
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let ask = |symbol: String| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol)),
    };
    let questions = vec![
        ask("no.such.Service".into()),
        ask("x".repeat(100_000)),
        ask("stylize.v1.Stylizer".into()),
    ];
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(questions))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(answer) = answers.next().await {
        seen.push(answer.unwrap());
    }
    assert_eq!(seen.len(), 3, "one answer per question, the stream intact");
    for (unknown, answer) in seen[..2].iter().enumerate() {
        match &answer.message_response {
            Some(MessageResponse::ErrorResponse(error)) => {
                assert_eq!(error.error_code, Code::NotFound as i32);
                assert!(
                    error.error_message.len() < 1024,
                    "{unknown}: echoed in full"
                );
            }
            other => panic!("{unknown}: {other:?}"),
        }
        let echoed = match answer
            .original_request
            .as_ref()
            .and_then(|r| r.message_request.as_ref())
        {
            Some(MessageRequest::FileContainingSymbol(name)) => name.len(),
            other => panic!("{other:?}"),
        };
        assert!(echoed < 1024, "{unknown}: {echoed} bytes echoed");
    }
    assert!(matches!(
        seen[2].message_response,
        Some(MessageResponse::FileDescriptorResponse(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_runs_as_a_job_and_a_drain_waits_for_it() {
    let server = Server::start(&["--workers", "1", "--grace-period-seconds", "60"]);
    let mut client = server.client().await;
    // Large enough that its precompute takes seconds on two cores.
    let mut large = registration(common::server::STYLE);
    large.size = 1536;
    let registering = tokio::spawn(async move { client.register_style(large).await });
    // The scheduler runs the precompute: it counts among the jobs in flight...
    server
        .metric_becomes("stylize_in_flight_requests", 1.0)
        .await;
    // ...so the drain waits for it, and the client gets its key.
    server.terminate();
    let answer = registering
        .await
        .unwrap()
        .expect("the registration in flight completes during the drain");
    assert_eq!(answer.into_inner().key.len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_a_reason_a_retry_delay_and_the_field_a_program_acts_on() {
    use tonic_types::StatusExt;
    let server = Server::start(&["--workers", "1", "--max-queue", "1"]);
    let mut client = server.client().await;
    let mut bad = request(1);
    if let Some(options) = bad.options.as_mut() {
        options.tolerance = -1.0;
    }
    let refused = collect(&mut client, bad).await.unwrap_err();
    let info = refused.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("INVALID_ARGUMENT", "stylize.v1")
    );
    let violations = refused
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations;
    assert_eq!(violations[0].field, "options.tolerance", "{violations:?}");
    assert!(
        refused.get_details_retry_info().is_none(),
        "the same request fails again"
    );
    assert!(!stylize::server::routing::retryable(&refused));

    let (running, queued) = occupy_worker_and_queue(&mut client).await;
    let full = collect(&mut client, request(1)).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    let info = full.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "QUEUE_FULL");
    let delay = full
        .get_details_retry_info()
        .expect("RetryInfo")
        .retry_delay;
    assert_eq!(delay, Some(Duration::from_secs(1)));
    // The CLI and `submit --retries` send it again: a `stylize submit` refused by the full
    // queue waits (at least the 1 s RetryInfo asks) and gets through once a place frees.
    assert!(stylize::server::routing::retryable(&full));
    let dir = tempfile::tempdir().unwrap();
    let (out, log) = (dir.path().join("out.png"), dir.path().join("submit.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let mut submit = std::process::Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args(["submit", "--server", &format!("http://{}", server.addr)])
        .args([
            "--content",
            concat!(env!("CARGO_MANIFEST_DIR"), "/assets/chelsea.png"),
        ])
        .args([
            "--style",
            concat!(env!("CARGO_MANIFEST_DIR"), "/assets/starry_night.jpg"),
        ])
        .args([
            "--retries",
            "8",
            "--size",
            "32",
            "--iterations",
            "1",
            "--progress",
            "none",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&log).unwrap();
    let started = Instant::now();
    while !said().contains("QUEUE_FULL") && !said().contains("retrying") {
        assert!(started.elapsed() < Duration::from_secs(60), "{}", said());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Hanging up on the running and the queued job frees both places.
    drop((running, queued));
    let status = loop {
        if let Some(status) = submit.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{}", said());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{}", said());
    assert!(said().contains("retrying in"), "{}", said());
    assert!(out.is_file());
}
