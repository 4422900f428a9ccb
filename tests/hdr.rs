//! HDR survives a stylisation (issue 29): scene-linear OpenEXR content with a highlight at
//! 20 (an emissive light) is read through the ACEScct view at full precision, stylised, and
//! written back to OpenEXR through the view's inverse. The highlight comes back above 1.0
//! with its luminance within 2x of the input's, in process (`stylize run`) and through a
//! server (`stylize submit`); through the `srgb` view it is clipped to 1.0, as documented.

mod common;

use std::path::Path;
use std::process::Command;

use common::server::Server;
use stylize::exr_file::encode_rgb_half;

const SIDE: usize = 64;
/// The highlight: a square of light at 20 in the frame's middle.
const HIGHLIGHT: f32 = 20.0;

fn in_highlight(x: usize, y: usize) -> bool {
    (24..40).contains(&x) && (24..40).contains(&y)
}

/// A scene-linear frame: the demo photo (sRGB decoded to linear light) with the highlight.
fn hdr_frame(path: &Path) {
    let photo =
        stylize::image_io::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/chelsea.png"))
            .unwrap();
    let photo = stylize::image_io::resize_exact(&photo, SIDE as u32, SIDE as u32);
    let linear = |v: u8| {
        let v = v as f32 / 255.0;
        if v <= 0.040_45 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let planes: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            (0..SIDE * SIDE)
                .map(|i| {
                    let (x, y) = (i % SIDE, i / SIDE);
                    if in_highlight(x, y) {
                        HIGHLIGHT
                    } else {
                        linear(photo.get_pixel(x as u32, y as u32).0[c])
                    }
                })
                .collect()
        })
        .collect();
    let bytes = encode_rgb_half(SIDE, SIDE, [&planes[0], &planes[1], &planes[2]]).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The log-average luminance of the highlight in an OpenEXR output of the frame.
fn highlight_luminance(path: &Path) -> f32 {
    let bytes = std::fs::read(path).unwrap();
    let highlight = |i: usize| in_highlight(i % SIDE, i / SIDE);
    let (luminance, count, size) = common::log_average_luminance(&bytes, &highlight);
    assert_eq!((size, count), ((SIDE, SIDE), 16 * 16));
    luminance
}

fn stylize(args: &[&str]) {
    common::weights();
    common::ort_features(stylize::engine::Pooling::Max);
    let run = Command::new(env!("CARGO_BIN_EXE_stylize"))
        .args(args)
        .args(["--scales", "1", "--iterations", "10", "--progress", "none"])
        .env("STYLIZE_MODELS_DIR", common::models_dir())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn a_highlight_above_one_comes_back_above_one_through_the_log_view() {
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("frame.exr");
    hdr_frame(&frame);
    let at = |name: &str| dir.path().join(name).display().to_string();
    let content = frame.display().to_string();

    // In process, the default view for OpenEXR (acescct).
    stylize(&[
        "run",
        "--size",
        "64",
        "--content",
        &content,
        "--out",
        &at("log.exr"),
    ]);
    let log = highlight_luminance(&dir.path().join("log.exr"));
    // Through a server, the same default.
    let server = Server::start(&["--workers", "1"]);
    let address = format!("http://{}", server.addr);
    let style = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/starry_night.jpg");
    stylize(&[
        "submit",
        "--size",
        "64",
        "--server",
        &address,
        "--content",
        &content,
        "--style",
        style,
        "--out",
        &at("served.exr"),
    ]);
    let served = highlight_luminance(&dir.path().join("served.exr"));
    // The sRGB view clips it, as documented.
    stylize(&[
        "run",
        "--size",
        "64",
        "--content",
        &content,
        "--view",
        "srgb",
        "--out",
        &at("srgb.exr"),
    ]);
    let clipped = highlight_luminance(&dir.path().join("srgb.exr"));
    println!(
        "highlight luminance {HIGHLIGHT} in: acescct {log:.2} (in process), {served:.2} \
         (served); srgb {clipped:.3}"
    );
    for out in [log, served] {
        assert!(out > 1.0, "the highlight came back at {out}");
        assert!(
            (HIGHLIGHT / 2.0..=HIGHLIGHT * 2.0).contains(&out),
            "{out} is not within 2x of {HIGHLIGHT}"
        );
    }
    assert!(clipped <= 1.01, "srgb kept {clipped}");
}

/// The same on a real render: Blender's frame (tests/data/emissive.exr,
/// scripts/render_test_frame.py) with a sphere emitting at strength 20. Its pixels brighter
/// than 10 come back above 1.0, their luminance within 2x of the input's.
#[test]
fn an_emissive_object_in_a_blender_frame_keeps_its_light() {
    let frame = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/emissive.exr");
    let input = std::fs::read(&frame).unwrap();
    let file = stylize::exr_file::ExrFile::open(&input, "emissive.exr").unwrap();
    let colour = file.colour_channels().unwrap();
    let rgb = file.read(&colour.each_ref().map(String::as_str)).unwrap();
    let bright: Vec<bool> = (0..rgb.width * rgb.height)
        .map(|i| {
            let p = &rgb.planes;
            0.2126 * p[0][i] + 0.7152 * p[1][i] + 0.0722 * p[2][i] > 10.0
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("styled.exr");
    // At the frame's own size, so its pixels are compared one for one.
    stylize(&[
        "run",
        "--size",
        "96",
        "--content",
        &frame.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    let keep = |i: usize| bright[i];
    let (before, count, _) = common::log_average_luminance(&input, &keep);
    let output = std::fs::read(&out).unwrap();
    let (after, _, size) = common::log_average_luminance(&output, &keep);
    assert_eq!(size, (rgb.width, rgb.height));
    println!("{count} pixels above 10: log-average luminance {before:.2} in, {after:.2} out");
    assert!(count > 100, "{count}");
    assert!(
        after > 1.0 && (before / 2.0..=before * 2.0).contains(&after),
        "{before} -> {after}"
    );
}
