//! Exit codes a render farm acts on, in the `sysexits` convention: 0 done; 64 usage (a flag
//! or its value is wrong); 65 bad input (a file, the request, or a job that can never fit);
//! 75 temporary (the server is draining, busy or unreachable, a deadline passed: requeue
//! the task); 70 internal. The server's error details decide between "busy" and "never
//! fits", which share `RESOURCE_EXHAUSTED`. A failure is classified by the first typed cause in its chain;
//! one with none names a flag or a file, so it counts as bad input.

use std::fmt;

pub const USAGE: u8 = 64;
pub const BAD_INPUT: u8 = 65;
pub const INTERNAL: u8 = 70;
pub const TEMPORARY: u8 = 75;

/// A flag whose value is wrong (exit 64).
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Work this run depends on is not done yet, e.g. the chunk before a shot's chunk (exit 75:
/// a farm requeues the task and it runs once the other is done).
#[derive(Debug)]
pub struct NotYet(pub String);

impl fmt::Display for NotYet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotYet {}

/// `NotYet` unless `path`, which another task of the shot writes, is there: "--FLAG: PATH is
/// missing: WHY. Render that WHAT first (a farm requeues this task: exit 75)", then
/// `alternative` (", or pass --continue-from") when there is another way.
pub fn written_first(
    flag: &str,
    path: &std::path::Path,
    why: &str,
    what: &str,
    alternative: &str,
) -> Result<(), NotYet> {
    if path.is_file() {
        return Ok(());
    }
    Err(NotYet(format!(
        "--{flag}: {} is missing: {why}. Render that {what} first (a farm requeues this task: \
         exit 75){alternative}",
        path.display()
    )))
}

/// A status the server answered, kept whole so the exit code follows its gRPC code.
#[derive(Debug)]
pub struct ServerAnswer(pub tonic::Status);

impl fmt::Display for ServerAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server answered {:?}: {}",
            self.0.code(),
            self.0.message()
        )
    }
}

impl std::error::Error for ServerAnswer {}

/// The exit code for `error`.
pub fn code(error: &anyhow::Error) -> u8 {
    error.chain().find_map(classify).unwrap_or(BAD_INPUT)
}

fn classify(cause: &(dyn std::error::Error + 'static)) -> Option<u8> {
    if cause.is::<Usage>() {
        return Some(USAGE);
    }
    if cause.is::<NotYet>() {
        return Some(TEMPORARY);
    }
    if let Some(ServerAnswer(status)) = cause.downcast_ref() {
        return Some(of_status(status));
    }
    if let Some(status) = cause.downcast_ref::<tonic::Status>() {
        return Some(of_status(status));
    }
    if cause.is::<tonic::transport::Error>() {
        return Some(TEMPORARY);
    }
    if let Some(error) = cause.downcast_ref::<stylize::Error>() {
        return Some(of_core(error));
    }
    if let Some(error) = cause.downcast_ref::<std::io::Error>() {
        return Some(of_io(error.kind()));
    }
    if cause.is::<image::ImageError>() {
        return Some(BAD_INPUT);
    }
    None
}

fn of_status(status: &tonic::Status) -> u8 {
    use tonic::Code;
    if stylize::server::details::never_fits(status) {
        // The server says the job as asked can never fit (memory, message size).
        return BAD_INPUT;
    }
    match status.code() {
        Code::Ok => 0,
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unauthenticated
        | Code::PermissionDenied => BAD_INPUT,
        // A full queue, a draining replica, a lost connection, a deadline: another try, on
        // this replica later or on another, may succeed.
        Code::ResourceExhausted
        | Code::Unavailable
        | Code::Aborted
        | Code::DeadlineExceeded
        | Code::Cancelled => TEMPORARY,
        Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => INTERNAL,
    }
}

fn of_core(error: &stylize::Error) -> u8 {
    use stylize::error::Class;
    match error.class() {
        Class::InvalidArgument | Class::Diverged | Class::NotFound | Class::AlreadyExists => {
            BAD_INPUT
        }
        Class::ResourceExhausted => match error {
            // Room may come; the job as asked never fits.
            stylize::Error::QueueFull(_) | stylize::Error::TooManyShots(_) => TEMPORARY,
            _ => BAD_INPUT,
        },
        Class::Unavailable | Class::DeadlineExceeded | Class::Cancelled => TEMPORARY,
        Class::Internal => INTERNAL,
    }
}

fn of_io(kind: std::io::ErrorKind) -> u8 {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::NotFound
        | ErrorKind::PermissionDenied
        | ErrorKind::InvalidData
        | ErrorKind::InvalidInput
        | ErrorKind::UnexpectedEof
        | ErrorKind::IsADirectory
        | ErrorKind::NotADirectory => BAD_INPUT,
        ErrorKind::StorageFull
        | ErrorKind::QuotaExceeded
        | ErrorKind::Interrupted
        | ErrorKind::TimedOut
        | ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe => TEMPORARY,
        _ => INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn answered(code: tonic::Code) -> anyhow::Error {
        anyhow::Error::new(ServerAnswer(tonic::Status::new(code, "x"))).context("--server")
    }

    #[test]
    fn the_first_typed_cause_decides() {
        assert_eq!(
            self::code(&answered(tonic::Code::InvalidArgument)),
            BAD_INPUT
        );
        assert_eq!(self::code(&answered(tonic::Code::Unavailable)), TEMPORARY);
        assert_eq!(
            self::code(&answered(tonic::Code::ResourceExhausted)),
            TEMPORARY
        );
        assert_eq!(self::code(&answered(tonic::Code::Internal)), INTERNAL);
        let usage = anyhow::Error::new(Usage("--size: too big".into()));
        assert_eq!(self::code(&usage), USAGE);
        let missing = Err::<(), _>(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("--content: a.png")
            .unwrap_err();
        assert_eq!(self::code(&missing), BAD_INPUT);
        let full = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert_eq!(self::code(&full), TEMPORARY);
        let queue = anyhow::Error::new(stylize::Error::QueueFull(3));
        assert_eq!(self::code(&queue), TEMPORARY);
        let never = anyhow::Error::new(stylize::Error::MemoryExhausted("64 GiB".into()));
        assert_eq!(self::code(&never), BAD_INPUT);
        assert_eq!(
            self::code(&anyhow::anyhow!("--frames: no match")),
            BAD_INPUT
        );
    }
}
