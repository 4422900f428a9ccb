//! Operations plumbing shared by every layer: metric names and the Prometheus exporter,
//! tracing setup, OpenTelemetry trace export and propagation, GPU gauges from NVML (`nvml`),
//! and the shutdown signal. Nothing here knows about styles or images.

#[cfg(feature = "nvml")]
pub mod gpu;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod traces;
