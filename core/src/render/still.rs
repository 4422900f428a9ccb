//! One still end to end: style targets through a `FeatureExtractor` (behind the shared cache),
//! the engine job for every coarse-to-fine scale, the optimisation, and the delivered 8-bit
//! image scored again as the user receives it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::options::{
    InitChoice, NOISE_LEVELS, RenderOptions, RenderRequest, check_fits, default_content_layers,
    default_style_layers, style_side,
};
use super::plan::{MemoryPlan, plan_memory};
use crate::cache::{Lookup, StyleCache, StyleKey, image_digest};
use crate::engine::bounds::PixelBox;
use crate::engine::optim::LineSearch;
use crate::engine::temporal::TemporalTarget;
use crate::engine::{
    Engine, Init, LossBreakdown, OptimiseJob, OptimizerKind, ProgressSink, ScaleTargets,
    StopReason, StopRules, TermWeights,
};
use crate::error::{Error, Result};
use crate::features::{FeatureExtractor, Gram, blend};
use crate::image_io::{Rgb16Image, fit_longest, resize_longest, transfer_luminance, widen};
use crate::model::{InputConvention, InputImage, Layer};

/// A one-scale, one-iteration Adam job on `content` with the default layers and loss weights;
/// `style_grams` are per default style layer, in order. What the benchmark times and the
/// engines' cross-checks evaluate.
pub fn single_step_job(content: InputImage, style_grams: Vec<Gram>) -> OptimiseJob {
    let scale = ScaleTargets {
        content,
        style: default_style_layers()
            .into_iter()
            .zip(style_grams)
            .map(|((layer, weight), gram)| (layer, weight, gram))
            .collect(),
        iterations: 1,
    };
    OptimiseJob {
        scales: vec![scale],
        content_layers: default_content_layers(),
        weights: TermWeights::default(),
        optimizer: OptimizerKind::Adam { lr: 10.0 },
        init: Init::Content,
        preview_every: 0,
        tile_side: None,
        kept_stages: 1,
        bounds: None,
        line_search: LineSearch::Fixed,
        stop: StopRules::default(),
        temporal: None,
    }
}

/// Where style targets come from: an extractor, optionally behind the shared cache.
#[derive(Clone, Copy)]
pub struct StyleSource<'a> {
    pub features: &'a dyn FeatureExtractor,
    pub cache: Option<&'a StyleCache>,
    /// Compute Grams in tiles with cores of at most this side (`None`: whole images).
    pub tile_side: Option<usize>,
}

impl<'a> StyleSource<'a> {
    /// Straight from `features`: no cache, whole images.
    pub fn uncached(features: &'a dyn FeatureExtractor) -> Self {
        Self {
            features,
            cache: None,
            tile_side: None,
        }
    }

    /// One style's Grams at `longest_side`, from the cache when it holds them.
    fn grams(
        &self,
        style: &RgbImage,
        digest: [u8; 32],
        longest_side: u32,
        layers: &[Layer],
        convention: &InputConvention,
    ) -> Result<(Arc<Vec<Gram>>, Lookup)> {
        // A trace's "style precompute" span, with how the cache served it.
        let span = tracing::debug_span!(
            "style_precompute",
            longest_side,
            cache = tracing::field::Empty
        );
        let _entered = span.enter();
        let compute = || {
            let resized = resize_longest(style, longest_side);
            self.features
                .grams_tiled(&convention.to_input(&resized), layers, self.tile_side)
        };
        let found = match self.cache {
            None => compute().map(|grams| (Arc::new(grams), Lookup::Miss)),
            Some(cache) => {
                let key = StyleKey {
                    image_sha256: digest,
                    longest_side,
                    layers: layers.to_vec(),
                    identity: self.features.identity(),
                };
                cache.get_or_compute(&key, compute)
            }
        };
        if let Ok((_, lookup)) = &found {
            span.record("cache", lookup.label());
        }
        found
    }
}

/// How the time of a render was spent and whether its styles were cached.
#[derive(Debug, Clone, Default)]
pub struct RenderStats {
    pub precompute: Duration,
    pub optimise: Duration,
    /// The parts of `optimise` spent evaluating the objective and building it per scale.
    pub evaluating: Duration,
    pub building: Duration,
    /// Scoring the delivered image.
    pub score: Duration,
    /// One entry per style and scale.
    pub style_lookups: Vec<Lookup>,
}

/// The finished image and how the optimisation ended.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub image: RgbImage,
    /// The same result at 16 bits per channel, rounded from the optimiser's float image
    /// (what a 16-bit PNG delivers; with `preserve_colors`, the 8-bit image widened).
    pub deep: Rgb16Image,
    pub losses: LossBreakdown,
    pub iterations: usize,
    /// Objective evaluations (see `Optimised::evaluations`).
    pub evaluations: usize,
    pub stopped: StopReason,
    /// The loss of the delivered 8-bit image (as encoded losslessly: PNG).
    pub delivered: LossBreakdown,
    pub stats: RenderStats,
}

/// Builds the engine job under `plan`: content and blended style Grams for every scale.
pub fn prepare(
    request: &RenderRequest,
    engine: &dyn Engine,
    styles: StyleSource<'_>,
    plan: &MemoryPlan,
    lookups: &mut Vec<Lookup>,
) -> Result<OptimiseJob> {
    let styles = StyleSource {
        tile_side: plan.tile_side,
        ..styles
    };
    request.validate()?;
    let options = &request.options;
    let convention = engine.convention();
    let deepest = options
        .deepest_layer()
        .ok_or_else(|| Error::invalid("style_layers", "no layers"))?;
    let style_layers: Vec<Layer> = options.style_layers.iter().map(|(l, _)| *l).collect();
    let blend_weights = request.blend_weights();
    let digests: Vec<[u8; 32]> = request.styles.iter().map(image_digest).collect();
    let mut scales = Vec::new();
    let sizes = options.scale_sizes();
    let finest = sizes.last().copied();
    for longest in sizes {
        let content = request.content.resized_longest(longest);
        check_fits("content", content.dimensions(), deepest)?;
        let mut per_style = Vec::new();
        if !style_layers.is_empty() {
            let side = style_side(longest, options.style_scale);
            for (k, style) in request.styles.iter().enumerate() {
                let fitted = fit_longest(style.width(), style.height(), side);
                check_fits(&format!("styles[{k}]"), fitted, deepest)?;
                let (grams, lookup) =
                    styles.grams(style, digests[k], side, &style_layers, convention)?;
                lookups.push(lookup);
                per_style.push(grams);
            }
        }
        let parts: Vec<&[Gram]> = per_style.iter().map(|g| g.as_slice()).collect();
        let grams = blend(&parts, &blend_weights);
        scales.push(ScaleTargets {
            content: content.to_input(convention),
            style: options
                .style_layers
                .iter()
                .zip(grams)
                .map(|(&(layer, weight), gram)| (layer, weight, gram))
                .collect(),
            iterations: match options.last_scale_iterations {
                Some(last) if Some(longest) == finest => last,
                _ => options.iterations,
            },
        });
    }
    let init = match &options.init {
        InitChoice::Content => Init::Content,
        InitChoice::Noise => Init::Noise {
            seed: options.seed,
            levels: NOISE_LEVELS,
        },
        InitChoice::Image(image) => Init::Image(convention.to_input(image)),
    };
    Ok(OptimiseJob {
        scales,
        content_layers: options.content_layers.clone(),
        weights: options.weights,
        optimizer: match options.optimizer {
            OptimizerKind::Lbfgs { .. } => OptimizerKind::Lbfgs {
                history: plan.history.max(1),
            },
            adam => adam,
        },
        init,
        preview_every: options.preview_every,
        tile_side: plan.tile_side,
        kept_stages: plan.kept_stages,
        bounds: options.bounded.then(|| PixelBox::of(convention)),
        line_search: options.line_search,
        stop: options.stop,
        temporal: None,
    })
}

/// Precomputes one style's targets for every scale `options` would use (e.g. to warm the
/// cache for a registered style). Returns how each scale was served.
pub fn warm_style(
    style: &RgbImage,
    options: &RenderOptions,
    styles: StyleSource<'_>,
    convention: &InputConvention,
) -> Result<Vec<Lookup>> {
    let layers: Vec<Layer> = options.style_layers.iter().map(|(l, _)| *l).collect();
    let deepest = layers
        .iter()
        .max()
        .copied()
        .ok_or_else(|| Error::invalid("style_layers", "no style layer given"))?;
    let digest = image_digest(style);
    options
        .scale_sizes()
        .into_iter()
        .map(|longest| {
            let side = style_side(longest, options.style_scale);
            check_fits(
                "image",
                fit_longest(style.width(), style.height(), side),
                deepest,
            )?;
            Ok(styles.grams(style, digest, side, &layers, convention)?.1)
        })
        .collect()
}

/// Runs a request to completion (or cancellation through `progress`) with no memory limit:
/// whole frames unless the request sets `tile_size`.
pub fn render(
    request: &RenderRequest,
    engine: &dyn Engine,
    styles: StyleSource<'_>,
    progress: &mut ProgressSink<'_>,
) -> Result<Rendered> {
    // `prepare` validates the request; planning without a budget cannot fail on it first.
    let plan = plan_memory(request, &engine.footprint(), None)?;
    render_planned(request, engine, styles, &plan, progress)
}

/// Runs a request under a memory plan (see `plan::plan_memory`).
pub fn render_planned(
    request: &RenderRequest,
    engine: &dyn Engine,
    styles: StyleSource<'_>,
    plan: &MemoryPlan,
    progress: &mut ProgressSink<'_>,
) -> Result<Rendered> {
    render_frame(request, None, engine, styles, plan, progress)
}

/// `render_planned` with a sequence frame's temporal term (`None`: a still).
pub fn render_frame(
    request: &RenderRequest,
    temporal: Option<TemporalTarget>,
    engine: &dyn Engine,
    styles: StyleSource<'_>,
    plan: &MemoryPlan,
    progress: &mut ProgressSink<'_>,
) -> Result<Rendered> {
    let mut stats = RenderStats::default();
    let started = Instant::now();
    let mut job = prepare(request, engine, styles, plan, &mut stats.style_lookups)?;
    stats.precompute = started.elapsed();
    job.temporal = temporal;
    run_prepared(request, engine, &job, stats, progress)
}

/// Optimises `job` (prepared from `request`, `stats` holding its precompute) and delivers
/// the 8-bit image, scored again as delivered.
fn run_prepared(
    request: &RenderRequest,
    engine: &dyn Engine,
    job: &OptimiseJob,
    mut stats: RenderStats,
    progress: &mut ProgressSink<'_>,
) -> Result<Rendered> {
    let started = Instant::now();
    let optimised = engine.optimise(job, progress)?;
    stats.optimise = started.elapsed();
    stats.evaluating = optimised.evaluating;
    stats.building = optimised.building;
    let mut image = engine.convention().to_rgb(&optimised.image);
    let mut deep = engine.convention().to_rgb16(&optimised.image);
    if request.options.preserve_colors {
        image = transfer_luminance(&image, &request.content.to_8bit());
        deep = widen(&image);
    }
    // What the user receives is the 8-bit image: scored again, as delivered.
    let started = Instant::now();
    let delivered = tracing::debug_span!("score_delivered")
        .in_scope(|| engine.score(job, &engine.convention().to_input(&image)))?;
    stats.score = started.elapsed();
    Ok(Rendered {
        image,
        deep,
        losses: optimised.losses,
        iterations: optimised.iterations,
        evaluations: optimised.evaluations,
        stopped: optimised.stopped,
        delivered,
        stats,
    })
}

/// The network inputs of a request's output scale, as its job sees them: the content at the
/// output size and each style at its side. What a reference implementation needs to start
/// from the same pixels.
pub fn output_scale_inputs(
    request: &RenderRequest,
    convention: &InputConvention,
) -> (InputImage, Vec<InputImage>) {
    let options = &request.options;
    let side = style_side(options.size, options.style_scale);
    let content = request
        .content
        .resized_longest(options.size)
        .to_input(convention);
    let styles = request
        .styles
        .iter()
        .map(|style| convention.to_input(&resize_longest(style, side)))
        .collect();
    (content, styles)
}

/// The loss of any 8-bit `image` of the output size against the request's targets at its
/// output scale (what `Rendered::delivered` is for the image stylize delivers).
pub fn score_image(
    request: &RenderRequest,
    engine: &dyn Engine,
    styles: StyleSource<'_>,
    image: &RgbImage,
) -> Result<LossBreakdown> {
    let mut output_scale = request.clone();
    output_scale.options.scales = 1;
    let plan = plan_memory(&output_scale, &engine.footprint(), None)?;
    let job = prepare(&output_scale, engine, styles, &plan, &mut Vec::new())?;
    let expected = job.scales[0].content.shape();
    if (1, 3, image.height() as usize, image.width() as usize) != expected {
        return Err(Error::invalid(
            "image",
            format!(
                "{}x{} is not the output size {}x{}",
                image.width(),
                image.height(),
                expected.3,
                expected.2
            ),
        ));
    }
    engine.score(&job, &engine.convention().to_input(image))
}
