//! The exact loss and gradient of a frame evaluated tile by tile, so a job's working memory is
//! bounded by its largest tile rather than by the frame. Two passes over the tiles
//! (`net::tiling` gives their geometry):
//!
//! 1. each tile's forward pass adds its core's share to every style layer's `F F^T` and to
//!    every content layer's squared error; the global Grams and losses follow;
//! 2. each tile's backward pass (from the state its pass-1 forward kept, for the last
//!    `kept_states` tiles, else after a second forward pass) turns the global `(G - A)` and
//!    the content differences on its core into the gradient over its extent, summed into
//!    the frame's.
//!
//! Only a Gram's squared error couples distant pixels, and its gradient at a pixel needs just
//! the global Gram and that pixel's features, so the result equals the untiled one up to
//! float32 summation order. An engine supplies the per-tile passes (`TilePasses`);
//! total variation is image-local and is evaluated on the whole frame.

use candle_core::{DType, Tensor};

use super::LossBreakdown;
use super::loss::{LayerTarget, TermWeights, scalar, taps, total_variation};
use crate::error::{Error, Result};
use crate::model::Layer;
use crate::net::tiling::{Tile, TilePlan, Window, crop, tile_image};

/// Zero-pads `core` (1 x C x h x w, lying at `window`) out to `height` x `width`.
fn pad_to(core: &Tensor, window: Window, height: usize, width: usize) -> Result<Tensor> {
    Ok(core
        .pad_with_zeros(2, window.top, height - window.top - window.height)?
        .pad_with_zeros(3, window.left, width - window.left - window.width)?)
}

/// What a tile's gradient pass needs at one tapped layer: dL/dF on the core is
/// `style_matrix · F` for a style layer and `content_coef · (F - P)` for a content layer.
pub enum TapTerm {
    Style {
        layer: Layer,
        /// `coef · (G - A)`, C x C.
        matrix: Tensor,
    },
    Content {
        layer: Layer,
        coef: f64,
        /// The content target over the tile's whole map at `layer` (zero outside the image
        /// is never read: the core lies inside).
        target: Tensor,
    },
}

impl TapTerm {
    pub fn layer(&self) -> Layer {
        match self {
            TapTerm::Style { layer, .. } | TapTerm::Content { layer, .. } => *layer,
        }
    }

    /// dL/dF over the tile's map `features` (1 x C x h x w): the term on the core, zero
    /// elsewhere (features outside the core belong to other tiles).
    pub fn gradient(&self, features: &Tensor, core: Window) -> Result<Tensor> {
        let (_, c, h, w) = features.dims4()?;
        let f = crop(features, core)?;
        let g = match self {
            TapTerm::Style { matrix, .. } => matrix
                .matmul(&f.reshape((c, core.height * core.width))?)?
                .reshape((1, c, core.height, core.width))?,
            TapTerm::Content { coef, target, .. } => ((f - crop(target, core)?)? * *coef)?,
        };
        pad_to(&g, core, h, w)
    }
}

/// What a tile's forward pass gives: its share of the frame's statistics and, when asked
/// for, the state its backward pass starts from.
pub struct TileForward<S> {
    /// The content layers' maps over the whole tile, in order.
    pub content_maps: Vec<Tensor>,
    /// Each style layer's `F F^T` over its core, unnormalised, in float64.
    pub gram_sums: Vec<Tensor>,
    pub state: Option<S>,
}

/// An engine's per-tile passes.
pub trait TilePasses {
    /// What a forward pass keeps for its backward pass (activations, ReLU masks, indices).
    type State;
    /// The tile image's feature maps at `layers`, in order, as tensors on the device where the
    /// frame's image lives.
    fn features(&self, tile_image: &Tensor, layers: &[Layer]) -> Result<Vec<Tensor>>;
    /// The forward pass: maps at `content` layers, the core Gram sums at `style` layers
    /// (each with its core window), and the backward state when `run.keep`.
    fn forward(
        &self,
        tile_image: &Tensor,
        content: &[Layer],
        style: &[(Layer, Window)],
        run: TileRun,
    ) -> Result<TileForward<Self::State>>;
    /// dL/d(tile image) from a kept forward `state` and the terms, each applied on its core
    /// window (`cores[i]` for `terms[i]`) of the tile's own features, as
    /// `TapTerm::gradient` forms it.
    fn backward(
        &self,
        state: Self::State,
        cores: &[Window],
        terms: &[TapTerm],
        run: TileRun,
    ) -> Result<Tensor>;
}

/// How one per-tile pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRun {
    /// Keep the forward state for a backward pass.
    pub keep: bool,
    /// The evaluation's last pass of its kind: hand working memory back afterwards (kept
    /// between the tiles of one evaluation, it saves reallocating it every tile).
    pub last: bool,
}

/// The tiled objective for one scale: targets over the whole frame, the plan, the passes.
pub struct TiledObjective<P> {
    pub passes: P,
    pub plan: TilePlan,
    /// Content targets: each the whole frame's feature map at its layer.
    pub content: Vec<LayerTarget>,
    /// Style targets: each a C x C Gram.
    pub style: Vec<LayerTarget>,
    pub weights: TermWeights,
    /// How many tiles (the last ones of pass 1) keep their forward state for pass 2, which
    /// then runs only their backward passes; at least the last tile always does.
    pub kept_states: usize,
}

impl<P: TilePasses> TiledObjective<P> {
    fn forward(&self, x: &Tensor, tile: &Tile, run: TileRun) -> Result<TileForward<P::State>> {
        let (h, w) = (self.plan.height, self.plan.width);
        let content: Vec<Layer> = self.content.iter().map(|t| t.layer).collect();
        let style: Vec<(Layer, Window)> = self
            .style
            .iter()
            .map(|t| (t.layer, tile.core_in_tile(t.layer, h, w)))
            .collect();
        self.passes
            .forward(&tile_image(x, tile)?, &content, &style, run)
    }

    /// The loss at `x` and `dL/dx`.
    pub fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        let (h, w) = (self.plan.height, self.plan.width);
        let taps = taps(&self.content, &self.style);
        if taps.is_empty() {
            return Err(Error::invalid("layers", "no content or style layer given"));
        }
        // Pass 1: Gram sums and content squared errors over the cores, accumulated in float64
        // across tiles. The last `kept_states` tiles keep their forward state: pass 2 starts
        // with them, in reverse, so each state is dropped before another forward runs.
        let mut gram_sums: Vec<Option<Tensor>> = vec![None; self.style.len()];
        let mut content_sums = vec![0f64; self.content.len()];
        let mut kept = Vec::new();
        let first_kept = self
            .plan
            .tiles
            .len()
            .saturating_sub(self.kept_states.max(1));
        for (index, tile) in self.plan.tiles.iter().enumerate() {
            // With every state kept, pass 2 runs no forward: this is the last one.
            let run = TileRun {
                keep: index >= first_kept,
                last: first_kept == 0 && index + 1 == self.plan.tiles.len(),
            };
            let forward = self.forward(x, tile, run)?;
            for ((t, map), sum) in self
                .content
                .iter()
                .zip(&forward.content_maps)
                .zip(&mut content_sums)
            {
                let core = tile.core_in_tile(t.layer, h, w);
                let ext = tile.extent_in_image(t.layer);
                let target = crop(&crop(&t.target, ext)?, core)?.to_dtype(DType::F64)?;
                let features = crop(map, core)?.to_dtype(DType::F64)?;
                *sum += scalar(&(features - target)?.sqr()?.sum_all()?)?;
            }
            for (part, sum) in forward.gram_sums.into_iter().zip(&mut gram_sums) {
                *sum = Some(match sum.take() {
                    Some(acc) => (acc + part)?,
                    None => part,
                });
            }
            kept.extend(forward.state);
        }
        let mut out = LossBreakdown::default();
        let mut terms = Vec::with_capacity(taps.len());
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
        // Pass 2: each tile's gradient over its extent, summed into the frame's.
        let (tv, tv_grad) = total_variation(x)?;
        let mut grad = (tv_grad * self.weights.tv)?;
        for (index, tile) in self.plan.tiles.iter().enumerate().rev() {
            // Tile 0 comes last.
            let run = TileRun {
                keep: true,
                last: index == 0,
            };
            let cores: Vec<Window> = terms
                .iter()
                .map(|t| tile.core_in_tile(t.layer(), h, w))
                .collect();
            let state = match kept.pop() {
                Some(state) => state,
                None => self.forward(x, tile, run)?.state.ok_or_else(|| {
                    Error::from(candle_core::Error::Msg(
                        "a tile's forward pass kept no state".into(),
                    ))
                })?,
            };
            let part = self
                .passes
                .backward(state, &cores, &per_tile(&terms, tile)?, run)?;
            let part = part
                .pad_with_zeros(2, tile.rows.start, h - tile.rows.end)?
                .pad_with_zeros(3, tile.cols.start, w - tile.cols.end)?;
            grad = (grad + part)?;
        }
        out.tv = tv;
        out.total = self.weights.content * out.content
            + self.weights.style * out.style
            + self.weights.tv * tv;
        Ok((out, grad))
    }
}

/// The terms with content targets cropped to `tile`'s maps.
fn per_tile(terms: &[TapTerm], tile: &Tile) -> Result<Vec<TapTerm>> {
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
                    target: crop(target, tile.extent_in_image(*layer))?,
                },
            })
        })
        .collect()
}

/// A whole frame's feature maps at `layers`, assembled from the tiles' cores (what the
/// content targets need for a frame too large to run in one piece); each core is copied
/// out, so no tile's whole map outlives its tile.
pub fn frame_features(
    passes: &impl TilePasses,
    x: &Tensor,
    plan: &TilePlan,
    layers: &[Layer],
) -> Result<Vec<Tensor>> {
    let columns = plan
        .tiles
        .iter()
        .take_while(|t| t.core_rows == plan.tiles[0].core_rows)
        .count()
        .max(1);
    let mut rows: Vec<Vec<Vec<Tensor>>> = vec![Vec::new(); layers.len()];
    for (index, tile) in plan.tiles.iter().enumerate() {
        let maps = passes.features(&tile_image(x, tile)?, layers)?;
        for ((layer, map), rows) in layers.iter().zip(maps).zip(&mut rows) {
            let core = crop(&map, tile.core_in_tile(*layer, plan.height, plan.width))?.copy()?;
            if index % columns == 0 {
                rows.push(Vec::new());
            }
            if let Some(row) = rows.last_mut() {
                row.push(core);
            }
        }
    }
    rows.into_iter()
        .map(|row_list| {
            let joined = row_list
                .iter()
                .map(|row| Tensor::cat(row, 3))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(Tensor::cat(&joined, 2)?)
        })
        .collect()
}
