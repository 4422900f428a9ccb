//! One shot as parallel chunks through a live server (issue 30): the shared rolling-ball
//! shot's first 8 frames at 128 px (`--quality draft`) as K = 2 chunks, sent by
//! `stylize submit-sequence` stage by stage as the Open Job Description template does: the
//! middle frame (5, the second chunk's first) as a still; the first chunk's keyframe
//! (frame 1) continued from it along the motion composed across frames 2-4; then both
//! chunks, the first pulled toward frame 5. The same shot also runs whole (the chain), and
//! the first chunk once more without the pull. The join (frame 5 after frame 4) is measured
//! from the delivered files with issue 30's warping error. Measured here (2-core EPYC, the
//! same at 1 and 2 threads): the join 74.66, the other frames' median 30.28 (2.47x), the
//! unpulled join 356.59 (4.8x the pulled one), the chain's frame 5 24.82. The pull must at
//! least halve the join, and the join stay within 3.5x the other frames' median. The wire's
//! refusals for the pull name their fields.

mod common;

use std::path::{Path, PathBuf};

use common::server::Server;
use common::shots::{frame_message, framed, setup, shared, shot_over_grpc};
use stylize::motion::{ExrMotionChannels, read_exr};
use stylize::render::coherence::warping_error;
use stylize::server::proto::{self, stylize_sequence_request::Message};
use tonic::Code;

const FRAMES: u64 = 8;

/// Runs `stylize submit-sequence` on the shot's first 8 frames with `extra`, writing
/// `name_####.png` in `out`; returns what it said.
fn submit(server: &Server, out: &Path, name: &str, extra: &[&str]) -> String {
    let address = format!("http://{}", server.addr);
    let frames = shared(1, "exr").display().to_string().replace("0001", "####");
    let written = out.join(format!("{name}_####.png")).display().to_string();
    let style = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/starry_night.jpg");
    let style = style.display().to_string();
    let mut args = vec![
        "submit-sequence",
        "--server",
        &address,
        "--frames",
        &frames,
        "--out",
        &written,
        "--style",
        &style,
        "--size",
        "128",
        "--quality",
        "draft",
        "--progress",
        "plain",
    ];
    args.extend(extra);
    let output = common::run_cli(&args);
    let said = common::said(&output);
    assert!(output.status.success(), "{extra:?}: {said}{}", server.log());
    said
}

/// Issue 30's warping error of each delivered frame 2..=`last` against the one before it.
fn warping_errors(dir: &Path, name: &str, last: u64) -> Vec<f64> {
    let load = |t: u64| {
        stylize::image_io::load(&dir.join(format!("{name}_{t:04}.png"))).unwrap()
    };
    (2..=last)
        .map(|t| {
            let exr = |t: u64| shared(t as usize, "exr");
            let back = read_exr(&exr(t), &ExrMotionChannels::blender_to_previous()).unwrap();
            let forth = read_exr(&exr(t - 1), &ExrMotionChannels::blender_to_next()).unwrap();
            warping_error(&load(t), &load(t - 1), &back, &forth).unwrap()
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

#[test]
fn a_shot_in_two_parallel_chunks_joins_without_a_pop() {
    let server = Server::start(&["--workers", "1"]);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();
    submit(&server, dir, "chain", &["--frame-range", "1-8"]);
    // The method's stages; frames 1 and 5 are also the unpulled control's.
    submit(
        &server,
        dir,
        "par",
        &["--frame-range", "5-5", "--starts-chain"],
    );
    let keyframe = submit(
        &server,
        dir,
        "par",
        &["--frame-range", "1-1", "--from-frame", "5"],
    );
    assert!(
        keyframe.contains("continuing the chain from") && keyframe.contains("par_0005.png"),
        "{keyframe}"
    );
    let pulled = submit(
        &server,
        dir,
        "par",
        &["--frame-range", "2-4", "--toward-frame", "5"],
    );
    assert!(
        pulled.contains("pulling frames 2-4 toward frame 5"),
        "{pulled}"
    );
    submit(&server, dir, "par", &["--frame-range", "6-8"]);
    for t in [1, 5] {
        let name = |n: &str| dir.join(format!("{n}_{t:04}.png"));
        std::fs::copy(name("par"), name("unpulled")).unwrap();
    }
    submit(&server, dir, "unpulled", &["--frame-range", "2-4"]);

    let chain = warping_errors(dir, "chain", FRAMES);
    let parallel = warping_errors(dir, "par", FRAMES);
    let unpulled = warping_errors(dir, "unpulled", 5);
    println!("| frame | chain | parallel | unpulled |\n|---|---|---|---|");
    for t in 2..=FRAMES as usize {
        let at = |e: &[f64]| e.get(t - 2).map_or("-".into(), |v| format!("{v:.2}"));
        println!(
            "| {t} | {} | {} | {} |",
            at(&chain),
            at(&parallel),
            at(&unpulled)
        );
    }
    // Frame 5 is the join: index 3 (errors start at frame 2).
    let join = parallel[3];
    let others = median(
        parallel
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 3)
            .map(|(_, &e)| e)
            .collect(),
    );
    println!(
        "join {join:.2}, the other frames' median {others:.2}, unpulled join {:.2}, chain's frame 5 {:.2}",
        unpulled[3], chain[3]
    );
    assert!(
        2.0 * join < unpulled[3],
        "the pull did not soften the join: {join:.2} pulled, {:.2} not",
        unpulled[3]
    );
    assert!(
        join <= 3.5 * others,
        "the join pops: {join:.2} against the other frames' median {others:.2}"
    );
}

/// A setup continuing from frame 1 (`previous`) with a `toward` frame.
fn continued(toward: Option<proto::TowardFrame>) -> proto::StylizeSequenceRequest {
    let mut request = setup(2);
    if let Some(Message::Setup(s)) = &mut request.message {
        s.previous = Some(proto::PreviousFrame {
            image: std::fs::read(shared(1, "png")).unwrap(),
            motion_to_next: None,
            number: Some(1),
        });
        s.toward = toward;
    }
    request
}

#[tokio::test]
async fn the_pull_is_refused_naming_its_fields() {
    let server = Server::start(&["--workers", "1"]);
    let frame = |t: usize| {
        let mut frame = frame_message(t);
        frame.number = Some(t as u64);
        frame
    };
    let keyframe = |number| proto::TowardFrame {
        image: std::fs::read(shared(5, "png")).unwrap(),
        number,
        from: None,
    };
    let with_link = |t: usize| {
        let mut f = frame(t);
        f.motion_to_toward = f.motion_to_next.clone();
        f
    };
    let cases = [
        // A link with nothing to pull toward.
        (continued(None), with_link(2), "frames[0].motion_to_toward"),
        // A pull toward a frame before the one the shot continues from.
        (continued(Some(keyframe(1))), with_link(2), "setup.toward.number"),
        // A frame without its link to the frame it is pulled toward.
        (continued(Some(keyframe(5))), frame(2), "frames[0].motion_to_toward"),
        // A frame at or after the one it is pulled toward.
        (continued(Some(keyframe(5))), with_link(5), "frames[0].number"),
    ];
    for (setup, frame, field) in cases {
        let (_, failure) = shot_over_grpc(&server, vec![setup, framed(frame)]).await;
        let status = failure.expect("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
}
