//! gRPC's standard error details on every status the service answers with, so a program can
//! act on a refusal without reading its message: `google.rpc.ErrorInfo` with a reason
//! (domain `stylize.v1`), `RetryInfo` with a delay on the ones worth retrying, and
//! `BadRequest` naming the field on `INVALID_ARGUMENT`.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{Class, Error};

/// The `ErrorInfo.domain` of every reason below.
pub const DOMAIN: &str = "stylize.v1";

/// `ErrorInfo.reason` values.
pub mod reason {
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    pub const DIVERGED: &str = "DIVERGED";
    pub const QUEUE_FULL: &str = "QUEUE_FULL";
    pub const TOO_MANY_SHOTS: &str = "TOO_MANY_SHOTS";
    pub const EXCEEDS_MEMORY: &str = "EXCEEDS_MEMORY";
    pub const RESULT_TOO_LARGE: &str = "RESULT_TOO_LARGE";
    pub const DRAINING: &str = "DRAINING";
    pub const REGISTRY_UNAVAILABLE: &str = "REGISTRY_UNAVAILABLE";
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
    pub const CANCELLED: &str = "CANCELLED";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const NAME_TAKEN: &str = "NAME_TAKEN";
    pub const INTERNAL: &str = "INTERNAL";
}

/// Why `error` happened, as a machine reads it.
pub fn reason_of(error: &Error) -> &'static str {
    match error {
        Error::QueueFull(_) => reason::QUEUE_FULL,
        Error::TooManyShots(_) => reason::TOO_MANY_SHOTS,
        Error::MemoryExhausted(_) => reason::EXCEEDS_MEMORY,
        Error::ResultTooLarge { .. } => reason::RESULT_TOO_LARGE,
        Error::ShuttingDown | Error::HandedBack(_) | Error::ShotHandedBack(_) => reason::DRAINING,
        Error::SharedStore(_) => reason::REGISTRY_UNAVAILABLE,
        other => match other.class() {
            Class::InvalidArgument => reason::INVALID_ARGUMENT,
            Class::Diverged => reason::DIVERGED,
            Class::DeadlineExceeded => reason::DEADLINE_EXCEEDED,
            Class::Cancelled => reason::CANCELLED,
            Class::NotFound => reason::NOT_FOUND,
            Class::AlreadyExists => reason::NAME_TAKEN,
            _ => reason::INTERNAL,
        },
    }
}

/// How long to wait before sending the same work again, when that is worth doing: at once
/// to another replica when this one drains, after a second when it is busy or its registry
/// is down. `None`: the same request fails the same way.
pub fn retry_delay(error: &Error) -> Option<Duration> {
    match error {
        Error::ShuttingDown | Error::HandedBack(_) | Error::ShotHandedBack(_) => {
            Some(Duration::ZERO)
        }
        Error::QueueFull(_) | Error::TooManyShots(_) | Error::SharedStore(_) => {
            Some(Duration::from_secs(1))
        }
        _ => None,
    }
}

/// The status for `error`: its class's code, its message, and the details above.
pub fn status(error: Error) -> Status {
    let code = match error.class() {
        Class::InvalidArgument => tonic::Code::InvalidArgument,
        Class::ResourceExhausted => tonic::Code::ResourceExhausted,
        Class::Diverged => tonic::Code::FailedPrecondition,
        Class::Unavailable => tonic::Code::Unavailable,
        Class::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Class::Cancelled => tonic::Code::Cancelled,
        Class::NotFound => tonic::Code::NotFound,
        Class::AlreadyExists => tonic::Code::AlreadyExists,
        Class::Internal => tonic::Code::Internal,
    };
    let mut details = ErrorDetails::with_error_info(reason_of(&error), DOMAIN, HashMap::new());
    if let Some(delay) = retry_delay(&error) {
        details.set_retry_info(Some(delay));
    }
    match &error {
        Error::InvalidOption { field, reason } => {
            details.add_bad_request_violation(field.clone(), reason.clone());
        }
        Error::NameTaken { field, .. } => {
            details.add_bad_request_violation(field.clone(), "points at another style");
        }
        _ => {}
    }
    Status::with_error_details(code, error.to_string(), details)
}

/// Whether `status` says the same work may succeed if sent again (it carries `RetryInfo`).
pub fn says_retry(status: &Status) -> bool {
    status.get_details_retry_info().is_some()
}

/// Whether `status` says the work can never fit (exceeds memory or the message limit).
pub fn never_fits(status: &Status) -> bool {
    status.get_details_error_info().is_some_and(|info| {
        info.domain == DOMAIN
            && [reason::EXCEEDS_MEMORY, reason::RESULT_TOO_LARGE].contains(&info.reason.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_a_reason_a_delay_when_worth_retrying_and_the_field() {
        let full = status(Error::QueueFull(4));
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        let info = full.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("QUEUE_FULL", DOMAIN)
        );
        assert!(says_retry(&full) && !never_fits(&full));
        let never = status(Error::MemoryExhausted("64 GiB".into()));
        assert!(!says_retry(&never) && never_fits(&never));
        let draining = status(Error::ShuttingDown);
        let delay = draining.get_details_retry_info().unwrap().retry_delay;
        assert_eq!(delay, Some(Duration::ZERO));
        let bad = status(Error::invalid("options.size", "too big"));
        let violations = bad.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "options.size");
        assert!(!says_retry(&bad));
    }
}
