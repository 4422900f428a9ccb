//! How much memory a job takes, as a model fitted to measured peaks (docs/operations.md
//! gives the measurements): a per-engine cost per pixel of the largest tile evaluated, per
//! pixel of the frame (image, gradient, optimiser moments, content targets, previews), per
//! stored L-BFGS pair, and per pixel of a style image while its Grams are computed.

/// One engine's memory model. All figures are bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    /// What the process holds with no job (weights, runtime, sessions), measured warm.
    pub resident: u64,
    /// Per pixel of the largest tile's extent while its loss and gradient are evaluated.
    pub per_tile_pixel: f64,
    /// Per pixel of the frame for the whole job (image, gradient, moments, targets, results).
    pub per_frame_pixel: f64,
    /// Per pixel of one L-BFGS curvature pair (`s` and `y`, three channels).
    pub per_pair_pixel: f64,
    /// Per pixel of the largest style tile while its Grams are computed (a forward pass).
    pub per_style_pixel: f64,
    /// Per pixel of a tile's extent for each forward state the tiled evaluation holds
    /// between its passes besides the running tile's (ReLU masks, pool indices, tapped maps).
    pub per_state_pixel: f64,
    /// Added to every estimate for what the model does not resolve (allocator slack).
    pub margin: f64,
}

/// What a job is, for its estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobShape {
    /// Pixels of the largest scale's frame.
    pub frame_pixels: usize,
    /// Pixels of the largest tile the optimisation evaluates (the frame when untiled).
    pub tile_pixels: usize,
    /// Pixels of the largest style tile the precompute runs.
    pub style_pixels: usize,
    /// L-BFGS pairs kept (0 for Adam).
    pub history: usize,
    /// Tile forward states held besides the running tile's (kept states minus one).
    pub held_states: usize,
}

impl Footprint {
    /// ONNX Runtime on the CPU, fitted above the peaks `stylize run` reached (2 L-BFGS
    /// iterations, 2-core x86-64): untiled 512x288 0.96 GiB, 1024x576 2.49 GiB, 1920x1080
    /// 7.46 GiB (3.45 KB per pixel above ~0.5 GiB); tiled 1024x576 at 128/256/512-pixel
    /// cores 0.90/1.13/1.45 GiB; a style precompute at 1024x811 1.08 GiB; since a tile's
    /// forward state passes from one graph to the other and the arena lasts an evaluation,
    /// 1920x1080 in four 1040x620 tiles, one state kept, 4.03 GiB (the tile term raised from
    /// 3600 to 4000 B per pixel to stay above it). The resident set
    /// covers the tiled path's three sessions.
    pub const ORT_CPU: Self = Self {
        resident: 800 << 20,
        per_tile_pixel: 4000.0,
        per_frame_pixel: 120.0,
        per_pair_pixel: 24.0,
        per_style_pixel: 1200.0,
        per_state_pixel: 1400.0,
        margin: 1.1,
    };

    /// candle on the CPU (and, unmeasured, on CUDA, where the same tensors live in device
    /// memory), fitted above: untiled 512x288 0.86 GiB, 768x432 1.41 GiB (3.1 KB per pixel
    /// above ~0.45 GiB); tiled 1024x576 at 256-pixel cores 0.91 GiB.
    pub const CANDLE_CPU: Self = Self {
        resident: 600 << 20,
        per_tile_pixel: 4000.0,
        per_frame_pixel: 120.0,
        per_pair_pixel: 24.0,
        per_style_pixel: 1200.0,
        per_state_pixel: 1400.0,
        margin: 1.1,
    };

    /// Peak bytes of one job, the process's resident set excluded.
    pub fn job_bytes(&self, job: &JobShape) -> u64 {
        let optimise = self.per_tile_pixel * job.tile_pixels as f64
            + self.per_state_pixel * (job.held_states * job.tile_pixels) as f64
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
            tile_pixels: 512 * 512,
            style_pixels: 512 * 512,
            history: 10,
            held_states: 0,
        };
        let base = f.job_bytes(&shape);
        for bigger in [
            JobShape {
                tile_pixels: 1024 * 1024,
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
                held_states: 3,
                ..shape
            },
        ] {
            assert!(f.job_bytes(&bigger) > base);
        }
    }
}
