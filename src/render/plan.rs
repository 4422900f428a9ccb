//! Fitting a job into memory: from the request's sizes and an engine's `Footprint`, choose
//! the L-BFGS history and the tiling (largest tiles first: fewer halos, less recomputation)
//! whose estimate fits the budget, or refuse the job as one that can never fit.

use crate::engine::OptimizerKind;
use crate::engine::footprint::{Footprint, JobShape};
use crate::error::{Error, Result};
use crate::image_io::fit_longest;
use crate::model::Layer;
use crate::net::tiling::TilePlan;

use super::{RenderRequest, style_side};

/// L-BFGS pairs kept when the request leaves it to the server and memory allows.
pub const DEFAULT_HISTORY: usize = 100;
/// Histories tried, largest first, when the request leaves it to the server.
const HISTORIES: [usize; 6] = [DEFAULT_HISTORY, 50, 20, 10, 5, 3];
/// Tile core sides tried, largest first, after the whole frame.
const TILE_SIDES: [usize; 9] = [2048, 1536, 1024, 768, 512, 384, 256, 192, 128];
/// At most this share of a job's budget goes to L-BFGS history when the server chooses it.
const HISTORY_SHARE: f64 = 0.25;

/// How a job runs within its memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPlan {
    /// Tile cores at most this many pixels on a side, for the optimisation and the style
    /// precompute (`None`: whole frames).
    pub tile_side: Option<usize>,
    /// L-BFGS pairs kept (0 with Adam).
    pub history: usize,
    /// Tiles of the largest scale's frame.
    pub tiles: usize,
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

/// The shape of `request` evaluated in tiles of `tile_side` with `history` pairs.
fn shape(request: &RenderRequest, tile_side: Option<usize>, history: usize) -> (JobShape, usize) {
    let options = &request.options;
    let (w, h) = fit_longest(
        request.content.width(),
        request.content.height(),
        options.size,
    );
    let (w, h) = (w as usize, h as usize);
    let layers: Vec<(Layer, f64)> = options
        .content_layers
        .iter()
        .chain(&options.style_layers)
        .copied()
        .collect();
    let frame = deepest(&layers).map(|d| TilePlan::new(h, w, d, tile_side));
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
    let job = JobShape {
        frame_pixels: h * w,
        tile_pixels: frame.as_ref().map_or(h * w, TilePlan::largest_tile_pixels),
        style_pixels,
        history,
    };
    (job, frame.map_or(1, |p| p.tiles.len()))
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
        OptimizerKind::Lbfgs { history: 0 } => HISTORIES.to_vec(),
        OptimizerKind::Lbfgs { history } => vec![history],
    };
    let sides: Vec<Option<usize>> = match options.tile_size {
        Some(side) => vec![Some(side as usize)],
        None => whole_then_tiles().collect(),
    };
    let plan_for = |side: Option<usize>, history: usize| {
        let (job, tiles) = shape(request, side, history);
        MemoryPlan {
            tile_side: side,
            history,
            tiles,
            estimate: footprint.job_bytes(&job),
        }
    };
    let Some(budget) = budget else {
        return Ok(plan_for(sides[0], histories[0]));
    };
    let (frame, _) = shape(request, None, 0);
    let pair = footprint.pair_bytes(frame.frame_pixels);
    let last = histories.last().copied().unwrap_or(0);
    // A history the server chooses takes at most its share of the budget (the shortest
    // one offered is always tried).
    let affordable = |history: usize| {
        histories.len() == 1
            || history == last
            || (history as u64 * pair) as f64 <= HISTORY_SHARE * budget as f64
    };
    let candidates = histories
        .iter()
        .filter(|&&h| affordable(h))
        .flat_map(|&history| sides.iter().map(move |&side| plan_for(side, history)));
    let smallest = match first_fitting(candidates, |p| p.estimate, budget) {
        Ok(plan) => return Ok(plan),
        Err(smallest) => smallest,
    };
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
            tile_pixels: 0,
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
