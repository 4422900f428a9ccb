//! One worker thread: takes the oldest job once its memory fits beside the running jobs,
//! runs it, reports its events, releases its memory, repeats.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::job::RESULT_OVERHEAD_BYTES;
use super::{EventSender, JobEvent, JobOutput, QueuedJob, Shared, Timings};
use crate::engine::Progress;
use crate::error::Error;
use crate::image_io::encode;
use crate::render::{StyleSource, render_frame};
use crate::telemetry::metrics::{self as names, outcome};

pub(super) fn run(index: usize, shared: &Shared) {
    let worker = format!("worker-{index}");
    loop {
        let job = {
            let mut queue = shared.lock();
            loop {
                if queue.stopped {
                    return;
                }
                queue.drop_departed();
                let fits = queue
                    .jobs
                    .front()
                    .is_some_and(|job| shared.fits(&queue, job.plan.estimate));
                if fits && let Some(job) = queue.jobs.pop_front() {
                    queue.start_running(job.cancel.clone());
                    queue.reserve(job.plan.estimate);
                    metrics::gauge!(names::QUEUE_DEPTH).set(queue.jobs.len() as f64);
                    break job;
                }
                // Wake now and then to drop departed clients' jobs while waiting.
                queue = shared
                    .changed
                    .wait_timeout(queue, Duration::from_millis(250))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        };
        super::test_hooks::kill_worker(&job.spec.request_id);
        let cancel = job.cancel.clone();
        let span = job.span.clone();
        let reserved = job.plan.estimate;
        let (events, outcome) = span.in_scope(|| execute(&worker, shared, job));
        // The worker is free before its client hears the outcome: a client that sends its
        // next request on hearing it finds the slot free, not a full queue.
        let mut queue = shared.lock();
        queue.release(reserved);
        queue.end_running(&cancel);
        drop(queue);
        shared.changed.notify_all();
        events.send(outcome);
    }
}

/// Why a job stopped early, decided inside the progress callback.
enum Stop {
    Abandoned,
    Deadline,
    /// The server's `max_job` ran out.
    TimeLimit,
}

/// Why a queued job is given back at shutdown.
pub const NOT_STARTED: &str = "the server began shutting down before this job started";
/// Why a running job is given back at the end of the shutdown grace period.
const GRACE_ENDED: &str = "the server's shutdown grace period ended before this job finished";

pub(super) fn outcome_of(err: &Error) -> &'static str {
    outcome::of_class(err.class())
}

/// Runs `job`; returns its events and the outcome to send on them once the worker is free.
fn execute(worker: &str, shared: &Shared, mut job: QueuedJob) -> (EventSender, JobEvent) {
    // The queue wait ends here (its span closes).
    job.waiting = tracing::Span::none();
    let queue_wait = job.queued_at.elapsed();
    metrics::histogram!(names::QUEUE_WAIT).record(queue_wait.as_secs_f64());
    let result = if job.abandoned() {
        Err(if job.cancel.load(Ordering::Relaxed) {
            Error::HandedBack(NOT_STARTED)
        } else {
            Error::Cancelled
        })
    } else if job.spec.deadline.is_some_and(|d| Instant::now() >= d) {
        Err(Error::DeadlineExceeded("while queued".into()))
    } else {
        let device = shared.backends.engine.name();
        job.events.send(JobEvent::Started {
            worker: worker.to_string(),
            device,
            plan: job.plan,
        });
        metrics::histogram!(names::TILES_PER_JOB).record(job.plan.tiles as f64);
        tracing::info!(
            queue_wait_s = queue_wait.as_secs_f64(),
            tiles = job.plan.tiles,
            kept_stages = job.plan.kept_stages,
            memory_estimate_mib = job.plan.estimate >> 20,
            lbfgs_history = job.plan.history,
            "started"
        );
        run_isolated(shared, &job, queue_wait)
    };
    let duration = job.queued_at.elapsed();
    metrics::histogram!(names::REQUEST_DURATION).record(duration.as_secs_f64());
    crate::telemetry::metrics::publish_cache(&shared.cache.stats());
    let outcome = match result {
        Ok(output) => {
            job.spec.count(outcome::OK);
            names::count_stop(output.stopped.name());
            tracing::info!(
                duration_s = duration.as_secs_f64(),
                iterations = output.iterations,
                stopped = output.stopped.name(),
                "finished"
            );
            JobEvent::Finished(Box::new(output))
        }
        Err(err) => {
            job.spec.count(outcome_of(&err));
            match err {
                // A client that left gets no event and no log noise.
                Error::Cancelled => tracing::debug!("cancelled by the client"),
                ref other => tracing::warn!(error = %other, "failed"),
            }
            JobEvent::Failed(err)
        }
    };
    (job.events, outcome)
}

/// `run_job` with a panic caught: the job fails `INTERNAL`, the worker serves on.
fn run_isolated(
    shared: &Shared,
    job: &QueuedJob,
    queue_wait: Duration,
) -> crate::error::Result<JobOutput> {
    let run = std::panic::AssertUnwindSafe(|| {
        super::test_hooks::panic_in_job(&job.spec.request_id);
        run_job(shared, job, queue_wait)
    });
    std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        tracing::error!(reason, "the job panicked; its worker goes on");
        Err(Error::Panicked(reason.to_string()))
    })
}

fn run_job(
    shared: &Shared,
    job: &QueuedJob,
    queue_wait: Duration,
) -> crate::error::Result<JobOutput> {
    let spec = &job.spec;
    let backends = &shared.backends;
    let mut stop = None;
    let mut last_iteration = Instant::now();
    let ceiling = shared.config.max_job.map(|limit| Instant::now() + limit);
    let encoding = spec.output;
    let mut on_progress = |p: &Progress| {
        metrics::counter!(names::ITERATIONS_TOTAL).increment(1);
        metrics::histogram!(names::ITERATION_DURATION)
            .record(last_iteration.elapsed().as_secs_f64());
        last_iteration = Instant::now();
        // A client whose deadline passed also hangs up: the deadline is what happened.
        if spec.deadline.is_some_and(|d| Instant::now() >= d) {
            stop = Some(Stop::Deadline);
            return ControlFlow::Break(());
        }
        if job.abandoned() {
            stop = Some(Stop::Abandoned);
            return ControlFlow::Break(());
        }
        if ceiling.is_some_and(|c| Instant::now() >= c) {
            stop = Some(Stop::TimeLimit);
            return ControlFlow::Break(());
        }
        if let Some(preview) = &p.preview {
            let rgb = backends.engine.convention().to_rgb(preview);
            if let Ok(image) = encode(&rgb, encoding) {
                job.events.send(JobEvent::Preview {
                    iteration: p.iteration,
                    image,
                    encoding,
                });
            }
        }
        if p.iteration.is_multiple_of(spec.progress_every) || p.iteration == p.total {
            let per_iteration = p.elapsed.as_secs_f64() / p.iteration as f64;
            let eta = Duration::from_secs_f64(per_iteration * (p.total - p.iteration) as f64);
            let mut progress = p.clone();
            progress.preview = None;
            job.events.send(JobEvent::Progress { progress, eta });
        }
        ControlFlow::Continue(())
    };
    let source = StyleSource {
        features: backends.features.as_ref(),
        cache: Some(shared.cache.as_ref()),
        tile_side: None,
    };
    let rendered = match render_frame(
        &spec.request,
        spec.temporal.clone(),
        backends.engine.as_ref(),
        source,
        &job.plan,
        &mut on_progress,
    ) {
        Ok(rendered) => rendered,
        Err(Error::Cancelled) => {
            return Err(match stop {
                Some(Stop::Deadline) => Error::DeadlineExceeded("while optimising".into()),
                Some(Stop::TimeLimit) => {
                    Error::JobTimeLimit(shared.config.max_job.map_or(0, |d| d.as_secs()))
                }
                _ if job.cancel.load(Ordering::Relaxed) => Error::HandedBack(GRACE_ENDED),
                _ => Error::Cancelled,
            });
        }
        Err(err) => return Err(err),
    };
    metrics::histogram!(names::PRECOMPUTE_DURATION).record(rendered.stats.precompute.as_secs_f64());
    let started = Instant::now();
    let delivered = crate::image_io::Delivered {
        image: &rendered.image,
        deep: &rendered.deep,
    };
    let encoding_span = tracing::debug_span!("encode", format = ?encoding).entered();
    let image = delivered.encode_through(encoding, spec.view.as_ref())?;
    let image = match &spec.passthrough {
        Some(passthrough) => passthrough.apply(image, encoding)?,
        None => image,
    };
    drop(encoding_span);
    if let Some(limit) = spec.max_result_bytes
        && image.len() + RESULT_OVERHEAD_BYTES > limit
    {
        return Err(Error::ResultTooLarge {
            bytes: image.len(),
            limit,
        });
    }
    Ok(JobOutput {
        image,
        encoding,
        width: rendered.image.width(),
        height: rendered.image.height(),
        losses: rendered.losses,
        iterations: rendered.iterations,
        stopped: rendered.stopped,
        delivered: rendered.delivered,
        timings: Timings {
            queue_wait,
            precompute: rendered.stats.precompute,
            optimise: rendered.stats.optimise,
            encode: started.elapsed(),
        },
        style_cache: rendered.stats.style_lookups,
        pixels: rendered.image,
    })
}
