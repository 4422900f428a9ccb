//! The `stylize` binary: a tiny real run, and a clear message naming the flag or file for
//! every bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn stylize(args: &[&str]) -> Output {
    stylize_with(args, &[])
}

fn stylize_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    common::weights(); // make sure the default weights are in place
    common::ort_features(stylize::engine::Pooling::Max); // and the ONNX Runtime library
    Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args(args)
        .env("STYLIZE_MODELS_DIR", common::models_dir())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn fails_naming(args: &[&str], needles: &[&str]) {
    let out = stylize(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr lacks `{needle}`:\n{stderr}"
        );
    }
}

#[test]
fn tiny_run_writes_png_and_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["out.png", "out.jpg"] {
        let out = dir.path().join(name);
        let result = stylize(&[
            "run",
            "--size",
            "32",
            "--iterations",
            "2",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        let image = stylize::image_io::load(&out).unwrap();
        assert_eq!(image.width(), 32);
        let format = image::ImageReader::open(&out)
            .unwrap()
            .with_guessed_format()
            .unwrap()
            .format();
        let expected = if name.ends_with("png") {
            image::ImageFormat::Png
        } else {
            image::ImageFormat::Jpeg
        };
        assert_eq!(format, Some(expected));
    }
}

#[test]
fn png16_keeps_the_precision_the_8_bit_image_rounds_away_and_exr_is_half_float() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "run",
            "--size",
            "32",
            "--iterations",
            "3",
            "--quiet",
            "--out",
        ];
        args.push(out.to_str().unwrap());
        args.extend(extra);
        let result = stylize(&args);
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        out
    };
    let deep = image::open(run("deep.png", &["--png16"])).unwrap();
    assert_eq!(deep.color(), image::ColorType::Rgb16);
    let deep = deep.into_rgb16();
    // Not an 8-bit image widened: levels between the 8-bit ones are used.
    assert!(deep.pixels().flat_map(|p| p.0).any(|v| v % 257 != 0));
    // Rounded to 8 bits it is the 8-bit PNG the same (deterministic) run writes.
    let shallow = stylize::image_io::load(&run("shallow.png", &[])).unwrap();
    for (d, s) in deep.pixels().zip(shallow.pixels()) {
        for c in 0..3 {
            let narrowed = (d[c] as f32 / 257.0).round() as i32;
            assert!((narrowed - s[c] as i32).abs() <= 1, "{d:?} vs {s:?}");
        }
    }
    // OpenEXR holds the unrounded result too (through the view's inverse): read back, it is
    // the 16-bit result to half-float precision, so within a level of the 8-bit PNG.
    let exr = std::fs::read(run("linear.exr", &[])).unwrap();
    assert!(stylize::exr_file::is_exr(&exr));
    let linear = stylize::image_io::decode(&exr, "linear.exr").unwrap();
    let mut differ = 0;
    for ((l, s), d) in linear.pixels().zip(shallow.pixels()).zip(deep.pixels()) {
        for c in 0..3 {
            assert!((l[c] as i32 - s[c] as i32).abs() <= 1, "{l:?} vs {s:?}");
            let from_deep = (d[c] as f32 / 257.0).round() as u8;
            assert!(
                (l[c] as i32 - from_deep as i32).abs() <= 1,
                "{l:?} vs {d:?}"
            );
            differ += usize::from(l[c] != s[c]);
        }
    }
    println!("OpenEXR against the 8-bit PNG: {differ} channel values a level apart");
}

#[test]
fn a_time_budget_or_a_tolerance_ends_a_run_early_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let out = out.to_str().unwrap();
    // The budget runs out at the coarsest of three scales: the image still comes back at
    // full size.
    for (flags, reason, width) in [
        (
            [
                "--time-budget-seconds",
                "1",
                "--size",
                "128",
                "--scales",
                "3",
            ],
            "stopped on time_budget",
            128,
        ),
        (
            ["--tolerance", "0.5", "--size", "32", "--scales", "1"],
            "stopped on tolerance",
            32,
        ),
    ] {
        let started = std::time::Instant::now();
        let mut args = vec!["run", "--iterations", "10000", "--quiet", "--out", out];
        args.extend_from_slice(&flags);
        let result = stylize(&args);
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert!(stdout.contains(reason), "{stdout}");
        // 2.3-4.1 s at 1 and 2 threads.
        let took = common::seconds_since(&format!("cli/early stop {reason} s"), started);
        assert!(took < 60.0, "{flags:?} ran {took:.1} s");
        assert_eq!(
            stylize::image_io::load(Path::new(out)).unwrap().width(),
            width
        );
    }
}

#[test]
fn bad_files_name_the_flag_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.jpg");
    std::fs::write(&garbage, b"this is not a jpeg").unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let truncated = dir.path().join("truncated.png");
    let png =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/chelsea.png")).unwrap();
    std::fs::write(&truncated, &png[..png.len() / 3]).unwrap();
    let g = garbage.to_str().unwrap();
    let e = empty.to_str().unwrap();
    let t = truncated.to_str().unwrap();
    fails_naming(
        &["run", "--content", "/no/such/content.png"],
        &["--content", "/no/such/content.png"],
    );
    fails_naming(&["run", "--style", g], &["--style", "garbage.jpg"]);
    fails_naming(&["run", "--content", e], &["--content", "empty.png"]);
    fails_naming(&["run", "--content", t], &["--content", "truncated.png"]);
    fails_naming(&["run", "--init", "/no/such/init.png"], &["--init"]);
    fails_naming(
        &["run", "--weights", "/no/such/w.safetensors"],
        &["w.safetensors", "stylize weights fetch"],
    );
}

#[test]
fn bad_options_name_the_flag() {
    fails_naming(
        &["run", "--style-layers", "relu1_1,relu9_1"],
        &["--style-layers", "relu9_1"],
    );
    fails_naming(
        &["run", "--content-layers", "relu4_2:abc"],
        &["--content-layers", "abc"],
    );
    fails_naming(&["run", "--style-weight", "-1"], &["--style-weight"]);
    fails_naming(
        &["run", "--style-layers", "relu1_1:-2"],
        &["--style-layers"],
    );
    fails_naming(&["run", "--size", "0"], &["--size"]);
    fails_naming(&["run", "--iterations", "0"], &["--iterations"]);
    fails_naming(&["run", "--out", "out.gif"], &["--out", "out.gif"]);
    fails_naming(
        &["run", "--blend", "0.5,0.5"],
        &["--blend", "2 weights for 1 styles"],
    );
    fails_naming(&["run", "--style-scale", "0"], &["--style-scale"]);
    fails_naming(&["run", "--tolerance", "-1"], &["--tolerance"]);
    fails_naming(
        &["run", "--time-budget-seconds", "inf"],
        &["--time-budget-seconds"],
    );
    fails_naming(&["run", "--line-search", "armijo"], &["--line-search"]);
    fails_naming(&["run", "--quality", "best"], &["--quality"]);
    fails_naming(&["run", "--optimizer", "sgd"], &["--optimizer"]);
    fails_naming(&["run", "--pooling", "min"], &["--pooling"]);
    fails_naming(&["run", "--optimizer", "adam", "--lr", "0"], &["--lr"]);
    fails_naming(&["run", "--device", "gpu"], &["--device", "gpu"]);
    if !cfg!(feature = "cuda") {
        fails_naming(
            &["run", "--device", "cuda:0"],
            &["--device", "no CUDA support"],
        );
    }
}

#[test]
fn onnxruntime_library_problems_are_errors_or_a_logged_fallback() {
    let tiny = ["run", "--size", "32", "--iterations", "1", "--quiet"];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let out = out.to_str().unwrap();
    let not_ort = dir.path().join("libnot-onnxruntime.so");
    std::fs::write(&not_ort, b"\x7fELF but not really").unwrap();
    let libz = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let mut bad_libraries = vec![
        "/no/such/libonnxruntime.so".to_string(),
        not_ort.display().to_string(),
    ];
    bad_libraries.extend(libz.map(String::from));
    for library in &bad_libraries {
        let env = [("ORT_DYLIB_PATH", library.as_str())];
        let mut args = tiny.to_vec();
        args.extend(["--precompute", "ort", "--out", out]);
        let result = stylize_with(&args, &env);
        let stderr = String::from_utf8_lossy(&result.stderr);
        // A clean error (70: this machine's install, docs/render-farm.md), not a panic (101).
        assert_eq!(
            result.status.code(),
            Some(70),
            "{library}: a clean error, not a panic:\n{stderr}"
        );
        assert!(
            stderr.contains("--precompute") && stderr.contains("ONNX Runtime"),
            "{stderr}"
        );

        let mut args = tiny.to_vec();
        args.extend(["--precompute", "auto", "--out", out]);
        let result = stylize_with(&args, &env);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(
            result.status.success(),
            "{library}: auto falls back:\n{stderr}"
        );
        assert!(stderr.contains("falling back to candle"), "{stderr}");
    }
    fails_naming(&["run", "--precompute", "gpu"], &["--precompute", "gpu"]);
    fails_naming(&["run", "--engine", "gpu"], &["--engine", "gpu"]);
    fails_naming(
        &["run", "--engine", "ort", "--pooling", "avg"],
        &["--engine", "max pooling only"],
    );
}

#[test]
fn both_engines_run_and_agree_on_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut finals = Vec::new();
    for engine in ["candle", "ort"] {
        let out = dir.path().join(format!("{engine}.png"));
        let args = [
            "run",
            "--size",
            "48",
            "--iterations",
            "5",
            "--optimizer",
            "adam",
            "--quiet",
            "--engine",
            engine,
        ];
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--out", out.to_str().unwrap()]);
        let result = stylize(&all);
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let loss: f64 = stdout.trim().rsplit(' ').next().unwrap().parse().unwrap();
        finals.push(loss);
    }
    // Two float32 implementations after five Adam steps, not an exactness check of either:
    // equal to the five digits printed at 1 and 2 threads (scripts/spreads.sh).
    let relative = common::measured(
        "cli/candle vs ort final loss",
        (finals[0] - finals[1]).abs() / finals[0],
    );
    assert!(relative < 1e-3, "candle {} vs ort {}", finals[0], finals[1]);
}

/// `serve` checks everything it needs before it listens: a missing or corrupt weights file,
/// an ONNX Runtime library that will not load, an unreadable or invalid TLS identity or
/// token file ends it at once with one clear line and exit status 1, having bound nothing.
#[test]
fn serve_refuses_to_start_without_its_weights_or_library() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not weights at all").unwrap();
    let missing = dir.path().join("missing.safetensors");
    let (garbage, missing) = (garbage.to_str().unwrap(), missing.to_str().unwrap());
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    /// Extra flags, extra environment, what the error line must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 6] = [
        (
            &["--weights", missing],
            &[],
            &[missing, "stylize weights fetch"],
        ),
        (&["--weights", garbage], &[], &[garbage]),
        (
            &["--tls-cert", garbage, "--tls-key", garbage],
            &[],
            &["tls-cert"],
        ),
        (
            &["--tls-cert", missing, "--tls-key", garbage],
            &[],
            &["--tls-cert", missing],
        ),
        (
            &["--auth-token-file", missing],
            &[],
            &["--auth-token-file", missing],
        ),
        (
            &["--precompute", "ort"],
            &[("ORT_DYLIB_PATH", "/no/such/libonnxruntime.so")],
            &["--precompute", "/no/such/libonnxruntime.so"],
        ),
    ];
    for (flags, env, needles) in cases {
        let args: Vec<&str> = serve.iter().chain(flags).copied().collect();
        let started = std::time::Instant::now();
        let out = stylize_with(&args, env);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        // A clean refusal, not a panic (101): 65 for a file the flags name, 70 for this
        // machine's install (weights, library).
        assert!(
            matches!(out.status.code(), Some(65 | 70)),
            "{flags:?}: {:?}\n{stderr}",
            out.status.code()
        );
        // 0.11-0.60 s at 1 and 2 threads.
        let took = common::seconds_since("cli/serve refusal s", started);
        assert!(took < 30.0, "{flags:?} took {took:.1} s");
        assert!(!stdout.contains("listening"), "{flags:?} started: {stdout}");
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{flags:?}:\n{stderr}");
        for needle in needles {
            assert!(
                error_lines[0].contains(needle),
                "{flags:?}: lacks {needle}:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Identical requests on one machine give identical bytes: in separate processes and with
/// ONNX Runtime's and rayon's threads at 1, 2 or 3 (more than this 2-core machine has), for
/// both engines, on an image big enough that the optimiser's reductions span several chunks
/// and with the 16-bit output, which shows differences an 8-bit one rounds away.
#[test]
fn identical_runs_give_identical_bytes_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    for (engine, size, scales) in [("ort", "200", "2"), ("candle", "128", "1")] {
        let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
        for (run, threads) in ["2", "2", "1", "3"].into_iter().enumerate() {
            let out = dir.path().join(format!("{engine}-{run}.png"));
            let args = [
                "run",
                "--engine",
                engine,
                "--size",
                size,
                "--scales",
                scales,
                "--iterations",
                "4",
                "--png16",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ];
            let env = [
                ("RAYON_NUM_THREADS", threads),
                ("STYLIZE_ORT_THREADS", threads),
            ];
            let result = stylize_with(&args, &env);
            assert!(
                result.status.success(),
                "{engine} at {threads} threads: {}",
                String::from_utf8_lossy(&result.stderr)
            );
            outputs.push((
                format!("run {run} at {threads} threads"),
                std::fs::read(&out).unwrap(),
            ));
        }
        let (first, bytes) = &outputs[0];
        for (other, other_bytes) in &outputs[1..] {
            assert!(
                bytes == other_bytes,
                "{engine}: {other} differs from {first}"
            );
        }
    }
    // A thread count from the environment that is not one is refused, naming the variable.
    for name in ["STYLIZE_ORT_THREADS", "RAYON_NUM_THREADS"] {
        for value in ["two", "-1"] {
            let out = dir.path().join("refused.png");
            let result = stylize_with(
                &[
                    "run",
                    "--size",
                    "32",
                    "--iterations",
                    "1",
                    "--quiet",
                    "--out",
                    out.to_str().unwrap(),
                ],
                &[(name, value)],
            );
            let stderr = String::from_utf8_lossy(&result.stderr);
            assert!(!result.status.success(), "{name}={value} was accepted");
            assert!(
                stderr.contains(name) && stderr.contains("thread count"),
                "{stderr}"
            );
            assert!(!out.exists());
        }
    }
}

/// A farm requeues a task by its exit code (docs/render-farm.md): usage 64, bad input 65,
/// temporary 75.
#[test]
fn exit_codes_say_what_a_farm_should_do() {
    let code = |args: &[&str]| stylize(args).status.code();
    assert_eq!(
        code(&["run", "--no-such-flag"]),
        Some(64),
        "an unknown flag"
    );
    assert_eq!(
        code(&["run", "--tolerance", "-1"]),
        Some(64),
        "a flag's value"
    );
    assert_eq!(code(&["--help"]), Some(0), "help is an answer");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.png");
    let out = dir.path().join("out.png");
    let (missing, out) = (missing.to_str().unwrap(), out.to_str().unwrap());
    assert_eq!(
        code(&["run", "--content", missing, "--size", "32", "--out", out]),
        Some(65),
        "a missing input file"
    );
    // Nothing listens on port 1: the server is unreachable, so the task is requeued.
    assert_eq!(
        code(&[
            "submit",
            "--server",
            "http://127.0.0.1:1",
            "--content",
            concat!(env!("CARGO_MANIFEST_DIR"), "/assets/chelsea.png"),
            "--style",
            concat!(env!("CARGO_MANIFEST_DIR"), "/assets/starry_night.jpg"),
            "--retries",
            "0",
            "--size",
            "32",
            "--out",
            out,
        ]),
        Some(75),
        "an unreachable server"
    );
}
