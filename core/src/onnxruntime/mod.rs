//! The ONNX Runtime backend, all of it: loading the library once with `ort::init_from` (a
//! missing or wrong library is an error, never a panic) and building sessions on the CPU or
//! the CUDA execution provider (here); the library files, which build, where, fetching
//! (`library`); the bounded session table (`sessions`); writing ONNX models (`graph`), VGG as
//! graph pieces (`vgg_graph`), the precompute's graph and the feature extractor on it
//! (`features_graph`, `features`), and the loss-and-gradient graphs and the engine that
//! optimises with them (`loss_graph`, `engine`). The engine and the extractor implement the
//! core's traits (`engine::Engine`, `features::FeatureExtractor`).

pub mod engine;
pub mod features;
pub mod features_graph;
pub mod graph;
pub mod library;
pub mod loss_graph;
pub mod sessions;
pub mod vgg_graph;

pub use engine::OrtEngine;
pub use features::OrtFeatures;

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::{Error, Result};

fn runtime_error(reason: impl std::fmt::Display) -> Error {
    Error::OnnxRuntime(reason.to_string())
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Loads the library at `path` (once per process) and returns the ONNX Runtime environment.
/// Later calls return the same environment whatever path they pass.
pub fn environment(path: &Path) -> Result<&'static Environment> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let _guard = LOADING
        .lock()
        .map_err(|_| runtime_error("loader lock poisoned"))?;
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    // An absolute path: ort resolves relative ones against the executable's directory.
    let absolute = std::fs::canonicalize(path).map_err(|e| {
        runtime_error(format!(
            "ONNX Runtime library {}: {e}; run `stylize onnxruntime fetch` or set ORT_DYLIB_PATH",
            path.display()
        ))
    })?;
    let builder = ort::init_from(&absolute)
        .map_err(|e| runtime_error(format!("loading {}: {e}", absolute.display())))?;
    let env = builder
        .with_name("stylize")
        .build()
        .map_err(|e| runtime_error(format!("creating the ONNX Runtime environment: {e}")))?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// Where a session's kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Cpu,
    /// ONNX Runtime's CUDA execution provider on the GPU with this ordinal.
    Cuda(i32),
}

impl Provider {
    /// The provider matching where candle runs.
    pub fn for_device(device: &candle_core::Device) -> Self {
        match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => Self::Cuda(gpu_id as i32),
            _ => Self::Cpu,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda(_) => "cuda",
        }
    }
}

/// Whether the loaded library was built with the CUDA execution provider (`onnxruntime-gpu`).
/// It may still fail to start on a machine without a driver; `session` reports that.
pub fn cuda_compiled_in() -> bool {
    use ort::ep::ExecutionProvider;
    ort::ep::CUDA::is_available().unwrap_or(false)
}

/// Builds a session for `model` on `provider` with `threads` intra-op threads (the CPU's
/// share of the work). Spinning threads cut latency for back-to-back runs (the optimisation
/// loop) at the cost of idle CPU. On CUDA, failing to register the provider is an error,
/// not a silent fall back to the CPU: the caller decides what to do.
pub fn session(
    environment: &Environment,
    model: &[u8],
    threads: usize,
    spinning: bool,
    provider: Provider,
) -> Result<ort::session::Session> {
    use ort::session::builder::GraphOptimizationLevel;
    let build = || -> ort::Result<ort::session::Session> {
        let mut builder = ort::session::Session::builder(environment)?;
        // Operator-level timings for performance work: ONNX Runtime writes a JSON trace
        // named from this prefix when the session closes.
        if let Some(prefix) = std::env::var_os(PROFILE_ENV) {
            builder = builder
                .with_profiling(prefix)
                .map_err(ort::Error::<()>::from)?;
        }
        if let Provider::Cuda(ordinal) = provider {
            builder = builder
                .with_execution_providers([cuda_provider(ordinal)])
                .map_err(ort::Error::<()>::from)?;
        }
        builder
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(ort::Error::<()>::from)?
            .with_intra_threads(threads)
            .map_err(ort::Error::<()>::from)?
            .with_intra_op_spinning(spinning)
            .map_err(ort::Error::<()>::from)?
            // Planning one block for every intermediate (the memory pattern) raised the
            // 512² step's peak from 0.9 to 1.6 GiB and bought no speed.
            .with_memory_pattern(false)
            .map_err(ort::Error::<()>::from)?
            .with_operators(crate::onnxruntime::graph::winograd::domain()?)
            .map_err(ort::Error::<()>::from)?
            .commit_from_memory(model)
    };
    build().map_err(|e| runtime_error(format!("building a {} session: {e}", provider.name())))
}

/// The CUDA provider as stylize runs it: full float32 (no TF32, which would break the
/// numerical contract), cuDNN's heuristic algorithm choice (every new image size would
/// otherwise pay an exhaustive benchmark), and an error rather than a silent CPU fallback.
fn cuda_provider(ordinal: i32) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CUDA::default()
        .with_device_id(ordinal)
        .with_tf32(false)
        .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Heuristic)
        .build()
        .error_on_failure()
}

/// Options for one run; `release_arena` hands the session's unused arena memory (the host's,
/// or the GPU's on CUDA) back after the run.
pub fn run_options(release_arena: bool, provider: Provider) -> Result<ort::session::RunOptions> {
    let fail = |e: ort::Error| runtime_error(format!("run options: {e}"));
    let mut options = ort::session::RunOptions::new().map_err(fail)?;
    if release_arena {
        let arenas = match provider {
            Provider::Cpu => "cpu:0".to_string(),
            // The GPU arena is the one worth returning: candle allocates from the same GPU.
            Provider::Cuda(ordinal) => format!("gpu:{ordinal}"),
        };
        options
            .set("memory.enable_memory_arena_shrinkage", arenas)
            .map_err(fail)?;
    }
    Ok(options)
}

/// Environment variable naming a file prefix for ONNX Runtime's per-operator profile.
pub const PROFILE_ENV: &str = "STYLIZE_ORT_PROFILE";

/// Environment variable fixing ONNX Runtime's intra-op threads where the code asks for "one
/// per core" (0): with `RAYON_NUM_THREADS` (rayon and candle's CPU kernels) it runs a process
/// as a machine with that many cores would, and pins a CPU request's share on a shared node.
pub const ORT_THREADS_ENV: &str = "STYLIZE_ORT_THREADS";

/// The thread count a variable such as `$STYLIZE_ORT_THREADS` or `$RAYON_NUM_THREADS` sets:
/// `None` when unset or 0 (one per core, as rayon reads 0), an error naming it when it is not
/// a count (the commands check both before they start, rather than let a typo quietly mean
/// one thread per core).
pub fn threads_from_env(name: &str) -> Result<Option<usize>> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    let count = value
        .to_str()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| Error::InvalidOption {
            field: name.to_string(),
            reason: format!("{value:?} is not a thread count (0 for one per core)"),
        })?;
    Ok((count > 0).then_some(count))
}

/// `threads`, or when 0 `$STYLIZE_ORT_THREADS`, else one per available core.
pub fn intra_threads(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    threads_from_env(ORT_THREADS_ENV)
        .ok()
        .flatten()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
