//! A job's event stream, bounded: a newer `Progress` replaces one its reader has not taken
//! yet, and likewise a newer `Preview`, so a slow reader holds at most one of each (plus
//! `Queued`, `Started` and the outcome, which are never dropped). The worker never blocks on
//! a reader; the reader's end going away is how the worker learns the client left.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::JobEvent;
use crate::error::Error;
use crate::telemetry::metrics as names;

struct Channel {
    pending: Mutex<VecDeque<JobEvent>>,
    ready: Notify,
    sender_gone: AtomicBool,
    receiver_gone: AtomicBool,
}

impl Channel {
    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<JobEvent>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker's end.
pub struct EventSender {
    channel: Arc<Channel>,
}

/// The client's end: a `Stream` of events that ends after the outcome.
pub struct EventReceiver {
    channel: Arc<Channel>,
    /// Whether the job counts as a request of its own (`JobSpec::counts_as_request`).
    counts_as_request: bool,
}

/// A connected pair for a job that counts as a request of its own, or not.
pub fn channel(counts_as_request: bool) -> (EventSender, EventReceiver) {
    let channel = Arc::new(Channel {
        pending: Mutex::new(VecDeque::new()),
        ready: Notify::new(),
        sender_gone: AtomicBool::new(false),
        receiver_gone: AtomicBool::new(false),
    });
    (
        EventSender {
            channel: channel.clone(),
        },
        EventReceiver {
            channel,
            counts_as_request,
        },
    )
}

fn same_kind(a: &JobEvent, b: &JobEvent) -> bool {
    matches!(
        (a, b),
        (JobEvent::Progress { .. }, JobEvent::Progress { .. })
            | (JobEvent::Preview { .. }, JobEvent::Preview { .. })
    )
}

impl EventSender {
    /// Queues `event`; a `Progress` or `Preview` replaces an untaken one of its kind.
    pub fn send(&self, event: JobEvent) {
        if self.is_closed() {
            return;
        }
        let mut pending = self.channel.pending();
        match pending.iter_mut().find(|e| same_kind(e, &event)) {
            Some(slot) => *slot = event,
            None => pending.push_back(event),
        }
        drop(pending);
        self.channel.ready.notify_one();
    }

    /// The reader went away.
    pub fn is_closed(&self) -> bool {
        self.channel.receiver_gone.load(Ordering::Relaxed)
    }

    /// Events not yet taken (at most one of each kind of update).
    pub fn backlog(&self) -> usize {
        self.channel.pending().len()
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        self.channel.sender_gone.store(true, Ordering::Relaxed);
        self.channel.ready.notify_one();
    }
}

impl EventReceiver {
    /// The next event, or `None` once the sender is gone and nothing is pending.
    pub async fn recv(&mut self) -> Option<JobEvent> {
        loop {
            let notified = self.channel.ready.notified();
            if let Some(event) = self.channel.pending().pop_front() {
                return Some(event);
            }
            if self.channel.sender_gone.load(Ordering::Relaxed) {
                return self.channel.pending().pop_front();
            }
            notified.await;
        }
    }

    /// The events as a stream.
    /// A job whose sender vanished without a final event (its worker thread died) ends with
    /// a failure, so the client gets a status rather than a stream that just stops.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = JobEvent> + Send {
        futures_util::stream::unfold(Some(self), |receiver| async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Some(event @ (JobEvent::Finished(_) | JobEvent::Failed(_))) => Some((event, None)),
                Some(event) => Some((event, Some(receiver))),
                None => {
                    // Its worker, which counts every job, is gone: count it here.
                    if receiver.counts_as_request {
                        names::count_request(names::outcome::INTERNAL);
                    }
                    tracing::error!("a job's worker stopped without an answer");
                    let lost = Error::Panicked("its worker stopped without an answer".into());
                    Some((JobEvent::Failed(lost), None))
                }
            }
        })
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.channel.receiver_gone.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LossBreakdown, Progress};
    use crate::image_io::Encoding;

    fn progress(iteration: usize) -> JobEvent {
        JobEvent::Progress {
            progress: Progress {
                iteration,
                total: 1000,
                scale: 0,
                losses: LossBreakdown::default(),
                elapsed: std::time::Duration::ZERO,
                preview: None,
            },
            eta: std::time::Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn a_slow_reader_gets_the_latest_updates_and_every_outcome() {
        let (sender, mut receiver) = channel(true);
        sender.send(JobEvent::Queued { position: 0 });
        for i in 1..=1000 {
            sender.send(progress(i));
            sender.send(JobEvent::Preview {
                iteration: i,
                image: vec![0; 1024],
                encoding: Encoding::Png,
            });
        }
        assert_eq!(sender.backlog(), 3, "queued, one progress, one preview");
        sender.send(JobEvent::Failed(crate::error::Error::Cancelled));
        drop(sender);
        let mut seen = Vec::new();
        while let Some(event) = receiver.recv().await {
            seen.push(event);
        }
        assert!(matches!(seen[0], JobEvent::Queued { .. }));
        assert!(
            matches!(&seen[1], JobEvent::Progress { progress, .. } if progress.iteration == 1000)
        );
        assert!(matches!(
            seen[2],
            JobEvent::Preview {
                iteration: 1000,
                ..
            }
        ));
        assert!(matches!(seen[3], JobEvent::Failed(_)));
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn the_sender_sees_a_departed_reader() {
        let (sender, receiver) = channel(true);
        assert!(!sender.is_closed());
        drop(receiver);
        assert!(sender.is_closed());
        sender.send(JobEvent::Queued { position: 0 });
        assert_eq!(sender.backlog(), 0);
    }
}
