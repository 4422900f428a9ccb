//! Sequences in process (issue 16): on the shared Blender shot, frames stylised as a
//! sequence hold their strokes along the motion where independent stills flicker, later
//! frames run their shorter budget at the output size and stay stylised; and every bad
//! frame is refused naming `frames[i].field`.

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device};
use image::RgbImage;
use stylize::candle::CandleEngine;
use stylize::engine::Pooling;
use stylize::motion::{ExrMotionChannels, Motion, read_exr};
use stylize::render::sequence::{
    FrameInput, FrameRendered, SequenceOptions, SequenceRenderer, SequenceState, warping_error,
};
use stylize::render::{RenderOptions, StyleSource, Styling};

fn frame_path(t: usize, ext: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../shared/sequences/rolling-ball/frame_{t:04}.{ext}"
    ))
}

/// Frame `t` (1-based) with its motions, as `stylize sequence` reads them.
fn frame(t: usize) -> FrameInput {
    let exr = frame_path(t, "exr");
    FrameInput {
        content: Some(
            stylize::image_io::load(&frame_path(t, "png"))
                .unwrap()
                .into(),
        ),
        to_previous: (t > 1)
            .then(|| read_exr(&exr, &ExrMotionChannels::blender_to_previous()).unwrap()),
        to_next: Some(read_exr(&exr, &ExrMotionChannels::blender_to_next()).unwrap()),
        mask: None,
        toward: None,
    }
}

fn base(size: u32) -> Styling {
    Styling {
        styles: vec![common::shipped("starry_night.jpg")],
        blend: vec![],
        options: RenderOptions {
            size,
            scales: 2,
            iterations: 12,
            ..Default::default()
        },
    }
}

fn run(options: SequenceOptions, frames: usize) -> Vec<FrameRendered> {
    let engine =
        CandleEngine::new(common::weights(), Pooling::Max, &Device::Cpu, DType::F32).unwrap();
    let features = engine.features();
    let mut renderer = SequenceRenderer::new(
        base(96),
        options,
        &engine,
        StyleSource::uncached(&features),
        None,
    )
    .unwrap();
    (1..=frames)
        .map(|t| {
            renderer
                .frame(frame(t), &mut |_| std::ops::ControlFlow::Continue(()))
                .unwrap()
        })
        .collect()
}

fn e_warp(frame: &FrameRendered) -> f64 {
    let (warped, certainty) = frame.warped_previous.as_ref().unwrap();
    warping_error(&frame.rendered.image, warped, certainty).unwrap()
}

#[test]
fn a_sequence_holds_its_strokes_where_stills_flicker() {
    let options = SequenceOptions::for_iterations(12);
    assert_eq!(options.later_iterations, 6);
    let sequence = run(options.clone(), 4);
    let stills = run(
        SequenceOptions {
            independent: true,
            ..options
        },
        4,
    );
    let mut ratios = Vec::new();
    for (s, i) in sequence.iter().zip(&stills).skip(1) {
        // The same held pixels are compared in both.
        assert_eq!(
            s.warped_previous.as_ref().unwrap().1,
            i.warped_previous.as_ref().unwrap().1
        );
        // The motion's certainty, a fact of the shot: 0.903-0.906 at 1 and 2 threads.
        let certain = common::measured("sequence/held", s.certain);
        assert!(certain > 0.8 && certain < 1.0, "held {certain}");
        let (held, flicker) = (e_warp(s), e_warp(i));
        // Stills flicker 16-32x more than the sequence (frames 1-3, alike at 1 and 2
        // threads); the bound is the sequences issue's own 5x.
        let steadier = common::measured("sequence/e_warp stills / sequence", flicker / held);
        assert!(
            steadier >= 5.0,
            "frame {}: E_warp {held:.1} as a sequence, {flicker:.1} as stills",
            s.index
        );
        // One scale, the later budget; still stylised.
        assert!(
            s.rendered.iterations <= 6,
            "{} iterations",
            s.rendered.iterations
        );
        assert_eq!(i.rendered.iterations, 24);
        let (style, still_style) = (s.rendered.delivered.style, i.rendered.delivered.style);
        ratios.push(common::measured(
            "sequence/style sequence / still",
            style / still_style,
        ));
        assert!(s.rendered.delivered.temporal > 0.0);
        assert_eq!(i.rendered.delivered.temporal, 0.0);
    }
    // What the sequences issue promises: every frame's style loss within 1.3x of its still's.
    // Measured 0.81-0.96x at 1 and 2 threads on a 2-core AMD EPYC (and where this was first
    // written), 1.019x on frame 1 on an AVX-512 Xeon, whose kernels round differently: the
    // bound sits well outside all of them. (It was `<= 1.0`, which the Xeon failed.)
    for (k, ratio) in ratios.iter().enumerate() {
        assert!(
            *ratio <= 1.3,
            "frame {}: style {ratio:.3}x its still's",
            k + 1
        );
    }
    // Uncovered pixels start stylised (the held pixels' offset spread into them), so the
    // frames are on the whole as stylised as their stills: mean 0.87x at 1 and 2 threads; starting
    // them from the plain content gave 0.92-1.03x per frame.
    let mean = common::measured(
        "sequence/mean style sequence / still",
        ratios.iter().sum::<f64>() / ratios.len() as f64,
    );
    assert!(mean <= 1.1, "mean style {mean:.3}x the stills'");
    // The first frame is the same still either way.
    assert_eq!(sequence[0].rendered.image, stills[0].rendered.image);
}

/// A state whose previous frame was delivered (as a flat grey 256x144 frame).
fn after_first() -> SequenceState {
    let convention = stylize::model::InputConvention::caffe();
    let mut state =
        SequenceState::new(base(64), SequenceOptions::for_iterations(4), convention).unwrap();
    let first = state.prepare_frame(frame(1)).unwrap();
    state.delivered(
        &first,
        &RgbImage::from_pixel(114, 64, image::Rgb([128, 128, 128])),
    );
    state
}

fn refusal(state: &SequenceState, frame: FrameInput) -> String {
    state.prepare_frame(frame).unwrap_err().to_string()
}

#[test]
fn bad_frames_are_refused_naming_the_field_and_the_frame() {
    let state = after_first();
    assert_eq!(state.next_index(), 1);
    let good = frame(2);
    assert!(state.prepare_frame(good.clone()).is_ok());
    let small = FrameInput {
        content: Some(RgbImage::new(128, 72).into()),
        ..good.clone()
    };
    assert!(refusal(&state, small).contains("frames[1].content"));
    let no_motion = FrameInput {
        to_previous: None,
        ..good.clone()
    };
    assert!(refusal(&state, no_motion).contains("frames[1].motion_to_previous"));
    let motion = good.to_previous.clone().unwrap();
    let wrong_size = Motion {
        width: motion.width - 1,
        ..motion.clone()
    };
    let text = refusal(
        &state,
        FrameInput {
            to_previous: Some(wrong_size),
            ..good.clone()
        },
    );
    assert!(
        text.contains("frames[1].motion_to_previous") && text.contains("255x144"),
        "{text}"
    );
    let mut nan = motion.clone();
    nan.dy[256 * 3 + 7] = f32::NAN;
    let text = refusal(
        &state,
        FrameInput {
            to_next: Some(nan),
            ..good.clone()
        },
    );
    assert!(
        text.contains("frames[1].motion_to_next") && text.contains("(7, 3)"),
        "{text}"
    );
    let mut mask = vec![1.0; 256 * 144];
    mask[5] = 1.5;
    let text = refusal(
        &state,
        FrameInput {
            mask: Some(mask),
            ..good.clone()
        },
    );
    assert!(text.contains("frames[1].mask"), "{text}");
    // A mask overrides the motion's certainty; pixels leaving the frame stay uncertain.
    let mut held = vec![0.0; 256 * 144];
    held[..256 * 72].fill(1.0);
    let job = state
        .prepare_frame(FrameInput {
            mask: Some(held),
            ..good
        })
        .unwrap();
    // Half the frame masked in, less the pixels leaving it: a fact of the data and the mask.
    let certain = job.certain;
    assert!(certain > 0.4 && certain <= 0.5, "held {certain}");
    assert!(job.temporal.is_some());
    // Settings are checked up front, naming the field.
    let bad = SequenceOptions {
        temporal_weight: -1.0,
        ..SequenceOptions::for_iterations(4)
    };
    let convention = stylize::model::InputConvention::caffe();
    let error = SequenceState::new(base(64), bad, convention).err().unwrap();
    assert!(error.to_string().contains("temporal_weight"), "{error}");
}

/// A keyframe of a shot rendered in parallel (docs/sequences.md) may bring its own still:
/// the pixels its motion cannot vouch for then start from that still instead of from the
/// content, the held ones from the frame it continues from, and it runs two thirds of its
/// iterations. A still for a frame that is not a keyframe, or of another shape, is refused
/// naming `keyframe_still`.
#[test]
fn a_keyframe_with_its_own_still_starts_from_it_where_nothing_is_held() {
    let still = RgbImage::from_pixel(64, 36, image::Rgb([200, 10, 30]));
    // The left half of the frame held (explicit mask), the right half not.
    let mask: Vec<f32> = (0..256 * 144)
        .map(|i| if i % 256 < 128 { 1.0 } else { 0.0 })
        .collect();
    // The camera still: every pixel lands where it was.
    let still_camera = Motion {
        width: 256,
        height: 144,
        dx: vec![0.0; 256 * 144],
        dy: vec![0.0; 256 * 144],
    };
    let keyframe = FrameInput {
        mask: Some(mask),
        to_previous: Some(still_camera),
        to_next: None,
        ..frame(2)
    };
    let mut state = after_first();
    state.next_runs(12);
    state.keyframe_still(still.clone());
    let job = state.prepare_frame(keyframe.clone()).unwrap();
    assert_eq!(job.request.options.iterations, 8);
    let stylize::render::InitChoice::Image(start) = &job.request.options.init else {
        panic!("a keyframe starts from an image");
    };
    assert_eq!(start.dimensions(), (64, 36));
    for (x, y, pixel) in start.enumerate_pixels() {
        // Away from the mask's edge, which the resize to the output size blurs, and from
        // the few columns where the still takes on the held pixels' colours.
        if x < 30 {
            assert_eq!(pixel.0, [128, 128, 128], "held ({x}, {y})");
        } else if x > 33 + stylize::render::STILL_FEATHER as u32 {
            assert_eq!(pixel.0, [200, 10, 30], "uncovered ({x}, {y})");
        }
    }
    // Without the still: the still's iterations, and uncovered pixels from the content.
    let mut plain = after_first();
    plain.next_runs(12);
    let job = plain.prepare_frame(keyframe.clone()).unwrap();
    assert_eq!(job.request.options.iterations, 12);
    let stylize::render::InitChoice::Image(start) = &job.request.options.init else {
        panic!("a keyframe starts from an image");
    };
    assert_ne!(start.get_pixel(50, 20).0, [200, 10, 30]);
    // Not a keyframe: refused.
    let mut step = after_first();
    step.keyframe_still(still);
    let text = refusal(&step, frame(2));
    assert!(
        text.contains("keyframe_still") && text.contains("not a keyframe"),
        "{text}"
    );
    // Another shape than the output: refused.
    let mut skewed = after_first();
    skewed.next_runs(12);
    skewed.keyframe_still(RgbImage::new(64, 64));
    let text = refusal(&skewed, keyframe);
    assert!(
        text.contains("keyframe_still") && text.contains("64x64"),
        "{text}"
    );
}
