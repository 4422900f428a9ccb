//! Several replicas behind one shared registry (Redis, started by the test): a style
//! registered on one replica is used by key on the others, a killed replica's client retries
//! elsewhere, a restarted replica still resolves keys, a drain hands queued work back at
//! once, and a panicking job leaves its replica serving.

mod common;

use std::time::Instant;

use common::redis::Redis;
use common::server::{
    STYLE, Server, by_key, collect, final_status, occupy_worker_and_queue, registered_key,
    registration, request, until,
};
use stylize::server::proto::{self, CacheLookup, stylize_event::Event};
use stylize::server::routing::retryable;
use tonic::Code;

fn replica(redis: &Redis, extra: &[&str]) -> Server {
    let mut flags = vec!["--max-queue", "4"];
    flags.extend_from_slice(extra);
    common::redis::replica(redis, &flags)
}

/// How the job's style targets were found, from its Result.
async fn lookups(server: &Server, request: proto::StylizeRequest) -> Vec<i32> {
    let events = collect(&mut server.client().await, request).await.unwrap();
    match events.last() {
        Some(Event::Result(result)) => result.style_cache.clone(),
        other => panic!("no result: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_registry_and_fail_over() {
    let redis = Redis::start();
    let a = replica(&redis, &[]);
    let b = replica(&redis, &[]);
    // Each replica says where its registered styles live.
    let info = a
        .client()
        .await
        .server_info(proto::ServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.registry, "redis");
    common::needs_test_hooks();
    let c = Server::start_wrapped(
        "STYLIZE_TEST_PANIC_FOR_REQUEST=boom exec \"$0\" \"$@\"",
        &[
            "--registry",
            &redis.url(),
            "--registry-secret-file",
            &redis.secret_file(),
            "--workers",
            "1",
            "--max-queue",
            "4",
        ],
    );

    // Registered on A: the key is the file's digest, and the file and its targets are in
    // the store with the default time to live.
    let registered = a
        .client()
        .await
        .register_style(registration(STYLE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registered.style_cache, vec![CacheLookup::Miss as i32]);
    let key = registered.key;
    assert_eq!(key, stylize::registry::StyleRegistry::key_of(STYLE));
    let stored = format!("stylize:v1:style:{key}");
    assert_eq!(redis.keys("stylize:v1:style:*"), vec![stored.clone()]);
    // Targets are shared in the background.
    common::eventually("targets in the store", 10.0, || {
        redis.keys("stylize:v1:targets:*").len() == 1
    });
    let ttl = redis.ttl(&stored);
    assert!(
        (7 * 24 * 3600 - 60..=7 * 24 * 3600).contains(&ttl),
        "ttl {ttl}"
    );

    // B and C never saw the style: each reads it and its targets from the store once, then
    // holds them.
    for replica in [&b, &c] {
        assert_eq!(
            lookups(replica, by_key(&key, 2)).await,
            vec![CacheLookup::Shared as i32]
        );
        assert_eq!(
            lookups(replica, by_key(&key, 2)).await,
            vec![CacheLookup::Hit as i32]
        );
        assert_eq!(replica.metric("stylize_style_cache_shared_total"), 1.0);
    }

    // kill -9 of the replica running a job: its client sees the connection lost (retryable
    // as documented: other gRPC clients report UNAVAILABLE, tonic UNKNOWN with the transport
    // error) and, retrying, completes on another replica.
    let mut running = b
        .client()
        .await
        .stylize(by_key(&key, 10_000))
        .await
        .unwrap()
        .into_inner();
    until(&mut running, |e| matches!(e, Event::Progress(_))).await;
    drop(b);
    let lost = final_status(&mut running).await;
    assert!(retryable(&lost), "{lost:?}");
    let events = collect(&mut c.client().await, by_key(&key, 3))
        .await
        .unwrap();
    assert!(matches!(events.last(), Some(Event::Result(r)) if r.iterations == 3));

    // A restarted A (nothing in its memory) still resolves the key.
    drop(a);
    let a = replica(&redis, &[]);
    assert_eq!(
        lookups(&a, by_key(&key, 2)).await,
        vec![CacheLookup::Shared as i32]
    );

    // An injected panic fails that job alone; C's only worker serves the next one.
    let mut doomed = by_key(&key, 1);
    doomed.request_id = "boom".into();
    let panicked = collect(&mut c.client().await, doomed).await.unwrap_err();
    assert_eq!(panicked.code(), Code::Internal, "{panicked:?}");
    let events = collect(&mut c.client().await, by_key(&key, 2))
        .await
        .unwrap();
    assert!(matches!(events.last(), Some(Event::Result(r)) if r.iterations == 2));

    // SIGTERM with three queued jobs hands them back, retryable, within a second.
    let mut client = c.client().await;
    let (_running, first) = occupy_worker_and_queue(&mut client).await;
    let mut queued = vec![first];
    for _ in 0..2 {
        let mut waiting = client.stylize(by_key(&key, 1)).await.unwrap().into_inner();
        until(&mut waiting, |e| matches!(e, Event::Queued(_))).await;
        queued.push(waiting);
    }
    let terminated = Instant::now();
    c.terminate();
    for mut waiting in queued {
        let handed_back = final_status(&mut waiting).await;
        assert_eq!(handed_back.code(), Code::Unavailable, "{handed_back:?}");
    }
    // 0.004-0.044 s at 1 and 2 threads.
    let waited = common::seconds_since("replicas/hand-back s", terminated);
    assert!(waited < 1.0, "handed back after {waited:.3} s");
}

#[tokio::test]
async fn a_registry_that_does_not_answer_makes_keyed_work_unavailable_not_the_server() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(&["--registry", &format!("redis://127.0.0.1:{port}")]);
    let mut client = server.client().await;
    let refused = client
        .register_style(registration(STYLE))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("shared style registry")
            && refused.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        refused.message()
    );
    let keyed = collect(
        &mut client,
        by_key(&stylize::registry::StyleRegistry::key_of(STYLE), 1),
    )
    .await
    .unwrap_err();
    assert_eq!(keyed.code(), Code::Unavailable, "{keyed:?}");
    assert!(retryable(&refused) && retryable(&keyed));
    // Styles sent as bytes need no registry: they are served here (from the targets the
    // refused registration computed).
    let events = collect(&mut client, request(2)).await.unwrap();
    match events.last() {
        Some(Event::Result(result)) => {
            assert_eq!(result.style_cache, vec![CacheLookup::Hit as i32])
        }
        other => panic!("no result: {other:?}"),
    }
    assert!(server.metric("stylize_registry_store_errors_total{op=\"put\"}") >= 1.0);
    assert!(server.metric("stylize_registry_store_errors_total{op=\"get\"}") >= 1.0);
}

#[tokio::test]
async fn each_use_renews_a_shared_entry_and_puts_back_one_the_store_lost() {
    let redis = Redis::start();
    let server = replica(&redis, &[]);
    let key = registered_key(&server, STYLE).await;
    let stored = format!("stylize:v1:style:{key}");
    let week = 7 * 24 * 3600;
    // Nearly expired, then used: the full time to live again.
    let _: bool = redis.command(&["EXPIRE", &stored, "100"]);
    assert_eq!(
        lookups(&server, by_key(&key, 1)).await,
        vec![CacheLookup::Hit as i32]
    );
    // Renewals happen in the background.
    common::eventually("renewed", 10.0, || redis.ttl(&stored) > week - 60);
    // Lost by the store (evicted, flushed): the replica holding it writes it back on use.
    let _: i64 = redis.command(&["DEL", &stored]);
    assert_eq!(
        lookups(&server, by_key(&key, 1)).await,
        vec![CacheLookup::Hit as i32]
    );
    common::eventually("written back", 10.0, || redis.ttl(&stored) > week - 60);
    let back: Vec<u8> = redis.command(&["GET", &stored]);
    assert_eq!(back, STYLE, "the file as registered");
}

/// `stylize submit-sequence` against two replicas sharing the registry (issue 28): the
/// replica running the shot is killed with kill -9 mid-shot; the client, after its backoff,
/// resumes on the other replica from the last frame written, continuing the chain from it.
/// Every frame ends up written exactly once, whole, and nothing half-written is left.
#[tokio::test]
async fn a_shot_finishes_on_another_replica_when_its_replica_is_killed() {
    let redis = Redis::start();
    let a = replica(&redis, &[]);
    let b = replica(&redis, &[]);
    let key = a
        .client()
        .await
        .register_style(proto::RegisterStyleRequest {
            image: STYLE.to_vec(),
            size: 64,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key;
    let input = tempfile::tempdir().unwrap();
    for t in 1..=8 {
        let name = format!("frame_{t:04}.exr");
        std::os::unix::fs::symlink(common::shots::shared(t, "exr"), input.path().join(name))
            .unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let servers = format!("http://{},http://{}", a.addr, b.addr);
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args(["submit-sequence", "--server", &servers, "--style-key", &key])
        .args([
            "--frames",
            &input.path().join("frame_####.exr").display().to_string(),
        ])
        .args([
            "--out",
            &out.path().join("f_####.png").display().to_string(),
        ])
        .args(["--size", "64", "--scales", "1", "--iterations", "10"])
        .args(["--later-iterations", "20", "--progress", "plain"])
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(log.path()).unwrap();
    let started = Instant::now();
    while !out.path().join("f_0002.png").exists() {
        assert!(started.elapsed().as_secs() < 120, "{}", said());
        assert!(client.try_wait().unwrap().is_none(), "{}", said());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(a);
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed().as_secs() < 300, "{}", said());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let said = said();
    assert!(status.success(), "{said}");
    assert!(said.contains("retrying"), "{said}");
    for t in 1..=8 {
        let wrote = said.matches(&format!("frame {t}: wrote")).count();
        assert_eq!(wrote, 1, "frame {t} written {wrote} times: {said}");
        let image = stylize::image_io::load(&out.path().join(format!("f_{t:04}.png"))).unwrap();
        assert_eq!(image.dimensions(), (64, 36));
    }
    let files = std::fs::read_dir(out.path()).unwrap().count();
    assert_eq!(files, 8, "{said}");
    // B finished the shot, continuing the chain: its frames were held to the one before.
    assert!(b.metric("stylize_sequence_frames_total") >= 1.0, "{said}");
    assert!(said.contains("continuing the chain from"), "{said}");
    assert_eq!(said.matches("held 0.0%").count(), 1, "{said}");
}
