//! How much memory a job takes, as a model fitted to measured peaks (docs/operations.md
//! gives the measurements): a per-engine cost per pixel of the largest tile evaluated, per
//! pixel of the frame (image, gradient, optimiser moments, content targets, previews), per
//! stored L-BFGS pair, and per pixel of a style image while its Grams are computed.

/// One engine's memory model. All figures are bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    /// What the process holds with no job (weights, runtime, sessions), measured warm.
    pub resident: u64,
    /// Per pixel of a frame evaluated whole (one forward and backward pass over it).
    pub per_whole_pixel: f64,
    /// Per value (cell times channel) of the largest stage tile while its forward and
    /// backward passes run.
    pub per_tile_value: f64,
    /// Per pixel of the frame for the whole job (image, gradient, moments, targets, results).
    pub per_frame_pixel: f64,
    /// Per pixel of one L-BFGS curvature pair (`s` and `y`, three channels).
    pub per_pair_pixel: f64,
    /// Per pixel of the largest style tile while its Grams are computed (a forward pass).
    pub per_style_pixel: f64,
    /// What a kept stage tile's state holds per value: per convolution (its ReLU mask, or
    /// its whole output), per tapped layer (its output, when the masks are not outputs) and
    /// for the pool's indices.
    pub state: StateBytes,
    /// Added to every estimate for what the model does not resolve (allocator slack).
    pub margin: f64,
}

/// Bytes per value of a kept stage state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateBytes {
    pub per_conv: f64,
    pub per_tap: f64,
    pub pool_index: f64,
    /// The first stage's first convolution is recomputed, not kept.
    pub first_recomputed: bool,
}

/// What a job is, for its estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobShape {
    /// Pixels of the largest scale's frame.
    pub frame_pixels: usize,
    /// Pixels of the frame when it is evaluated whole (0 when staged in tiles).
    pub whole_pixels: usize,
    /// Values of the largest stage tile (0 when whole).
    pub tile_values: usize,
    /// Values of the stage maps held whole between stages: the pooled outputs, and the
    /// gradients at them (counted from the plan).
    pub stage_map_values: usize,
    /// Values the kept stage states hold, by kind: `(conv, tap, pooled)` sums of each
    /// tile's values times convolutions, tapped layers and pool (counted from the plan).
    pub kept_values: (usize, usize, usize),
    /// Pixels of the largest style tile the precompute runs.
    pub style_pixels: usize,
    /// L-BFGS pairs kept (0 for Adam).
    pub history: usize,
}

/// Bytes of a float32 value.
const FLOAT: f64 = 4.0;

/// Frame-sized float32 RGB tensors a job holds besides its tiles, per pixel: the image, its
/// gradient and the content target (120 B), and the optimiser's step (direction, projection
/// masks, and the strong-Wolfe line search's bracketed points with their gradients: 96 B).
const FRAME_BYTES_PER_PIXEL: f64 = 216.0;

impl Footprint {
    /// ONNX Runtime on the CPU, fitted above the peaks `stylize run` reached (2 L-BFGS
    /// iterations, 2-core x86-64): untiled 512x288 0.96 GiB, 1024x576 2.49 GiB, 1920x1080
    /// 7.46 GiB (3.45 KB per pixel above ~0.5 GiB); a style precompute at 1024x811
    /// 1.08 GiB. Stage tiles: see docs/operations.md. The resident set covers the loss
    /// sessions of a staged job.
    pub const ORT_CPU: Self = Self {
        resident: 768 << 20,
        per_whole_pixel: 3450.0,
        per_tile_value: 100.0,
        per_frame_pixel: FRAME_BYTES_PER_PIXEL,
        per_pair_pixel: 24.0,
        per_style_pixel: 1200.0,
        state: StateBytes {
            per_conv: 1.0,
            per_tap: 4.0,
            pool_index: 1.0,
            first_recomputed: true,
        },
        margin: 1.15,
    };

    /// candle on the CPU (and, unmeasured, on CUDA, where the same tensors live in device
    /// memory), fitted above: untiled 512x288 0.86 GiB, 768x432 1.41 GiB (3.1 KB per pixel
    /// above ~0.45 GiB). Its kept state is every ReLU output in float32.
    pub const CANDLE_CPU: Self = Self {
        resident: 600 << 20,
        per_whole_pixel: 3450.0,
        per_tile_value: 100.0,
        per_frame_pixel: FRAME_BYTES_PER_PIXEL,
        per_pair_pixel: 24.0,
        per_style_pixel: 1200.0,
        state: StateBytes {
            per_conv: 4.0,
            per_tap: 0.0,
            pool_index: 0.0,
            first_recomputed: false,
        },
        margin: 1.15,
    };

    /// Peak bytes of one job, the process's resident set excluded.
    pub fn job_bytes(&self, job: &JobShape) -> u64 {
        let (conv, tap, pooled) = job.kept_values;
        let states = self.state.per_conv * conv as f64
            + self.state.per_tap * tap as f64
            + self.state.pool_index * pooled as f64;
        let optimise = self.per_whole_pixel * job.whole_pixels as f64
            + self.per_tile_value * job.tile_values as f64
            + FLOAT * job.stage_map_values as f64
            + states
            + self.per_frame_pixel * job.frame_pixels as f64
            + self.per_pair_pixel * (job.history * job.frame_pixels) as f64;
        let precompute = self.per_style_pixel * job.style_pixels as f64
            + self.per_frame_pixel * job.frame_pixels as f64;
        (optimise.max(precompute) * self.margin) as u64
    }

    /// Bytes of L-BFGS history at `frame_pixels`, per pair.
    pub fn pair_bytes(&self, frame_pixels: usize) -> u64 {
        (self.per_pair_pixel * frame_pixels as f64 * self.margin) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_grows_with_tile_frame_and_history() {
        let f = Footprint::ORT_CPU;
        let shape = JobShape {
            frame_pixels: 1920 * 1080,
            whole_pixels: 0,
            tile_values: 64 * 512 * 512,
            stage_map_values: 16 * 1920 * 1080,
            kept_values: (0, 0, 0),
            style_pixels: 512 * 512,
            history: 10,
        };
        let base = f.job_bytes(&shape);
        for bigger in [
            JobShape {
                tile_values: 64 * 1024 * 1024,
                ..shape
            },
            JobShape {
                frame_pixels: 4096 * 2160,
                ..shape
            },
            JobShape {
                history: 100,
                ..shape
            },
            JobShape {
                kept_values: (1 << 20, 0, 0),
                ..shape
            },
        ] {
            assert!(f.job_bytes(&bigger) > base);
        }
    }
}
