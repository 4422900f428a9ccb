//! The scheduler: a bounded queue in front of a fixed set of worker threads. Admission is
//! immediate (a full queue or a draining server is an error at once); each worker runs one
//! job at a time through `render`, checking for cancellation (client gone, shutdown) and the
//! job's deadline on every iteration. It knows nothing about gRPC.

pub mod job;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use job::{JobEvent, JobOutput, JobSpec, Timings};

use crate::cache::StyleCache;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::features::FeatureExtractor;
use crate::telemetry::metrics as names;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Worker threads (one per device by default; the CPU counts as one device).
    pub workers: usize,
    /// Jobs that may wait for a worker; one more is refused.
    pub max_queue: usize,
}

/// What a worker needs to run jobs.
pub struct Backends {
    pub engine: Arc<dyn Engine>,
    pub features: Arc<dyn FeatureExtractor>,
    pub cache: Arc<StyleCache>,
}

struct QueuedJob {
    spec: JobSpec,
    events: mpsc::UnboundedSender<JobEvent>,
    cancel: Arc<AtomicBool>,
    queued_at: Instant,
    span: tracing::Span,
}

impl QueuedJob {
    /// The client went away or shutdown cancelled the job.
    fn abandoned(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<QueuedJob>,
    running: Vec<Arc<AtomicBool>>,
    accepting: bool,
    stopped: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued, a job ends, or the scheduler stops.
    changed: Condvar,
    config: SchedulerConfig,
    backends: Backends,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A worker that panicked mid-update leaves consistent data (plain pushes/pops).
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle to a submitted job: its events, and cancellation when dropped early.
pub struct Submitted {
    pub events: mpsc::UnboundedReceiver<JobEvent>,
    pub cancel: Arc<AtomicBool>,
}

#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// Starts `config.workers` worker threads.
    pub fn start(config: SchedulerConfig, backends: Backends) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                accepting: true,
                ..Default::default()
            }),
            changed: Condvar::new(),
            config,
            backends,
        });
        for index in 0..shared.config.workers.max(1) {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("stylize-worker-{index}"))
                .spawn(move || worker::run(index, &shared))
                .expect("spawn worker thread");
        }
        Self { shared }
    }

    pub fn backends(&self) -> &Backends {
        &self.shared.backends
    }

    /// Whether a job submitted now would be queued: the cheap check a request makes before
    /// decoding its images, so overload is refused without spending CPU on it. `submit`
    /// decides for good.
    pub fn admits(&self) -> Result<()> {
        self.room_in(&self.shared.lock())
    }

    /// `ShuttingDown` or `QueueFull` when `queue` takes no more jobs.
    fn room_in(&self, queue: &Queue) -> Result<()> {
        if !queue.accepting {
            return Err(Error::ShuttingDown);
        }
        if queue.jobs.len() >= self.shared.config.max_queue {
            return Err(Error::QueueFull(queue.jobs.len()));
        }
        Ok(())
    }

    /// Queues a job, or refuses it at once: `QueueFull` or `ShuttingDown`.
    pub fn submit(&self, spec: JobSpec, span: tracing::Span) -> Result<Submitted> {
        let (events, receiver) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let mut queue = self.shared.lock();
        self.room_in(&queue)?;
        let position = queue.jobs.len();
        let _ = events.send(JobEvent::Queued { position });
        queue.jobs.push_back(QueuedJob {
            spec,
            events,
            cancel: cancel.clone(),
            queued_at: Instant::now(),
            span,
        });
        metrics::gauge!(names::QUEUE_DEPTH).set(queue.jobs.len() as f64);
        drop(queue);
        self.shared.changed.notify_all();
        Ok(Submitted {
            events: receiver,
            cancel,
        })
    }

    pub fn queue_depth(&self) -> usize {
        self.shared.lock().jobs.len()
    }

    pub fn in_flight(&self) -> usize {
        self.shared.lock().running.len()
    }

    /// Refuses new jobs from now on; queued and running jobs go on.
    pub fn stop_accepting(&self) {
        self.shared.lock().accepting = false;
    }

    /// Blocks until no job is queued or running, or `timeout` passes; true when idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut queue = self.shared.lock();
        loop {
            if queue.jobs.is_empty() && queue.running.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            queue = self
                .shared
                .changed
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Cancels every queued and running job (each ends within one iteration) and stops
    /// the workers once they are idle.
    pub fn cancel_all(&self) {
        let mut queue = self.shared.lock();
        queue.accepting = false;
        queue.stopped = true;
        for job in queue.jobs.drain(..) {
            let _ = job.events.send(JobEvent::Failed(Error::ShuttingDown));
            names::count_request(names::outcome::UNAVAILABLE);
        }
        for flag in &queue.running {
            flag.store(true, Ordering::Relaxed);
        }
        metrics::gauge!(names::QUEUE_DEPTH).set(0.0);
        drop(queue);
        self.shared.changed.notify_all();
    }
}
