//! The server under hostile inputs, overload and numerical faults: decompression bombs, a
//! diverging job, a tiny style cache with many styles, and bursts beyond capacity.

mod common;

// The benchmark and load generator live beside the binary; the tests use them as they are.
#[path = "../src/bench/mod.rs"]
#[allow(dead_code)]
mod bench;

use std::time::Instant;

use stylize::server::proto::{self, stylize_event::Event, stylizer_client::StylizerClient};
use tonic::Code;

use common::bombs::png_declaring;
use common::server::{CONTENT, STYLE, Server, collect, memory_kib, peak_rss_kib, request};

/// A distinct style image: the painting with its channels rotated `n` times and its
/// brightness scaled, encoded as PNG.
fn style_variant(n: usize) -> Vec<u8> {
    let mut image = image::load_from_memory(STYLE).unwrap().to_rgb8();
    image = image::imageops::resize(&image, 96, 76, image::imageops::FilterType::Triangle);
    for pixel in image.pixels_mut() {
        pixel.0.rotate_left(n % 3);
        let scale = 1.0 - 0.15 * (n / 3) as f32;
        pixel.0 = pixel.0.map(|v| (v as f32 * scale) as u8);
    }
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

#[tokio::test]
async fn decompression_bombs_are_refused_from_the_header_without_allocating() {
    let server = Server::start(&[]);
    let mut client = StylizerClient::new(server.channel().await);
    let bomb = png_declaring(60_000, 60_000, 2);
    assert!(bomb.len() < 100);
    // Warm up so the baseline includes the loaded model.
    collect(&mut client, request(1)).await.unwrap();
    let baseline = peak_rss_kib(server.child.id());
    let as_content = proto::StylizeRequest {
        content: bomb.clone(),
        ..request(1)
    };
    let as_style = proto::StylizeRequest {
        styles: vec![proto::StyleInput {
            source: Some(proto::style_input::Source::Image(bomb.clone())),
        }],
        ..request(1)
    };
    let mut as_init = request(1);
    if let Some(options) = as_init.options.as_mut() {
        options.init = proto::Init::Image as i32;
        options.init_image = bomb.clone();
    }
    let mut truncated = CONTENT.to_vec();
    truncated.truncate(CONTENT.len() / 3);
    let as_truncated = proto::StylizeRequest {
        content: truncated,
        ..request(1)
    };
    for (request, field) in [
        (as_content, "content"),
        (as_style, "styles"),
        (as_init, "options.init_image"),
        (as_truncated, "content"),
    ] {
        let started = Instant::now();
        let err = collect(&mut client, request).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
        // At most 0.045 s at 1 and 2 threads.
        let took = common::seconds_since("server_hostile/bomb refusal s", started);
        assert!(took < 2.0, "{field}: refusal took {took:.3} s");
    }
    // 60000 x 60000 RGB would be 10 GB; the peak did not grow at all at 1 and 2 threads.
    let grown = peak_rss_kib(server.child.id()).saturating_sub(baseline);
    common::measured("server_hostile/bomb peak growth MiB", grown as f64 / 1024.0);
    assert!(grown < 64 * 1024, "peak memory grew by {grown} KiB");
}

#[tokio::test]
async fn a_diverging_job_is_the_clients_problem_named_in_its_message() {
    let server = Server::start(&["--workers", "1"]);
    let mut client = server.client().await;
    let mut diverging = request(5);
    // Finite, so it passes validation; the weighted style loss overflows float32.
    diverging.options.as_mut().unwrap().style_weight = Some(1e37);
    let mut stream = client.stylize(diverging).await.unwrap().into_inner();
    let mut events = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(event)) => events.push(event.event.unwrap()),
            Ok(None) => panic!("the stream ended without an error: {events:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("diverged")
            && err.message().contains("iteration 1")
            && err.message().contains("style_weight"),
        "{err:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Progress(_) | Event::Preview(_) | Event::Result(_))),
        "streamed before the fault was caught: {events:?}"
    );
    // Its own outcome: the critical alert counts server faults (internal) only.
    assert_eq!(
        server.metric("stylize_requests_total{outcome=\"diverged\"}"),
        1.0
    );
    assert_eq!(
        server.metric("stylize_requests_total{outcome=\"internal\"}"),
        0.0
    );
    // The worker is free and healthy for the next job.
    let events = collect(&mut client, request(2)).await.unwrap();
    assert!(matches!(events.last(), Some(Event::Result(_))));
}

#[tokio::test]
async fn a_tiny_style_cache_stays_within_budget_and_results_stay_right() {
    // One style's five Grams take 2.4 MB whatever the size: room for two.
    let budget = 5_000_000;
    let server = Server::start(&["--workers", "1", "--cache-bytes", &budget.to_string()]);
    let mut client = server.client().await;
    let styles: Vec<Vec<u8>> = (0..5).map(style_variant).collect();
    let mut first_losses = Vec::new();
    for round in 0..2 {
        for (n, style) in styles.iter().enumerate() {
            let mut request = request(3);
            request.styles[0].source = Some(proto::style_input::Source::Image(style.clone()));
            let events = collect(&mut client, request).await.unwrap();
            let Some(Event::Result(result)) = events.last() else {
                panic!("style {n}: no result: {events:?}");
            };
            let loss = result.losses.as_ref().unwrap().total;
            if round == 0 {
                first_losses.push(loss);
            } else {
                let first = first_losses[n];
                // The same Grams recomputed on one machine give the same bits (docs/testing.md).
                let apart = common::measured(
                    "server_hostile/loss after eviction vs before",
                    ((loss - first) / first).abs(),
                );
                assert!(
                    apart == 0.0,
                    "style {n} recomputed after eviction: {loss} vs {first}"
                );
            }
            let bytes = server.metric("stylize_style_cache_bytes");
            assert!(bytes <= budget as f64, "{bytes} bytes cached");
        }
    }
    assert!(server.metric("stylize_style_cache_entries") <= 2.0);
    // Round-robin over five styles with room for two: every lookup misses.
    assert_eq!(server.metric("stylize_style_cache_misses_total"), 10.0);
    assert!(server.metric("stylize_style_cache_evictions_total") >= 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_capacity_is_refused_promptly_completes_the_rest_and_leaks_nothing() {
    use bench::loadgen::{self, LoadPlan, LoadReport};
    // Room for three jobs at once (one running, two queued); eight clients keep asking.
    let server = Server::start(&["--workers", "1", "--max-queue", "2"]);
    let channel = server.channel().await;
    let plan = |requests| LoadPlan {
        clients: 8,
        requests,
        request: request(2),
        token: None,
    };
    let mut seen = LoadReport::default();
    // The first jobs build sessions and grow the allocator's pools: the baseline is after.
    let warm = loadgen::run(channel.clone(), plan(24)).await;
    seen.merge(warm);
    let pid = server.child.id();
    let baseline = memory_kib(pid, "VmRSS:");
    let mut after_each = Vec::new();
    for burst in 0..3 {
        let report = loadgen::run(channel.clone(), plan(60)).await;
        assert_eq!(report.total(), 60, "burst {burst}: {report:?}");
        assert_eq!(report.failures(), 0, "burst {burst}: {:?}", report.outcomes);
        assert!(
            report.count("ok") >= 3,
            "burst {burst}: {:?}",
            report.outcomes
        );
        assert!(
            report.count("resource_exhausted") > 0,
            "burst {burst}: eight clients never overflowed a queue of two: {:?}",
            report.outcomes
        );
        // The slowest refusal took 0.01-0.07 s (1 and 2 threads, the worker busy).
        let slowest = common::measured(
            "server_hostile/slowest refusal s",
            bench::quantile(&report.refused_seconds, 1.0).unwrap(),
        );
        assert!(slowest < 1.0, "burst {burst}: a refusal took {slowest:.3}s");
        seen.merge(report);
        after_each.push(memory_kib(pid, "VmRSS:"));
    }
    let last = *after_each.last().unwrap();
    // Changed by -0.7 to +3.0 MiB over three bursts at 1 and 2 threads.
    common::measured(
        "server_hostile/resident growth over bursts MiB",
        (last as f64 - baseline as f64) / 1024.0,
    );
    assert!(
        last < baseline + 48 * 1024,
        "resident memory grew from {baseline} KiB to {after_each:?} KiB over the bursts"
    );
    // What the server counted is what the clients saw.
    for outcome in ["ok", "resource_exhausted"] {
        let series = format!("stylize_requests_total{{outcome=\"{outcome}\"}}");
        server
            .metric_becomes(&series, seen.count(outcome) as f64)
            .await;
    }
    server.metric_becomes("stylize_queue_depth", 0.0).await;
    server
        .metric_becomes("stylize_in_flight_requests", 0.0)
        .await;
    println!(
        "clients saw {:?}; resident memory {baseline} KiB after warm-up, {after_each:?} KiB after each burst",
        seen.outcomes
    );
}
