//! Real jobs on the shipped image pairs with the server's defaults (ONNX Runtime engine,
//! bounded L-BFGS with the strong-Wolfe search): within a scale the loss never rises, so no
//! report, preview or result shows a blown-up point; the delivered 8-bit image scores within
//! 5% of the optimiser's last loss; the image stays inside the pixel range.

mod common;

use std::ops::ControlFlow;

use stylize::engine::{Pooling, Progress};

use stylize::onnxruntime::OrtEngine;
use stylize::render::{RenderOptions, RenderRequest, StyleSource, render};

#[test]
fn default_jobs_on_shipped_pairs_never_raise_the_loss_and_deliver_what_they_report() {
    let ort = std::sync::Arc::new(common::ort_features(Pooling::Max));
    let engine = OrtEngine::new(ort.environment(), common::shared_weights(), ort.clone(), 0);
    for (content, style, size, iterations) in [
        ("astronaut.png", "starry_night.jpg", 256, 12),
        ("coffee.png", "the_scream.jpg", 256, 12),
        ("chelsea.png", "shipwreck.jpg", 512, 4),
    ] {
        let request = RenderRequest {
            content: common::shipped(content).into(),
            styles: vec![common::shipped(style)],
            blend: vec![],
            options: RenderOptions {
                size,
                iterations,
                scales: 2,
                ..Default::default()
            },
        };
        let mut seen: Vec<Progress> = Vec::new();
        let mut sink = |p: &Progress| {
            seen.push(p.clone());
            ControlFlow::Continue(())
        };
        let source = StyleSource::uncached(ort.as_ref());
        let rendered = render(&request, &engine, source, &mut sink).unwrap();
        let pair = format!("{content} x {style} at {size}");
        assert_eq!(
            seen.len(),
            2 * iterations,
            "{pair}: one report per iteration"
        );
        for scale in [0, 1] {
            let losses: Vec<f64> = seen
                .iter()
                .filter(|p| p.scale == scale)
                .map(|p| p.losses.total)
                .collect();
            for step in losses.windows(2) {
                assert!(
                    step[1] <= step[0],
                    "{pair}, scale {scale}: the loss rose: {losses:?}"
                );
            }
        }
        let reported = seen.last().unwrap().losses.total;
        assert_eq!(
            rendered.losses.total, reported,
            "{pair}: the result is the last report"
        );
        // The 8-bit rounding costs +0.003% to +0.022% of the loss on these pairs, alike at 1
        // and 2 threads (scripts/spreads.sh); the bound is the module's 5%.
        let gap = common::measured(
            &format!("no_blow_up/{pair}: delivered / float - 1"),
            rendered.delivered.total / reported - 1.0,
        );
        assert!(
            gap.abs() < 0.05,
            "{pair}: the 8-bit image scores {gap:+.3} off"
        );
    }
}
