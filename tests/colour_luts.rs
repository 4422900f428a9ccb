//! A studio's view as OpenColorIO bakes it (issue 29): `scripts/bake-luts.sh` bakes, with
//! `ociobakelut` from OCIO's built-in ACES config, the ACES 2.0 SDR view of ACEScg (a 1D shaper
//! over ACEScct and a 33³ lattice) and OCIO's inverse of it (a 65³ lattice). stylize's reader
//! must apply both as OpenColorIO does (`ociochecklut` on probe colours), and the pair must
//! round-trip within the documented tolerance over what the view shows unclipped.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use stylize::colour::view::{DISPLAY_KEPT, LUT_ROUND_TRIP_TOLERANCE};
use stylize::colour::{CubeLut, Interpolation, LutPair, View};

fn baked() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(root.join("scripts/bake-luts.sh"))
            .status()
            .unwrap();
        assert!(status.success(), "scripts/bake-luts.sh failed");
        root.join("models/luts")
    })
}

fn lut(name: &str) -> CubeLut {
    let path = baked().join(name);
    CubeLut::parse(name, &std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rgb(text: &str) -> [f32; 3] {
    let v: Vec<f32> = text
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    [v[0], v[1], v[2]]
}

#[test]
fn ocio_baked_views_apply_as_opencolorio_applies_them_and_invert_within_tolerance() {
    let (view, inverse) = (lut("aces-sdr-view.cube"), lut("aces-sdr-inverse.cube"));
    let probes = std::fs::read_to_string(baked().join("probes.txt")).unwrap();
    for line in probes.lines() {
        let parts: Vec<[f32; 3]> = line.split('|').map(rgb).collect();
        let (scene, shown, back) = (parts[0], parts[1], parts[2]);
        // ociochecklut samples a .cube lattice tetrahedrally (a grey stays grey).
        let ours = view.apply(scene, Interpolation::Tetrahedral);
        for (a, b) in ours.iter().zip(shown) {
            assert!(
                (a - b).abs() < 1e-4,
                "view of {scene:?}: {ours:?}, OCIO {shown:?}"
            );
        }
        let ours = inverse.apply(shown, Interpolation::Tetrahedral);
        for (a, b) in ours.iter().zip(back) {
            // Relative to the colour's level: the inverse lattice spans [0, ~150].
            let level = back.iter().fold(0.02f32, |m, v| m.max(v.abs()));
            assert!(
                (a - b).abs() / level < 1e-3,
                "inverse of {shown:?}: {ours:?}, OCIO {back:?}"
            );
        }
    }
    for interpolation in [Interpolation::Tetrahedral, Interpolation::Trilinear] {
        let pair = LutPair::new("view", view.clone(), inverse.clone(), interpolation).unwrap();
        println!(
            "{interpolation:?}: round trip within {:.3}% over colours the view keeps in {DISPLAY_KEPT:?}",
            100.0 * pair.round_trip
        );
        assert!(pair.round_trip <= LUT_ROUND_TRIP_TOLERANCE);
        // Mid-grey and a warm colour above 1.0 (shown at 0.82) come back through the view.
        let view = View::Lut(std::sync::Arc::new(pair));
        for x in [[0.18, 0.18, 0.18], [1.2, 0.6, 0.3]] {
            let back = view.decode(view.encode(x));
            for (a, b) in x.iter().zip(back) {
                assert!(
                    (a - b).abs() / x[0] < LUT_ROUND_TRIP_TOLERANCE as f32,
                    "{x:?}: {back:?}"
                );
            }
        }
    }
    // The view against itself as its own inverse is not a view pair: refused, naming it.
    let refused = LutPair::new("view", view.clone(), view, Interpolation::Tetrahedral).unwrap_err();
    assert!(refused.to_string().contains("view"), "{refused}");
}

/// The log-average luminance of an OpenEXR file's whole colour.
fn log_average(path: &std::path::Path) -> f32 {
    common::log_average_luminance(&std::fs::read(path).unwrap(), &|_| true).0
}

/// `stylize run --view-lut FORWARD,INVERSE` on a real render (the shared Blender frame):
/// stylised through the studio's view, it returns to scene-linear light at the frame's level;
/// a malformed LUT is refused naming its file and line; a picture that is not OpenEXR is
/// refused (a view turns light into a picture).
#[test]
fn the_cli_stylises_through_a_studio_view_and_refuses_bad_luts() {
    common::weights();
    common::ort_features(stylize::engine::Pooling::Max);
    let dir = tempfile::tempdir().unwrap();
    let pair = format!(
        "{},{}",
        baked().join("aces-sdr-view.cube").display(),
        baked().join("aces-sdr-inverse.cube").display()
    );
    let frame = common::shots::shared(1, "exr");
    let run = |content: &std::path::Path, lut: &str| {
        Command::new(env!("CARGO_BIN_EXE_stylize"))
            .args([
                "run",
                "--content",
                &content.display().to_string(),
                "--view-lut",
                lut,
            ])
            .args([
                "--size",
                "64",
                "--scales",
                "1",
                "--iterations",
                "5",
                "--progress",
                "none",
            ])
            .arg("--out")
            .arg(dir.path().join("out.exr"))
            .env("STYLIZE_MODELS_DIR", common::models_dir())
            .output()
            .unwrap()
    };
    let done = run(&frame, &pair);
    let said = String::from_utf8_lossy(&done.stderr).to_string();
    assert!(done.status.success(), "{said}");
    assert!(said.contains("round-trips within"), "{said}");
    let (input, output) = (
        log_average(&frame),
        log_average(&dir.path().join("out.exr")),
    );
    println!("log-average luminance: input {input:.4}, stylised through the view {output:.4}");
    assert!(
        (input / 2.0..=input * 2.0).contains(&output),
        "{input} -> {output}"
    );

    let bad = dir.path().join("bad.cube");
    let text = std::fs::read_to_string(baked().join("aces-sdr-inverse.cube")).unwrap();
    std::fs::write(&bad, text.replacen("0.", "nan ", 1)).unwrap();
    let refused = run(
        &frame,
        &format!(
            "{},{}",
            baked().join("aces-sdr-view.cube").display(),
            bad.display()
        ),
    );
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert_eq!(refused.status.code(), Some(65), "{said}");
    assert!(
        said.contains("--view-lut") && said.contains("bad.cube line"),
        "{said}"
    );

    let png = common::shots::shared(1, "png");
    let refused = run(&png, &pair);
    assert_eq!(
        refused.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// The planes of an OpenEXR file's colour, as bits.
fn colour_bits(path: &std::path::Path) -> Vec<Vec<u32>> {
    let bytes = std::fs::read(path).unwrap();
    let file = stylize::exr_file::ExrFile::open(&bytes, "file").unwrap();
    let colour = file.colour_channels().unwrap();
    let read = file.read(&colour.each_ref().map(String::as_str)).unwrap();
    read.planes
        .iter()
        .map(|p| p.iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// `stylize submit --view-lut` sends the pair in `options.view_lut`: the server stylises
/// through it as `stylize run` does (the same bits), parses a pair once and reuses it for
/// the next request that sends it, and refuses a malformed one naming the field, the file
/// and the line.
#[test]
fn a_studio_view_travels_on_the_wire_and_is_parsed_once() {
    let dir = tempfile::tempdir().unwrap();
    let pair = format!(
        "{},{}",
        baked().join("aces-sdr-view.cube").display(),
        baked().join("aces-sdr-inverse.cube").display()
    );
    let frame = common::shots::shared(1, "exr").display().to_string();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let quick = ["--size", "64", "--scales", "1", "--iterations", "5"];
    let run = common::run_cli(
        &[
            &[
                "run",
                "--content",
                &frame,
                "--view-lut",
                &pair,
                "--out",
                &at("local.exr"),
            ][..],
            &quick[..],
            &["--progress", "none"],
        ]
        .concat(),
    );
    assert!(run.status.success(), "{}", common::said(&run));

    let server = common::server::Server::start(&["--workers", "1"]);
    let address = format!("http://{}", server.addr);
    let style = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/starry_night.jpg");
    let submit = |lut: &str, out: &str| {
        common::run_cli(
            &[
                &[
                    "submit",
                    "--server",
                    &address,
                    "--style",
                    style,
                    "--content",
                    &frame,
                    "--view-lut",
                    lut,
                    "--out",
                    out,
                ][..],
                &quick[..],
            ]
            .concat(),
        )
    };
    for name in ["served.exr", "again.exr"] {
        let served = submit(&pair, &at(name));
        assert!(served.status.success(), "{}", common::said(&served));
        assert!(
            colour_bits(&dir.path().join(name)) == colour_bits(&dir.path().join("local.exr")),
            "{name} differs from stylize run's"
        );
    }
    assert_eq!(
        server.metric(r#"stylize_view_luts_total{found="parsed"}"#),
        1.0
    );
    assert_eq!(
        server.metric(r#"stylize_view_luts_total{found="cached"}"#),
        1.0
    );

    let bad = dir.path().join("bad.cube");
    let text = std::fs::read_to_string(baked().join("aces-sdr-inverse.cube")).unwrap();
    std::fs::write(&bad, text.replacen("0.", "nan ", 1)).unwrap();
    let bad_pair = format!(
        "{},{}",
        baked().join("aces-sdr-view.cube").display(),
        bad.display()
    );
    let refused = submit(&bad_pair, &at("bad.exr"));
    let said = common::said(&refused);
    assert_eq!(refused.status.code(), Some(65), "{said}");
    assert!(said.contains("options.view_lut.inverse line"), "{said}");
    assert!(!dir.path().join("bad.exr").exists());
}

/// A shot through the studio view: `stylize sequence --view-lut` in process and
/// `stylize submit-sequence --view-lut` through a server (the pair sent once, in the setup)
/// deliver the same frames, bit for bit, at the frames' light level.
#[test]
fn a_shot_goes_through_a_studio_view_in_process_and_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let pair = format!(
        "{},{}",
        baked().join("aces-sdr-view.cube").display(),
        baked().join("aces-sdr-inverse.cube").display()
    );
    let frames = common::shots::shared(1, "exr")
        .display()
        .to_string()
        .replace("0001", "####");
    let at = |name: &str| dir.path().join(name).display().to_string();
    let shot = [
        "--frames",
        &frames,
        "--frame-range",
        "1-3",
        "--view-lut",
        &pair,
        "--size",
        "64",
        "--scales",
        "1",
        "--iterations",
        "4",
        "--later-iterations",
        "2",
        "--progress",
        "none",
    ];
    let local =
        common::run_cli(&[&["sequence", "--out", &at("local_####.exr")][..], &shot].concat());
    assert!(local.status.success(), "{}", common::said(&local));
    let server = common::server::Server::start(&["--workers", "1"]);
    let address = format!("http://{}", server.addr);
    let style = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/starry_night.jpg");
    let served = common::run_cli(
        &[
            &[
                "submit-sequence",
                "--server",
                &address,
                "--style",
                style,
                "--out",
                &at("served_####.exr"),
            ][..],
            &shot,
        ]
        .concat(),
    );
    assert!(served.status.success(), "{}", common::said(&served));
    for t in 1..=3 {
        let local = dir.path().join(format!("local_{t:04}.exr"));
        let served = dir.path().join(format!("served_{t:04}.exr"));
        assert!(
            colour_bits(&local) == colour_bits(&served),
            "frame {t} differs"
        );
    }
    let (input, output) = (
        log_average(&common::shots::shared(1, "exr")),
        log_average(&dir.path().join("local_0001.exr")),
    );
    println!(
        "a shot through the studio view: frame 1's log-average luminance {input:.4} in, {output:.4} out"
    );
    assert!(
        (input / 2.0..=input * 2.0).contains(&output),
        "{input} -> {output}"
    );
    assert_eq!(
        server.metric(r#"stylize_view_luts_total{found="parsed"}"#),
        1.0
    );
}
