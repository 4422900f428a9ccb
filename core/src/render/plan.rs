//! Fitting a job into memory: from the request's sizes and an engine's `Footprint`, choose
//! the L-BFGS history (longest first), then the tiling and the number of stages whose tile
//! states are kept between the passes that fit the budget at the least computation, or
//! refuse the job as one that can never fit.

use crate::engine::OptimizerKind;
use crate::engine::footprint::{Footprint, JobShape};
use crate::error::{Error, Result};
use crate::image_io::fit_longest;
use crate::model::Layer;
use crate::net::stages::StagedPlan;
use crate::net::tiling::TilePlan;

use super::RenderRequest;
use super::options::{DEFAULT_HISTORY, style_side};

/// Histories tried, largest first, when the request leaves it to the server.
const HISTORIES: [usize; 6] = [DEFAULT_HISTORY, 50, 20, 10, 5, 3];
/// Tile core sides tried, largest first, after the whole frame.
const TILE_SIDES: [usize; 9] = [2048, 1536, 1024, 768, 512, 384, 256, 192, 128];
/// At most this share of a job's budget goes to L-BFGS history when the server chooses it
/// (the rest keeps tile states, which buy speed: 10 pairs, scipy's default, suit most jobs).
const HISTORY_SHARE: f64 = 0.15;
/// A tile's backward pass costs this many of its forward passes (ONNX Runtime on the CPU,
/// measured with its profiler on 592x368 tiles: 1.06 s forward, 1.32 s backward).
const BACKWARD_PER_FORWARD: f64 = 1.25;
/// What one tile pass costs beyond its arithmetic (a session run, its copies), in
/// multiply-accumulates: about 4 ms of a 2-core CPU (1920x1080 in 256-pixel first-stage
/// cores, 166 tile passes, ran 0.5 s slower per evaluation than in 512-pixel ones, 50).
const MACS_PER_TILE_PASS: f64 = 4e8;

/// How a job runs within its memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPlan {
    /// Tile cores at most this many pixels on a side, for the optimisation and the style
    /// precompute (`None`: whole frames).
    pub tile_side: Option<usize>,
    /// L-BFGS pairs kept (0 with Adam).
    pub history: usize,
    /// Tiles of the largest scale's frame (its first stage's).
    pub tiles: usize,
    /// Stages, deepest first, whose tiles' forward state is kept between the passes (1
    /// when untiled).
    pub kept_stages: usize,
    /// The job's estimated peak, beside what the process holds anyway.
    pub estimate: u64,
}

/// The tilings tried, largest first: the whole frame, then each of `TILE_SIDES`.
fn whole_then_tiles() -> impl Iterator<Item = Option<usize>> {
    std::iter::once(None).chain(TILE_SIDES.iter().map(|&s| Some(s)))
}

/// The first candidate whose estimate fits `budget`, else the smallest estimate seen.
fn first_fitting<P>(
    candidates: impl IntoIterator<Item = P>,
    estimate: impl Fn(&P) -> u64,
    budget: u64,
) -> std::result::Result<P, u64> {
    let mut smallest = u64::MAX;
    for candidate in candidates {
        let bytes = estimate(&candidate);
        if bytes <= budget {
            return Ok(candidate);
        }
        smallest = smallest.min(bytes);
    }
    Err(smallest)
}

fn deepest(layers: &[(Layer, f64)]) -> Option<Layer> {
    layers.iter().map(|(l, _)| *l).max()
}

/// The shape of `request` evaluated in stage tiles of first-stage side `tile_side` (`None`:
/// the whole frame) with `history` pairs and the deepest `kept_stages` stages' states kept
/// between the passes, the frame's tiles, the stages, and the cost of one evaluation in
/// multiply-accumulates.
fn shape(
    request: &RenderRequest,
    footprint: &Footprint,
    tile_side: Option<usize>,
    history: usize,
    kept_stages: usize,
) -> (JobShape, usize, usize, f64) {
    let options = &request.options;
    let (w, h) = fit_longest(
        request.content.width(),
        request.content.height(),
        options.size,
    );
    let (w, h) = (w as usize, h as usize);
    let layers: Vec<Layer> = options
        .content_layers
        .iter()
        .chain(&options.style_layers)
        .map(|(l, _)| *l)
        .collect();
    let style_pixels = deepest(&options.style_layers).map_or(0, |d| {
        let side = style_side(options.size, options.style_scale);
        request
            .styles
            .iter()
            .map(|s| {
                let (sw, sh) = fit_longest(s.width(), s.height(), side);
                TilePlan::new(sh as usize, sw as usize, d, tile_side).largest_tile_pixels()
            })
            .max()
            .unwrap_or(0)
    });
    let mut job = JobShape {
        frame_pixels: h * w,
        whole_pixels: h * w,
        tile_values: 0,
        stage_map_values: 0,
        kept_values: (0, 0, 0),
        style_pixels,
        history,
    };
    let Some(deepest) = layers.iter().copied().max() else {
        return (job, 1, 1, 0.0);
    };
    let plan = StagedPlan::new(h, w, deepest, tile_side);
    let stages = plan.stages.len();
    // A whole frame keeps nothing between passes: it runs one graph.
    let kept_stages = if tile_side.is_none() {
        1
    } else {
        kept_stages.clamp(1, stages)
    };
    // Every tile runs a forward and a backward pass; those of stages whose state is not
    // kept run a second forward.
    let cost = plan
        .stages
        .iter()
        .enumerate()
        .map(|(i, (stage, tiles))| {
            let passes = if tile_side.is_none() {
                1.0 + BACKWARD_PER_FORWARD
            } else if i + kept_stages < stages {
                2.0 + BACKWARD_PER_FORWARD
            } else {
                1.0 + BACKWARD_PER_FORWARD
            };
            tiles
                .tiles
                .iter()
                .map(|t| {
                    let arithmetic = (t.pixels() * stage.macs_per_cell()) as f64;
                    passes * (arithmetic + MACS_PER_TILE_PASS)
                })
                .sum::<f64>()
        })
        .sum();
    if tile_side.is_some() {
        job.whole_pixels = 0;
        job.tile_values = plan.largest_tile_values();
        job.stage_map_values = plan.held_map_values(kept_stages);
        job.kept_values = plan.kept_values(kept_stages, &layers, footprint.state.first_recomputed);
    }
    (job, plan.tiles(), kept_stages, cost)
}

/// Chooses history and tiling for `request` on an engine with `footprint`, within
/// `budget` bytes for the job (`None`: no limit, so whole frames and the requested or
/// default history). The request's own `tile_size` or L-BFGS history, when set, are kept
/// as given, and the job is refused if they cannot fit.
pub fn plan_memory(
    request: &RenderRequest,
    footprint: &Footprint,
    budget: Option<u64>,
) -> Result<MemoryPlan> {
    let options = &request.options;
    let histories: Vec<usize> = match options.optimizer {
        OptimizerKind::Adam { .. } => vec![0],
        // The server chooses, longest first, up to the preset's cap.
        OptimizerKind::Lbfgs { history: 0 } => HISTORIES
            .iter()
            .copied()
            .filter(|&h| h <= options.max_history.max(HISTORIES[HISTORIES.len() - 1]))
            .collect(),
        OptimizerKind::Lbfgs { history } => vec![history],
    };
    let sides: Vec<Option<usize>> = match options.tile_size {
        Some(side) => vec![Some(side as usize)],
        None => whole_then_tiles().collect(),
    };
    let plan_for = |side: Option<usize>, history: usize, kept: usize| {
        let (job, tiles, kept_stages, cost) = shape(request, footprint, side, history, kept);
        let plan = MemoryPlan {
            tile_side: side,
            history,
            tiles,
            kept_stages,
            estimate: footprint.job_bytes(&job),
        };
        (plan, cost)
    };
    let Some(budget) = budget else {
        // No limit: every stage's state is kept.
        return Ok(plan_for(sides[0], histories[0], usize::MAX).0);
    };
    let (frame, _, _, _) = shape(request, footprint, None, 0, 1);
    let pair = footprint.pair_bytes(frame.frame_pixels);
    let last = histories.last().copied().unwrap_or(0);
    // A history the server chooses takes at most its share of the budget (the shortest
    // one offered is always tried).
    let affordable = |history: usize| {
        histories.len() == 1
            || history == last
            || (history as u64 * pair) as f64 <= HISTORY_SHARE * budget as f64
    };
    // For each tiling, the most kept stages that fit (or only the deepest). The estimate
    // grows with the kept stages, so the most that fit are found by bisection.
    let most_kept = |side: Option<usize>, history: usize| {
        let (_, _, stages, _) = shape(request, footprint, side, history, usize::MAX);
        let (mut low, mut high) = (1, stages);
        while low < high {
            let mid = (low + high).div_ceil(2);
            if plan_for(side, history, mid).0.estimate <= budget {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        plan_for(side, history, low)
    };
    let mut smallest = u64::MAX;
    for history in histories.iter().copied().filter(|&h| affordable(h)) {
        let fitting = sides
            .iter()
            .map(|&side| most_kept(side, history))
            .inspect(|(plan, _)| smallest = smallest.min(plan.estimate))
            .filter(|(plan, _)| plan.estimate <= budget);
        // The least computation among the tilings that fit.
        if let Some((plan, _)) = fitting.min_by(|a, b| a.1.total_cmp(&b.1)) {
            return Ok(plan);
        }
    }
    Err(Error::MemoryExhausted(format!(
        "the job needs about {} MiB at its smallest tiling but this server has {} MiB for a job; \
         send a smaller size or style_scale, or send it to a replica with more memory",
        smallest >> 20,
        budget >> 20
    )))
}

/// How a style registration's precompute runs within memory: tiles and estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecomputePlan {
    pub tile_side: Option<usize>,
    pub estimate: u64,
}

/// The largest tiling whose precompute of `style` at every scale `options` uses fits
/// `budget` (`None`: whole images).
pub fn plan_precompute(
    style: &image::RgbImage,
    options: &super::RenderOptions,
    footprint: &Footprint,
    budget: Option<u64>,
) -> Result<PrecomputePlan> {
    let Some(deepest) = deepest(&options.style_layers) else {
        return Err(Error::invalid("style_layers", "no style layer given"));
    };
    let side = style_side(options.size, options.style_scale);
    let (w, h) = fit_longest(style.width(), style.height(), side);
    let plan_for = |tile_side: Option<usize>| {
        let style_pixels =
            TilePlan::new(h as usize, w as usize, deepest, tile_side).largest_tile_pixels();
        let job = JobShape {
            frame_pixels: 0,
            whole_pixels: 0,
            tile_values: 0,
            stage_map_values: 0,
            kept_values: (0, 0, 0),
            style_pixels,
            history: 0,
        };
        PrecomputePlan {
            tile_side,
            estimate: footprint.job_bytes(&job),
        }
    };
    let Some(budget) = budget else {
        return Ok(plan_for(None));
    };
    let candidates = whole_then_tiles().map(plan_for);
    let smallest = match first_fitting(candidates, |p| p.estimate, budget) {
        Ok(plan) => return Ok(plan),
        Err(smallest) => smallest,
    };
    Err(Error::MemoryExhausted(format!(
        "the style's precompute needs about {} MiB but this server has {} MiB for it",
        smallest >> 20,
        budget >> 20
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RenderOptions;

    fn request(width: u32, height: u32, tile_size: Option<u32>) -> RenderRequest {
        RenderRequest {
            content: image::RgbImage::new(width, height).into(),
            styles: vec![image::RgbImage::new(640, 480)],
            blend: vec![],
            options: RenderOptions {
                size: width.max(height),
                tile_size,
                optimizer: OptimizerKind::Lbfgs { history: 10 },
                ..Default::default()
            },
        }
    }

    const FOOTPRINT: Footprint = Footprint::ORT_CPU;

    #[test]
    fn a_presets_history_cap_bounds_what_the_server_chooses() {
        let mut capped = request(256, 256, None);
        capped.options.optimizer = OptimizerKind::Lbfgs { history: 0 };
        let free = plan_memory(&capped, &FOOTPRINT, None).unwrap();
        assert_eq!(free.history, DEFAULT_HISTORY);
        capped.options.max_history = 20;
        assert_eq!(plan_memory(&capped, &FOOTPRINT, None).unwrap().history, 20);
        // A request's own history is kept whatever the cap.
        capped.options.optimizer = OptimizerKind::Lbfgs { history: 70 };
        assert_eq!(plan_memory(&capped, &FOOTPRINT, None).unwrap().history, 70);
    }

    #[test]
    fn without_a_limit_every_stage_keeps_its_state() {
        let plan = plan_memory(&request(1920, 1080, Some(512)), &FOOTPRINT, None).unwrap();
        assert!(plan.tiles > 1);
        assert_eq!(plan.kept_stages, 5);
    }

    #[test]
    fn kept_stages_shrink_to_fit_and_never_below_one() {
        let request = request(1920, 1080, Some(512));
        let all = plan_memory(&request, &FOOTPRINT, None).unwrap();
        let one = {
            let (job, _, _, _) = shape(&request, &FOOTPRINT, Some(512), 10, 1);
            FOOTPRINT.job_bytes(&job)
        };
        assert!(one < all.estimate);
        let two = {
            let (job, _, _, _) = shape(&request, &FOOTPRINT, Some(512), 10, 2);
            FOOTPRINT.job_bytes(&job)
        };
        let plan = plan_memory(&request, &FOOTPRINT, Some(two)).unwrap();
        assert!(plan.estimate <= two);
        assert_eq!(plan.kept_stages, 2);
        let tight = plan_memory(&request, &FOOTPRINT, Some(one)).unwrap();
        assert_eq!(tight.kept_stages, 1);
        assert!(plan_memory(&request, &FOOTPRINT, Some(one - 1)).is_err());
    }

    #[test]
    fn the_least_computation_that_fits_is_chosen() {
        let request = request(1920, 1080, None);
        let whole = plan_memory(&request, &FOOTPRINT, None).unwrap();
        assert_eq!((whole.tiles, whole.tile_side), (1, None));
        let fits = plan_memory(&request, &FOOTPRINT, Some(whole.estimate)).unwrap();
        assert_eq!(fits.tiles, 1, "the whole frame fits: no tiling");
        let budget = whole.estimate / 3;
        let plan = plan_memory(&request, &FOOTPRINT, Some(budget)).unwrap();
        assert!(plan.tiles > 1 && plan.estimate <= budget);
        let cost =
            |p: &MemoryPlan| shape(&request, &FOOTPRINT, p.tile_side, p.history, p.kept_stages).3;
        for side in TILE_SIDES {
            for kept in 1..=5 {
                let (job, _, _, c) = shape(&request, &FOOTPRINT, Some(side), plan.history, kept);
                if FOOTPRINT.job_bytes(&job) <= budget {
                    assert!(cost(&plan) <= c, "side {side}, {kept} kept is cheaper");
                }
            }
        }
    }
}
