//! Operations plumbing shared by every layer: metric names and the Prometheus exporter,
//! tracing setup, and the shutdown signal. Nothing here knows about styles or images.

pub mod logging;
pub mod metrics;
pub mod shutdown;
