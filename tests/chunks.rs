//! A shot split into tasks must look like the shot run whole (issue 28): the shared
//! rolling-ball shot (16 frames, 256 px, `--quality standard`) rendered once whole and once
//! as 4 chunks of 4 frames, each chunk a fresh `stylize sequence` process continuing the
//! chain from the chunk before through the output pattern. Each delivered frame's warping
//! error (its 8-bit file against the previous delivered file warped along the motion) is
//! measured from the files alone; the whole-shot figure must be within 10% of the
//! uninterrupted run's, and no chunk's first frame may pop (above 1.5x the median of the
//! other frames).

mod common;

use std::path::Path;
use std::process::Command;

use stylize::motion::{ExrMotionChannels, read_exr};
use stylize::render::sequence::{warp_previous, warping_error};

const FRAMES: u64 = 16;
const CHUNK: u64 = 4;

fn sequence(out: &str, range: &str) {
    common::weights();
    common::ort_features(stylize::engine::Pooling::Max);
    let frames = common::shots::shared(1, "exr")
        .display()
        .to_string()
        .replace("0001", "%04d");
    let run = Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args(["sequence", "--frames", &frames, "--frame-range", range])
        .args(["--out", out, "--size", "256", "--quality", "standard"])
        .args(["--progress", "none"])
        .env("STYLIZE_MODELS_DIR", common::models_dir())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{range}: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The warping error of each delivered frame 2..=16 against the one before it, from the
/// files `name.NNNN.png` in `dir`, with the consistency-checked motion of the shot.
fn warping_errors(dir: &Path, name: &str) -> Vec<f64> {
    let load = |t: u64| stylize::image_io::load(&dir.join(format!("{name}.{t:04}.png"))).unwrap();
    (2..=FRAMES)
        .map(|t| {
            let exr = |t: u64| common::shots::shared(t as usize, "exr");
            let back = read_exr(&exr(t), &ExrMotionChannels::blender_to_previous()).unwrap();
            let forward = read_exr(&exr(t - 1), &ExrMotionChannels::blender_to_next()).unwrap();
            let (frame, previous) = (load(t), load(t - 1));
            let (warped, certainty) =
                warp_previous(&previous, &back, Some(&forward), None, frame.dimensions());
            warping_error(&frame, &warped, &certainty).unwrap()
        })
        .collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn a_shot_in_chunks_matches_the_shot_run_whole() {
    let out = tempfile::tempdir().unwrap();
    let at = |name: &str| out.path().join(name).display().to_string();
    sequence(&at("whole.####.png"), &format!("1-{FRAMES}"));
    for first in (1..=FRAMES).step_by(CHUNK as usize) {
        sequence(
            &at("chunk.####.png"),
            &format!("{first}-{}", first + CHUNK - 1),
        );
    }
    let whole = warping_errors(out.path(), "whole");
    let chunked = warping_errors(out.path(), "chunk");
    println!("| frame | E_warp whole | E_warp chunked |\n|---|---|---|");
    for (i, (w, c)) in whole.iter().zip(&chunked).enumerate() {
        println!("| {} | {w:.2} | {c:.2} |", i + 2);
    }
    let ratio = mean(&chunked) / mean(&whole);
    println!(
        "whole-shot E_warp: whole {:.2}, chunked {:.2} ({ratio:.4}x)",
        mean(&whole),
        mean(&chunked)
    );
    assert!((ratio - 1.0).abs() <= 0.10, "chunked / whole = {ratio:.4}");
    // Frames 5, 9 and 13 start chunks: index t - 2 among frames 2..=16.
    let joins: Vec<usize> = (1 + CHUNK..=FRAMES)
        .step_by(CHUNK as usize)
        .map(|t| t as usize - 2)
        .collect();
    let mut others: Vec<f64> = (0..chunked.len())
        .filter(|i| !joins.contains(i))
        .map(|i| chunked[i])
        .collect();
    others.sort_by(f64::total_cmp);
    let median = others[others.len() / 2];
    for &i in &joins {
        let pop = chunked[i] / median;
        println!(
            "join at frame {}: {pop:.3}x the median of the other frames",
            i + 2
        );
        assert!(pop <= 1.5, "frame {} pops: {pop:.3}x", i + 2);
    }
}
