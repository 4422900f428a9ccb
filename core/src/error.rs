//! The library's error type: every failure a caller can act on, named by what went wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unknown layer `{0}`: expected reluB_C with block B in 1..5 and C within the block (relu1_1 .. relu5_4)"
    )]
    UnknownLayer(String),

    #[error("invalid {field}: {reason}")]
    InvalidOption { field: String, reason: String },

    #[error("weights file {} not found; run `stylize weights fetch` to fetch the default VGG19 weights, or pass the path of torchvision VGG19 weights", path.display())]
    WeightsMissing { path: PathBuf },

    #[error("weights file {}: {reason}", path.display())]
    WeightsCorrupt { path: PathBuf, reason: String },

    #[error("fetching {what}: {reason}")]
    Fetch { what: String, reason: String },

    #[error("image {name}: {reason}")]
    Image { name: String, reason: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("ONNX Runtime: {0}")]
    OnnxRuntime(String),

    #[error("style precompute failed: {0}")]
    StylePrecompute(String),

    #[error(
        "the optimisation diverged: {0}; the request's content_weight, style_weight, tv_weight \
         (or Adam's lr) are too large for this image: lower them"
    )]
    NonFinite(String),

    /// The finished image does not fit the largest message the server sends.
    #[error(
        "the result is {bytes} bytes, above this server's message limit of {limit} bytes \
         (--max-message-bytes); ask for a smaller size or JPEG output"
    )]
    ResultTooLarge { bytes: usize, limit: usize },

    #[error("cancelled")]
    Cancelled,

    #[error("the queue is full ({0} jobs waiting); retry later or on another replica")]
    QueueFull(usize),

    #[error("not enough memory: {0}")]
    MemoryExhausted(String),

    #[error("the server is shutting down and accepts no new work")]
    ShuttingDown,

    /// A shot whose client sent no frame for too long ends, giving its resources back.
    #[error(
        "no frame arrived for {0} s (--sequence-idle-seconds); the shot ends here: send its \
         remaining frames as a new shot"
    )]
    ShotIdle(f64),

    /// More shots are open at once than the server keeps.
    #[error(
        "{0} shots are open on this server (--max-open-shots); retry later or on another replica"
    )]
    TooManyShots(usize),

    /// A shot the server stops taking frames for because it is shutting down: the frames
    /// from `frames[i]` on were not run.
    #[error(
        "the server is shutting down: frames[{0}] and the frames after it were not run; send \
         them to another replica as a new shot"
    )]
    ShotHandedBack(usize),

    /// An accepted job the server gives back unfinished because it is shutting down.
    #[error("{0}; retry it on another replica")]
    HandedBack(&'static str),

    /// The shared style store (`--registry redis://…`) could not be read or written; the
    /// request may succeed when retried.
    #[error("the shared style registry is unreachable ({0}); retry later")]
    SharedStore(String),

    #[error("the deadline expired {0}")]
    DeadlineExceeded(String),

    /// The job ran longer than the server allows any job to run.
    #[error("the job ran past this server's limit of {0} s per job (--max-job-seconds)")]
    JobTimeLimit(u64),

    #[error("tensor backend: {0}")]
    Backend(#[from] candle_core::Error),

    /// A style name points at another style; re-pointing it takes `replace`.
    #[error("{field}: `{name}` points at style {key} already; set replace to re-point it")]
    NameTaken {
        field: String,
        name: String,
        key: String,
    },

    /// What a lookup asked for is not there.
    #[error("{0}")]
    NotFound(String),

    /// A job's code panicked; the job fails, its worker goes on.
    #[error("internal error: the job failed unexpectedly ({0}); the server is still serving")]
    Panicked(String),
}

/// The most characters of user input an error message quotes.
pub const QUOTE_LIMIT: usize = 64;

/// `input` as an error message quotes it: at most `QUOTE_LIMIT` characters, control
/// characters escaped, an ellipsis when cut.
pub fn quoted(input: &str) -> String {
    let mut out: String = input
        .chars()
        .take(QUOTE_LIMIT)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if input.chars().count() > QUOTE_LIMIT {
        out.push('…');
    }
    out
}

/// What kind of failure an error is for whoever asked: the one classification the gRPC
/// status code and the counted outcome of a job both come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The request is wrong: a field, a layer or an image.
    InvalidArgument,
    /// No room now: the queue, memory, or the message size.
    ResourceExhausted,
    /// The optimisation diverged because of the request's weights.
    Diverged,
    /// This replica cannot take the work now; another one, or later, may.
    Unavailable,
    DeadlineExceeded,
    Cancelled,
    /// What a lookup asked for is not there.
    NotFound,
    /// The request conflicts with what is there (a name pointing at another style).
    AlreadyExists,
    /// A fault of the server's own.
    Internal,
}

impl Error {
    /// The error's class (see `Class`).
    pub fn class(&self) -> Class {
        match self {
            Error::InvalidOption { .. } | Error::UnknownLayer(_) | Error::Image { .. } => {
                Class::InvalidArgument
            }
            Error::QueueFull(_)
            | Error::MemoryExhausted(_)
            | Error::ResultTooLarge { .. }
            | Error::TooManyShots(_) => Class::ResourceExhausted,
            Error::NonFinite(_) => Class::Diverged,
            Error::ShuttingDown
            | Error::HandedBack(_)
            | Error::SharedStore(_)
            | Error::ShotHandedBack(_) => Class::Unavailable,
            Error::DeadlineExceeded(_) | Error::JobTimeLimit(_) | Error::ShotIdle(_) => {
                Class::DeadlineExceeded
            }
            Error::Cancelled => Class::Cancelled,
            Error::NotFound(_) => Class::NotFound,
            Error::NameTaken { .. } => Class::AlreadyExists,
            _ => Class::Internal,
        }
    }

    /// An invalid option, named by the field (CLI flag or request field) that carries it.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
