//! The exact loss and gradient of a frame evaluated in stages and tiles, so a job's working
//! memory is bounded by its largest tile rather than by the frame. `net::stages` cuts the
//! network into one stage per VGG block, each run tile by tile over its input map (the
//! image, or the previous stage's pooled output, held whole); its tiles need halos of a few
//! cells only. Two passes:
//!
//! 1. stage by stage, each tile's forward pass adds its core's share to every style layer's
//!    `F F^T` and every content layer's squared error, and its core's pooled output to the
//!    next stage's input; the global Grams and losses follow;
//! 2. stage by stage from the deepest, each tile's backward pass (from the state its pass-1
//!    forward kept, for the deepest `kept_stages` stages, else after a second forward)
//!    turns the global `(G - A)`, the content differences and the gradient at its pooled
//!    output into the gradient at its input map, exact on its core; the cores make the
//!    gradient at the previous stage's output, and finally at the image.
//!
//! Only a Gram's squared error couples distant pixels, and its gradient at a pixel needs just
//! the global Gram and that pixel's features, so the result equals the untiled one up to
//! float32 summation order. An engine supplies the per-tile passes (`StagePasses`);
//! total variation is image-local and is evaluated on the whole frame.

use candle_core::{DType, Tensor};

use super::LossBreakdown;
use super::loss::{LayerTarget, TermWeights, scalar, taps, total_variation};
use super::mosaic::Mosaic;
use crate::error::{Error, Result};
use crate::model::Layer;
use crate::net::stages::{Stage, StagedPlan};
use crate::net::tiling::{Tile, Window, crop};

/// What a tile's gradient pass needs at one tapped layer: dL/dF is `style_matrix · F` for a
/// style layer and `content_coef · (F - P)` for a content layer.
pub enum TapTerm {
    Style {
        layer: Layer,
        /// `coef · (G - A)`, C x C.
        matrix: Tensor,
    },
    Content {
        layer: Layer,
        coef: f64,
        /// The content target over the tile's map at `layer`.
        target: Tensor,
    },
}

impl TapTerm {
    pub fn layer(&self) -> Layer {
        match self {
            TapTerm::Style { layer, .. } | TapTerm::Content { layer, .. } => *layer,
        }
    }

    /// dL/dF over the tile's whole map `features` (1 x C x h x w). Near the tile's edge the
    /// features, and so these values, are inexact; they reach no core pixel's gradient.
    pub fn gradient(&self, features: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = features.dims4()?;
        Ok(match self {
            TapTerm::Style { matrix, .. } => matrix
                .matmul(&features.reshape((c, h * w))?)?
                .reshape((1, c, h, w))?,
            TapTerm::Content { coef, target, .. } => ((features - target)? * *coef)?,
        })
    }
}

/// What a stage tile's forward pass gives: its share of the frame's statistics, its pooled
/// output and, when asked for, the state its backward pass starts from.
pub struct StageForward<S> {
    /// The content layers' maps over the whole tile, in order.
    pub content_maps: Vec<Tensor>,
    /// Each style layer's `F F^T` over its core, unnormalised, in float64.
    pub gram_sums: Vec<Tensor>,
    /// The pooled last map over the whole tile, when the stage pools.
    pub output: Option<Tensor>,
    pub state: Option<S>,
}

/// An engine's per-tile passes of one stage.
pub trait StagePasses {
    /// What a forward pass keeps for its backward pass (activations, ReLU masks, indices).
    type State;
    /// The forward pass of `stage` on a tile of its input map: maps at `content` layers,
    /// the core Gram sums at `style` layers (each with its core window), the pooled output,
    /// and the backward state when `run.keep`. The layers are the stage's own.
    fn forward(
        &self,
        stage: Stage,
        input: &Tensor,
        content: &[Layer],
        style: &[(Layer, Window)],
        run: TileRun,
    ) -> Result<StageForward<Self::State>>;
    /// dL/d(tile input) from a kept forward `state`, the stage's terms (over the whole tile)
    /// and, when the stage pools, dL/d(pooled output) over the tile.
    fn backward(
        &self,
        stage: Stage,
        state: Self::State,
        terms: &[TapTerm],
        output_grad: Option<&Tensor>,
        run: TileRun,
    ) -> Result<Tensor>;
}

/// How one per-tile pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRun {
    /// Keep the forward state for a backward pass.
    pub keep: bool,
    /// The stage's last tile in this pass: hand working memory back afterwards (kept
    /// between the tiles of one stage, it saves reallocating it every tile).
    pub last: bool,
}

/// Where a tile's core starts in its stage's map `stride` times coarser than the tile.
fn core_origin(tile: &Tile, stride: usize) -> (usize, usize) {
    (tile.core_rows.start / stride, tile.core_cols.start / stride)
}

/// Indices into `layers` of those inside `stage`.
fn inside(stage: Stage, layers: &[Layer]) -> Vec<usize> {
    (0..layers.len())
        .filter(|&i| stage.contains(layers[i]))
        .collect()
}

/// The layers of `layers` inside `stage`, in order.
fn within(stage: Stage, layers: &[Layer]) -> Vec<Layer> {
    inside(stage, layers)
        .into_iter()
        .map(|i| layers[i])
        .collect()
}

/// One stage tile's forward pass on its stage's whole `input` map.
fn forward_tile<P: StagePasses>(
    passes: &P,
    stage: Stage,
    input: &Tensor,
    tile: &Tile,
    content: &[Layer],
    style: &[Layer],
    run: TileRun,
) -> Result<StageForward<P::State>> {
    let core = tile.core_at(1);
    let style: Vec<(Layer, Window)> = style.iter().map(|&l| (l, core)).collect();
    let input = crop(input, tile.extent_at(1))?.contiguous()?;
    passes.forward(stage, &input, content, &style, run)
}

/// Pass 1: every stage's tiles in order. `visit(stage, tile index, tile, forward)` sees each
/// tile's forward pass (its pooled output taken); `keep(stage)` says whether the stage's
/// tiles keep their state. Returns each stage's input map (the first is `x`), except those
/// of stages that kept their state: pass 2 never runs their forward again.
fn forward_sweep<P: StagePasses>(
    passes: &P,
    plan: &StagedPlan,
    x: &Tensor,
    (content, style): (&[Layer], &[Layer]),
    keep: impl Fn(usize) -> bool,
    mut visit: impl FnMut(usize, usize, &Tile, StageForward<P::State>) -> Result<()>,
) -> Result<Vec<Option<Tensor>>> {
    let mut inputs = vec![Some(x.clone())];
    for (index, (stage, tiles)) in plan.stages.iter().enumerate() {
        let (stage_content, stage_style) = (within(*stage, content), within(*stage, style));
        let input = inputs[index].clone().ok_or_else(missing_input)?;
        let mut pooled = Mosaic::new(tiles, tiles.height / 2, tiles.width / 2);
        for (t, tile) in tiles.tiles.iter().enumerate() {
            let run = TileRun {
                keep: keep(index),
                last: t + 1 == tiles.tiles.len(),
            };
            let mut forward = forward_tile(
                passes,
                *stage,
                &input,
                tile,
                &stage_content,
                &stage_style,
                run,
            )?;
            if let Some(output) = forward.output.take() {
                pooled.push(t, &output, tile.core_at(2), core_origin(tile, 2))?;
            }
            visit(index, t, tile, forward)?;
        }
        if keep(index) {
            inputs[index] = None;
        }
        if stage.pooled_after {
            inputs.push(Some(pooled.finish()?));
        }
    }
    Ok(inputs)
}

fn missing_input() -> Error {
    internal("a stage's input map was not kept")
}

/// A broken invariant of the tiled evaluation.
fn internal(what: &str) -> Error {
    Error::from(candle_core::Error::Msg(what.into()))
}

/// The tiled objective for one scale: targets over the whole frame, the plan, the passes.
pub struct TiledObjective<P> {
    pub passes: P,
    pub plan: StagedPlan,
    /// Content targets: each the whole frame's feature map at its layer.
    pub content: Vec<LayerTarget>,
    /// Style targets: each a C x C Gram.
    pub style: Vec<LayerTarget>,
    pub weights: TermWeights,
    /// How many stages, deepest first, keep their tiles' forward state between the passes
    /// (pass 2 then runs only their backward passes); at least the deepest does.
    pub kept_stages: usize,
}

impl<P: StagePasses> TiledObjective<P> {
    /// The loss at `x` and `dL/dx`.
    pub fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        if taps(&self.content, &self.style).is_empty() {
            return Err(Error::invalid("layers", "no content or style layer given"));
        }
        let content: Vec<Layer> = self.content.iter().map(|t| t.layer).collect();
        let style: Vec<Layer> = self.style.iter().map(|t| t.layer).collect();
        let stages = self.plan.stages.len();
        let first_kept = stages.saturating_sub(self.kept_stages.max(1));
        // Pass 1: Gram sums and content squared errors over the cores, accumulated in float64
        // across tiles.
        let mut gram_sums: Vec<Option<Tensor>> = vec![None; style.len()];
        let mut content_sums = vec![0f64; content.len()];
        let mut kept: Vec<Vec<P::State>> = (0..stages).map(|_| Vec::new()).collect();
        let inputs = forward_sweep(
            &self.passes,
            &self.plan,
            x,
            (&content, &style),
            |stage| stage >= first_kept,
            |index, _, tile, forward| {
                let stage = self.plan.stages[index].0;
                let core = tile.core_at(1);
                for (i, map) in inside(stage, &content)
                    .into_iter()
                    .zip(&forward.content_maps)
                {
                    let target = crop(&crop(&self.content[i].target, tile.extent_at(1))?, core)?;
                    let diff =
                        (crop(map, core)?.to_dtype(DType::F64)? - target.to_dtype(DType::F64)?)?;
                    content_sums[i] += scalar(&diff.sqr()?.sum_all()?)?;
                }
                for (i, part) in inside(stage, &style).into_iter().zip(forward.gram_sums) {
                    gram_sums[i] = Some(match gram_sums[i].take() {
                        Some(acc) => (acc + part)?,
                        None => part,
                    });
                }
                kept[index].extend(forward.state);
                Ok(())
            },
        )?;
        let (h, w) = (self.plan.height, self.plan.width);
        let mut out = LossBreakdown::default();
        let mut terms = Vec::with_capacity(content.len() + style.len());
        for (t, sum) in self.content.iter().zip(content_sums) {
            let count = t.target.elem_count() as f64;
            let loss = sum / count;
            out.content += t.weight * loss;
            out.content_per_layer.push(loss);
            terms.push(TapTerm::Content {
                layer: t.layer,
                coef: 2.0 * self.weights.content * t.weight / count,
                target: t.target.clone(),
            });
        }
        for (t, sum) in self.style.iter().zip(gram_sums) {
            let c = t.layer.channels();
            let (lh, lw) = t.layer.output_size(h, w);
            let count = (c * lh * lw) as f64;
            let sum = sum.ok_or_else(|| Error::invalid("layers", "no tile to evaluate"))?;
            let diff = ((sum / count)? - t.target.to_dtype(DType::F64)?)?;
            let loss = scalar(&diff.sqr()?.mean_all()?)?;
            let diff = diff.to_dtype(t.target.dtype())?;
            out.style += t.weight * loss;
            out.style_per_layer.push(loss);
            let coef = 4.0 * self.weights.style * t.weight / ((c * c) as f64 * count);
            terms.push(TapTerm::Style {
                layer: t.layer,
                matrix: (diff * coef)?,
            });
        }
        // Pass 2: from the deepest stage, each tile's gradient at its input map, exact on
        // its core; the cores make the gradient at the previous stage's pooled output.
        let mut output_grad: Option<Tensor> = None;
        for (index, (stage, tiles)) in self.plan.stages.iter().enumerate().rev() {
            let (stage_content, stage_style) = (within(*stage, &content), within(*stage, &style));
            let stage_terms: Vec<&TapTerm> =
                terms.iter().filter(|t| stage.contains(t.layer())).collect();
            let mut states = std::mem::take(&mut kept[index]).into_iter();
            let mut grads = Mosaic::new(tiles, tiles.height, tiles.width);
            for (t, tile) in tiles.tiles.iter().enumerate() {
                let run = TileRun {
                    keep: true,
                    last: t + 1 == tiles.tiles.len(),
                };
                let state = match states.next() {
                    Some(state) => state,
                    None => forward_tile(
                        &self.passes,
                        *stage,
                        inputs[index].as_ref().ok_or_else(missing_input)?,
                        tile,
                        &stage_content,
                        &stage_style,
                        run,
                    )?
                    .state
                    .ok_or_else(|| internal("a tile's forward pass kept no state"))?,
                };
                let tile_grad = match &output_grad {
                    Some(g) => Some(crop(g, tile.extent_at(2))?.contiguous()?),
                    None => None,
                };
                let part = self.passes.backward(
                    *stage,
                    state,
                    &per_tile(&stage_terms, tile)?,
                    tile_grad.as_ref(),
                    run,
                )?;
                grads.push(t, &part, tile.core_at(1), core_origin(tile, 1))?;
            }
            output_grad = Some(grads.finish()?);
        }
        let (tv, tv_grad) = total_variation(x)?;
        let grad = match output_grad {
            Some(g) => (g + (tv_grad * self.weights.tv)?)?,
            None => (tv_grad * self.weights.tv)?,
        };
        out.tv = tv;
        out.total = self.weights.content * out.content
            + self.weights.style * out.style
            + self.weights.tv * tv;
        Ok((out, grad))
    }
}

/// The terms with content targets cropped to `tile`'s maps.
fn per_tile(terms: &[&TapTerm], tile: &Tile) -> Result<Vec<TapTerm>> {
    terms
        .iter()
        .map(|term| {
            Ok(match term {
                TapTerm::Style { layer, matrix } => TapTerm::Style {
                    layer: *layer,
                    matrix: matrix.clone(),
                },
                TapTerm::Content {
                    layer,
                    coef,
                    target,
                } => TapTerm::Content {
                    layer: *layer,
                    coef: *coef,
                    target: crop(target, tile.extent_at(1))?.contiguous()?,
                },
            })
        })
        .collect()
}

/// A whole frame's feature maps at `content` layers, assembled from the stage tiles' cores
/// (what the content targets need for a frame too large to run in one piece). The stage
/// graphs also compute `style` layers' core Grams, unused here: the passes are the
/// objective's own, so no other graph is built.
pub fn frame_features(
    passes: &impl StagePasses,
    x: &Tensor,
    plan: &StagedPlan,
    content: &[Layer],
    style: &[Layer],
) -> Result<Vec<Tensor>> {
    let mut mosaics: Vec<Option<Mosaic>> = (0..content.len()).map(|_| None).collect();
    let mut maps: Vec<Option<Tensor>> = vec![None; content.len()];
    let mut current = None;
    forward_sweep(
        passes,
        plan,
        x,
        (content, style),
        |_| false,
        |index, t, tile, forward| {
            let (stage, tiles) = &plan.stages[index];
            if current != Some(index) {
                current = Some(index);
                for i in inside(*stage, content) {
                    mosaics[i] = Some(Mosaic::new(tiles, tiles.height, tiles.width));
                }
            }
            for (i, map) in inside(*stage, content)
                .into_iter()
                .zip(&forward.content_maps)
            {
                if let Some(mosaic) = mosaics[i].as_mut() {
                    mosaic.push(t, map, tile.core_at(1), core_origin(tile, 1))?;
                }
            }
            if t + 1 == tiles.tiles.len() {
                for i in inside(*stage, content) {
                    if let Some(mosaic) = mosaics[i].take() {
                        maps[i] = Some(mosaic.finish()?);
                    }
                }
            }
            Ok(())
        },
    )?;
    maps.into_iter()
        .map(|m| m.ok_or_else(|| Error::invalid("content_layers", "a layer was not computed")))
        .collect()
}
