//! The gRPC service over real loopback connections, against a `stylize serve` process:
//! event order, cache hits and metrics, cancellation, backpressure, deadlines, field
//! validation, health, reflection, and the drain on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stylize::server::proto::{self, stylize_event::Event, stylizer_client::StylizerClient};
use tonic::Code;
use tonic::transport::Channel;

const CONTENT: &[u8] = include_bytes!("../assets/chelsea.png");
const STYLE: &[u8] = include_bytes!("../assets/starry_night.jpg");

struct Server {
    child: Child,
    addr: SocketAddr,
    metrics_port: u16,
    /// The server's stderr (its log), printed if the test fails.
    log: tempfile::NamedTempFile,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        common::weights();
        common::ort_features(stylize::engine::Pooling::Max); // library in place
        let metrics_port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stylize"))
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen"])
            .arg(format!("127.0.0.1:{metrics_port}"))
            .args(extra)
            .env("STYLIZE_MODELS_DIR", common::models_dir())
            .env("RUST_LOG", "stylize=warn")
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Server {
            child,
            addr,
            metrics_port,
            log,
        }
    }

    /// What the server has logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    async fn client(&self) -> StylizerClient<Channel> {
        StylizerClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }

    /// The value of one series (exact name with labels) in a scrape.
    fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("series {series} missing"))
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.log());
        }
    }
}

fn request(iterations: u32) -> proto::StylizeRequest {
    proto::StylizeRequest {
        request_id: String::new(),
        content: CONTENT.to_vec(),
        styles: vec![proto::StyleInput {
            source: Some(proto::style_input::Source::Image(STYLE.to_vec())),
        }],
        blend: vec![],
        options: Some(proto::Options {
            size: 32,
            iterations,
            optimizer: proto::Optimizer::Adam as i32,
            ..Default::default()
        }),
    }
}

async fn collect(
    client: &mut StylizerClient<Channel>,
    request: proto::StylizeRequest,
) -> Result<Vec<Event>, tonic::Status> {
    let mut stream = client.stylize(request).await?.into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await? {
        events.push(event.event.unwrap());
    }
    Ok(events)
}

/// Reads events until one matches, returning the stream for later use.
async fn until(
    stream: &mut tonic::Streaming<proto::StylizeEvent>,
    want: fn(&Event) -> bool,
) -> Event {
    loop {
        let event = stream
            .message()
            .await
            .unwrap()
            .expect("stream ended early")
            .event
            .unwrap();
        if want(&event) {
            return event;
        }
    }
}

#[tokio::test]
async fn events_arrive_in_order_and_a_repeated_style_hits_the_cache() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut first = request(4);
    first.options.as_mut().unwrap().preview_interval = 2;
    let events = collect(&mut client, first).await.unwrap();
    assert!(
        matches!(events[0], Event::Queued(proto::Queued { position: 0 })),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], Event::Started(s) if s.device == "onnxruntime-cpu"),
        "the CPU default: {events:?}"
    );
    let progress: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress(p) => Some(p.iteration),
            _ => None,
        })
        .collect();
    assert_eq!(progress, vec![1, 2, 3, 4]);
    let previews: Vec<&proto::Preview> = events
        .iter()
        .filter_map(|e| match e {
            Event::Preview(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(
        previews.iter().map(|p| p.iteration).collect::<Vec<_>>(),
        vec![2, 4]
    );
    assert!(image::load_from_memory(&previews[0].image).is_ok());
    let Some(Event::Result(result)) = events.last() else {
        panic!("no result last: {events:?}")
    };
    let decoded = image::load_from_memory(&result.image).unwrap();
    assert_eq!(
        (decoded.width(), decoded.height()),
        (result.width, result.height)
    );
    assert_eq!(decoded.width(), 32);
    assert_eq!(result.style_cache, vec![proto::CacheLookup::Miss as i32]);
    let timings = result.timings.unwrap();
    assert!(timings.optimise_seconds > 0.0 && timings.style_precompute_seconds > 0.0);

    let hits_before = server.metric("stylize_style_cache_hits_total");
    let events = collect(&mut client, request(2)).await.unwrap();
    let Some(Event::Result(result)) = events.last() else {
        panic!()
    };
    assert_eq!(result.style_cache, vec![proto::CacheLookup::Hit as i32]);
    assert_eq!(
        server.metric("stylize_style_cache_hits_total"),
        hits_before + 1.0
    );
    assert_eq!(server.metric("stylize_requests_total{outcome=\"ok\"}"), 2.0);
    assert_eq!(server.metric("stylize_iterations_total"), 6.0);

    let scrape = server.metrics();
    for name in stylize::telemetry::metrics::ALL {
        assert!(
            scrape.contains(&format!("# TYPE {name} ")),
            "{name} not exported"
        );
    }
    // CI installs promtool (.ci/run); elsewhere the check runs when it is there.
    let promtool = Command::new("promtool").arg("--version").output().is_ok();
    assert!(
        promtool || std::env::var_os("CI").is_none(),
        "CI must have promtool"
    );
    if let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(scrape.as_bytes())
            .unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every metric the alerts, the dashboard, the autoscaler and its adapter use is one this
    // live server exports (histograms by their _bucket/_sum/_count series).
    let exported: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let used = deploy_metric_names();
    assert!(used.len() >= 10, "too few metric names found: {used:?}");
    for (file, name) in used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| exported.contains(base))
            .unwrap_or(&name);
        assert!(
            exported.contains(base),
            "{file} uses {name}, which the server does not export"
        );
    }
}

/// `(file, metric)` for every `stylize_*` metric name in the deploy manifests that query
/// Prometheus.
fn deploy_metric_names() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let files = [
        "k8s/base/prometheusrule.yaml",
        "k8s/base/hpa.yaml",
        "monitoring/grafana-dashboard.json",
        "monitoring/prometheus-adapter.yaml",
    ];
    let mut names = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("stylize_") {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                names.push((file.to_string(), tail[..end].to_string()));
            }
            rest = &tail[end.max(1)..];
        }
    }
    names
}

#[tokio::test]
async fn registered_styles_are_used_by_key() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let registered = client
        .register_style(proto::RegisterStyleRequest {
            image: STYLE.to_vec(),
            size: 32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        registered.style_cache,
        vec![proto::CacheLookup::Miss as i32]
    );
    let mut by_key = request(1);
    by_key.styles = vec![proto::StyleInput {
        source: Some(proto::style_input::Source::Key(registered.key.clone())),
    }];
    let events = collect(&mut client, by_key).await.unwrap();
    let Some(Event::Result(result)) = events.last() else {
        panic!()
    };
    assert_eq!(result.style_cache, vec![proto::CacheLookup::Hit as i32]);
}

type Events = tonic::Streaming<proto::StylizeEvent>;

/// Starts a long job (until it runs) and queues a short one behind it.
async fn occupy_worker_and_queue(client: &mut StylizerClient<Channel>) -> (Events, Events) {
    let mut long = client.stylize(request(10_000)).await.unwrap().into_inner();
    until(&mut long, |e| matches!(e, Event::Progress(_))).await;
    let mut next = client.stylize(request(1)).await.unwrap().into_inner();
    until(&mut next, |e| matches!(e, Event::Queued(_))).await;
    (long, next)
}

#[tokio::test]
async fn a_cancelled_request_frees_the_worker() {
    let server = Server::start(&["--workers", "1", "--max-queue", "4"]);
    let mut client = server.client().await;
    let (long, mut next) = occupy_worker_and_queue(&mut client).await;
    let cancelled_at = Instant::now();
    drop(long);
    until(&mut next, |e| matches!(e, Event::Started(_))).await;
    let waited = cancelled_at.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "queued job started {waited:?} after the cancel"
    );
    until(&mut next, |e| matches!(e, Event::Result(_))).await;
    // The cancel is counted once the worker noticed it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.metric("stylize_requests_total{outcome=\"cancelled\"}"),
        1.0
    );
    // A client hanging up is routine: nothing at warning level or above (RUST_LOG=warn).
    let log = server.log();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "a disconnect was logged as a problem:\n{log}"
    );
}

#[tokio::test]
async fn a_full_queue_answers_resource_exhausted_at_once() {
    let server = Server::start(&["--workers", "1", "--max-queue", "1"]);
    let mut client = server.client().await;
    let _busy = occupy_worker_and_queue(&mut client).await;
    let started = Instant::now();
    let err = client.stylize(request(1)).await.expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal took {:?}",
        started.elapsed()
    );
    assert_eq!(
        server.metric("stylize_requests_total{outcome=\"resource_exhausted\"}"),
        1.0
    );
}

#[tokio::test]
async fn an_expired_deadline_answers_deadline_exceeded() {
    let server = Server::start(&[]);
    let mut client = server.client().await;
    let mut req = tonic::Request::new(request(10_000));
    req.set_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let mut stream = client.stylize(req).await.unwrap().into_inner();
    let err = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without the deadline"),
            Err(status) => break status,
        }
    };
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("deadline expired"),
        "enforced by the server: {}",
        err.message()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn each_bad_field_answers_invalid_argument_naming_it() {
    let server = Server::start(&["--max-styles", "2", "--max-iterations", "1000"]);
    let mut client = server.client().await;
    let opts = |f: fn(&mut proto::Options)| {
        let mut r = request(1);
        f(r.options.as_mut().unwrap());
        r
    };
    let style_image = |bytes: &[u8]| proto::StyleInput {
        source: Some(proto::style_input::Source::Image(bytes.to_vec())),
    };
    let mut cases: Vec<(proto::StylizeRequest, &str)> = vec![
        (
            proto::StylizeRequest {
                content: vec![],
                ..request(1)
            },
            "content",
        ),
        (
            proto::StylizeRequest {
                content: b"garbage".to_vec(),
                ..request(1)
            },
            "content",
        ),
        (
            proto::StylizeRequest {
                styles: vec![],
                ..request(1)
            },
            "styles",
        ),
        (
            proto::StylizeRequest {
                styles: vec![style_image(b"nope")],
                ..request(1)
            },
            "styles[0].image",
        ),
        (
            proto::StylizeRequest {
                styles: vec![style_image(STYLE); 3],
                ..request(1)
            },
            "styles",
        ),
        (
            proto::StylizeRequest {
                styles: vec![proto::StyleInput {
                    source: Some(proto::style_input::Source::Key("unknown".into())),
                }],
                ..request(1)
            },
            "styles[0].key",
        ),
        (
            proto::StylizeRequest {
                styles: vec![proto::StyleInput { source: None }],
                ..request(1)
            },
            "styles[0]",
        ),
        (
            proto::StylizeRequest {
                blend: vec![0.5, 0.5],
                ..request(1)
            },
            "blend",
        ),
        (opts(|o| o.size = 100_000), "options.size"),
        (opts(|o| o.size = 8), "options.size"),
        (opts(|o| o.iterations = 5000), "options.iterations"),
        (
            opts(|o| o.style_weight = Some(-1.0)),
            "options.style_weight",
        ),
        (
            opts(|o| o.content_weight = Some(f64::NAN)),
            "options.content_weight",
        ),
        (
            opts(|o| o.learning_rate = Some(0.0)),
            "options.learning_rate",
        ),
        (opts(|o| o.style_scale = Some(-2.0)), "options.style_scale"),
        (opts(|o| o.scales = 99), "options.scales"),
        (opts(|o| o.optimizer = 42), "options.optimizer"),
        (opts(|o| o.output_format = 9), "options.output_format"),
        (
            opts(|o| {
                o.output_format = proto::ImageFormat::Jpeg as i32;
                o.jpeg_quality = 101
            }),
            "options.jpeg_quality",
        ),
        (
            opts(|o| o.init = proto::Init::Image as i32),
            "options.init_image",
        ),
        (
            opts(|o| {
                o.style_layers = vec![proto::LayerWeight {
                    layer: "relu9_1".into(),
                    weight: 1.0,
                }]
            }),
            "options.style_layers",
        ),
        (
            opts(|o| {
                o.content_layers = vec![proto::LayerWeight {
                    layer: "relu4_2".into(),
                    weight: -3.0,
                }]
            }),
            "options.content_layers",
        ),
    ];
    for (request, field) in cases.drain(..) {
        let err = collect(&mut client, request).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let bad_register = client
        .register_style(proto::RegisterStyleRequest {
            image: b"nope".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_register.code(), Code::InvalidArgument);
    assert!(
        bad_register.message().contains("image"),
        "{}",
        bad_register.message()
    );
}

#[tokio::test]
async fn health_and_reflection_work_and_sigterm_drains_in_flight_work() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut server = Server::start(&["--workers", "1", "--grace-period-seconds", "60"]);
    let channel = server.channel().await;

    let mut reflection = ServerReflectionClient::new(channel.clone());
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"stylize.v1.Stylizer".to_string()),
        "{names:?}"
    );

    let mut health = HealthClient::new(channel.clone());
    let check = |service: &str| HealthCheckRequest {
        service: service.to_string(),
    };
    let status = health
        .check(check("stylize.v1.Stylizer"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    // The container health check's view of the same.
    let addr = server.addr;
    let probe = move || {
        Command::new(env!("CARGO_BIN_EXE_stylize"))
            .args(["probe", "--server", &format!("http://{addr}")])
            .output()
            .unwrap()
    };
    let serving = probe();
    assert!(serving.status.success(), "{serving:?}");

    let mut client = StylizerClient::new(channel.clone());
    let mut in_flight = client.stylize(request(60)).await.unwrap().into_inner();
    until(&mut in_flight, |e| matches!(e, Event::Progress(_))).await;
    server.terminate();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = health
            .check(check("stylize.v1.Stylizer"))
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "health never flipped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let draining = probe();
    assert!(!draining.status.success());
    assert!(
        String::from_utf8_lossy(&draining.stderr).contains("not serving"),
        "{draining:?}"
    );
    let refused = collect(&mut client, request(1)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let last = until(&mut in_flight, |e| matches!(e, Event::Result(_))).await;
    assert!(matches!(last, Event::Result(r) if r.iterations == 60));
    drop((in_flight, client, health, reflection, answers, channel));
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn the_cli_client_registers_a_style_and_submits_with_previews() {
    let server = Server::start(&[]);
    let url = format!("http://{}", server.addr);
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let register = Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args([
            "register-style",
            "--server",
            &url,
            "--size",
            "32",
            "--style",
        ])
        .arg(assets.join("starry_night.jpg"))
        .output()
        .unwrap();
    assert!(
        register.status.success(),
        "{}",
        String::from_utf8_lossy(&register.stderr)
    );
    let key = String::from_utf8(register.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(key.len(), 64, "a sha256 key: {key}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jpg");
    let previews = dir.path().join("previews");
    let submit = Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args([
            "submit",
            "--quiet",
            "--server",
            &url,
            "--style-key",
            &key,
            "--size",
            "32",
            "--iterations",
            "4",
        ])
        .args([
            "--optimizer",
            "adam",
            "--preview-interval",
            "2",
            "--content",
        ])
        .arg(assets.join("chelsea.png"))
        .arg("--previews")
        .arg(&previews)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    let image = image::open(&out).unwrap();
    assert_eq!(image.width(), 32);
    let mut saved: Vec<String> = std::fs::read_dir(&previews)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    assert_eq!(saved, vec!["preview-00002.jpg", "preview-00004.jpg"]);

    let unknown = Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args([
            "submit",
            "--quiet",
            "--server",
            &url,
            "--style-key",
            "nope",
            "--size",
            "32",
            "--content",
        ])
        .arg(assets.join("chelsea.png"))
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("styles[0].key"),
        "{stderr}"
    );
}

/// CRC-32 (PNG's chunk checksum).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A 60-byte PNG whose header declares `width x height` RGB pixels: a decompression bomb
/// if a decoder allocates from the header.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
        out
    };
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &header));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// Peak resident memory of a process, from `/proc/PID/status`.
/// A memory figure of process `pid` from /proc (`VmHWM`: peak, `VmRSS`: now), in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn peak_rss_kib(pid: u32) -> u64 {
    memory_kib(pid, "VmHWM:")
}

#[tokio::test]
async fn decompression_bombs_are_refused_from_the_header_without_allocating() {
    let server = Server::start(&[]);
    let mut client = StylizerClient::new(server.channel().await);
    let bomb = png_declaring(60_000, 60_000);
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
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{field}: slow refusal"
        );
    }
    // 60000 x 60000 RGB would be 10 GB; allow 64 MiB of noise.
    let grown = peak_rss_kib(server.child.id()).saturating_sub(baseline);
    assert!(grown < 64 * 1024, "peak memory grew by {grown} KiB");
}

#[tokio::test]
async fn a_diverging_job_stops_with_internal_and_a_message() {
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
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message().contains("diverged") && err.message().contains("iteration 1"),
        "{err:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Progress(_) | Event::Preview(_) | Event::Result(_))),
        "streamed before the fault was caught: {events:?}"
    );
    assert_eq!(
        server.metric("stylize_requests_total{outcome=\"internal\"}"),
        1.0
    );
    // The worker is free and healthy for the next job.
    let events = collect(&mut client, request(2)).await.unwrap();
    assert!(matches!(events.last(), Some(Event::Result(_))));
}

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
                assert!(
                    ((loss - first) / first).abs() < 1e-5,
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

/// A throwaway authority and a `localhost` certificate it signed, as PEM files.
struct TestPki {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl TestPki {
    fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[tokio::test]
async fn tls_serves_trusting_clients_only() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let pki = TestPki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let server = Server::start(&["--workers", "1", "--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("https://localhost:{}", server.addr.port());
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem));
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let events = collect(&mut StylizerClient::new(channel), request(2))
        .await
        .unwrap();
    assert!(
        matches!(events.last(), Some(Event::Result(_))),
        "{events:?}"
    );

    // Plaintext gRPC against the TLS port gets nowhere.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Ok(channel) = plain.connect().await {
        let err = collect(&mut StylizerClient::new(channel), request(1)).await;
        assert!(err.is_err(), "plaintext call answered: {err:?}");
    }
    // A client trusting another authority refuses the server's certificate.
    let stranger = TestPki::new();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&stranger.ca_pem));
    let untrusted = Channel::from_shared(url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await;
    assert!(untrusted.is_err(), "an untrusted certificate was accepted");

    // The CLI's health probe over TLS.
    let probe = |ca: &str| {
        Command::new(env!("CARGO_BIN_EXE_stylize"))
            .args(["probe", "--server", &url, "--ca-cert", ca])
            .output()
            .unwrap()
    };
    let ok = probe(&pki.path("ca.pem"));
    assert!(ok.status.success(), "{ok:?}");
    let refused = probe(&stranger.path("ca.pem"));
    assert!(!refused.status.success(), "{refused:?}");
}

#[tokio::test]
async fn a_bearer_token_guards_the_service_but_not_health() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "correct-horse-battery-staple\n").unwrap();
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, "correct-horse-battery-stapler").unwrap();
    let token_path = token_file.display().to_string();
    let server = Server::start(&["--workers", "1", "--auth-token-file", &token_path]);
    let mut client = server.client().await;
    let with_token = |token: Option<&str>| {
        let mut request = tonic::Request::new(request(2));
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        request
    };
    for token in [None, Some("correct-horse-battery-stapler"), Some("")] {
        let err = client.stylize(with_token(token)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    let err = client
        .register_style(proto::RegisterStyleRequest {
            image: STYLE.to_vec(),
            size: 32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // Nothing ran for them: no job started, no style was computed.
    assert_eq!(
        server.metric("stylize_requests_total{outcome=\"unauthenticated\"}"),
        4.0
    );
    assert_eq!(server.metric("stylize_iterations_total"), 0.0);
    assert_eq!(server.metric("stylize_style_cache_misses_total"), 0.0);

    let mut stream = client
        .stylize(with_token(Some("correct-horse-battery-staple")))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(event) = stream.message().await.unwrap() {
        last = event.event;
    }
    assert!(matches!(last, Some(Event::Result(_))), "{last:?}");

    // Probes need no token.
    let status = HealthClient::new(server.channel().await)
        .check(HealthCheckRequest {
            service: "stylize.v1.Stylizer".into(),
        })
        .await
        .unwrap();
    assert_eq!(status.into_inner().status, 1);

    // The CLI client sends the token from a file.
    let out_dir = tempfile::tempdir().unwrap();
    let content = out_dir.path().join("content.png");
    std::fs::write(&content, CONTENT).unwrap();
    let style = out_dir.path().join("style.jpg");
    std::fs::write(&style, STYLE).unwrap();
    let submit = |token: &Path| {
        Command::new(env!("CARGO_BIN_EXE_stylize"))
            .args(["submit", "--server", &format!("http://{}", server.addr)])
            .args(["--content", content.to_str().unwrap()])
            .args(["--style", style.to_str().unwrap()])
            .args(["--size", "32", "--iterations", "1", "--quiet", "--out"])
            .arg(out_dir.path().join("out.png"))
            .arg("--token-file")
            .arg(token)
            .output()
            .unwrap()
    };
    let ok = submit(&token_file);
    assert!(ok.status.success(), "{ok:?}");
    let refused = submit(&wrong_file);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_capacity_is_refused_promptly_completes_the_rest_and_leaks_nothing() {
    use stylize::loadgen::{self, LoadPlan, LoadReport};
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
        let slowest = loadgen::quantile(&report.refused_seconds, 1.0).unwrap();
        assert!(slowest < 1.0, "burst {burst}: a refusal took {slowest:.3}s");
        seen.merge(report);
        after_each.push(memory_kib(pid, "VmRSS:"));
    }
    let last = *after_each.last().unwrap();
    assert!(
        last < baseline + 48 * 1024,
        "resident memory grew from {baseline} KiB to {after_each:?} KiB over the bursts"
    );
    // What the server counted is what the clients saw.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for outcome in ["ok", "resource_exhausted"] {
        assert_eq!(
            server.metric(&format!("stylize_requests_total{{outcome=\"{outcome}\"}}")),
            seen.count(outcome) as f64,
            "{outcome}: clients saw {:?}",
            seen.outcomes
        );
    }
    assert_eq!(server.metric("stylize_queue_depth"), 0.0);
    assert_eq!(server.metric("stylize_in_flight_requests"), 0.0);
    println!(
        "clients saw {:?}; resident memory {baseline} KiB after warm-up, {after_each:?} KiB after each burst",
        seen.outcomes
    );
}
