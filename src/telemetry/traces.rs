//! OpenTelemetry traces: the server's spans (a request, its admission, queue wait, style
//! precompute with the cache's answer, each scale's optimisation, each shot frame, encoding,
//! registry calls) exported over OTLP/gRPC when `--otlp-endpoint` is given, continuing the
//! caller's W3C `traceparent`. Off by default: without an endpoint no exporter exists and the
//! spans below `info` are never enabled, so they cost nothing.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::error::{Error, Result};

/// The W3C trace-context header (gRPC metadata keys are lower-case).
pub const TRACEPARENT: &str = "traceparent";
/// The environment variable a caller's context arrives in (a farm job's task, a script), as
/// OpenTelemetry's environment carrier names it; the CLI sends it on as `traceparent`.
pub const TRACEPARENT_ENV: &str = "TRACEPARENT";
/// The service name spans carry when `--otlp-service-name` is not given.
pub const DEFAULT_SERVICE_NAME: &str = "stylize";

/// Where spans go.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// An OTLP/gRPC collector, `http://host:4317`.
    pub endpoint: String,
    pub service_name: String,
}

/// The exporter while it runs: its own small runtime (the gRPC client and the batching run
/// there, whatever the caller's threads are), flushed and stopped when dropped.
pub struct TraceExport {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TraceExport {
    /// Starts exporting to `config.endpoint`; the tracer to give the tracing layer.
    pub fn start(config: &OtlpConfig) -> Result<(Self, Tracer)> {
        if !(config.endpoint.starts_with("http://") || config.endpoint.starts_with("https://")) {
            return Err(Error::invalid(
                "otlp-endpoint",
                format!(
                    "`{}`: an OTLP/gRPC URL, http://host:4317",
                    crate::error::quoted(&config.endpoint)
                ),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(|e| Error::invalid("otlp-endpoint", format!("exporter runtime: {e}")))?;
        // The exporter's channel and the batch processor start on the runtime they belong to.
        let _inside = runtime.enter();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .build()
            .map_err(|e| Error::invalid("otlp-endpoint", e.to_string()))?;
        let batches = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("stylize");
        drop(_inside);
        Ok((
            Self {
                provider,
                runtime: Some(runtime),
            },
            tracer,
        ))
    }
}

impl Drop for TraceExport {
    fn drop(&mut self) {
        // Spans still batched go out before the process ends.
        if let Err(e) = self.provider.shutdown() {
            eprintln!("otlp: spans not all exported at exit: {e}");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Reads a `traceparent` (and `tracestate`) from gRPC metadata.
struct FromMetadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for FromMetadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Makes `span` continue the caller's trace when the request's metadata carries a valid
/// `traceparent`; otherwise it starts a trace of its own. Does nothing while traces are off.
pub fn continue_caller(span: &tracing::Span, metadata: &tonic::metadata::MetadataMap) {
    if span.is_disabled() || metadata.get(TRACEPARENT).is_none() {
        return;
    }
    let caller = TraceContextPropagator::new().extract(&FromMetadata(metadata));
    let _ = span.set_parent(caller);
}

/// Collects what a propagator writes, for a request's metadata.
#[derive(Default)]
struct Pairs(Vec<(String, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// The `traceparent` a client sends on: the caller's, from `TRACEPARENT` in the environment,
/// if it is a valid W3C trace context (anything else is ignored, as the standard asks).
pub fn caller_traceparent() -> Option<String> {
    let given = std::env::var(TRACEPARENT_ENV).ok()?;
    valid_traceparent(given.trim()).then(|| given.trim().to_string())
}

/// Whether `value` is a W3C `traceparent` a propagator accepts (version 00, non-zero ids).
pub fn valid_traceparent(value: &str) -> bool {
    struct One<'a>(&'a str);
    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == TRACEPARENT).then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec![TRACEPARENT]
        }
    }
    use opentelemetry::trace::TraceContextExt;
    let propagator = TraceContextPropagator::new();
    let context = propagator.extract(&One(value));
    if !context.span().span_context().is_valid() {
        return false;
    }
    // Written back the same: a value the propagator would not send on is not one.
    let mut pairs = Pairs::default();
    propagator.inject_context(&context, &mut pairs);
    pairs
        .0
        .iter()
        .any(|(key, written)| key == TRACEPARENT && written == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_trace_contexts_are_sent_on() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "not a trace",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn an_endpoint_is_a_url() {
        let refused = TraceExport::start(&OtlpConfig {
            endpoint: "collector:4317".into(),
            service_name: DEFAULT_SERVICE_NAME.into(),
        })
        .err()
        .unwrap();
        assert!(refused.to_string().contains("otlp-endpoint"), "{refused}");
    }
}
