//! The quality benchmark scores another implementation's image exactly as stylize scores
//! its own delivered image (same targets at the output scale), and refuses an image of the
//! wrong size.

mod common;

// The benchmark and load generator live beside the binary; the tests use them as they are.
#[path = "../src/bench/mod.rs"]
#[allow(dead_code)]
mod bench;

use bench::quality::{pair_request, render_timed, score_reference};
use stylize::engine::Pooling;
use stylize::image_io;
use stylize::onnxruntime::OrtEngine;
use stylize::render::preset::Quality;

#[test]
fn a_reference_image_is_scored_like_the_delivered_one() {
    let ort = std::sync::Arc::new(common::ort_features(Pooling::Max));
    let engine = OrtEngine::new(ort.environment(), common::shared_weights(), ort.clone(), 0);
    let (content, style) = (
        common::shipped("chelsea.png"),
        common::shipped("the_scream.jpg"),
    );
    let request = pair_request(&content, &style, 96, Some(Quality::Draft));
    assert_eq!(request.options.scales, 1, "one scale fewer below 128 px");
    let done = render_timed(&engine, ort.as_ref(), &request).unwrap();
    let image = &done.rendered.image;
    let rescored = score_reference(&engine, ort.as_ref(), &content, &style, image).unwrap();
    let delivered = done.rendered.delivered.total;
    // The same image on the same targets: equal (0 apart at 1 and 2 threads); the bound
    // leaves room for another order of float sums.
    let error = common::measured(
        "quality_bench/rescored vs delivered",
        (rescored.total - delivered).abs() / delivered,
    );
    assert!(
        error <= 1e-6,
        "the bench's score {} differs from the job's {delivered}",
        rescored.total
    );
    // The untouched content (a reference that never moved) scores worse than the render.
    let resized = image_io::resize_longest(&content, 96);
    let unmoved = score_reference(&engine, ort.as_ref(), &content, &style, &resized).unwrap();
    // 6.9x the render's score at 1 and 2 threads.
    let worse = common::measured(
        "quality_bench/unmoved / delivered",
        unmoved.total / delivered,
    );
    assert!(worse > 1.5, "{} vs {delivered}", unmoved.total);
    // An image whose shape is not the content's at its size has no targets to match.
    let err = score_reference(
        &engine,
        ort.as_ref(),
        &content,
        &style,
        &image::RgbImage::new(64, 40),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("image"), "{err}");
}
