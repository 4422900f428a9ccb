//! The scheduler: a bounded queue in front of a fixed set of worker threads, and the memory
//! they share. Admission is immediate: a full queue, a draining server, or a job that can
//! never fit the memory budget is an error at once. Each admitted job carries a memory plan
//! (tiling, L-BFGS history, estimated peak); a worker starts the oldest job only when its
//! estimate fits beside the jobs already running, so the budget is never oversubscribed.
//! Each worker runs one job at a time through `render`, checking for cancellation (client
//! gone, shutdown) and the job's deadline on every iteration. It knows nothing about gRPC.

pub mod events;
pub mod job;
mod registration;
mod test_hooks;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use events::{EventReceiver, EventSender};
pub use job::{JobEvent, JobOutput, JobSpec, Timings};

use crate::backends::Backends;
use crate::cache::StyleCache;
use crate::error::{Error, Result};
use crate::render::{MemoryPlan, RenderRequest, plan_memory};
use crate::telemetry::metrics as names;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Worker threads (one per device by default; the CPU counts as one device).
    pub workers: usize,
    /// Jobs that may wait for a worker; one more is refused.
    pub max_queue: usize,
    /// The longest a job may run once started (`None`: no limit); past it the job ends
    /// `DEADLINE_EXCEEDED` naming the limit.
    pub max_job: Option<Duration>,
    /// Bytes the whole process may use (`memory::Budget`); `None`: no memory admission.
    pub memory_budget: Option<u64>,
}

struct QueuedJob {
    spec: JobSpec,
    plan: MemoryPlan,
    events: EventSender,
    cancel: Arc<AtomicBool>,
    queued_at: Instant,
    span: tracing::Span,
    /// A trace's "queue wait": open from queueing until a worker takes the job.
    waiting: tracing::Span,
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
    /// Bytes reserved by running jobs and style registrations.
    reserved: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued, a job ends, memory is released, or the scheduler
    /// stops.
    changed: Condvar,
    config: SchedulerConfig,
    backends: Backends,
    /// The style targets every job reads, shared by all workers.
    cache: Arc<StyleCache>,
    /// Bytes jobs may reserve together: the budget less what the process holds anyway.
    job_capacity: Option<u64>,
    /// Worker threads running (a thread that ended for any reason is not).
    alive: AtomicUsize,
}

/// Counts a worker thread out when it ends, unwinding included (it is counted in before it
/// is spawned, so a scheduler never looks workerless while its threads start).
struct Alive<'a>(&'a AtomicUsize);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Queue {
    /// Jobs whose client left, or whose deadline passed, give their places up now rather
    /// than when a worker reaches them: they end (`CANCELLED`, `DEADLINE_EXCEEDED`), and the
    /// depth gauge and admission count only jobs someone waits for.
    fn drop_departed(&mut self) {
        let before = self.jobs.len();
        self.jobs.retain(|job| {
            let gone = if job.spec.deadline.is_some_and(|d| Instant::now() >= d) {
                Error::DeadlineExceeded("while queued".into())
            } else if job.abandoned() {
                Error::Cancelled
            } else {
                return true;
            };
            job.spec.count(worker::outcome_of(&gone));
            job.events.send(JobEvent::Failed(gone));
            false
        });
        if self.jobs.len() != before {
            metrics::gauge!(names::QUEUE_DEPTH).set(self.jobs.len() as f64);
        }
    }

    /// Fails every queued job `UNAVAILABLE` (not started: retry elsewhere).
    fn hand_back_queued(&mut self) {
        for job in self.jobs.drain(..) {
            job.events
                .send(JobEvent::Failed(Error::HandedBack(worker::NOT_STARTED)));
            job.spec.count(names::outcome::UNAVAILABLE);
        }
        metrics::gauge!(names::QUEUE_DEPTH).set(0.0);
    }

    /// Counts the work `flag` cancels among the running (jobs and style registrations).
    fn start_running(&mut self, flag: Arc<AtomicBool>) {
        self.running.push(flag);
        metrics::gauge!(names::IN_FLIGHT).set(self.running.len() as f64);
    }

    fn end_running(&mut self, flag: &Arc<AtomicBool>) {
        self.running.retain(|running| !Arc::ptr_eq(running, flag));
        metrics::gauge!(names::IN_FLIGHT).set(self.running.len() as f64);
    }

    fn reserve(&mut self, bytes: u64) {
        self.reserved += bytes;
        metrics::gauge!(names::MEMORY_RESERVED).set(self.reserved as f64);
    }

    fn release(&mut self, bytes: u64) {
        self.reserved = self.reserved.saturating_sub(bytes);
        metrics::gauge!(names::MEMORY_RESERVED).set(self.reserved as f64);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A worker that panicked mid-update leaves consistent data (plain pushes/pops).
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `bytes` more fit beside what `queue` has reserved.
    fn fits(&self, queue: &Queue, bytes: u64) -> bool {
        self.job_capacity
            .is_none_or(|capacity| queue.reserved + bytes <= capacity)
    }

    fn release(&self, bytes: u64) {
        self.lock().release(bytes);
        self.changed.notify_all();
    }
}

/// A handle to a submitted job: its events, and cancellation when dropped early.
pub struct Submitted {
    pub events: EventReceiver,
    pub cancel: Arc<AtomicBool>,
    pub plan: MemoryPlan,
}

/// Memory held outside the queue (a style registration); released when dropped.
pub struct Reservation {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.release(self.bytes);
    }
}

/// How often the sweeper looks for departed jobs.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// Drops departed jobs from the queue until the scheduler stops.
fn sweep(shared: &Shared) {
    let mut queue = shared.lock();
    while !queue.stopped {
        queue.drop_departed();
        queue = shared
            .changed
            .wait_timeout(queue, SWEEP_EVERY)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// Starts `config.workers` worker threads, running jobs on `backends` with the targets
    /// in `cache`.
    pub fn start(config: SchedulerConfig, backends: Backends, cache: Arc<StyleCache>) -> Self {
        let resident = backends.engine.footprint().resident;
        let job_capacity = config
            .memory_budget
            .map(|budget| budget.saturating_sub(resident));
        if let Some(budget) = config.memory_budget {
            metrics::gauge!(names::MEMORY_BUDGET).set(budget as f64);
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                accepting: true,
                ..Default::default()
            }),
            changed: Condvar::new(),
            config,
            backends,
            cache,
            job_capacity,
            alive: AtomicUsize::new(0),
        });
        // While every worker is busy, departed jobs still leave the queue within a sweep.
        let sweeping = shared.clone();
        std::thread::Builder::new()
            .name("stylize-queue-sweep".into())
            .spawn(move || sweep(&sweeping))
            .expect("spawn queue sweeper thread");
        for index in 0..shared.config.workers.max(1) {
            let shared = shared.clone();
            shared.alive.fetch_add(1, Ordering::SeqCst);
            std::thread::Builder::new()
                .name(format!("stylize-worker-{index}"))
                .spawn(move || {
                    let _alive = Alive(&shared.alive);
                    worker::run(index, &shared)
                })
                .expect("spawn worker thread");
        }
        Self { shared }
    }

    /// Worker threads running now.
    pub fn workers_alive(&self) -> usize {
        self.shared.alive.load(Ordering::SeqCst)
    }

    pub fn backends(&self) -> &Backends {
        &self.shared.backends
    }

    /// Whether a job submitted now would be queued: the cheap check a request makes before
    /// decoding its images, so overload is refused without spending CPU on it. `submit`
    /// decides for good.
    pub fn admits(&self) -> Result<()> {
        self.room_in(&mut self.shared.lock())
    }

    /// `ShuttingDown` once the server drains; work outside the queue (a style
    /// registration) asks only this.
    pub fn accepting(&self) -> Result<()> {
        if self.shared.lock().accepting {
            Ok(())
        } else {
            Err(Error::ShuttingDown)
        }
    }

    /// `ShuttingDown` or `QueueFull` when `queue` takes no more jobs (departed jobs leave
    /// it first). Jobs an idle worker is about to take do not count as waiting: requests
    /// that arrive together are not refused before the workers wake.
    fn room_in(&self, queue: &mut Queue) -> Result<()> {
        if !queue.accepting {
            return Err(Error::ShuttingDown);
        }
        queue.drop_departed();
        let alive = self.shared.alive.load(Ordering::SeqCst);
        let idle = alive.saturating_sub(queue.running.len());
        let waiting = queue.jobs.len().saturating_sub(idle);
        if waiting >= self.shared.config.max_queue {
            return Err(Error::QueueFull(waiting));
        }
        Ok(())
    }

    /// Bytes jobs may reserve together (`None`: memory is not admitted).
    pub fn job_capacity(&self) -> Option<u64> {
        self.shared.job_capacity
    }

    /// How `request` runs within this server's memory: planned to run beside the other
    /// workers' jobs when it can, else to run alone (it then waits for memory), else
    /// refused with `MemoryExhausted`.
    pub fn plan(&self, request: &RenderRequest) -> Result<MemoryPlan> {
        let footprint = self.shared.backends.engine.footprint();
        let Some(capacity) = self.shared.job_capacity else {
            return plan_memory(request, &footprint, None);
        };
        let workers = self.shared.config.workers.max(1) as u64;
        if workers > 1
            && let Ok(plan) = plan_memory(request, &footprint, Some(capacity / workers))
        {
            return Ok(plan);
        }
        plan_memory(request, &footprint, Some(capacity))
    }

    /// Queues a job, or refuses it at once: `QueueFull`, `ShuttingDown`, or
    /// `MemoryExhausted` for a job that can never fit.
    pub fn submit(&self, spec: JobSpec, span: tracing::Span) -> Result<Submitted> {
        let plan = self.plan(&spec.request)?;
        let (events, receiver) = events::channel(spec.counts_as_request);
        let cancel = Arc::new(AtomicBool::new(false));
        let mut queue = self.shared.lock();
        self.room_in(&mut queue)?;
        let position = queue.jobs.len();
        events.send(JobEvent::Queued { position });
        queue.jobs.push_back(QueuedJob {
            spec,
            plan,
            events,
            cancel: cancel.clone(),
            queued_at: Instant::now(),
            waiting: tracing::debug_span!(parent: &span, "queue_wait", position),
            span,
        });
        metrics::gauge!(names::QUEUE_DEPTH).set(queue.jobs.len() as f64);
        drop(queue);
        self.shared.changed.notify_all();
        Ok(Submitted {
            events: receiver,
            cancel,
            plan,
        })
    }

    /// Reserves `bytes` for work outside the queue (a style registration), waiting for
    /// running jobs to release memory until `deadline`. Refused while draining, or with
    /// `MemoryExhausted` when `bytes` exceed what jobs may ever hold.
    fn reserve(&self, bytes: u64, deadline: Option<Instant>) -> Result<Reservation> {
        if self.shared.job_capacity.is_some_and(|c| bytes > c) {
            return Err(Error::MemoryExhausted(format!(
                "about {} MiB needed, {} MiB available to jobs",
                bytes >> 20,
                self.shared.job_capacity.unwrap_or(0) >> 20
            )));
        }
        let mut queue = self.shared.lock();
        loop {
            if !queue.accepting {
                return Err(Error::ShuttingDown);
            }
            if self.shared.fits(&queue, bytes) {
                queue.reserve(bytes);
                return Ok(Reservation {
                    shared: self.shared.clone(),
                    bytes,
                });
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left,
                    None => return Err(Error::DeadlineExceeded("waiting for memory".into())),
                },
                None => Duration::from_secs(1),
            };
            queue = self
                .shared
                .changed
                .wait_timeout(queue, wait.min(Duration::from_secs(1)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
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

    /// Gives every queued job back at once (`UNAVAILABLE`: its client retries on another
    /// replica instead of waiting out the grace period); running jobs go on.
    pub fn hand_back_queued(&self) {
        self.shared.lock().hand_back_queued();
        self.shared.changed.notify_all();
    }

    /// Cancels every queued and running job (each ends within one iteration) and stops
    /// the workers once they are idle.
    pub fn cancel_all(&self) {
        let mut queue = self.shared.lock();
        queue.accepting = false;
        queue.stopped = true;
        queue.hand_back_queued();
        for flag in &queue.running {
            flag.store(true, Ordering::Relaxed);
        }
        drop(queue);
        self.shared.changed.notify_all();
    }
}
