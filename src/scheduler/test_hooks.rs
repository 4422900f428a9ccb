//! Faults the tests inject into a running server, compiled only with the `test-hooks`
//! feature (`scripts/test` enables it; release builds never carry it). The environment is
//! read once, at the first job.

/// Set to a request id, makes that job panic (tests of the job's isolation); set to
/// `worker:<id>`, kills the worker thread that picks that job (tests of the health watch).
#[cfg(feature = "test-hooks")]
const PANIC_FOR_REQUEST_ENV: &str = "STYLIZE_TEST_PANIC_FOR_REQUEST";

#[cfg(feature = "test-hooks")]
fn target() -> Option<&'static str> {
    static TARGET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TARGET
        .get_or_init(|| std::env::var(PANIC_FOR_REQUEST_ENV).ok())
        .as_deref()
}

#[cfg(not(feature = "test-hooks"))]
fn target() -> Option<&'static str> {
    None
}

/// Panics inside the job's isolation if the tests asked for it for `request_id`.
pub fn panic_in_job(request_id: &str) {
    if target() == Some(request_id) {
        panic!("injected for request {request_id}");
    }
}

/// Panics outside the job's isolation, ending the worker thread, if the tests asked for it
/// for `request_id`.
pub fn kill_worker(request_id: &str) {
    if target().and_then(|t| t.strip_prefix("worker:")) == Some(request_id) {
        panic!("injected outside the job's isolation: the worker thread dies");
    }
}
