//! The gRPC router: a thin tonic service that validates and converts requests, hands them
//! to the scheduler and streams its events back; plus health, reflection, the metrics
//! listener and the drain sequence on shutdown.

pub mod auth;
pub mod convert;
pub mod deadline;
pub mod details;
mod handshake;
pub mod info;
mod reflection;
pub mod routing;
pub mod sequence;
pub mod styles;
pub mod tally;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub use convert::Limits;

use crate::backends::Backends;
use crate::cache::StyleCache;
use crate::error::Error;
use crate::registry::StyleRegistry;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::telemetry::metrics::{self as names, outcome};

/// Generated from `proto/stylize/v1/stylize.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("stylize.v1");
    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/stylize_v1_descriptor.bin"));
}

use proto::stylizer_server::{Stylizer, StylizerServer};
use tonic::service::interceptor::InterceptedService;
use tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer;
use tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer as ServerReflectionAlphaServer;

/// The error and its causes, on one line (rustls's reason is in the source).
fn tls_reason(err: &dyn std::error::Error) -> String {
    let mut reason = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    reason
}

/// The gRPC status for a library error; the message names the field where there is one
/// (fields are already the request's paths, see `convert::in_request`).
pub fn status(err: Error) -> Status {
    details::status(err)
}

/// The outcome label of a final status.
fn outcome_of_code(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::InvalidArgument => outcome::INVALID_ARGUMENT,
        tonic::Code::ResourceExhausted => outcome::RESOURCE_EXHAUSTED,
        tonic::Code::Unavailable => outcome::UNAVAILABLE,
        tonic::Code::DeadlineExceeded => outcome::DEADLINE_EXCEEDED,
        tonic::Code::Cancelled => outcome::CANCELLED,
        tonic::Code::FailedPrecondition => outcome::DIVERGED,
        tonic::Code::Unauthenticated => outcome::UNAUTHENTICATED,
        tonic::Code::Unimplemented => outcome::UNIMPLEMENTED,
        tonic::Code::NotFound => outcome::NOT_FOUND,
        tonic::Code::AlreadyExists => outcome::ALREADY_EXISTS,
        _ => outcome::INTERNAL,
    }
}

/// How often a connection is pinged, by default.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered before the connection is dropped, by default.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `serve` needs besides the backends.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where `/metrics` is served; `None` disables the exporter.
    pub metrics_listen: Option<SocketAddr>,
    pub scheduler: SchedulerConfig,
    pub limits: Limits,
    /// Bytes of registered styles (file and decoded pixels) this replica keeps.
    pub registry_bytes: usize,
    /// Where registered styles live for every replica; `None` keeps them in this process.
    pub shared_store: Option<Arc<crate::registry::SharedStore>>,
    /// How long in-flight work may take to finish after SIGTERM before it is cancelled.
    pub grace_period: Duration,
    /// HTTP/2 pings: how often, and how long one may go unanswered before the connection
    /// (and every job on it) is dropped.
    pub keepalive: (Duration, Duration),
    /// TLS on the gRPC port; `None` serves plaintext (e.g. behind a TLS-terminating proxy).
    pub tls: Option<TlsIdentity>,
    /// Who may call the stylize service and reflection (health is always open).
    pub gate: auth::TokenGate,
    /// How many shots may be open, and how long one may wait for its next frame.
    pub shots: sequence::ShotLimits,
}

/// The server's certificate chain and private key, PEM-encoded.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity { .. }")
    }
}

pub struct StylizeService {
    scheduler: Scheduler,
    registry: Arc<StyleRegistry>,
    /// The style targets this replica holds (what GetStyle and ListStyles report).
    cache: Arc<StyleCache>,
    /// Studio views requests sent, parsed once each.
    views: Arc<crate::cache::view_luts::ViewLutCache>,
    limits: Limits,
    /// One permit per place a request can hold (running or queued): a request decodes its
    /// images only while it holds one, so overload never decodes unbounded bytes.
    places: Arc<Semaphore>,
    /// Style registrations decoding or precomputing at once.
    registrations: Arc<Semaphore>,
    /// One permit per shot that may be open (`--max-open-shots`), held for its length.
    open_shots: Arc<Semaphore>,
    shot_limits: sequence::ShotLimits,
    /// Becomes true when the server starts draining.
    draining: watch::Receiver<bool>,
    /// ServerInfo's answer, fixed at start.
    info: Arc<proto::ServerInfoResponse>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::StylizeEvent, Status>> + Send>>;

pub(crate) fn request_id(given: &str) -> String {
    if given.is_empty() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        format!("req-{}", NEXT.fetch_add(1, Ordering::Relaxed))
    } else {
        // Logged as given: only characters that cannot forge a line or a field.
        given
            .chars()
            .take(128)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._:/-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// One of `places` for a piece of work that will queue (a still, a shot's setup or frame):
/// `ShuttingDown` while draining, `QueueFull` when the queue or every place is taken.
pub(crate) fn take_place(
    scheduler: &Scheduler,
    places: &Arc<Semaphore>,
) -> crate::error::Result<tokio::sync::OwnedSemaphorePermit> {
    scheduler.admits()?;
    places
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::QueueFull(scheduler.queue_depth()))
}

/// Tells probes and balancers this replica takes no work.
async fn report_not_serving(health: &tonic_health::server::HealthReporter) {
    health
        .set_not_serving::<StylizerServer<StylizeService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
}

#[tonic::async_trait]
impl Stylizer for StylizeService {
    type StylizeStream = EventStream;
    type StylizeSequenceStream = sequence::SequenceStream;

    async fn stylize_sequence(
        &self,
        request: Request<tonic::Streaming<proto::StylizeSequenceRequest>>,
    ) -> Result<Response<sequence::SequenceStream>, Status> {
        let deadline = deadline::from_metadata(request.metadata(), Instant::now())?;
        self.scheduler.admits().map_err(status)?;
        let open = sequence::OpenShot::take(&self.open_shots, self.shot_limits.max_open)
            .map_err(status)?;
        let runner = sequence::Runner {
            scheduler: self.scheduler.clone(),
            limits: self.limits.clone(),
            registry: self.registry.clone(),
            views: self.views.clone(),
            places: self.places.clone(),
            shots: self.shot_limits,
            draining: self.draining.clone(),
            info: self.info.clone(),
        };
        let (caller, _, inbound) = request.into_parts();
        let stream = runner.start(inbound, deadline, open, caller).await?;
        Ok(Response::new(stream))
    }

    async fn stylize(
        &self,
        request: Request<proto::StylizeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let deadline = deadline::from_metadata(request.metadata(), Instant::now())?;
        let (caller, _, message) = request.into_parts();
        let id = request_id(&message.request_id);
        let span = request_span!("stylize", &id, &self.info, &caller);
        // Admission: a place, the request decoded, the job planned and queued.
        let admission = tracing::debug_span!(parent: &span, "admission");
        let place = admission.in_scope(|| self.take_place())?;
        record_job(&span, message.options.as_ref());
        let (limits, registry) = (self.limits.clone(), self.registry.clone());
        let views = self.views.clone();
        let decoding = admission.clone();
        let spec = tokio::task::spawn_blocking(move || {
            decoding
                .in_scope(|| convert::job_spec(message, id, deadline, &limits, &registry, &views))
        })
        .await
        .map_err(|e| Status::internal(format!("request decoding panicked: {e}")))?
        .map_err(status)?;
        let submitted = {
            let _entered = admission.enter();
            self.scheduler.submit(spec, span.clone()).map_err(status)?
        };
        drop(admission);
        // The place is held until the stream ends (or the client drops it).
        let stream = submitted.events.into_stream().map(move |event| {
            let _held = &place;
            convert::event(event)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn register_style(
        &self,
        request: Request<proto::RegisterStyleRequest>,
    ) -> Result<Response<proto::RegisterStyleResponse>, Status> {
        // Refusals are counted where every refusal is (`tally`); a success here.
        let called = Instant::now();
        let answer = self.register(request).await;
        if answer.is_ok() {
            names::count_registration(outcome::OK, called.elapsed().as_secs_f64());
        }
        answer
    }

    async fn server_info(
        &self,
        _request: Request<proto::ServerInfoRequest>,
    ) -> Result<Response<proto::ServerInfoResponse>, Status> {
        Ok(Response::new(self.info.as_ref().clone()))
    }

    async fn list_styles(
        &self,
        request: Request<proto::ListStylesRequest>,
    ) -> Result<Response<proto::ListStylesResponse>, Status> {
        let message = request.into_inner();
        self.ask_registry("list_styles", move |registry, cache| {
            styles::list(registry, cache, &message)
        })
        .await
    }

    async fn get_style(
        &self,
        request: Request<proto::GetStyleRequest>,
    ) -> Result<Response<proto::GetStyleResponse>, Status> {
        let message = request.into_inner();
        self.ask_registry("get_style", move |registry, cache| {
            styles::get(registry, cache, &message)
        })
        .await
    }
}

/// A request's span, named for its call, carrying its id, engine and device (its size and
/// preset are recorded once decoded), and continuing the caller's trace when it sent
/// `traceparent`.
macro_rules! request_span {
    ($call:literal, $id:expr, $info:expr, $caller:expr) => {{
        let span = tracing::info_span!(
            $call,
            request_id = %$id,
            engine = %$info.engine,
            device = %$info.device,
            size = tracing::field::Empty,
            preset = tracing::field::Empty,
        );
        crate::telemetry::traces::continue_caller(&span, $caller);
        span
    }};
}
pub(crate) use request_span;

/// Records a job's size and preset on its request span (what a trace filters by).
pub(crate) fn record_job(span: &tracing::Span, options: Option<&proto::Options>) {
    let Some(options) = options else {
        return;
    };
    if options.size > 0 {
        span.record("size", options.size);
    }
    if let Ok(quality) = proto::Quality::try_from(options.quality)
        && quality != proto::Quality::Unspecified
    {
        span.record("preset", quality.as_str_name());
    }
}

impl StylizeService {
    /// Runs a registry question off the async threads (the shared store answers over the
    /// network, blocking).
    async fn ask_registry<T: Send + 'static>(
        &self,
        call: &'static str,
        question: impl FnOnce(&StyleRegistry, &StyleCache) -> crate::error::Result<T> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let (registry, cache) = (self.registry.clone(), self.cache.clone());
        tokio::task::spawn_blocking(move || question(&registry, &cache))
            .await
            .map_err(|e| Status::internal(format!("{call} panicked: {e}")))?
            .map(Response::new)
            .map_err(status)
    }

    /// Admission for a call that will queue work: refused at once while the queue is full
    /// or the server drains, else one of the places, held until the call's stream ends.
    fn take_place(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        take_place(&self.scheduler, &self.places).map_err(status)
    }

    /// RegisterStyle's work.
    async fn register(
        &self,
        request: Request<proto::RegisterStyleRequest>,
    ) -> Result<Response<proto::RegisterStyleResponse>, Status> {
        let deadline = deadline::from_metadata(request.metadata(), Instant::now())?;
        let span = request_span!("register_style", "", &self.info, request.metadata());
        // Registrations have their own places: a full Stylize queue does not refuse them.
        self.scheduler.accepting().map_err(status)?;
        let permit = self
            .registrations
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted("style registrations are at their limit; retry later")
            })?;
        let message = request.into_inner();
        let (limits, registry, scheduler) = (
            self.limits.clone(),
            self.registry.clone(),
            self.scheduler.clone(),
        );
        let work = move || -> crate::error::Result<proto::RegisterStyleResponse> {
            let _permit = permit;
            let started = Instant::now();
            let options = crate::render::GivenOptions {
                size: (message.size > 0).then_some(message.size),
                style_scale: message.style_scale,
                scales: (message.scales > 0).then_some(message.scales as usize),
                style_layers: convert::layers("style_layers", &message.style_layers)?,
                ..crate::render::GivenOptions::default()
            }
            .resolve()?;
            options.validate()?;
            convert::check_sizes(&options, &limits)?;
            let naming = styles::naming(&message)?;
            if let Some(naming) = &naming {
                // A name taken by another style is refused before the precompute.
                registry.check_naming(naming, &message.image)?;
            }
            let image = convert::decode_field(&message.image, "image", &limits)?;
            let lookups = scheduler.precompute_style(&image, &options, deadline)?;
            // Only a style whose targets were computed gets a key.
            let registered = registry.register(&message.image, Arc::new(image), naming.as_ref())?;
            tracing::info!(key = %registered.key, name = %message.name, "style registered");
            Ok(proto::RegisterStyleResponse {
                key: registered.key,
                style_cache: lookups.into_iter().map(convert::lookup).collect(),
                precompute_seconds: started.elapsed().as_secs_f64(),
                name: message.name,
                previous_key: registered.previous_key.unwrap_or_default(),
            })
        };
        let response = tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(|e| Status::internal(format!("register_style panicked: {e}")))?
            .map_err(|e| status(convert::in_registration(e)))?;
        Ok(Response::new(response))
    }
}

/// Runs the server until `shutdown` resolves, then drains: health flips to NOT_SERVING, new
/// requests are refused (UNAVAILABLE), in-flight work gets `grace_period` to finish before
/// it is cancelled. `on_listening` receives the bound address (useful with port 0).
pub async fn serve(
    config: ServerConfig,
    backends: Backends,
    cache: Arc<StyleCache>,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> crate::error::Result<()> {
    let about = info::describe(&config, &backends);
    if let Some(metrics_listen) = config.metrics_listen {
        crate::telemetry::metrics::install(metrics_listen)?;
        crate::telemetry::metrics::publish_cache(&Default::default());
        crate::registry::shared::publish_initial();
        crate::telemetry::metrics::publish_build_info(
            &about.version,
            &about.commit,
            &about.engine,
            &about.device,
        );
        #[cfg(feature = "nvml")]
        match crate::telemetry::gpu::start() {
            Ok(()) => tracing::info!("GPU metrics from NVML"),
            Err(absent) => tracing::info!(reason = %absent.0, "no GPU metrics"),
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::invalid("listen", format!("{}: {e}", config.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::invalid("listen", e.to_string()))?;

    let scheduler = Scheduler::start(config.scheduler.clone(), backends, cache.clone());
    let places = config.scheduler.workers.max(1) + config.scheduler.max_queue;
    let (drain, draining) = watch::channel(false);
    let service = StylizeService {
        scheduler: scheduler.clone(),
        registry: Arc::new(match &config.shared_store {
            Some(store) => StyleRegistry::shared(config.registry_bytes, store.clone()),
            None => StyleRegistry::new(config.registry_bytes),
        }),
        cache,
        views: Arc::default(),
        limits: config.limits.clone(),
        places: Arc::new(Semaphore::new(places)),
        registrations: Arc::new(Semaphore::new(config.scheduler.workers.max(1))),
        open_shots: Arc::new(Semaphore::new(config.shots.max_open)),
        shot_limits: config.shots,
        draining: draining.clone(),
        info: Arc::new(about),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<StylizerServer<StylizeService>>().await;
    // A replica whose workers have all died can take no job: health says so.
    // (Workers stop when the server drains: that is not a fault.)
    let (watched, watching, drained) = (scheduler.clone(), health.clone(), draining.clone());
    tokio::spawn(async move {
        while watched.workers_alive() > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if !*drained.borrow() {
            tracing::error!("no worker is alive; reporting NOT_SERVING");
            report_not_serving(&watching).await;
        }
    });
    // Both reflection versions: grpcurl speaks v1, many tools (Python's grpcio-reflection,
    // older grpcurl, Postman) still ask v1alpha.
    let described = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection::v1::InStream(
        described()
            .build_v1()
            .map_err(|e| Error::invalid("reflection", e.to_string()))?,
    );
    let reflection_alpha = reflection::v1alpha::InStream(
        described()
            .build_v1alpha()
            .map_err(|e| Error::invalid("reflection", e.to_string()))?,
    );
    let stylizer = StylizerServer::new(service)
        .max_decoding_message_size(config.limits.max_message_bytes)
        .max_encoding_message_size(config.limits.max_message_bytes);

    // HTTP/2 pings find a client that vanished without closing its connection (a dead
    // host, a partition): the connection drops, and its job ends within an iteration.
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive.0))
        .http2_keepalive_timeout(Some(config.keepalive.1));
    if let Some(identity) = &config.tls {
        let identity = tonic::transport::Identity::from_pem(&identity.cert_pem, &identity.key_pem);
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(identity)
                    .timeout(handshake::HANDSHAKE_TIMEOUT),
            )
            .map_err(|e| Error::invalid("tls-cert/tls-key", tls_reason(&e)))?;
    }
    let (stop_transport, transport_stopped) = tokio::sync::oneshot::channel::<()>();
    let transport = builder
        .layer(tally::layer())
        .add_service(health_service)
        .add_service(InterceptedService::new(
            ServerReflectionServer::new(reflection),
            config.gate.clone(),
        ))
        .add_service(InterceptedService::new(
            ServerReflectionAlphaServer::new(reflection_alpha),
            config.gate.clone(),
        ))
        .add_service(InterceptedService::new(stylizer, config.gate.clone()))
        .serve_with_incoming_shutdown(
            handshake::gated(listener, config.tls.is_some(), handshake::HANDSHAKE_TIMEOUT),
            async {
                let _ = transport_stopped.await;
            },
        );
    let transport = tokio::spawn(transport);
    tracing::info!(listen = %bound, "serving");
    on_listening(bound);

    shutdown.await;
    tracing::info!(grace_s = config.grace_period.as_secs_f64(), "draining");
    report_not_serving(&health).await;
    scheduler.stop_accepting();
    // Shots waiting for their next frame end now (UNAVAILABLE, naming the frame to resume
    // from) rather than when the transport closes.
    let _ = drain.send(true);
    scheduler.hand_back_queued();
    let waiting = scheduler.clone();
    let grace = config.grace_period;
    let drained = tokio::task::spawn_blocking(move || waiting.wait_idle(grace))
        .await
        .unwrap_or(false);
    if !drained {
        tracing::warn!("grace period over; cancelling remaining work");
    }
    scheduler.cancel_all();
    let waiting = scheduler.clone();
    let _ = tokio::task::spawn_blocking(move || waiting.wait_idle(Duration::from_secs(10))).await;
    let _ = stop_transport.send(());
    match tokio::time::timeout(Duration::from_secs(5), transport).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "transport ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "transport task failed"),
        Err(_) => tracing::warn!("connections still open after drain; closing"),
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{outcome_of_code, request_id, status};
    use crate::error::Error;
    use crate::telemetry::metrics::outcome;

    #[test]
    fn a_failed_job_is_counted_under_the_outcome_of_the_status_it_answers() {
        let errors = [
            Error::invalid("options.size", "0"),
            Error::UnknownLayer("relu9_9".into()),
            Error::QueueFull(3),
            Error::NonFinite("loss".into()),
            Error::ShuttingDown,
            Error::JobTimeLimit(60),
            Error::Cancelled,
            Error::Panicked("boom".into()),
        ];
        let mut seen = Vec::new();
        for error in errors {
            let label = outcome::of_class(error.class());
            assert_eq!(outcome_of_code(status(error).code()), label);
            seen.push(label);
        }
        seen.dedup();
        assert_eq!(seen.len(), 7, "every class is covered: {seen:?}");
    }

    #[test]
    fn request_ids_cannot_forge_log_lines() {
        assert_eq!(request_id("shot-7/frame:3.v2"), "shot-7/frame:3.v2");
        let forged = request_id("a\n2026-12-01T00:00:00Z  INFO forged\x1b[31m");
        assert!(!forged.contains('\n') && !forged.contains('\x1b') && !forged.contains(' '));
        assert_eq!(request_id(&"x".repeat(1000)).len(), 128);
        assert!(request_id("").starts_with("req-"));
    }
}
