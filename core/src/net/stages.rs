//! The network cut into stages for the tiled evaluation: one stage per VGG block, each run
//! tile by tile over its own input map (the image, or the previous stage's pooled output,
//! which is held whole and is 16 times smaller per block). A stage's tiles need a halo for
//! that block's convolutions only, not the whole stack's 80-pixel receptive field: a tile
//! that reaches `2 n` cells past its core (`n` convolutions) computes exact features on the
//! core plus `n`, which is everything the exact input gradient of the core depends on. So
//! features and gradients are exact with halos of 2 to 8 cells.

use super::tiling::{TileGeometry, TilePlan};
use crate::model::Layer;
use crate::model::layers::BLOCK_SIZES;

/// One stage: a block's convolutions up to the deepest layer used, and the pool after them
/// when a deeper block follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stage {
    /// The VGG block, 1-based.
    pub block: usize,
    /// The first and last convolution positions it runs.
    pub first: usize,
    pub last: usize,
    /// Its last ReLU output is pooled for the next stage.
    pub pooled_after: bool,
}

/// Channels of the first stage's maps: later stages' tile sides shrink by `sqrt` of their
/// width relative to it, so every stage's tiles hold about as many values.
const FIRST_CHANNELS: f64 = 64.0;

impl Stage {
    /// The stages that evaluate the network up to `deepest`.
    pub fn up_to(deepest: Layer) -> Vec<Stage> {
        let mut first = 0;
        (1..=deepest.block())
            .map(|block| {
                let last_of_block = first + BLOCK_SIZES[block - 1] - 1;
                let stage = Stage {
                    block,
                    first,
                    last: last_of_block.min(deepest.conv_position()),
                    pooled_after: block < deepest.block(),
                };
                first = last_of_block + 1;
                stage
            })
            .collect()
    }

    /// The layers it runs, in order.
    pub fn layers(&self) -> impl Iterator<Item = Layer> + use<> {
        (self.first..=self.last).map(Layer::at_position)
    }

    pub fn contains(&self, layer: Layer) -> bool {
        (self.first..=self.last).contains(&layer.conv_position())
    }

    /// Channels of its input map.
    pub fn in_channels(&self) -> usize {
        Layer::at_position(self.first).in_channels()
    }

    /// Channels of its maps (and of its pooled output).
    pub fn channels(&self) -> usize {
        Layer::at_position(self.first).channels()
    }

    pub fn convs(&self) -> usize {
        self.last - self.first + 1
    }

    /// Its input map's size for an `height` x `width` image (floor-mode pools before it).
    pub fn input_size(&self, height: usize, width: usize) -> (usize, usize) {
        (height >> (self.block - 1), width >> (self.block - 1))
    }

    /// Halo and alignment, in its input's cells. Cores start on the pool's grid; the halo is
    /// twice the convolutions' reach, plus one cell when an odd reach would let a pool window
    /// straddle the exact band's edge.
    pub fn geometry(&self) -> TileGeometry {
        let align = if self.pooled_after { 2 } else { 1 };
        let reach = self.convs();
        let extra = usize::from(self.pooled_after && reach % 2 == 1);
        TileGeometry {
            align,
            halo: (2 * reach + extra).next_multiple_of(align),
        }
    }

    /// Multiply-accumulates of its forward pass per input cell.
    pub fn macs_per_cell(&self) -> usize {
        self.layers()
            .map(|l| 9 * l.in_channels() * l.channels())
            .sum()
    }

    /// Its core side, in its own cells, for a first-stage side of `first_side` image pixels.
    pub fn core_side(&self, first_side: usize) -> usize {
        let scale = (FIRST_CHANNELS / self.channels() as f64).sqrt();
        ((first_side as f64 * scale) as usize).max(1)
    }
}

/// How a frame is evaluated in stages: each stage's tiles over its input map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedPlan {
    pub height: usize,
    pub width: usize,
    pub stages: Vec<(Stage, TilePlan)>,
}

impl StagedPlan {
    /// The stages up to `deepest` of an `height` x `width` frame, the first cut into cores of
    /// at most `first_side` pixels (`None`: every stage whole).
    pub fn new(height: usize, width: usize, deepest: Layer, first_side: Option<usize>) -> Self {
        let stages = Stage::up_to(deepest)
            .into_iter()
            .map(|stage| {
                let (h, w) = stage.input_size(height, width);
                let side = first_side.map(|s| stage.core_side(s));
                (stage, TilePlan::with_geometry(h, w, stage.geometry(), side))
            })
            .collect();
        Self {
            height,
            width,
            stages,
        }
    }

    /// The frame in one piece (no stages: the whole-frame evaluation runs instead).
    pub fn whole(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            stages: Vec::new(),
        }
    }

    /// Tiles of the first stage (the frame's own cut).
    pub fn tiles(&self) -> usize {
        self.stages.first().map_or(1, |(_, p)| p.tiles.len())
    }

    /// Every stage in one piece.
    pub fn is_whole(&self) -> bool {
        self.stages.iter().all(|(_, p)| p.is_whole())
    }

    /// Values of the stage maps held whole when the deepest `kept` stages keep their state:
    /// the inputs of the other stages besides the image (pass 2 runs their forward again
    /// from them), plus the most two consecutive stage maps hold at once (pass 1 builds one
    /// stage's input while reading the previous one; pass 2 holds the gradient at a stage's
    /// output while it assembles the gradient at its input).
    pub fn held_map_values(&self, kept: usize) -> usize {
        let input_values = |(stage, plan): &(Stage, TilePlan)| -> usize {
            stage.in_channels() * plan.height * plan.width
        };
        let recomputed = self.stages.len().saturating_sub(kept);
        let inputs: usize = self
            .stages
            .iter()
            .take(recomputed)
            .skip(1)
            .map(input_values)
            .sum();
        let pairs = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| input_values(s) + self.stages.get(i + 1).map_or(0, input_values))
            .max()
            .unwrap_or(0);
        inputs + pairs
    }

    /// The values the states of the deepest `kept` stages hold, summed over their tiles:
    /// `(values x convolutions, values x tapped layers among `taps`, values of pooling
    /// stages)`. With `first_recomputed`, the first stage keeps nothing of its first
    /// convolution.
    pub fn kept_values(
        &self,
        kept: usize,
        taps: &[Layer],
        first_recomputed: bool,
    ) -> (usize, usize, usize) {
        let skip = self.stages.len().saturating_sub(kept);
        let mut sums = (0, 0, 0);
        for (stage, plan) in self.stages.iter().skip(skip) {
            let values: usize =
                plan.tiles.iter().map(|t| t.pixels()).sum::<usize>() * stage.channels();
            let dropped = usize::from(first_recomputed && stage.block == 1);
            let tapped = taps
                .iter()
                .filter(|l| stage.contains(**l) && l.conv_position() >= stage.first + dropped)
                .count();
            sums.0 += values * (stage.convs() - dropped);
            sums.1 += values * tapped;
            sums.2 += if stage.pooled_after { values } else { 0 };
        }
        sums
    }

    /// The most values (cells times channels) any one stage tile's maps hold.
    pub fn largest_tile_values(&self) -> usize {
        self.stages
            .iter()
            .map(|(s, p)| p.largest_tile_pixels() * s.channels())
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str) -> Layer {
        name.parse().unwrap()
    }

    #[test]
    fn stages_follow_the_blocks_up_to_the_deepest_layer() {
        let stages = Stage::up_to(layer("relu4_2"));
        let spans: Vec<_> = stages
            .iter()
            .map(|s| (s.first, s.last, s.pooled_after))
            .collect();
        assert_eq!(
            spans,
            [(0, 1, true), (2, 3, true), (4, 7, true), (8, 9, false)]
        );
        assert_eq!(stages[3].geometry(), TileGeometry { align: 1, halo: 4 });
        assert_eq!(stages[2].geometry(), TileGeometry { align: 2, halo: 8 });
        assert_eq!(Stage::up_to(layer("relu1_1"))[0].geometry().halo, 2);
        assert_eq!(stages[1].in_channels(), 64);
    }

    #[test]
    fn later_stages_cut_their_smaller_maps_into_fewer_tiles() {
        let plan = StagedPlan::new(1080, 1920, layer("relu5_1"), Some(512));
        let counts: Vec<usize> = plan.stages.iter().map(|(_, p)| p.tiles.len()).collect();
        assert_eq!(counts[0], 12);
        assert!(counts.windows(2).all(|w| w[1] <= w[0]), "{counts:?}");
        assert_eq!(plan.stages[4].1.height, 1080 >> 4);
        assert!(StagedPlan::new(1080, 1920, layer("relu5_1"), None).is_whole());
    }
}
