//! Arbitrary bytes as the options a caller gives (what the CLI's flags and the server's
//! request messages both become): resolved against presets and the contract's defaults,
//! validated, then checked with small images as a whole request. Any input is options or an
//! error naming one, never a panic; validated options keep the documented bounds.
#![no_main]

use image::RgbImage;
use libfuzzer_sys::fuzz_target;
use stylize_core::engine::optim::LineSearch;
use stylize_core::model::Layer;
use stylize_core::render::preset::Quality;
use stylize_core::render::{
    GivenOptions, InitChoice, MAX_SCALES, MAX_SIZE, OptimizerChoice, RenderRequest,
};

/// Reads fields off the input, zeros once it runs out.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u8(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn f64(&mut self) -> f64 {
        f64::from_le_bytes(std::array::from_fn(|_| self.u8()))
    }
    fn flag(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn maybe_u32(&mut self) -> Option<u32> {
        self.flag().then(|| self.u32())
    }
    fn maybe_f64(&mut self) -> Option<f64> {
        self.flag().then(|| self.f64())
    }
    fn layers(&mut self) -> Vec<(Layer, f64)> {
        (0..self.u8() % 4)
            .filter_map(|_| {
                let (block, index) = (self.u8() as usize % 7, self.u8() as usize % 6);
                let weight = self.f64();
                Layer::new(block, index).ok().map(|layer| (layer, weight))
            })
            .collect()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut f = Fields(data);
    let given = GivenOptions {
        size: f.maybe_u32().map(|s| s % 8192),
        quality: [
            None,
            Some(Quality::Draft),
            Some(Quality::Standard),
            Some(Quality::Final),
        ][f.u8() as usize % 4],
        iterations: f.maybe_u32().map(|n| n as usize),
        scales: f.maybe_u32().map(|n| n as usize % 16),
        optimizer: if f.flag() {
            OptimizerChoice::Adam
        } else {
            OptimizerChoice::Lbfgs
        },
        learning_rate: f.maybe_f64(),
        lbfgs_history: f.u32() as usize % 2048,
        content_weight: f.maybe_f64(),
        style_weight: f.maybe_f64(),
        tv_weight: f.maybe_f64(),
        content_layers: f.layers(),
        style_layers: f.layers(),
        style_scale: f.maybe_f64(),
        init: if f.flag() {
            InitChoice::Noise
        } else {
            InitChoice::Content
        },
        seed: u64::from(f.u32()),
        preserve_colors: f.flag(),
        preview_every: f.u8() as usize,
        tile_size: f.maybe_u32(),
        unbounded: f.flag(),
        line_search: if f.flag() {
            LineSearch::Fixed
        } else {
            LineSearch::StrongWolfe
        },
        tolerance: f.f64(),
        time_budget_seconds: f.f64(),
    };
    let blend: Vec<f64> = (0..f.u8() % 3).map(|_| f.f64()).collect();
    let Ok(options) = given.resolve() else { return };
    if options.validate().is_err() {
        return;
    }
    assert!(options.size as usize <= MAX_SIZE as usize && options.scales <= MAX_SCALES);
    if options.size <= 64 {
        let side = 1 + u32::from(f.u8() % 64);
        let request = RenderRequest {
            content: RgbImage::new(side, 1 + u32::from(f.u8() % 64)).into(),
            styles: vec![RgbImage::new(side, side); blend.len().max(1)],
            blend,
            options,
        };
        let _ = request.validate();
    }
});
