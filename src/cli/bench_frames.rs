//! `stylize bench --frames`: peak memory and seconds per iteration of whole jobs at
//! production frame sizes, tiled and (where the memory model says it fits this machine)
//! untiled. Each configuration runs as its own `stylize run` process, so each peak is its
//! own; the ratio of tiled to untiled seconds is measured in the same run.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use stylize::engine::footprint::{Footprint, JobShape};
use stylize::memory::Budget;

/// One configuration's figures, as `stylize run --report` prints them.
#[derive(serde::Deserialize)]
struct Report {
    peak_rss_bytes: Option<u64>,
    seconds_per_iteration: f64,
    tiles: usize,
    kept_stages: usize,
    estimate_bytes: u64,
}

/// How the tiled runs are cut: a forced tile side, a budget to plan for, or both.
#[derive(Clone, Copy)]
struct Tiling {
    tile: Option<u32>,
    /// Bytes the tiled runs are planned for.
    budget: usize,
}

/// Parses `1920x1080`.
pub fn parse_frame(text: &str) -> Result<(u32, u32)> {
    let (w, h) = text
        .split_once('x')
        .with_context(|| format!("--frames: `{text}` is not WIDTHxHEIGHT"))?;
    let (w, h): (u32, u32) = (w.parse()?, h.parse()?);
    if !(16..=8192).contains(&w) || !(16..=8192).contains(&h) {
        bail!("--frames: `{text}`: each side must be within 16..=8192");
    }
    Ok((w, h))
}

fn run_one(
    dir: &Path,
    (w, h): (u32, u32),
    tiling: Option<Tiling>,
    iterations: usize,
    engine: &str,
) -> Result<Report> {
    let content = dir.join(format!("content-{w}x{h}.png"));
    if !content.exists() {
        let demo = image::load_from_memory(super::args::DEMO_CONTENT)?.to_rgb8();
        image::imageops::resize(&demo, w, h, image::imageops::FilterType::Triangle)
            .save(&content)?;
    }
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .args(["run", "--quiet", "--report", "--engine", engine])
        .arg("--content")
        .arg(&content)
        .args(["--size", &w.max(h).to_string()])
        .args(["--iterations", &iterations.to_string()])
        // The memory model must not tile the untiled runs behind the bench's back.
        .args([
            "--memory-budget",
            &tiling.map_or(UNLIMITED, |t| t.budget).to_string(),
        ])
        .arg("--out")
        .arg(dir.join("out.png"));
    if let Some(tile) = tiling.and_then(|t| t.tile) {
        command.args(["--tile-size", &tile.to_string()]);
    }
    let output = command.output()?;
    if !output.status.success() {
        bail!(
            "stylize run {w}x{h} (tiled: {}) failed: {}",
            tiling.is_some(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .context("stylize run printed no report")?;
    Ok(serde_json::from_str(line)?)
}

/// Whether the memory model says `frame` runs untiled within this machine's budget.
fn untiled_fits((w, h): (u32, u32), iterations: usize, footprint: &Footprint, budget: u64) -> bool {
    let pixels = (w * h) as usize;
    let job = JobShape {
        frame_pixels: pixels,
        whole_pixels: pixels,
        tile_values: 0,
        stage_map_values: 0,
        kept_values: (0, 0, 0),
        style_pixels: pixels,
        // A run of N iterations stores at most N - 1 curvature pairs.
        history: iterations.saturating_sub(1),
    };
    footprint.job_bytes(&job) + footprint.resident <= budget
}

/// A budget no frame reaches (64 TiB).
const UNLIMITED: usize = 64 << 40;

pub fn frames_table(
    frames: &[(u32, u32)],
    tile: Option<u32>,
    budget: Option<usize>,
    iterations: usize,
    engine: &str,
) -> Result<()> {
    let footprint = match engine {
        "candle" => Footprint::CANDLE_CPU,
        _ => Footprint::ORT_CPU,
    };
    let budget_bytes = Budget::detect(None)?.bytes;
    let dir = std::env::temp_dir().join(format!("stylize-bench-frames-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tiling = Tiling {
        // Without a budget to plan for, tiles of 512 (every tile's state is then kept).
        tile: tile.or(budget.is_none().then_some(512)),
        budget: budget.unwrap_or(UNLIMITED),
    };
    let result = table(
        frames,
        tiling,
        iterations,
        engine,
        &footprint,
        budget_bytes,
        &dir,
    );
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn table(
    frames: &[(u32, u32)],
    tiling: Tiling,
    iterations: usize,
    engine: &str,
    footprint: &Footprint,
    budget: u64,
    dir: &Path,
) -> Result<()> {
    println!(
        "frames ({engine} engine, {iterations} L-BFGS iterations, default layers, style at the frame's size; tiled: cores {}, planned for budget {} MiB; this machine's budget {} MiB):",
        tiling
            .tile
            .map_or("as planned".to_string(), |t| format!("{t} px")),
        tiling.budget >> 20,
        budget >> 20
    );
    println!(
        "{:>10} {:>7} {:>6} {:>5} {:>10} {:>12} {:>10} {:>12}",
        "frame", "mode", "tiles", "kept", "peak MiB", "estimate MiB", "s/iter", "vs untiled"
    );
    for &frame in frames {
        let untiled = if untiled_fits(frame, iterations, footprint, budget) {
            Some(run_one(dir, frame, None, iterations, engine)?)
        } else {
            None
        };
        let tiled = run_one(dir, frame, Some(tiling), iterations, engine)?;
        let label = format!("{}x{}", frame.0, frame.1);
        let row = |mode: &str, r: &Report, ratio: String| {
            println!(
                "{:>10} {:>7} {:>6} {:>5} {:>10} {:>12} {:>10.2} {:>12}",
                label,
                mode,
                r.tiles,
                r.kept_stages,
                r.peak_rss_bytes
                    .map_or("n/a".into(), |b| (b >> 20).to_string()),
                r.estimate_bytes >> 20,
                r.seconds_per_iteration,
                ratio
            )
        };
        match &untiled {
            Some(u) => {
                row("untiled", u, "1.00".into());
                row(
                    "tiled",
                    &tiled,
                    format!(
                        "{:.2}",
                        tiled.seconds_per_iteration / u.seconds_per_iteration
                    ),
                );
            }
            None => {
                println!(
                    "{label:>10} {:>7} does not fit this machine's memory",
                    "untiled"
                );
                row("tiled", &tiled, "-".into());
            }
        }
    }
    Ok(())
}
