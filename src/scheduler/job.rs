//! What the scheduler accepts and what it reports back, in core types (no transport).

use std::time::{Duration, Instant};

use crate::cache::Lookup;
use crate::engine::{LossBreakdown, Progress};
use crate::error::Error;
use crate::image_io::Encoding;
use crate::render::{MemoryPlan, RenderRequest};

/// A validated request ready to queue.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub request_id: String,
    pub request: RenderRequest,
    pub output: Encoding,
    /// A progress event every N iterations (at least 1).
    pub progress_every: usize,
    /// When the client's deadline expires.
    pub deadline: Option<Instant>,
    /// The largest result message the transport sends (`None`: no limit): a larger
    /// finished image fails `ResultTooLarge` instead of reaching the client as a transport
    /// error no one counted.
    pub max_result_bytes: Option<usize>,
    /// A sequence frame's temporal term (`None` for stills).
    pub temporal: Option<crate::engine::temporal::TemporalTarget>,
    /// Whether the job's end counts in `stylize_requests_total` (a still is one request);
    /// a shot's frames do not: their stream counts once, under its final status.
    pub counts_as_request: bool,
    /// What the content carries past the stylisation (alpha, kept passes), put back into
    /// the encoded result.
    pub passthrough: Option<crate::passthrough::Passthrough>,
    /// A studio's view the content was read through; an OpenEXR result returns through its
    /// inverse (`None`: the built-in view `output` names).
    pub view: Option<crate::colour::View>,
}

impl JobSpec {
    /// Counts the job's end under `outcome`, when it is a request of its own.
    pub(crate) fn count(&self, outcome: &'static str) {
        if self.counts_as_request {
            crate::telemetry::metrics::count_request(outcome);
        }
    }
}

/// What a result message carries besides the image (losses, timings, cache lookups),
/// generously.
pub const RESULT_OVERHEAD_BYTES: usize = 4096;

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    pub queue_wait: Duration,
    pub precompute: Duration,
    pub optimise: Duration,
    pub encode: Duration,
}

/// The finished job.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub image: Vec<u8>,
    pub encoding: Encoding,
    pub width: u32,
    pub height: u32,
    pub losses: LossBreakdown,
    pub iterations: usize,
    pub stopped: crate::engine::StopReason,
    /// The loss of the delivered 8-bit image.
    pub delivered: LossBreakdown,
    pub timings: Timings,
    pub style_cache: Vec<Lookup>,
    /// The delivered pixels (what `image` encodes), for a sequence's next frame.
    pub pixels: image::RgbImage,
}

/// Events of one job, in order: `Queued`, `Started`, `Progress`/`Preview`..., then exactly
/// one of `Finished` or `Failed`.
#[derive(Debug)]
pub enum JobEvent {
    Queued {
        position: usize,
    },
    Started {
        worker: String,
        device: String,
        /// How the job fits in memory.
        plan: MemoryPlan,
    },
    Progress {
        progress: Progress,
        eta: Duration,
    },
    Preview {
        iteration: usize,
        image: Vec<u8>,
        encoding: Encoding,
    },
    Finished(Box<JobOutput>),
    Failed(Error),
}
