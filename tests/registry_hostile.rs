//! The shared registry against whoever else can write to Redis, and against a Redis that
//! stalls: a damaged or foreign style entry is a miss (deleted, never renewed, the key
//! answered as not registered), targets without the replicas' seal are computed instead of
//! served, and a frozen store adds no latency to requests that carry their style.

mod common;

use std::time::Instant;

use common::redis::Redis;
use common::server::{STYLE, Server, by_key, collect, registered_key, registration, request};
use stylize::server::proto::{self, CacheLookup, stylize_event::Event};
use tonic::Code;

fn replica(redis: &Redis) -> Server {
    Server::start(&[
        "--registry",
        &redis.url(),
        "--registry-secret-file",
        &redis.secret_file(),
        "--workers",
        "1",
    ])
}

/// The job's Result: its style-cache lookups and its final style loss.
async fn finished(server: &Server, request: proto::StylizeRequest) -> (Vec<i32>, f64) {
    let events = collect(&mut server.client().await, request).await.unwrap();
    match events.last() {
        Some(Event::Result(result)) => (
            result.style_cache.clone(),
            result.losses.as_ref().map_or(f64::NAN, |l| l.style),
        ),
        other => panic!("no result: {other:?}"),
    }
}

/// A style file of different bytes and pixels from STYLE (mirrored, as PNG).
fn another_style(mirrored: bool) -> Vec<u8> {
    let mut image = image::load_from_memory(STYLE).unwrap().to_rgb8();
    image::imageops::flip_vertical_in_place(&mut image);
    if mirrored {
        image::imageops::flip_horizontal_in_place(&mut image);
    }
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

/// Something written over a store entry.
type Damage<'a> = Box<dyn Fn() + 'a>;

fn with_style(style: Vec<u8>) -> proto::StylizeRequest {
    proto::StylizeRequest {
        styles: vec![proto::StyleInput {
            source: Some(proto::style_input::Source::Image(style)),
        }],
        ..request(2)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_foreign_style_entry_is_a_miss_and_is_deleted() {
    let redis = Redis::start();
    let (a, b) = (replica(&redis), replica(&redis));
    let key = registered_key(&a, STYLE).await;
    let stored = format!("stylize:v1:style:{key}");
    let damages: [(&str, Damage); 4] = [
        (
            "random bytes",
            Box::new(|| redis.set(&stored, b"\x07\x01garbage")),
        ),
        (
            "another PNG",
            Box::new(|| redis.set(&stored, &another_style(false))),
        ),
        (
            "a list",
            Box::new(|| {
                let _: i64 = redis.command(&["DEL", &stored]);
                let _: i64 = redis.command(&["RPUSH", &stored, "a", "b"]);
            }),
        ),
        (
            "50 MiB",
            Box::new(|| redis.set(&stored, &vec![b'x'; 50 << 20])),
        ),
    ];
    for (what, damage) in damages {
        damage();
        let _: bool = redis.command(&["EXPIRE", &stored, "100"]);
        // B never held the style: it must read the entry, and finds it is not the key's.
        let refused = collect(&mut b.client().await, by_key(&key, 1))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}: {refused:?}");
        assert!(
            refused.message().contains("styles[0].key")
                && refused.message().contains("not registered"),
            "{what}: {}",
            refused.message()
        );
        assert_eq!(redis.ttl(&stored), -2, "{what}: deleted, not renewed");
    }
    b.metric_becomes(
        "stylize_registry_damaged_entries_total{kind=\"style\"}",
        4.0,
    )
    .await;
    // Nothing was called an outage.
    assert_eq!(
        b.metric("stylize_registry_store_errors_total{op=\"get\"}"),
        0.0
    );
    // A, which holds the style, still serves its key and writes the file back.
    let (lookups, _) = finished(&a, by_key(&key, 1)).await;
    assert_eq!(lookups, vec![CacheLookup::Hit as i32]);
    common::eventually("written back", 10.0, || redis.ttl(&stored) > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_without_the_replicas_seal_are_computed_not_served() {
    let redis = Redis::start();
    let (a, b) = (replica(&redis), replica(&redis));
    let style = another_style(false);
    let (lookups, loss_on_a) = finished(&a, with_style(style.clone())).await;
    assert_eq!(lookups, vec![CacheLookup::Miss as i32]);
    common::eventually("targets shared", 10.0, || {
        redis.keys("stylize:v1:targets:*").len() == 1
    });
    let stored = redis.keys("stylize:v1:targets:*").remove(0);
    let sealed: Vec<u8> = redis.command(&["GET", &stored]);
    // A writer without the secret: the bare targets (as a pre-seal replica wrote them), and
    // the sealed entry with its Grams scaled (a changed payload under a valid-looking seal).
    let unsealed = sealed[32..].to_vec();
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x40;
    for (what, planted) in [("unsealed", unsealed), ("tampered", tampered)] {
        redis.set(&stored, &planted);
        let fresh = replica(&redis);
        let (lookups, loss) = finished(&fresh, with_style(style.clone())).await;
        assert_eq!(lookups, vec![CacheLookup::Miss as i32], "{what}: computed");
        assert_eq!(loss, loss_on_a, "{what}: the same targets as computed on A");
        fresh
            .metric_becomes(
                "stylize_registry_damaged_entries_total{kind=\"targets\"}",
                1.0,
            )
            .await;
        // Replaced by the fresh replica's sealed targets.
        common::eventually("resealed", 10.0, || {
            redis.command::<Vec<u8>>(&["GET", &stored]) == sealed
        });
    }
    // The sealed entry is served.
    let (lookups, loss) = finished(&b, with_style(style)).await;
    assert_eq!(lookups, vec![CacheLookup::Shared as i32]);
    assert_eq!(loss, loss_on_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_registry_adds_no_latency_to_styles_sent_as_bytes() {
    let redis = Redis::start();
    let server = replica(&redis);
    // Warm: weights loaded, the content's targets and a style computed.
    finished(&server, request(2)).await;
    let started = Instant::now();
    let (lookups, _) = finished(&server, with_style(another_style(false))).await;
    assert_eq!(lookups, vec![CacheLookup::Miss as i32]);
    let answering = common::seconds_since("registry/new style, store answering s", started);

    redis.pause();
    let started = Instant::now();
    let (lookups, _) = finished(&server, with_style(another_style(true))).await;
    assert_eq!(lookups, vec![CacheLookup::Miss as i32]);
    let stalled = common::seconds_since("registry/new style, store frozen s", started);
    // The read that would have saved the computation gives up after 0.3 s, once; a stalled
    // store used to add 5 s (a command's timeout) per read and write. 0.69-0.84 s frozen
    // against 0.41-0.59 s answering at 1 and 2 threads.
    assert!(
        stalled < answering + 1.5,
        "{stalled:.2} s frozen against {answering:.2} s answering"
    );
    // A registration needs the store: it answers UNAVAILABLE within a command's timeout.
    let started = Instant::now();
    let refused = server
        .client()
        .await
        .register_style(registration(&another_style(true)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // 0.005-0.009 s at 1 and 2 threads (the store counts as down after the stalled read).
    let waited = common::seconds_since("registry/registration, store frozen s", started);
    assert!(waited < 8.0, "refused after {waited:.1} s");
    redis.resume();
}
