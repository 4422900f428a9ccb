//! Frames addressed as a farm writes them (issue 28): `%04d` and `$F4` patterns, a shot
//! numbered from 1001, `--frame-range`, outputs named by frame number, a chunk in a fresh
//! process continuing the chain from the chunk before, a missing frame refused before any
//! work, and Open Job Description progress lines.

mod common;

use std::path::Path;
use std::process::Output;

/// A folder holding the shared shot's first `frames` frames (OpenEXR with their Vector
/// pass) renumbered from 1001, as links.
fn shot_from_1001(frames: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for t in 1..=frames {
        let name = format!("plate.{}.exr", 1000 + t);
        std::os::unix::fs::symlink(common::shots::shared(t, "exr"), dir.path().join(name)).unwrap();
    }
    dir
}

/// `stylize` with `args` at the small, quick settings every run here uses.
fn stylize(args: &[&str]) -> Output {
    let quick = [
        "--size",
        "64",
        "--iterations",
        "4",
        "--later-iterations",
        "2",
        "--scales",
        "1",
    ];
    common::run_cli(&[args, &quick[..]].concat())
}

fn at(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn pixels(path: &Path) -> Vec<u8> {
    stylize::image_io::load(path).unwrap().into_raw()
}

/// `openjd_progress:` lines never go down and end at 100; every `openjd_status:` line says
/// where the task stands; a percent is never printed twice within a second of itself.
fn check_openjd_lines(stdout: &str) {
    let percents: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("openjd_progress: "))
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(percents.len() >= 2, "{stdout}");
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    assert_eq!(percents.last(), Some(&100.0));
    let status = regex_free_status(stdout);
    assert!(!status.is_empty(), "{stdout}");
}

/// `progress:` lines read as docs/render-farm.md's regex reads them, never go down, end at
/// 100%, and name a frame of `numbers` with its place among them.
fn check_plain_lines(stdout: &str, numbers: std::ops::RangeInclusive<u64>) {
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert!(lines.len() >= 2, "{stdout}");
    let mut percents = Vec::new();
    for line in &lines {
        // The documented regex: `^progress: ([0-9]+(?:\.[0-9]+)?)%`.
        let (percent, rest) = line["progress: ".len()..].split_once("% ").expect(line);
        assert!(
            !percent.is_empty() && percent.chars().all(|c| c.is_ascii_digit() || c == '.'),
            "{line}"
        );
        percents.push(percent.parse::<f64>().unwrap());
        if rest == "done" {
            continue;
        }
        let frame = rest.strip_prefix("frame ").expect(line);
        let (number, place) = frame.split_once(" (").expect(line);
        assert!(numbers.contains(&number.parse().unwrap()), "{line}");
        let at = number.parse::<u64>().unwrap() - numbers.start() + 1;
        let of = numbers.end() - numbers.start() + 1;
        assert!(place.starts_with(&format!("{at}/{of}), scale ")), "{line}");
    }
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    assert_eq!(percents.last(), Some(&100.0), "{stdout}");
}

/// The `openjd_status:` lines, each checked to read
/// `frame N (i/n), scale a/b, iteration c/d`.
fn regex_free_status(stdout: &str) -> Vec<String> {
    let lines: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("openjd_status: "))
        .map(str::to_string)
        .collect();
    for line in &lines {
        let parts: Vec<&str> = line.split(", ").collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert!(parts[0].starts_with("frame 100"), "{line}");
        assert!(parts[1].starts_with("scale "), "{line}");
        assert!(parts[2].starts_with("iteration "), "{line}");
    }
    lines
}

#[test]
fn frames_are_addressed_numbered_and_chunked_as_a_farm_splits_a_shot() {
    let input = shot_from_1001(6);
    let out = tempfile::tempdir().unwrap();
    let frames = at(input.path(), "plate.%04d.exr");

    // The whole shot, for reference, into its own files.
    let whole = at(out.path(), "whole.$F4.png");
    let run = stylize(&["sequence", "--frames", &frames, "--out", &whole, "--quiet"]);
    assert!(run.status.success(), "{}", common::said(&run));
    for n in 1001..=1006 {
        assert!(out.path().join(format!("whole.{n}.png")).is_file());
    }

    // The same shot as two tasks, each a fresh process: the second continues the chain
    // from the first's last delivered frame, found through the output pattern.
    let chunked = at(out.path(), "chunk.####.png");
    let first = stylize(&[
        "sequence",
        "--frames",
        &frames,
        "--frame-range",
        "1001-1003",
        "--out",
        &chunked,
        "--progress",
        "openjd",
    ]);
    let said = common::said(&first);
    assert!(first.status.success(), "{said}");
    check_openjd_lines(&String::from_utf8_lossy(&first.stdout));
    assert!(out.path().join("chunk.1003.png").is_file());
    assert!(!out.path().join("chunk.1004.png").exists(), "{said}");
    let second = stylize(&[
        "sequence",
        "--frames",
        &frames,
        "--frame-range",
        "1004-1006",
        "--out",
        &chunked,
        "--progress",
        "plain",
    ]);
    let said = common::said(&second);
    assert!(second.status.success(), "{said}");
    check_plain_lines(&String::from_utf8_lossy(&second.stdout), 1004..=1006);
    assert!(
        said.contains("continuing the chain from frame 1003"),
        "{said}"
    );
    assert!(!said.contains("frame 1003: wrote"), "{said}");
    // Frame 1004 was held to 1003 (not restarted as a still), and every chunked frame is
    // the whole run's: the chain read back from the 8-bit file is the chain kept in memory.
    assert!(
        said.contains("frame 1004:") && !said.contains("held 0.0%"),
        "{said}"
    );
    for n in 1001..=1006 {
        let (a, b) = (
            out.path().join(format!("chunk.{n}.png")),
            out.path().join(format!("whole.{n}.png")),
        );
        let (a, b) = (pixels(&a), pixels(&b));
        let worst = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max();
        // The chain read back is the chain kept: the bound held at 1 and 2 threads (only a
        // summation order could move a level).
        assert!(worst <= Some(4), "frame {n}: differs by {worst:?} levels");
    }

    // --continue-from names the frame explicitly (here: into a pattern with no earlier
    // frames, and 1003's output copied elsewhere).
    let elsewhere = out.path().join("handed-over.png");
    std::fs::copy(out.path().join("chunk.1003.png"), &elsewhere).unwrap();
    let explicit = stylize(&[
        "sequence",
        "--frames",
        &frames,
        "--frame-range",
        "1004",
        "--out",
        &at(out.path(), "explicit.####.png"),
        "--continue-from",
        &elsewhere.display().to_string(),
        "--quiet",
    ]);
    let said = common::said(&explicit);
    assert!(explicit.status.success(), "{said}");
    assert_eq!(
        pixels(&out.path().join("explicit.1004.png")),
        pixels(&out.path().join("chunk.1004.png"))
    );

    // A chunk whose predecessor is not rendered yet is refused before any work, naming the
    // missing file and the way out; a farm requeues it (75) until the chunk before is done.
    let orphan = stylize(&[
        "sequence",
        "--frames",
        &frames,
        "--frame-range",
        "1005-1006",
        "--out",
        &at(out.path(), "orphan.####.png"),
    ]);
    let said = common::said(&orphan);
    assert_eq!(orphan.status.code(), Some(75), "{said}");
    assert!(
        said.contains("orphan.1004.png") && said.contains("--continue-from"),
        "{said}"
    );
    assert!(!out.path().join("orphan.1005.png").exists());
}

#[test]
fn a_missing_frame_or_a_gap_is_refused_before_any_work() {
    let input = shot_from_1001(5);
    std::fs::remove_file(input.path().join("plate.1003.exr")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let frames = at(input.path(), "plate.####.exr");
    let written = at(out.path(), "styled.####.png");
    // A file that is not there is bad input (65); a range that cannot be a shot, usage (64).
    for (range, says, code) in [
        (None, "frame 1003 is missing", 65),
        (Some("1001-1004"), "frame 1003 is missing", 65),
        (Some("1001-1005x2"), "skips frame 1002", 64),
        (Some("1001-"), "--frame-range", 64),
    ] {
        let mut args = vec!["sequence", "--frames", &frames, "--out", &written];
        if let Some(range) = range {
            args.extend(["--frame-range", range]);
        }
        let refused = stylize(&args);
        let said = common::said(&refused);
        assert_eq!(refused.status.code(), Some(code), "{range:?}: {said}");
        assert!(said.contains(says), "{range:?}: {said}");
        if says.contains("missing") {
            assert!(said.contains("plate.1003.exr"), "{said}");
        }
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "{said}");
    }
}
