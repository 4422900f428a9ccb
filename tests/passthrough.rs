//! What a frame carries past its stylisation (issue 29): Blender's frame
//! (tests/data/emissive.exr: transparent film, a depth pass, a note in its header) keeps its
//! alpha, depth and header bit for bit with `--keep-passes`, in process and through a server;
//! without it the output is RGBA with the same alpha. An RGBA PNG keeps its alpha and its
//! fully transparent pixels. What cannot be kept is refused before any work, naming the flag
//! or field.

mod common;

use std::path::{Path, PathBuf};

use common::server::Server;
use exr::meta::MetaData;
use stylize::exr_file::ExrFile;

fn blender_frame() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/emissive.exr")
}

fn quick(args: &[&str]) -> std::process::Output {
    let quick = ["--scales", "1", "--iterations", "8", "--progress", "none"];
    common::run_cli(&[args, &quick[..]].concat())
}

/// `args` are refused as usage (exit 64) with a message naming `flag`.
fn refused_naming(args: &[&str], flag: &str) {
    let refused = quick(args);
    let said = common::said(&refused);
    assert_eq!(refused.status.code(), Some(64), "{said}");
    assert!(said.contains(flag), "{said}");
}

fn succeeds(args: &[&str]) {
    let run = quick(args);
    assert!(run.status.success(), "{}", common::said(&run));
}

/// Each plane of `channels` in `bytes`, as bits.
fn bits(bytes: &[u8], channels: &[&str]) -> Vec<Vec<u32>> {
    let file = ExrFile::open(bytes, "file").unwrap();
    let read = file.read(channels).unwrap();
    read.planes
        .iter()
        .map(|plane| plane.iter().map(|v| v.to_bits()).collect())
        .collect()
}

type Attributes = (
    exr::meta::header::LayerAttributes,
    exr::meta::header::ImageAttributes,
);

/// Every part's header attributes: the layer's own and the file's shared ones.
fn headers(bytes: &[u8]) -> Vec<Attributes> {
    let meta = MetaData::read_from_buffered(std::io::Cursor::new(bytes), false).unwrap();
    meta.headers
        .iter()
        .map(|h| (h.own_attributes.clone(), h.shared_attributes.clone()))
        .collect()
}

/// The frame stylised with its passes kept is the frame with only its colour changed.
fn check_kept(input: &[u8], output: &[u8]) {
    let (source, styled) = (
        ExrFile::open(input, "in").unwrap(),
        ExrFile::open(output, "out").unwrap(),
    );
    assert_eq!(styled.channel_names(), source.channel_names());
    let colour = source.colour_channels().unwrap();
    let colour: Vec<&str> = colour.iter().map(String::as_str).collect();
    let alpha = source.alpha_channel().unwrap();
    let others: Vec<String> = source
        .channel_names()
        .into_iter()
        .filter(|n| !colour.contains(&n.as_str()))
        .collect();
    assert!(others.iter().any(|n| n.ends_with("Depth.Z")), "{others:?}");
    for channel in &others {
        assert!(
            bits(input, &[channel]) == bits(output, &[channel]),
            "{channel} changed"
        );
    }
    let header = headers(output);
    assert_eq!(header, headers(input));
    let note = exr::meta::attribute::AttributeValue::Text("stylize-test-frame".into());
    assert!(
        header.iter().any(
            |(own, _)| own.other.get(&exr::meta::attribute::Text::from("Note")) == Some(&note)
        )
    );
    // Fully transparent pixels come back as they went in; the rest are stylised.
    let a = bits(input, &[&alpha]).remove(0);
    let (before, after) = (bits(input, &colour), bits(output, &colour));
    let transparent: Vec<usize> = (0..a.len())
        .filter(|&i| f32::from_bits(a[i]) == 0.0)
        .collect();
    assert!(transparent.len() > 100, "{}", transparent.len());
    for c in 0..3 {
        assert!(transparent.iter().all(|&i| before[c][i] == after[c][i]));
    }
    let changed = (0..a.len())
        .filter(|&i| f32::from_bits(a[i]) == 1.0 && before[0][i] != after[0][i])
        .count();
    println!(
        "{} of {} pixels fully transparent, kept; {changed} opaque pixels stylised",
        transparent.len(),
        a.len()
    );
    assert!(
        changed > a.len() / 4,
        "only {changed} opaque pixels changed"
    );
}

#[test]
fn a_blender_frame_keeps_alpha_depth_and_header_bit_for_bit() {
    let frame = blender_frame();
    let content = frame.display().to_string();
    let input = std::fs::read(&frame).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    succeeds(&[
        "run",
        "--content",
        &content,
        "--size",
        "96",
        "--keep-passes",
        "--out",
        &at("kept.exr"),
    ]);
    check_kept(&input, &std::fs::read(at("kept.exr")).unwrap());

    // Through a server: `options.keep_passes`.
    let server = Server::start(&["--workers", "1"]);
    let address = format!("http://{}", server.addr);
    let style = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/starry_night.jpg");
    let served = at("served.exr");
    let submit = [
        "submit",
        "--server",
        &address,
        "--style",
        style,
        "--content",
        &content,
        "--size",
        "96",
    ];
    succeeds(&[&submit[..], &["--keep-passes", "--out", &served]].concat());
    check_kept(&input, &std::fs::read(&served).unwrap());

    // Without --keep-passes: RGBA, the alpha as it was.
    succeeds(&[
        "run",
        "--content",
        &content,
        "--size",
        "96",
        "--out",
        &at("rgba.exr"),
    ]);
    let rgba = std::fs::read(at("rgba.exr")).unwrap();
    let names = ExrFile::open(&rgba, "rgba").unwrap().channel_names();
    assert_eq!(names, ["A", "B", "G", "R"]);
    let alpha = ExrFile::open(&input, "in")
        .unwrap()
        .alpha_channel()
        .unwrap();
    assert!(bits(&rgba, &["A"]) == bits(&input, &[&alpha]));

    // What cannot be kept is refused before any work, naming the flag or field.
    refused_naming(
        &[
            "run",
            "--content",
            &content,
            "--size",
            "48",
            "--keep-passes",
            "--out",
            &at("small.exr"),
        ],
        "--size",
    );
    let png = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/chelsea.png");
    let refused = quick(
        &[
            &submit[..5],
            &["--content", png, "--keep-passes", "--out", &at("p.exr")],
        ]
        .concat(),
    );
    let said = common::said(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("options.keep_passes"), "{said}");
    assert!(!Path::new(&at("small.exr")).exists() && !Path::new(&at("p.exr")).exists());
}

/// An RGBA PNG: the left eighth fully transparent, the rest fading in.
fn rgba_content(path: &Path) -> image::RgbaImage {
    let photo = image::load_from_memory(common::server::CONTENT)
        .unwrap()
        .into_rgb8();
    let photo = image::imageops::resize(&photo, 64, 48, image::imageops::FilterType::Triangle);
    let rgba = image::RgbaImage::from_fn(64, 48, |x, y| {
        let [r, g, b] = photo.get_pixel(x, y).0;
        let alpha = if x < 8 { 0 } else { (x * 4).min(255) as u8 };
        image::Rgba([r, g, b, alpha])
    });
    rgba.save(path).unwrap();
    rgba
}

#[test]
fn an_rgba_png_keeps_its_alpha_and_its_transparent_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let input = rgba_content(&dir.path().join("in.png"));
    succeeds(&[
        "run",
        "--content",
        &at("in.png"),
        "--size",
        "64",
        "--out",
        &at("out.png"),
    ]);
    let output = image::open(at("out.png")).unwrap();
    assert_eq!(output.color(), image::ColorType::Rgba8);
    let output = output.into_rgba8();
    let mut stylised = 0;
    for (x, y, pixel) in input.enumerate_pixels() {
        let out = output.get_pixel(x, y);
        assert_eq!(out.0[3], pixel.0[3], "alpha at {x},{y}");
        if pixel.0[3] == 0 {
            assert_eq!(out, pixel, "a transparent pixel at {x},{y}");
        } else if out.0[..3] != pixel.0[..3] {
            stylised += 1;
        }
    }
    assert!(stylised > 64 * 48 / 2, "{stylised}");

    // At half the size the alpha is resized with the picture; the transparent edge stays.
    succeeds(&[
        "run",
        "--content",
        &at("in.png"),
        "--size",
        "32",
        "--out",
        &at("half.png"),
    ]);
    let half = image::open(at("half.png")).unwrap().into_rgba8();
    assert_eq!(half.dimensions(), (32, 24));
    assert!((0..24).all(|y| half.get_pixel(0, y).0[3] == 0 && half.get_pixel(31, y).0[3] > 100));

    // JPEG cannot hold alpha: refused naming --out, before any work.
    refused_naming(
        &["run", "--content", &at("in.png"), "--out", &at("out.jpg")],
        "--out",
    );
    assert!(!dir.path().join("out.jpg").exists());
    refused_naming(
        &[
            "run",
            "--content",
            &at("in.png"),
            "--keep-passes",
            "--out",
            &at("out.exr"),
        ],
        "--keep-passes",
    );
}

/// The shared shot's first `frames` frames as RGBA PNG in `dir` (`rgba_NNNN.png`): a fully
/// transparent band down the left side, a soft edge beside it.
fn rgba_shot(dir: &Path, frames: usize) -> Vec<image::RgbaImage> {
    (1..=frames)
        .map(|t| {
            let rgb = stylize::image_io::load(&common::shots::shared(t, "png")).unwrap();
            let rgba = image::RgbaImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                let [r, g, b] = rgb.get_pixel(x, y).0;
                let alpha = (x.saturating_sub(40) * 8).min(255) as u8;
                image::Rgba([r, g, b, alpha])
            });
            rgba.save(dir.join(format!("rgba_{t:04}.png"))).unwrap();
            rgba
        })
        .collect()
}

#[test]
fn a_shot_with_alpha_keeps_it_in_every_frame_and_its_chunks_join_exactly() {
    const FRAMES: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).display().to_string();
    let inputs = rgba_shot(dir.path(), FRAMES);
    let motion = common::shots::shared(1, "exr")
        .display()
        .to_string()
        .replace("0001", "####");
    let frames = at("rgba_####.png");
    let shot = |out: &str, range: &str| {
        succeeds(&[
            "sequence",
            "--frames",
            &frames,
            "--motion",
            &motion,
            "--frame-range",
            range,
            "--out",
            out,
            "--size",
            "256",
            "--later-iterations",
            "2",
        ])
    };
    shot(&at("whole_####.png"), &format!("1-{FRAMES}"));
    // The same shot as two tasks: the second continues from the first's last file.
    shot(&at("chunk_####.png"), "1-2");
    shot(&at("chunk_####.png"), &format!("3-{FRAMES}"));
    for (t, input) in (1..=FRAMES).zip(&inputs) {
        let whole = image::open(at(&format!("whole_{t:04}.png"))).unwrap();
        assert_eq!(whole.color(), image::ColorType::Rgba8, "frame {t}");
        let whole = whole.into_rgba8();
        for (x, y, pixel) in input.enumerate_pixels() {
            let out = whole.get_pixel(x, y);
            assert_eq!(out.0[3], pixel.0[3], "frame {t}: alpha at {x},{y}");
            if pixel.0[3] == 0 {
                assert_eq!(out, pixel, "frame {t}: a transparent pixel at {x},{y}");
            }
        }
        let chunked = image::open(at(&format!("chunk_{t:04}.png"))).unwrap();
        assert!(chunked.into_rgba8() == whole, "frame {t}: chunked differs");
    }
}
