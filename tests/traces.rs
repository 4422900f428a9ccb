//! OpenTelemetry traces from a live server (`--otlp-endpoint`) into an OTLP/gRPC receiver
//! the test runs (`TraceService/Export`, from the opentelemetry-proto package): a request's
//! spans carry the client's trace id and hang off its span; admission, queue wait, style
//! precompute (with the cache's answer), each scale, encoding, registry calls and each shot
//! frame nest under the request; a request without `traceparent` starts its own trace; the
//! CLI sends on the caller's `TRACEPARENT`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::server::{STYLE, Server, by_key, collect, registered_key, request};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use stylize::server::proto;

/// Every span received, with its service's name.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| text(attribute.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                kept.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(number) => Some(number.to_string()),
        Value::BoolValue(flag) => Some(flag.to_string()),
        Value::DoubleValue(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A span's attributes as text.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|attribute| {
            Some((
                attribute.key.clone(),
                text(attribute.value.as_ref()?.value.as_ref()?)?,
            ))
        })
        .collect()
}

impl Receiver {
    /// Starts the receiver on a free loopback port; its URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("http://{address}")
    }

    /// The spans of trace `trace_id` once `wanted` of them have arrived (batches come every
    /// 100 ms here), waiting up to 30 s.
    async fn trace(&self, trace_id: &[u8], wanted: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let started = Instant::now();
        loop {
            let spans: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, span)| span.trace_id == trace_id)
                .map(|(_, span)| span.clone())
                .collect();
            if wanted(&spans) {
                return spans;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "spans of trace {} so far: {:?}",
                hex(trace_id),
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|k| u8::from_str_radix(&text[k..k + 2], 16).unwrap())
        .collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span in {:?}", names(spans));
    found[0]
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|span| span.name.as_str()).collect()
}

/// Whether `span` descends from `ancestor` within `spans`.
fn descends(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        if parent == ancestor.span_id {
            return true;
        }
        parent = spans
            .iter()
            .find(|s| s.span_id == parent)
            .map(|s| s.parent_span_id.clone())
            .unwrap_or_default();
    }
    false
}

/// A caller's context: trace id and span id as the W3C header carries them.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traced<T>(message: T, trace: &str, span: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-{span}-01").parse().unwrap(),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_spans_join_the_callers_trace_and_nest() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let redis = Redis::start();
    let (url, secret) = (redis.url(), redis.secret_file());
    let server = Server::start_wrapped(
        "OTEL_BSP_SCHEDULE_DELAY=100 exec \"$0\" \"$@\"",
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-service-name",
            "stylize-test",
            "--registry",
            &url,
            "--registry-secret-file",
            &secret,
            "--workers",
            "1",
        ],
    );
    let key = registered_key(&server, STYLE).await;
    server
        .client()
        .await
        .register_style(proto::RegisterStyleRequest {
            name: "traced/look".into(),
            ..common::server::registration(STYLE)
        })
        .await
        .unwrap();

    // A still by name (read from the shared registry), in the caller's trace.
    let mut message = by_key(&key, 2);
    message.styles[0].source = Some(proto::style_input::Source::Name("traced/look".into()));
    message.options.as_mut().unwrap().quality = proto::Quality::Draft as i32;
    let events = collect_traced(&server, traced(message, TRACE, CALLER_SPAN)).await;
    assert!(matches!(
        events.last(),
        Some(proto::stylize_event::Event::Result(_))
    ));
    let spans = receiver
        .trace(&unhex(TRACE), |spans| {
            ["stylize", "encode", "queue_wait", "optimise_scale"]
                .iter()
                .all(|name| spans.iter().any(|s| s.name == *name))
        })
        .await;
    let root = one(&spans, "stylize");
    assert_eq!(root.parent_span_id, unhex(CALLER_SPAN), "the caller's span");
    let about = attributes(root);
    assert_eq!(about["request_id"], "traced");
    assert_eq!(about["engine"], "onnxruntime-cpu");
    assert_eq!(about["device"], "cpu");
    assert_eq!(about["size"], "32");
    assert_eq!(about["preset"], "QUALITY_DRAFT");
    for name in [
        "admission",
        "queue_wait",
        "style_precompute",
        "encode",
        "score_delivered",
    ] {
        let span = one(&spans, name);
        assert!(descends(&spans, span, root), "{name} under the request");
    }
    // The name was resolved through the shared registry during admission.
    let registry = named(&spans, "registry");
    assert!(
        registry
            .iter()
            .any(|span| descends(&spans, span, one(&spans, "admission"))),
        "a registry call in admission: {:?}",
        names(&spans)
    );
    // The draft preset at 32 px runs its scales; each one a span under the request.
    let scales = named(&spans, "optimise_scale");
    assert!(!scales.is_empty());
    assert!(scales.iter().all(|span| descends(&spans, span, root)));
    // The targets the registration computed: a hit, said on the span.
    let precompute = attributes(one(&spans, "style_precompute"));
    assert_eq!(precompute["cache"], "hit", "{precompute:?}");
    assert!(
        spans
            .iter()
            .all(|span| span.end_time_unix_nano >= span.start_time_unix_nano)
    );

    // A shot: one span per frame, each frame's scale under it, all in the caller's trace.
    let shot_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut messages = vec![common::shots::setup(2)];
    messages.extend((1..=2).map(|t| common::shots::framed(common::shots::frame_message(t))));
    let mut client = server.client().await;
    let mut shot = client
        .stylize_sequence(traced(
            tokio_stream::iter(messages),
            shot_trace,
            CALLER_SPAN,
        ))
        .await
        .unwrap()
        .into_inner();
    while shot.message().await.unwrap().is_some() {}
    let spans = receiver
        .trace(&unhex(shot_trace), |spans| {
            spans.iter().filter(|s| s.name == "frame").count() == 2
                && spans.iter().any(|s| s.name == "stylize_sequence")
        })
        .await;
    let root = one(&spans, "stylize_sequence");
    assert_eq!(root.parent_span_id, unhex(CALLER_SPAN));
    assert_eq!(attributes(root)["size"], "64");
    let frames = named(&spans, "frame");
    for frame in &frames {
        assert!(descends(&spans, frame, root));
    }
    let indices: Vec<String> = frames
        .iter()
        .map(|f| attributes(f)["index"].clone())
        .collect();
    assert!(
        indices.contains(&"0".into()) && indices.contains(&"1".into()),
        "{indices:?}"
    );
    for scale in named(&spans, "optimise_scale") {
        assert!(
            frames.iter().any(|frame| descends(&spans, scale, frame)),
            "each scale under its frame"
        );
    }

    // Without traceparent: a trace of its own, rooted at the request.
    let before: Vec<Vec<u8>> = receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|(_, span)| span.trace_id.clone())
        .collect();
    let mut untraced = request(1);
    untraced.request_id = "untraced".into();
    collect(&mut server.client().await, untraced).await.unwrap();
    let started = Instant::now();
    let own = loop {
        let found = receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .find(|(_, span)| {
                span.name == "stylize" && attributes(span)["request_id"] == "untraced"
            })
            .map(|(service, span)| (service.clone(), span.clone()));
        if let Some(found) = found {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no untraced span"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(own.0, "stylize-test", "the service name");
    assert!(own.1.parent_span_id.is_empty(), "a root");
    assert!(!before.contains(&own.1.trace_id), "a new trace");

    // The CLI sends on the caller's TRACEPARENT.
    let cli_trace = "11112222333344445555666677778888";
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content.png");
    std::fs::write(&content, common::server::CONTENT).unwrap();
    let out = dir.path().join("out.png");
    let ran = std::process::Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args(["submit", "--quiet", "--server"])
        .arg(format!("http://{}", server.addr))
        .args(["--style-key", &key, "--size", "32", "--iterations", "1"])
        .arg("--content")
        .arg(&content)
        .arg("--out")
        .arg(&out)
        .env("TRACEPARENT", format!("00-{cli_trace}-{CALLER_SPAN}-01"))
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let spans = receiver
        .trace(&unhex(cli_trace), |spans| {
            spans.iter().any(|s| s.name == "stylize")
        })
        .await;
    assert_eq!(one(&spans, "stylize").parent_span_id, unhex(CALLER_SPAN));
}

async fn collect_traced(
    server: &Server,
    mut request: tonic::Request<proto::StylizeRequest>,
) -> Vec<proto::stylize_event::Event> {
    request.get_mut().request_id = "traced".into();
    let mut stream = server
        .client()
        .await
        .stylize(request)
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.extend(event.event);
    }
    events
}
