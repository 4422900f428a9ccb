//! Cutting an image into tiles whose features equal the whole image's: each tile's *core*
//! (the pixels whose features it owns) starts on the pooling grid of the deepest layer used,
//! and its *extent* adds a halo that covers the receptive field of every core feature, so
//! the features a tile computes inside its core are exactly the untiled ones. Geometry
//! only: the engines run the passes.

use std::ops::Range;

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::model::Layer;

/// Halo and alignment, in image pixels, for a network evaluated up to `deepest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileGeometry {
    /// Core boundaries are multiples of this (the deepest layer's pooling stride).
    pub align: usize,
    /// Pixels added on every interior side of a core (a multiple of `align`).
    pub halo: usize,
}

impl TileGeometry {
    /// Walks the stack up to `deepest`: each 3x3 convolution at stride `s` makes `s` more edge
    /// pixels inexact; a pool needs its windows wholly exact, so the inexact band rounds up
    /// to the pool's output stride.
    pub fn for_depth(deepest: Layer) -> Self {
        let mut inexact = 0usize;
        let mut stride = 1usize;
        for layer in Layer::all().take(deepest.conv_position() + 1) {
            if layer.pooled_before() {
                stride *= 2;
                inexact = inexact.next_multiple_of(stride);
            }
            inexact += stride;
        }
        Self {
            align: stride,
            halo: inexact.next_multiple_of(stride),
        }
    }
}

/// One tile: the rows and columns it owns (`core`) and those it computes (`extent`), in
/// image pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub core_rows: Range<usize>,
    pub core_cols: Range<usize>,
    pub rows: Range<usize>,
    pub cols: Range<usize>,
}

/// A feature-map window at one layer: offsets and lengths, in that layer's cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl Tile {
    pub fn height(&self) -> usize {
        self.rows.len()
    }

    pub fn width(&self) -> usize {
        self.cols.len()
    }

    pub fn pixels(&self) -> usize {
        self.height() * self.width()
    }

    /// Where this tile's core lies in the tile's own feature map at `layer` (a core that
    /// ends at the image's edge ends where the whole image's map does: floor-mode pooling
    /// drops the same odd row there).
    pub fn core_in_tile(&self, layer: Layer) -> Window {
        self.core_at(stride(layer))
    }

    /// Where this tile's core lies in the tile's own map `stride` times coarser than the
    /// tile (cores start on that grid; floor-mode pooling drops an odd edge row).
    pub fn core_at(&self, stride: usize) -> Window {
        let (top, left) = (self.core_rows.start / stride, self.core_cols.start / stride);
        Window {
            top: top - self.rows.start / stride,
            left: left - self.cols.start / stride,
            height: self.core_rows.end / stride - top,
            width: self.core_cols.end / stride - left,
        }
    }

    /// Where this tile's whole map `stride` times coarser lies in the image's map at that
    /// stride.
    pub fn extent_at(&self, stride: usize) -> Window {
        Window {
            top: self.rows.start / stride,
            left: self.cols.start / stride,
            height: self.height() / stride,
            width: self.width() / stride,
        }
    }
}

/// Crops `map` (1 x C x h x w) to `window`.
pub fn crop(map: &Tensor, window: Window) -> Result<Tensor> {
    Ok(map
        .narrow(2, window.top, window.height)?
        .narrow(3, window.left, window.width)?)
}

/// The image (1 x 3 x H x W) under a tile's extent.
pub fn tile_image(x: &Tensor, tile: &Tile) -> Result<Tensor> {
    Ok(x.narrow(2, tile.rows.start, tile.height())?
        .narrow(3, tile.cols.start, tile.width())?
        .contiguous()?)
}

/// `F F^T` over the core of a tile's feature map, unnormalised, returned in float64 (summed
/// over the tiles it gives the frame's Gram times `C H W`). The product runs in the map's
/// dtype, as the untiled Gram does; only the sum across tiles needs the wider type.
pub fn core_gram_sum(map: &Tensor, core: Window) -> Result<Tensor> {
    let (_, c, _, _) = map.dims4()?;
    let flat = crop(map, core)?
        .contiguous()?
        .reshape((c, core.height * core.width))?;
    Ok(flat.matmul(&flat.t()?)?.to_dtype(DType::F64)?)
}

/// The pooling stride of `layer`'s map relative to the image.
pub fn stride(layer: Layer) -> usize {
    1 << (layer.block() - 1)
}

/// How an image is cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TilePlan {
    pub height: usize,
    pub width: usize,
    pub geometry: TileGeometry,
    pub tiles: Vec<Tile>,
}

impl TilePlan {
    /// Tiles for an `height` x `width` image evaluated up to `deepest`, with cores of at most
    /// `core_side` pixels (rounded down to the alignment, at least one alignment step) on each
    /// side, as even as the alignment allows. `None`: one tile, the whole image.
    pub fn new(height: usize, width: usize, deepest: Layer, core_side: Option<usize>) -> Self {
        Self::with_geometry(height, width, TileGeometry::for_depth(deepest), core_side)
    }

    /// Tiles for an `height` x `width` map under `geometry`, cores of at most `core_side`.
    pub fn with_geometry(
        height: usize,
        width: usize,
        geometry: TileGeometry,
        core_side: Option<usize>,
    ) -> Self {
        let cuts = |len: usize| -> Vec<Range<usize>> {
            let Some(side) = core_side else {
                return std::iter::once(0..len).collect();
            };
            let side = (side / geometry.align).max(1) * geometry.align;
            let count = len.div_ceil(side);
            let step = len.div_ceil(count).next_multiple_of(geometry.align);
            let mut ranges = Vec::new();
            let mut start = 0;
            while start < len {
                let end = (start + step).min(len);
                // A sliver below one alignment step joins the previous core.
                if len - end < geometry.align {
                    ranges.push(start..len);
                    break;
                }
                ranges.push(start..end);
                start = end;
            }
            ranges
        };
        let grow = |core: &Range<usize>, len: usize| {
            core.start.saturating_sub(geometry.halo)..(core.end + geometry.halo).min(len)
        };
        let (row_cuts, col_cuts) = (cuts(height), cuts(width));
        let tiles = row_cuts
            .iter()
            .flat_map(|r| {
                col_cuts.iter().map(move |c| Tile {
                    core_rows: r.clone(),
                    core_cols: c.clone(),
                    rows: grow(r, height),
                    cols: grow(c, width),
                })
            })
            .collect();
        Self {
            height,
            width,
            geometry,
            tiles,
        }
    }

    pub fn is_whole(&self) -> bool {
        self.tiles.len() == 1
    }

    /// The most pixels any one tile computes.
    pub fn largest_tile_pixels(&self) -> usize {
        self.tiles.iter().map(Tile::pixels).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str) -> Layer {
        name.parse().unwrap()
    }

    #[test]
    fn halo_covers_the_receptive_field() {
        // relu1_1: one conv at stride 1.
        let g = TileGeometry::for_depth(layer("relu1_1"));
        assert_eq!((g.align, g.halo), (1, 1));
        // relu5_1: 2 + (2 -> 2) + 2*2 -> 8 + 4*4 = 24 -> 24 + 4*8 = 56 -> 64 + 16 = 80.
        let g = TileGeometry::for_depth(layer("relu5_1"));
        assert_eq!((g.align, g.halo), (16, 80));
        let g = TileGeometry::for_depth(layer("relu4_2"));
        assert_eq!(g.align, 8);
        assert!(g.halo.is_multiple_of(8));
    }

    #[test]
    fn cores_partition_the_image_on_the_grid() {
        for (h, w, side) in [
            (1080, 1920, 512),
            (37, 53, 16),
            (480, 640, 256),
            (100, 17, 48),
        ] {
            let plan = TilePlan::new(h, w, layer("relu5_1"), Some(side));
            let mut owned = vec![0u8; h * w];
            for t in &plan.tiles {
                assert!(t.core_rows.start.is_multiple_of(16));
                assert!(t.core_cols.start.is_multiple_of(16));
                assert!(t.rows.start <= t.core_rows.start && t.core_rows.end <= t.rows.end);
                assert!(t.rows.end <= h && t.cols.end <= w);
                for r in t.core_rows.clone() {
                    for c in t.core_cols.clone() {
                        owned[r * w + c] += 1;
                    }
                }
            }
            assert!(owned.iter().all(|&n| n == 1), "{h}x{w}/{side}");
        }
        assert!(TilePlan::new(64, 64, layer("relu5_1"), None).is_whole());
    }

    #[test]
    fn core_windows_tile_each_layer_map() {
        let (h, w) = (99, 131);
        let plan = TilePlan::new(h, w, layer("relu5_1"), Some(32));
        for name in ["relu1_1", "relu3_2", "relu4_2", "relu5_1"] {
            let l = layer(name);
            let (lh, lw) = l.output_size(h, w);
            let mut owned = vec![0u8; lh * lw];
            for t in &plan.tiles {
                let core = t.core_in_tile(l);
                let ext = t.extent_at(stride(l));
                assert!(core.top + core.height <= ext.height);
                assert!(core.left + core.width <= ext.width);
                for r in 0..core.height {
                    for c in 0..core.width {
                        owned[(ext.top + core.top + r) * lw + ext.left + core.left + c] += 1;
                    }
                }
            }
            assert!(owned.iter().all(|&n| n == 1), "{name}");
        }
    }
}
