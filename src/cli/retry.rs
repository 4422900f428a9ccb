//! When the CLI's clients send work again: after a failure the server marks retryable (its
//! `RetryInfo`), `UNAVAILABLE`, or a connection lost mid-job, waiting a capped exponential
//! backoff with jitter (never less than the server's own delay), so a farm's many tasks do
//! not retry a recovering replica in lockstep.

use std::time::Duration;

use rand::Rng;
use tonic_types::StatusExt;

/// Why one attempt did not deliver its work.
pub enum Attempt {
    /// The server (or the connection to it) ended the call with this status.
    Failed(tonic::Status),
    /// Anything else (reading or writing files, a bad flag); not retried.
    Broken(anyhow::Error),
}

impl From<anyhow::Error> for Attempt {
    fn from(e: anyhow::Error) -> Self {
        Attempt::Broken(e)
    }
}

impl Attempt {
    /// A failure to connect: a server that cannot be reached is `UNAVAILABLE` (retried, on
    /// the next --server), anything else (a bad address, TLS settings) is not.
    pub fn connecting(e: anyhow::Error) -> Self {
        if e.downcast_ref::<super::connect::Unreachable>().is_some() {
            Attempt::Failed(tonic::Status::unavailable(format!("{e:#}")))
        } else {
            Attempt::Broken(e)
        }
    }
}

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long to wait before attempt `attempt + 1` after attempt `attempt` (from 1) failed
/// with `status`: 1 s doubled per attempt, capped at `MAX_BACKOFF`, then scaled by a random
/// factor in [0.5, 1]; at least the server's `RetryInfo` delay.
pub fn backoff(attempt: u32, status: &tonic::Status) -> Duration {
    let exponential =
        Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(MAX_BACKOFF);
    let jittered = exponential.mul_f64(rand::rng().random_range(0.5..=1.0));
    let asked = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_default();
    jittered.max(asked.min(MAX_BACKOFF))
}

/// Says on stderr why attempt `attempt` is retried and when.
pub fn announce(attempt: u32, status: &tonic::Status, wait: Duration) {
    eprintln!(
        "attempt {attempt}: {:?}: {}; retrying in {:.1}s",
        status.code(),
        status.message(),
        wait.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_are_capped_jittered_and_never_shorter_than_the_server_asks() {
        let plain = tonic::Status::unavailable("gone");
        for attempt in 1..=12 {
            let wait = backoff(attempt, &plain);
            let full = Duration::from_secs(1 << (attempt - 1).min(5)).min(MAX_BACKOFF);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
        let mut details = tonic_types::ErrorDetails::new();
        details.set_retry_info(Some(Duration::from_secs(9)));
        let asked =
            tonic::Status::with_error_details(tonic::Code::ResourceExhausted, "full", details);
        assert!(backoff(1, &asked) >= Duration::from_secs(9));
    }
}
