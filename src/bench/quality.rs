//! The quality benchmark's stylize side (and the job figure's render): each preset's render of a pair at a size, timed
//! from images to result and scored as delivered, and the scoring of a reference run's
//! image on the same targets (`stylize bench --presets` compares them).

use std::time::Instant;

use image::RgbImage;

use stylize::engine::{Engine, LossBreakdown};
use stylize::error::Result;
use stylize::features::FeatureExtractor;
use stylize::render::preset::Quality;
use stylize::render::{RenderRequest, Rendered, StyleSource, render, score_image};

/// The request a pair renders as at `size` under `quality` (`None`: the contract's options,
/// which the reference's scoring uses; only the output scale's targets count there).
pub fn pair_request(
    content: &RgbImage,
    style: &RgbImage,
    size: u32,
    quality: Option<Quality>,
) -> RenderRequest {
    RenderRequest {
        content: content.clone().into(),
        styles: vec![style.clone()],
        blend: vec![],
        options: match quality {
            Some(q) => q.preset(size).options(size),
            None => stylize::render::RenderOptions {
                size,
                ..Default::default()
            },
        },
    }
}

/// A render timed: wall seconds from the images to the optimised image (style precompute
/// included, no cache) and what it delivered.
pub struct TimedRender {
    pub seconds: f64,
    pub rendered: Rendered,
}

pub fn render_timed(
    engine: &dyn Engine,
    features: &dyn FeatureExtractor,
    request: &RenderRequest,
) -> Result<TimedRender> {
    let started = Instant::now();
    let rendered = render(
        request,
        engine,
        StyleSource::uncached(features),
        &mut |_| std::ops::ControlFlow::Continue(()),
    )?;
    // The delivered image's scoring is the benchmark's, not the job's.
    let seconds = started.elapsed().as_secs_f64() - rendered.stats.score.as_secs_f64();
    Ok(TimedRender { seconds, rendered })
}

/// The loss of another implementation's 8-bit `image` on the pair's targets at `size`.
pub fn score_reference(
    engine: &dyn Engine,
    features: &dyn FeatureExtractor,
    content: &RgbImage,
    style: &RgbImage,
    image: &RgbImage,
) -> Result<LossBreakdown> {
    let size = image.width().max(image.height());
    score_image(
        &pair_request(content, style, size, None),
        engine,
        StyleSource::uncached(features),
        image,
    )
}
