//! `stylize serve`: the gRPC server, every setting a flag with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use stylize::cache::StyleCache;
use stylize::registry::SharedStore;
use stylize::registry::shared::Secret;
use stylize::scheduler::SchedulerConfig;

use super::args::{byte_count, memory_budget};
use stylize::server::auth::TokenGate;
use stylize::server::{self, Limits, ServerConfig, TlsIdentity};
use stylize::telemetry::shutdown;

use super::args::{BackendArgs, read_flag_file, read_flag_text};

#[derive(Args)]
pub struct ServeArgs {
    /// gRPC listen address (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "STYLIZE_LISTEN", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Prometheus `/metrics` listen address (its own port).
    #[arg(long, env = "STYLIZE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Disable the metrics listener.
    #[arg(long, env = "STYLIZE_NO_METRICS")]
    no_metrics: bool,
    /// Worker threads (one per device; the CPU is one device).
    #[arg(long, env = "STYLIZE_WORKERS", default_value_t = 1)]
    workers: usize,
    /// Jobs that may wait for a worker before RESOURCE_EXHAUSTED.
    #[arg(long, env = "STYLIZE_MAX_QUEUE", default_value_t = 16)]
    max_queue: usize,
    /// Largest image (decoded) and output, in pixels.
    #[arg(long, env = "STYLIZE_MAX_PIXELS", default_value_t = 2048 * 2048)]
    max_pixels: u64,
    /// Largest iterations x scales per request.
    #[arg(long, env = "STYLIZE_MAX_ITERATIONS", default_value_t = 10_000)]
    max_iterations: usize,
    /// Most styles per request.
    #[arg(long, env = "STYLIZE_MAX_STYLES", default_value_t = 8)]
    max_styles: usize,
    /// Largest request or response message (tonic's default is 4 MiB).
    #[arg(long, env = "STYLIZE_MAX_MESSAGE_BYTES", default_value = "64MiB", value_parser = byte_count)]
    max_message_bytes: usize,
    /// Byte budget of the style-target cache.
    #[arg(long, env = "STYLIZE_CACHE_BYTES", default_value = "512MiB", value_parser = byte_count)]
    cache_bytes: usize,
    /// Byte budget for decoded images of registered styles.
    #[arg(long, env = "STYLIZE_REGISTRY_BYTES", default_value = "256MiB", value_parser = byte_count)]
    registry_bytes: usize,
    /// A Redis every replica shares (`redis://[user:password@]host:port[/db]`, `rediss://`
    /// for TLS): registered styles and computed style targets live there, so any replica
    /// resolves any key and restarts lose nothing. Default: this process only.
    #[arg(long, env = "STYLIZE_REGISTRY")]
    registry: Option<String>,
    /// Seconds a shared entry lives after its last use.
    #[arg(long, env = "STYLIZE_REGISTRY_TTL_SECONDS", default_value_t = stylize::registry::shared::DEFAULT_TTL.as_secs())]
    registry_ttl_seconds: u64,
    /// File holding a secret (16 bytes or more) every replica shares: computed style
    /// targets are sealed with it in the --registry, so a writer without it cannot plant
    /// targets. Without it only registered styles are shared (their keys authenticate them),
    /// and each replica computes its own targets.
    #[arg(long, env = "STYLIZE_REGISTRY_SECRET_FILE", requires = "registry")]
    registry_secret_file: Option<PathBuf>,
    /// Seconds between HTTP/2 pings on each connection: a client that vanished without
    /// closing it (dead host, partition) is found, and its job stops within an iteration.
    #[arg(long, env = "STYLIZE_KEEPALIVE_SECONDS", default_value_t = stylize::server::KEEPALIVE_INTERVAL.as_secs_f64())]
    keepalive_seconds: f64,
    /// Seconds a ping may go unanswered before the connection is dropped.
    #[arg(long, env = "STYLIZE_KEEPALIVE_TIMEOUT_SECONDS", default_value_t = stylize::server::KEEPALIVE_TIMEOUT.as_secs_f64())]
    keepalive_timeout_seconds: f64,
    /// Seconds in-flight work may take to finish after SIGTERM before it is handed back.
    #[arg(long, env = "STYLIZE_GRACE_PERIOD_SECONDS", default_value_t = 60.0)]
    grace_period_seconds: f64,
    /// The longest a job may run once started, in seconds (0: no limit); past it the job ends
    /// DEADLINE_EXCEEDED naming this limit. A backstop for clients that set no deadline.
    #[arg(long, env = "STYLIZE_MAX_JOB_SECONDS", default_value_t = 14400.0)]
    max_job_seconds: f64,
    /// PEM certificate chain for TLS on the gRPC port (with --tls-key); plaintext without.
    #[arg(long, env = "STYLIZE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "STYLIZE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File holding a bearer token every stylize and reflection call must carry
    /// (`authorization: Bearer <token>`); health stays open for probes.
    #[arg(long, env = "STYLIZE_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// Shots (StylizeSequence streams) that may be open at once; one more is refused
    /// RESOURCE_EXHAUSTED. An open shot holds a place only while a frame is being worked on.
    #[arg(long, env = "STYLIZE_MAX_OPEN_SHOTS", default_value_t = stylize::server::sequence::ShotLimits::default().max_open)]
    max_open_shots: usize,
    /// Seconds a shot may wait for its next frame; then it ends DEADLINE_EXCEEDED naming
    /// this flag, and the frames after it go in a new shot.
    #[arg(long, env = "STYLIZE_SEQUENCE_IDLE_SECONDS", default_value_t = stylize::server::sequence::ShotLimits::default().idle.as_secs_f64())]
    sequence_idle_seconds: f64,
    /// Memory this process may use, e.g. `6GiB` (default: the cgroup's limit, else physical
    /// memory, less 512 MiB). Jobs are tiled to fit it, wait for running jobs' memory, or are
    /// refused with RESOURCE_EXHAUSTED when they can never fit.
    #[arg(long, env = "STYLIZE_MEMORY_BUDGET", value_parser = byte_count)]
    memory_budget: Option<usize>,
    /// Export traces over OTLP/gRPC to this collector (`http://host:4317`): a span per
    /// request (continuing the caller's W3C `traceparent`), its admission, queue wait, style
    /// precompute, each scale's optimisation, each shot frame, encoding and registry calls.
    /// Default: no traces, at no cost.
    #[arg(long, env = "STYLIZE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The service name the exported spans carry.
    #[arg(long, env = "STYLIZE_OTLP_SERVICE_NAME", default_value = stylize::telemetry::traces::DEFAULT_SERVICE_NAME, requires = "otlp_endpoint")]
    otlp_service_name: String,
    #[command(flatten)]
    backend: BackendArgs,
}

impl ServeArgs {
    /// Where traces go, if anywhere.
    pub fn otlp(&self) -> Option<stylize::telemetry::traces::OtlpConfig> {
        self.otlp_endpoint
            .as_ref()
            .map(|endpoint| stylize::telemetry::traces::OtlpConfig {
                endpoint: endpoint.clone(),
                service_name: self.otlp_service_name.clone(),
            })
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    if args.max_queue == 0 || args.workers == 0 || args.max_open_shots == 0 {
        anyhow::bail!("--max-queue, --workers and --max-open-shots must be at least 1");
    }
    if !(args.sequence_idle_seconds.is_finite()
        && (0.1..=86_400.0).contains(&args.sequence_idle_seconds))
    {
        anyhow::bail!("--sequence-idle-seconds must be a number of seconds from 0.1 to 86400");
    }
    if !(args.max_job_seconds.is_finite() && args.max_job_seconds >= 0.0) {
        anyhow::bail!("--max-job-seconds must be a number >= 0 (0: no limit)");
    }
    if !(args.grace_period_seconds.is_finite() && args.grace_period_seconds >= 0.0) {
        anyhow::bail!("--grace-period-seconds must be a number >= 0");
    }
    for (flag, seconds) in [
        ("--keepalive-seconds", args.keepalive_seconds),
        (
            "--keepalive-timeout-seconds",
            args.keepalive_timeout_seconds,
        ),
    ] {
        if !(seconds.is_finite() && (0.1..=86_400.0).contains(&seconds)) {
            anyhow::bail!("{flag} must be a number of seconds from 0.1 to 86400");
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity {
            cert_pem: read_flag_file("tls-cert", cert)?,
            key_pem: read_flag_file("tls-key", key)?,
        }),
        _ => None,
    };
    let gate = match &args.auth_token_file {
        Some(path) => {
            let token = read_flag_text("auth-token-file", path)?;
            TokenGate::bearer(&token, "auth-token-file")?
        }
        None => TokenGate::open(),
    };
    let shared_store = match &args.registry {
        Some(url) => {
            let secret = match &args.registry_secret_file {
                Some(path) => Some(
                    Secret::new(&read_flag_file("registry-secret-file", path)?)
                        .map_err(|e| anyhow::anyhow!("--registry-secret-file: {e}"))?,
                ),
                None => None,
            };
            Some(Arc::new(shared_store(
                url,
                args.registry_ttl_seconds,
                args.max_message_bytes,
                secret,
            )?))
        }
        None => None,
    };
    let budget = memory_budget(args.memory_budget)?;
    // The style cache and the registry hold up to their byte limits beside the jobs.
    let held = (args.cache_bytes + args.registry_bytes) as u64;
    let for_jobs = budget.bytes.saturating_sub(held);
    tracing::info!(
        budget_mib = budget.bytes >> 20,
        source = budget.source.name(),
        caches_mib = held >> 20,
        "memory budget"
    );
    let backends = args.backend.build()?;
    let config = ServerConfig {
        listen: args.listen,
        metrics_listen: (!args.no_metrics).then_some(args.metrics_listen),
        scheduler: SchedulerConfig {
            workers: args.workers,
            max_queue: args.max_queue,
            max_job: (args.max_job_seconds > 0.0)
                .then(|| Duration::from_secs_f64(args.max_job_seconds)),
            memory_budget: Some(for_jobs),
        },
        limits: Limits {
            max_pixels: args.max_pixels,
            max_iterations: args.max_iterations,
            max_styles: args.max_styles,
            max_message_bytes: args.max_message_bytes,
        },
        registry_bytes: args.registry_bytes,
        shared_store: shared_store.clone(),
        grace_period: Duration::from_secs_f64(args.grace_period_seconds),
        keepalive: (
            Duration::from_secs_f64(args.keepalive_seconds),
            Duration::from_secs_f64(args.keepalive_timeout_seconds),
        ),
        tls,
        gate,
        shots: stylize::server::sequence::ShotLimits {
            max_open: args.max_open_shots,
            idle: Duration::from_secs_f64(args.sequence_idle_seconds),
        },
    };
    let cache = Arc::new(match shared_store {
        Some(store) => StyleCache::with_shared(args.cache_bytes, store),
        None => StyleCache::new(args.cache_bytes),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(server::serve(
        config,
        backends,
        cache,
        shutdown::signal(),
        |bound| {
            println!("listening on {bound}");
        },
    ))?;
    Ok(())
}

/// The shared registry at `url`, checked once: a store that does not answer yet is logged,
/// not fatal (requests that need it answer UNAVAILABLE until it does).
fn shared_store(
    url: &str,
    ttl_seconds: u64,
    max_entry_bytes: usize,
    secret: Option<Secret>,
) -> Result<SharedStore> {
    let store = SharedStore::open(
        url,
        Duration::from_secs(ttl_seconds),
        max_entry_bytes,
        secret,
    )
    .map_err(|e| anyhow::anyhow!("--registry / --registry-ttl-seconds: {e}"))?;
    if !store.shares_targets() {
        tracing::warn!(
            "no --registry-secret-file: style targets are computed on each replica, not shared"
        );
    }
    match store.ping() {
        Ok(()) => tracing::info!(
            store = store.address(),
            ttl_s = ttl_seconds,
            shares_targets = store.shares_targets(),
            "shared registry"
        ),
        Err(e) => tracing::warn!(error = %e, "shared registry not answering yet"),
    }
    Ok(store)
}
