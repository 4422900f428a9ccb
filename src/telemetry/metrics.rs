//! Metric names (Prometheus conventions: base units, `_total` counters) and the exporter
//! with histogram buckets chosen per metric for second-to-minute jobs.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::cache::CacheStats;
use crate::error::{Error, Result};

pub const REQUESTS_TOTAL: &str = "stylize_requests_total";
pub const REQUEST_DURATION: &str = "stylize_request_duration_seconds";
pub const QUEUE_DEPTH: &str = "stylize_queue_depth";
pub const QUEUE_WAIT: &str = "stylize_queue_wait_seconds";
pub const IN_FLIGHT: &str = "stylize_in_flight_requests";
pub const ITERATIONS_TOTAL: &str = "stylize_iterations_total";
pub const ITERATION_DURATION: &str = "stylize_iteration_duration_seconds";
pub const PRECOMPUTE_DURATION: &str = "stylize_style_precompute_duration_seconds";
pub const CACHE_HITS_TOTAL: &str = "stylize_style_cache_hits_total";
pub const CACHE_MISSES_TOTAL: &str = "stylize_style_cache_misses_total";
pub const CACHE_EVICTIONS_TOTAL: &str = "stylize_style_cache_evictions_total";
pub const CACHE_BYTES: &str = "stylize_style_cache_bytes";
pub const CACHE_ENTRIES: &str = "stylize_style_cache_entries";
pub const MEMORY_BUDGET: &str = "stylize_memory_budget_bytes";
pub const MEMORY_RESERVED: &str = "stylize_memory_reserved_bytes";
pub const TILES_PER_JOB: &str = "stylize_tiles_per_job";
pub const REGISTRATIONS_TOTAL: &str = "stylize_register_style_total";
pub const REGISTRATION_DURATION: &str = "stylize_register_style_duration_seconds";
pub const JOB_STOPS_TOTAL: &str = "stylize_job_stops_total";
pub const CACHE_SHARED_TOTAL: &str = "stylize_style_cache_shared_total";
pub const STORE_ERRORS_TOTAL: &str = "stylize_registry_store_errors_total";
pub const STORE_DAMAGED_TOTAL: &str = "stylize_registry_damaged_entries_total";
pub const HANDSHAKE_TIMEOUTS_TOTAL: &str = "stylize_handshake_timeouts_total";
pub const FRAMES_TOTAL: &str = "stylize_sequence_frames_total";
pub const OPEN_SHOTS: &str = "stylize_open_shots";
pub const FRAME_DURATION: &str = "stylize_sequence_frame_duration_seconds";
pub const TEMPORAL_LOSS: &str = "stylize_sequence_temporal_loss";
pub const VIEW_LUTS_TOTAL: &str = "stylize_view_luts_total";
pub const BUILD_INFO: &str = "stylize_build_info";
/// GPU metrics (NVML, `nvml` feature, on a machine with the driver): not in [`ALL`], since a
/// CPU replica never exports them.
pub const GPU_MEMORY_USED: &str = "stylize_gpu_memory_used_bytes";
pub const GPU_MEMORY_TOTAL: &str = "stylize_gpu_memory_total_bytes";
pub const GPU_UTILIZATION: &str = "stylize_gpu_utilization_ratio";
pub const GPU: [&str; 3] = [GPU_MEMORY_USED, GPU_MEMORY_TOTAL, GPU_UTILIZATION];

/// Every metric the server exports (for tests and dashboards).
pub const ALL: [&str; 29] = [
    REQUESTS_TOTAL,
    REQUEST_DURATION,
    QUEUE_DEPTH,
    QUEUE_WAIT,
    IN_FLIGHT,
    ITERATIONS_TOTAL,
    ITERATION_DURATION,
    PRECOMPUTE_DURATION,
    CACHE_HITS_TOTAL,
    CACHE_MISSES_TOTAL,
    CACHE_EVICTIONS_TOTAL,
    CACHE_BYTES,
    CACHE_ENTRIES,
    MEMORY_BUDGET,
    MEMORY_RESERVED,
    TILES_PER_JOB,
    REGISTRATIONS_TOTAL,
    REGISTRATION_DURATION,
    CACHE_SHARED_TOTAL,
    STORE_ERRORS_TOTAL,
    STORE_DAMAGED_TOTAL,
    HANDSHAKE_TIMEOUTS_TOTAL,
    JOB_STOPS_TOTAL,
    FRAMES_TOTAL,
    OPEN_SHOTS,
    FRAME_DURATION,
    TEMPORAL_LOSS,
    VIEW_LUTS_TOTAL,
    BUILD_INFO,
];

/// Request outcomes, the `outcome` label of `stylize_requests_total`.
pub mod outcome {
    pub const OK: &str = "ok";
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
    pub const RESOURCE_EXHAUSTED: &str = "resource_exhausted";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const CANCELLED: &str = "cancelled";
    pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
    pub const INTERNAL: &str = "internal";
    /// The optimisation diverged because of the request's weights (`FAILED_PRECONDITION`).
    pub const DIVERGED: &str = "diverged";
    pub const UNAUTHENTICATED: &str = "unauthenticated";
    /// A method this server does not have.
    pub const UNIMPLEMENTED: &str = "unimplemented";
    /// A style name or key that is not registered (`GetStyle`).
    pub const NOT_FOUND: &str = "not_found";
    /// A style name pointing at another style, without `replace` (`RegisterStyle`).
    pub const ALREADY_EXISTS: &str = "already_exists";

    /// The outcome a job that failed with an error of this class is counted under.
    pub fn of_class(class: crate::error::Class) -> &'static str {
        use crate::error::Class;
        match class {
            Class::InvalidArgument => INVALID_ARGUMENT,
            Class::ResourceExhausted => RESOURCE_EXHAUSTED,
            Class::Diverged => DIVERGED,
            Class::Unavailable => UNAVAILABLE,
            Class::DeadlineExceeded => DEADLINE_EXCEEDED,
            Class::Cancelled => CANCELLED,
            Class::NotFound => NOT_FOUND,
            Class::AlreadyExists => ALREADY_EXISTS,
            Class::Internal => INTERNAL,
        }
    }
}

const JOB_SECONDS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
];
const WAIT_SECONDS: &[f64] = &[
    0.005, 0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const TILE_COUNTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const STEP_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Describes every metric and serves `/metrics` on `listen` (its own port).
pub fn install(listen: SocketAddr) -> Result<()> {
    let builder = PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), JOB_SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(QUEUE_WAIT.into()), WAIT_SECONDS))
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(ITERATION_DURATION.into()), STEP_SECONDS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(PRECOMPUTE_DURATION.into()), STEP_SECONDS)
        })
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TILES_PER_JOB.into()), TILE_COUNTS))
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(REGISTRATION_DURATION.into()), STEP_SECONDS)
        })
        .map_err(|e| Error::invalid("metrics", e.to_string()))?;
    builder
        .install()
        .map_err(|e| Error::invalid("metrics_listen", format!("{listen}: {e}")))?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS_TOTAL, "Stylize requests by outcome");
    describe_counter!(REGISTRATIONS_TOTAL, "RegisterStyle calls by outcome");
    describe_counter!(
        JOB_STOPS_TOTAL,
        "Completed jobs by what ended their optimisation (iterations, tolerance, time_budget)"
    );
    for reason in ["iterations", "tolerance", "time_budget"] {
        metrics::counter!(JOB_STOPS_TOTAL, "reason" => reason).increment(0);
    }
    describe_histogram!(
        REGISTRATION_DURATION,
        Unit::Seconds,
        "RegisterStyle, call to answer"
    );
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Admission to final event");
    describe_gauge!(QUEUE_DEPTH, "Jobs waiting for a worker");
    describe_histogram!(QUEUE_WAIT, Unit::Seconds, "Time a job waited for a worker");
    describe_gauge!(IN_FLIGHT, "Jobs being optimised now");
    describe_counter!(ITERATIONS_TOTAL, "Optimisation iterations run");
    describe_histogram!(
        ITERATION_DURATION,
        Unit::Seconds,
        "One optimisation iteration"
    );
    describe_histogram!(
        PRECOMPUTE_DURATION,
        Unit::Seconds,
        "Style target precompute per job"
    );
    describe_counter!(CACHE_HITS_TOTAL, "Style cache hits");
    describe_counter!(CACHE_MISSES_TOTAL, "Style cache misses");
    describe_counter!(CACHE_EVICTIONS_TOTAL, "Style cache evictions");
    describe_counter!(
        CACHE_SHARED_TOTAL,
        "Style cache misses served from the shared registry store"
    );
    describe_counter!(
        STORE_ERRORS_TOTAL,
        "Failed commands against the shared registry store, by op"
    );
    describe_counter!(
        HANDSHAKE_TIMEOUTS_TOTAL,
        "Connections closed because they did not start their handshake in time"
    );
    describe_counter!(
        STORE_DAMAGED_TOTAL,
        "Shared registry entries that failed their check (foreign, damaged, unsealed) and were deleted, by kind"
    );
    describe_gauge!(CACHE_BYTES, Unit::Bytes, "Bytes held by the style cache");
    describe_gauge!(CACHE_ENTRIES, "Styles held by the style cache");
    describe_gauge!(
        MEMORY_BUDGET,
        Unit::Bytes,
        "Memory the process may use (flag, cgroup limit or physical, less a reserve)"
    );
    describe_gauge!(
        MEMORY_RESERVED,
        Unit::Bytes,
        "Estimated peak memory reserved by running jobs and style registrations"
    );
    describe_histogram!(
        TILES_PER_JOB,
        "Tiles each job's largest frame is cut into (1: whole)"
    );
    describe_counter!(FRAMES_TOTAL, "Sequence frames delivered");
    describe_gauge!(
        OPEN_SHOTS,
        "StylizeSequence streams open now (at most --max-open-shots)"
    );
    describe_histogram!(
        FRAME_DURATION,
        Unit::Seconds,
        "A sequence frame's time from its message to its result"
    );
    describe_histogram!(
        TEMPORAL_LOSS,
        "Each later sequence frame's temporal term, as delivered (mean squared input-space difference on held pixels)"
    );
    describe_counter!(
        VIEW_LUTS_TOTAL,
        "Studio views (LUT pairs) requests sent, by whether the server had them parsed already (found: cached, parsed)"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1: the build (version, commit) and where it optimises (engine, device), as labels"
    );
    describe_gauge!(
        GPU_MEMORY_USED,
        Unit::Bytes,
        "GPU memory in use (NVML), per GPU; absent without NVML"
    );
    describe_gauge!(
        GPU_MEMORY_TOTAL,
        Unit::Bytes,
        "GPU memory installed (NVML), per GPU; absent without NVML"
    );
    describe_gauge!(
        GPU_UTILIZATION,
        "Share of the last sample period a kernel ran (NVML), 0-1, per GPU; absent without NVML"
    );
    for found in ["cached", "parsed"] {
        metrics::counter!(VIEW_LUTS_TOTAL, "found" => found).increment(0);
    }
    // Zero-valued series exist from the start, so dashboards and alerts see them.
    for outcome in [
        outcome::OK,
        outcome::INVALID_ARGUMENT,
        outcome::RESOURCE_EXHAUSTED,
        outcome::UNAVAILABLE,
        outcome::CANCELLED,
        outcome::DEADLINE_EXCEEDED,
        outcome::INTERNAL,
        outcome::DIVERGED,
        outcome::UNAUTHENTICATED,
        outcome::UNIMPLEMENTED,
        outcome::NOT_FOUND,
        outcome::ALREADY_EXISTS,
    ] {
        metrics::counter!(REQUESTS_TOTAL, "outcome" => outcome).increment(0);
        metrics::counter!(REGISTRATIONS_TOTAL, "outcome" => outcome).increment(0);
    }
    // Registered now (no sample yet) so the series exists before the first registration.
    let _ = metrics::histogram!(REGISTRATION_DURATION);
    metrics::gauge!(QUEUE_DEPTH).set(0.0);
    metrics::gauge!(IN_FLIGHT).set(0.0);
    metrics::gauge!(MEMORY_RESERVED).set(0.0);
    metrics::counter!(ITERATIONS_TOTAL).increment(0);
    metrics::counter!(FRAMES_TOTAL).increment(0);
    metrics::gauge!(OPEN_SHOTS).set(0.0);
    let _ = metrics::histogram!(FRAME_DURATION);
    let _ = metrics::histogram!(TEMPORAL_LOSS);
    metrics::counter!(HANDSHAKE_TIMEOUTS_TOTAL).increment(0);
}

/// Counts a completed job under what ended its optimisation.
pub fn count_stop(reason: &'static str) {
    metrics::counter!(JOB_STOPS_TOTAL, "reason" => reason).increment(1);
}

pub fn count_request(outcome: &'static str) {
    metrics::counter!(REQUESTS_TOTAL, "outcome" => outcome).increment(1);
}

/// Counts one RegisterStyle call's outcome and how long it took.
pub fn count_registration(outcome: &'static str, seconds: f64) {
    metrics::counter!(REGISTRATIONS_TOTAL, "outcome" => outcome).increment(1);
    metrics::histogram!(REGISTRATION_DURATION).record(seconds);
}

/// Records one delivered sequence frame.
pub fn count_frame(seconds: f64, temporal: Option<f64>) {
    metrics::counter!(FRAMES_TOTAL).increment(1);
    metrics::histogram!(FRAME_DURATION).record(seconds);
    if let Some(temporal) = temporal {
        metrics::histogram!(TEMPORAL_LOSS).record(temporal);
    }
}

/// Sets `stylize_build_info{version,commit,engine,device}` to 1.
pub fn publish_build_info(version: &str, commit: &str, engine: &str, device: &str) {
    metrics::gauge!(
        BUILD_INFO,
        "version" => version.to_string(),
        "commit" => commit.to_string(),
        "engine" => engine.to_string(),
        "device" => device.to_string()
    )
    .set(1.0);
}

/// Mirrors the style cache's counters into the exporter.
pub fn publish_cache(stats: &CacheStats) {
    metrics::counter!(CACHE_HITS_TOTAL).absolute(stats.hits + stats.joined);
    metrics::counter!(CACHE_MISSES_TOTAL).absolute(stats.misses);
    metrics::counter!(CACHE_EVICTIONS_TOTAL).absolute(stats.evictions);
    metrics::counter!(CACHE_SHARED_TOTAL).absolute(stats.shared);
    metrics::gauge!(CACHE_BYTES).set(stats.bytes as f64);
    metrics::gauge!(CACHE_ENTRIES).set(stats.entries as f64);
}
