//! Motion read from the shared Blender sequence's EXR `Vector` pass warps each frame onto its
//! neighbour as the sequence's README measured: the mean absolute difference in 8-bit levels
//! drops from 12.01 (unwarped) to 4.08 (previous frame warped forward), and to at most the
//! README's 4.88 for the next frame warped back (measured here: 4.39).

mod common;

use std::path::PathBuf;

use stylize::exr_file::{ExrFile, Transfer, decode_rgb};
use stylize::motion::{ExrMotionChannels, Motion, read_exr, read_exr_frame, warp};

fn frame(t: usize, ext: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../shared/sequences/rolling-ball/frame_{t:04}.{ext}"
    ))
}

/// Channel-major planes of a PNG frame, in 8-bit levels.
fn planes(t: usize) -> (Vec<f32>, usize, usize) {
    let image = stylize::image_io::load(&frame(t, "png")).unwrap();
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut data = vec![0.0; 3 * w * h];
    for (i, p) in image.pixels().enumerate() {
        for c in 0..3 {
            data[c * w * h + i] = f32::from(p.0[c]);
        }
    }
    (data, w, h)
}

/// Mean |a - b| over valid pixels and channels.
fn mean_abs(a: &[f32], b: &[f32], valid: &[bool]) -> f64 {
    let plane = valid.len();
    let (mut sum, mut n) = (0.0, 0usize);
    for (i, _) in valid.iter().enumerate().filter(|(_, v)| **v) {
        for c in 0..3 {
            sum += f64::from((a[c * plane + i] - b[c * plane + i]).abs());
            n += 1;
        }
    }
    sum / n as f64
}

#[test]
fn blender_motion_warps_frames_onto_their_neighbours() {
    let (mut unwarped, mut forward, mut backward) = (0.0, 0.0, 0.0);
    let frames = 2..=16;
    for t in frames.clone() {
        let (previous, w, h) = planes(t - 1);
        let (current, _, _) = planes(t);
        let to_previous =
            read_exr(&frame(t, "exr"), &ExrMotionChannels::blender_to_previous()).unwrap();
        assert_eq!((to_previous.width, to_previous.height), (w, h));
        unwarped += mean_abs(&previous, &current, &vec![true; w * h]);
        let (warped, valid) = warp(&previous, 3, &to_previous);
        forward += mean_abs(&warped, &current, &valid);
        let to_next: Motion =
            read_exr(&frame(t - 1, "exr"), &ExrMotionChannels::blender_to_next()).unwrap();
        let (warped, valid) = warp(&current, 3, &to_next);
        backward += mean_abs(&warped, &previous, &valid);
    }
    let n = frames.count() as f64;
    let (unwarped, forward, backward) = (unwarped / n, forward / n, backward / n);
    let near = |got: f64, readme: f64| (got - readme).abs() < 0.15;
    assert!(near(unwarped, 12.01), "unwarped {unwarped:.2}");
    assert!(near(forward, 4.08), "previous warped forward {forward:.2}");
    assert!(backward < 4.88 + 0.15, "next warped back {backward:.2}");
}

#[test]
fn a_missing_channel_or_a_truncated_file_is_named() {
    let wrong = ExrMotionChannels {
        x: "ViewLayer.Flow.X".into(),
        ..ExrMotionChannels::blender_to_previous()
    };
    let err = read_exr(&frame(2, "exr"), &wrong).unwrap_err().to_string();
    assert!(
        err.contains("ViewLayer.Flow.X") && err.contains("frame_0002.exr"),
        "{err}"
    );
    let bytes = std::fs::read(frame(2, "exr")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("cut.exr");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_exr(&truncated, &ExrMotionChannels::blender_to_previous())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cut.exr"), "{err}");
}

#[test]
fn one_pass_over_a_frame_reads_what_separate_reads_do() {
    let bytes = std::fs::read(frame(5, "exr")).unwrap();
    let file = ExrFile::open(&bytes, "frame_0005.exr").unwrap();
    let previous = ExrMotionChannels::blender_to_previous();
    let next = ExrMotionChannels::blender_to_next();
    let (image, [to_previous, to_next]) = read_exr_frame(
        &file,
        &Transfer::SceneLinear.into(),
        [Some(&previous), Some(&next)],
    )
    .unwrap();
    assert_eq!(image, file.display(Transfer::SceneLinear).unwrap());
    // A shot's frame reaches the optimiser at full precision: most values lie between 8-bit
    // levels.
    let between = image
        .as_raw()
        .iter()
        .filter(|v| (*v * 255.0 - (*v * 255.0).round()).abs() > 0.01)
        .count();
    assert!(between > image.as_raw().len() / 2, "{between}");
    assert_eq!(
        to_previous,
        Some(read_exr(&frame(5, "exr"), &previous).unwrap())
    );
    assert_eq!(to_next, Some(read_exr(&frame(5, "exr"), &next).unwrap()));
    // The beauty pass is the frame Blender displayed (its PNG) to within rounding.
    let png = stylize::image_io::load(&frame(5, "png")).unwrap();
    let worst = image
        .as_raw()
        .iter()
        .zip(png.as_raw())
        .map(|(a, &b)| (a * 255.0 - b as f32).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 2.5,
        "beauty pass differs from the PNG by {worst} levels"
    );
    // A file cut short in its last part (the Vector pass) is refused even when only the
    // beauty pass, whole in what is left, is asked for.
    let cut = &bytes[..bytes.len() - 100];
    let error = decode_rgb(cut, "cut.exr", Transfer::SceneLinear).unwrap_err();
    assert!(error.to_string().contains("cut.exr"), "{error}");
    // The depth pass is never asked for, and the names say where each channel is.
    assert!(file.has_channel("ViewLayer.Depth.Z"));
    assert!(!file.has_channel("Depth.Z"));
}
