//! One shot as parallel chunks through a live server (issue 30), sent by
//! `stylize submit-sequence` stage by stage as the Open Job Description template runs it,
//! on the shared rolling-ball shot at 128 px (`--quality draft`):
//! - K = 2 over frames 1-8: a draft of the middle frame 5; the first chunk's keyframe 4
//!   and frame 5 itself continued from the draft; then frames 3-1 backward from 4, and 6-8
//!   from 5.
//! - K = 3 over frames 1-12: the same, with the third chunk's keyframe 9 continued from 5's
//!   draft along the motion composed across frames 6-8 and from its own still (drafted
//!   beside frame 5's) where frame 5 never showed it, frames 6-8 pulled toward it, and
//!   10-12 from it; and frames 6-8 once more without the pull.
//!
//! The same frames also run as one chain. Joins are measured from the delivered files with
//! issue 30's warping error (`render::coherence`). Measured here (2-core EPYC, the same at
//! 1 and 2 threads, the middle frame drafted): K = 2's join 79.64 against the other frames'
//! median 37.01 (2.15x; bound 3x), its whole shot 43.35 against the chain's 33.36 (1.30x;
//! bound 2x); K = 3's pulled join 47.51 against 284.08 unpulled (6.0x lower; bound 2x) and
//! against the other frames' median 39.40 (1.21x; bound 3x). (Before the draft, a full
//! still first and keyframes held 10x: 54.26 / 38.43, 40.22 / 33.36, 45.78 / 232.70,
//! median 39.82. On an earlier machine, the still pasted in as it was: 51.47 / 38.52, 40.14 / 32.40, 53.69 / 288.56,
//! median 41.41; before keyframe 9 started from its own still: K = 3's join 42.28 /
//! 173.48; with the bilinear warp: 59.55 / 33.78, 37.37 / 26.13,
//! 47.64 / 183.19.) Keyframe 9 rendered by `stylize sequence` in its own process is the
//! server's to the level (0.000 apart on average at 1 and 2 threads; bound 1; 7.48 when
//! the in-process path dropped its still). The wire's refusals
//! for the pull and the keyframe's still name their fields.

mod common;

use std::path::{Path, PathBuf};

use common::server::Server;
use common::shots::{frame_message, framed, setup, shared, shot_over_grpc};
use stylize::motion::{ExrMotionChannels, read_exr};
use stylize::render::coherence::warping_error;
use stylize::server::proto::{self, stylize_sequence_request::Message};
use tonic::Code;

/// Runs `stylize submit-sequence` on the shot's frames with `extra`, writing
/// `name_####.png` in `out`; returns what it said.
fn submit(server: &Server, out: &Path, name: &str, extra: &[&str]) -> String {
    let address = format!("http://{}", server.addr);
    let through = ["submit-sequence", "--server", &address];
    run_shot(&through, out, name, extra, &server.log())
}

/// Runs `stylize sequence` (in this process, not through a server) as `submit` does.
fn render_here(out: &Path, name: &str, extra: &[&str]) -> String {
    run_shot(&["sequence"], out, name, extra, "")
}

/// Runs `command` on the shot's frames at 128 px, `--quality draft`, with `extra`,
/// writing `name_####.png` in `out`; returns what it said (failing with `log`).
fn run_shot(command: &[&str], out: &Path, name: &str, extra: &[&str], log: &str) -> String {
    let frames = shared(1, "exr")
        .display()
        .to_string()
        .replace("0001", "####");
    let written = out.join(format!("{name}_####.png")).display().to_string();
    let style = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/starry_night.jpg");
    let style = style.display().to_string();
    let mut args = command.to_vec();
    args.extend([
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
    ]);
    args.extend(extra);
    let output = common::run_cli(&args);
    let said = common::said(&output);
    assert!(output.status.success(), "{extra:?}: {said}{log}");
    said
}

/// Issue 30's warping error of each delivered frame `first + 1..=last` against the one
/// before it.
fn warping_errors(dir: &Path, name: &str, first: u64, last: u64) -> Vec<f64> {
    let load = |t: u64| stylize::image_io::load(&dir.join(format!("{name}_{t:04}.png"))).unwrap();
    (first + 1..=last)
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

/// The delivered `name_####.png` in `dir` of `frames` copied as `copy_####.png`.
fn copy(dir: &Path, name: &str, copy: &str, frames: impl IntoIterator<Item = u64>) {
    for t in frames {
        let at = |n: &str| dir.join(format!("{n}_{t:04}.png"));
        std::fs::copy(at(name), at(copy)).unwrap();
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The median of `errors` (frames 2.. in order) leaving out frame `join`'s.
fn median_but(errors: &[f64], join: usize) -> f64 {
    median(
        errors
            .iter()
            .enumerate()
            .filter(|&(i, _)| i + 2 != join)
            .map(|(_, &e)| e)
            .collect(),
    )
}

#[test]
fn a_shot_in_parallel_chunks_joins_without_a_pop() {
    let server = Server::start(&["--workers", "1"]);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();
    submit(&server, dir, "chain", &["--frame-range", "1-12"]);
    // K = 2 over frames 1-8.
    submit(
        &server,
        dir,
        "draft",
        &["--frame-range", "5-5", "--starts-chain", "--draft"],
    );
    let drafts = dir.join("draft_####.png").display().to_string();
    let from_draft = ["--from-frame", "5", "--from-draft", &drafts];
    // Keyframe 4 and the middle frame itself, finished, both continue from 5's draft.
    for range in ["4-4", "5-5"] {
        let said = submit(
            &server,
            dir,
            "two",
            &[&["--frame-range", range], &from_draft[..]].concat(),
        );
        assert!(said.contains("draft_0005.png"), "{range}: {said}");
    }
    let backward = submit(&server, dir, "two", &["--frame-range", "1-3", "--backward"]);
    assert!(backward.contains("two_0004.png"), "{backward}");
    submit(&server, dir, "two", &["--frame-range", "6-8"]);
    // K = 3 over frames 1-12: frames 1-5 are K = 2's, rendered the same way.
    copy(dir, "two", "three", 1..=5);
    // Keyframe 9, four frames from 5, starts from its own still where 5 never showed it:
    // the still drafted apart (as the template's Drafts step does, beside frame 5's).
    submit(
        &server,
        dir,
        "still",
        &["--frame-range", "9-9", "--starts-chain", "--draft"],
    );
    let still = dir.join("still_####.png").display().to_string();
    let keyframe = submit(
        &server,
        dir,
        "three",
        &[
            &["--frame-range", "9-9", "--keyframe-still", &still],
            &from_draft[..],
        ]
        .concat(),
    );
    let from_its_still = "keyframe 9 starts from its own still where frame 5 never showed it";
    assert!(keyframe.contains(from_its_still), "{keyframe}");
    // `stylize sequence` renders the same keyframe in its own process from the same draft
    // and still: alike to the server's.
    let here = render_here(
        dir,
        "here",
        &[
            &["--frame-range", "9-9", "--keyframe-still", &still],
            &from_draft[..],
        ]
        .concat(),
    );
    assert!(here.contains(from_its_still), "{here}");
    let load = |name: &str| stylize::image_io::load(&dir.join(name)).unwrap();
    let (served, local) = (load("three_0009.png"), load("here_0009.png"));
    let apart = served
        .as_raw()
        .iter()
        .zip(local.as_raw())
        .map(|(&a, &b)| f64::from(a.abs_diff(b)))
        .sum::<f64>()
        / served.as_raw().len() as f64;
    eprintln!("keyframe 9 through the server and here: {apart:.3} levels apart on average");
    assert!(
        apart < 1.0,
        "keyframe 9 here is {apart:.3} levels from the server's"
    );
    // Only a keyframe takes a still: frame 4 is a chain's step from 5.
    let refused = common::run_cli(&[
        "submit-sequence",
        "--server",
        &format!("http://{}", server.addr),
        "--frames",
        &shared(1, "exr")
            .display()
            .to_string()
            .replace("0001", "####"),
        "--out",
        &dir.join("refused_####.png").display().to_string(),
        "--style-key",
        &"0".repeat(64),
        "--frame-range",
        "4-4",
        "--from-frame",
        "5",
        "--keyframe-still",
        &still,
    ]);
    let said = common::said(&refused);
    assert!(
        !refused.status.success() && said.contains("--keyframe-still: only for a keyframe"),
        "{said}"
    );
    let pulled = submit(
        &server,
        dir,
        "three",
        &["--frame-range", "6-8", "--toward-frame", "9"],
    );
    assert!(
        pulled.contains("pulling frames 6-8 toward frame 9"),
        "{pulled}"
    );
    submit(&server, dir, "three", &["--frame-range", "10-12"]);
    copy(dir, "three", "unpulled", [5, 9]);
    submit(&server, dir, "unpulled", &["--frame-range", "6-8"]);

    let chain = warping_errors(dir, "chain", 1, 12);
    let two = warping_errors(dir, "two", 1, 8);
    let three = warping_errors(dir, "three", 1, 12);
    let unpulled = warping_errors(dir, "unpulled", 5, 9);
    println!("| frame | chain | K = 2 | K = 3 | K = 3 unpulled |\n|---|---|---|---|---|");
    for t in 2..=12usize {
        let at = |e: &[f64], first: usize| {
            t.checked_sub(first + 1)
                .and_then(|i| e.get(i))
                .map_or("-".into(), |v| format!("{v:.2}"))
        };
        println!(
            "| {t} | {} | {} | {} | {} |",
            at(&chain, 1),
            at(&two, 1),
            at(&three, 1),
            at(&unpulled, 5)
        );
    }
    let (join, others) = (two[3], median_but(&two, 5));
    let (whole, chain_whole) = (mean(&two), mean(&chain[..7]));
    println!(
        "K = 2: join (frame 5) {join:.2}, the other frames' median {others:.2}; whole shot \
         {whole:.2}, the chain's {chain_whole:.2}"
    );
    let (pulled_join, unpulled_join) = (three[7], unpulled[3]);
    let three_others = median_but(&three, 9);
    println!(
        "K = 3: join (frame 9) {pulled_join:.2} pulled, {unpulled_join:.2} not; frame 5 {:.2}; \
         the other frames' median {three_others:.2}",
        three[3],
    );
    assert!(
        join <= 3.0 * others,
        "K = 2: the join pops: {join:.2} against the other frames' median {others:.2}"
    );
    assert!(
        whole <= 2.0 * chain_whole,
        "K = 2: the shot's warping error {whole:.2}, the chain's {chain_whole:.2}"
    );
    assert!(
        pulled_join <= 3.0 * three_others,
        "K = 3: the join pops: {pulled_join:.2} against the other frames' median {three_others:.2}"
    );
    assert!(
        2.0 * pulled_join < unpulled_join,
        "K = 3: the pull did not soften the join: {pulled_join:.2} pulled, {unpulled_join:.2} not"
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
            draft: false,
        });
        s.toward = toward;
    }
    request
}

#[tokio::test]
async fn the_pull_and_the_keyframe_still_are_refused_naming_their_fields() {
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
        (
            continued(Some(keyframe(1))),
            with_link(2),
            "setup.toward.number",
        ),
        // A frame without its link to the frame it is pulled toward.
        (
            continued(Some(keyframe(5))),
            frame(2),
            "frames[0].motion_to_toward",
        ),
        // A frame at or after the one it is pulled toward.
        (
            continued(Some(keyframe(5))),
            with_link(5),
            "frames[0].number",
        ),
    ];
    // A keyframe's own still on a shot that continues from nothing, or whose first frame is
    // the next after the one it continues from (a chain's step, not a keyframe).
    let with_still = |mut request: proto::StylizeSequenceRequest| {
        if let Some(Message::Setup(s)) = &mut request.message {
            s.keyframe_still = std::fs::read(shared(4, "png")).unwrap();
        }
        request
    };
    let still_cases = [
        (with_still(setup(2)), frame(1), "setup.keyframe_still"),
        (
            with_still(continued(None)),
            frame(2),
            "setup.keyframe_still",
        ),
    ];
    // A draft continuing from a frame (a draft is a still), and a draft continued from
    // without its frame's number.
    let drafted = |mut request: proto::StylizeSequenceRequest| {
        if let Some(Message::Setup(s)) = &mut request.message {
            s.draft = true;
        }
        request
    };
    let unnumbered = |mut request: proto::StylizeSequenceRequest| {
        if let Some(Message::Setup(s)) = &mut request.message
            && let Some(previous) = &mut s.previous
        {
            previous.draft = true;
            previous.number = None;
        }
        request
    };
    let draft_cases = [
        (drafted(continued(None)), frame(2), "setup.draft"),
        (
            unnumbered(continued(None)),
            frame(2),
            "setup.previous.number",
        ),
    ];
    for (setup, frame, field) in cases.into_iter().chain(still_cases).chain(draft_cases) {
        let (_, failure) = shot_over_grpc(&server, vec![setup, framed(frame)]).await;
        let status = failure.expect("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
}
