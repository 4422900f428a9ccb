//! What a replica says about itself: the `ServerInfo` answer (build, engine, device, memory
//! budget, limits, presets, registry) and the `stylize_build_info` gauge dashboards join on.

use crate::render::preset::Quality;

use super::proto;
use super::{Limits, ServerConfig};
use crate::backends::Backends;

/// The release this binary is.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit it was built from (build.rs: `STYLIZE_GIT_COMMIT`, else git's HEAD).
pub const COMMIT: &str = env!("STYLIZE_GIT_COMMIT");

/// The answer to `ServerInfo` for a server started with `config` on `backends`.
pub fn describe(config: &ServerConfig, backends: &Backends) -> proto::ServerInfoResponse {
    proto::ServerInfoResponse {
        version: VERSION.into(),
        commit: COMMIT.into(),
        engine: backends.engine.name(),
        precompute: backends.features.name(),
        device: backends.device.clone(),
        memory_budget_bytes: config.scheduler.memory_budget.unwrap_or(0),
        limits: Some(limits(config)),
        presets: Quality::ALL.into_iter().map(preset).collect(),
        registry: if config.shared_store.is_some() {
            "redis"
        } else {
            "local"
        }
        .into(),
        workers: saturate(config.scheduler.workers),
        max_queue: saturate(config.scheduler.max_queue),
    }
}

fn limits(config: &ServerConfig) -> proto::JobLimits {
    let Limits {
        max_pixels,
        max_iterations,
        max_styles,
        max_message_bytes,
    } = config.limits;
    proto::JobLimits {
        max_pixels,
        max_iterations: saturate(max_iterations),
        max_styles: saturate(max_styles),
        max_message_bytes: max_message_bytes as u64,
        max_job_seconds: config
            .scheduler
            .max_job
            .map_or(0.0, |limit| limit.as_secs_f64()),
        max_open_shots: saturate(config.shots.max_open),
    }
}

/// A preset's parameters, its scales at the sizes where they change.
fn preset(quality: Quality) -> proto::QualityPreset {
    let mid = quality.preset(256);
    proto::QualityPreset {
        quality: match quality {
            Quality::Draft => proto::Quality::Draft,
            Quality::Standard => proto::Quality::Standard,
            Quality::Final => proto::Quality::Final,
        } as i32,
        name: quality.name().into(),
        scales: saturate(mid.scales),
        scales_below_128: saturate(quality.preset(127).scales),
        scales_from_1024: saturate(quality.preset(1024).scales),
        iterations: saturate(mid.iterations),
        tolerance: mid.tolerance,
        max_history: saturate(mid.max_history),
    }
}

fn saturate(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
