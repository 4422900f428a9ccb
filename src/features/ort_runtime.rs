//! ONNX Runtime's shared library: fetching it from PyPI (the `onnxruntime` wheel, pinned by
//! sha256), finding it (`$ORT_DYLIB_PATH` or the models directory), and loading it once per
//! process with `ort::init_from`, so a missing or wrong library is an error, never a panic.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use crate::error::{Error, Result};
use crate::model::fetch::{PinnedWheel, download_wheel, downloads_dir, wheel_member};

pub const ONNXRUNTIME_WHEEL: PinnedWheel = PinnedWheel {
    requirement: "onnxruntime==1.31.1",
    sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
    platform_args: &[
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "--platform",
        "manylinux_2_28_x86_64",
    ],
};
const LIBRARY_MEMBER: &str = "onnxruntime/capi/libonnxruntime.so.1.31.1";
const LIBRARY_SHA256: &str = "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3";
/// File name of the extracted library inside `models/libs/`.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

fn runtime_error(reason: impl std::fmt::Display) -> Error {
    Error::OnnxRuntime(reason.to_string())
}

/// Where `fetch` puts the library.
pub fn bundled_library(models_dir: &Path) -> PathBuf {
    models_dir.join("libs").join(LIBRARY_FILE)
}

/// The library to load: `$ORT_DYLIB_PATH` when set, else the fetched copy if present.
pub fn locate(models_dir: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(path));
    }
    let bundled = bundled_library(models_dir);
    bundled.exists().then_some(bundled)
}

/// Downloads the pinned wheel (or reuses a verified cached copy), checks the library's
/// sha256 and writes it to `models/libs/`.
pub fn fetch(models_dir: &Path) -> Result<PathBuf> {
    let wheel = download_wheel(&ONNXRUNTIME_WHEEL, &downloads_dir(models_dir))?;
    let library = wheel_member(&wheel, LIBRARY_MEMBER, LIBRARY_SHA256)?;
    let path = bundled_library(models_dir);
    let dir = path.parent().expect("library path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let partial = path.with_extension(format!("partial.{}", std::process::id()));
    std::fs::write(&partial, library).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// The library if present, else fetched.
pub fn ensure(models_dir: &Path) -> Result<PathBuf> {
    match locate(models_dir) {
        Some(path) => Ok(path),
        None => fetch(models_dir),
    }
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

/// Builds a CPU session for `model` with `threads` intra-op threads. Spinning threads cut
/// latency for back-to-back runs (the optimisation loop) at the cost of idle CPU.
pub fn cpu_session(
    environment: &Environment,
    model: &[u8],
    threads: usize,
    spinning: bool,
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
            .with_operators(crate::onnx::winograd::domain()?)
            .map_err(ort::Error::<()>::from)?
            .commit_from_memory(model)
    };
    build().map_err(|e| runtime_error(format!("building a session: {e}")))
}

/// Options for one run; `release_arena` hands the session's unused CPU arena memory back to
/// the system after the run.
pub fn run_options(release_arena: bool) -> Result<ort::session::RunOptions> {
    let fail = |e: ort::Error| runtime_error(format!("run options: {e}"));
    let mut options = ort::session::RunOptions::new().map_err(fail)?;
    if release_arena {
        options
            .set("memory.enable_memory_arena_shrinkage", "cpu:0")
            .map_err(fail)?;
    }
    Ok(options)
}

/// Environment variable naming a file prefix for ONNX Runtime's per-operator profile.
pub const PROFILE_ENV: &str = "STYLIZE_ORT_PROFILE";

/// `threads`, or one per available core when 0.
pub fn intra_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}
