//! A view: a per-pixel encoding of scene-linear RGB into the display values the optimiser
//! works on, with its inverse. The built-in curves are exact inverses over all of [0, 64] and
//! beyond; a LUT pair is as exact as its bake, measured by `LutPair::round_trip_error`.

use std::sync::Arc;

use super::cube::{CubeLut, Interpolation};
use crate::error::{Error, Result};

/// ACEScct's constants (Academy S-2016-001).
const CCT_CUT_LINEAR: f32 = 0.007_812_5;
const CCT_CUT_LOG: f32 = 0.155_251_14;
const CCT_A: f32 = 10.540_238;
const CCT_B: f32 = 0.072_905_53;

/// The display values over which a LUT pair must invert its view: a tone-mapped view
/// compresses its toe and shoulder until a baked inverse cannot separate what it squeezed
/// (and clips beyond its peak), so the round trip is measured where the view is not
/// squeezing. The built-in views invert exactly everywhere.
pub const DISPLAY_KEPT: (f32, f32) = (0.05, 0.95);

/// Scene-linear mid-grey: round-trip errors of darker colours are measured against it.
const MID_GREY: f32 = 0.18;

/// The widest round-trip error a LUT pair may have to be used (relative, over the probe
/// colours `LutPair::round_trip_error` samples).
pub const LUT_ROUND_TRIP_TOLERANCE: f64 = 0.03;

/// How scene-linear light is shown to the optimiser.
#[derive(Clone, Debug)]
pub enum View {
    /// The sRGB transfer curve, extended above 1.0. The optimiser works on display values
    /// in [0, 1], so light above 1.0 (about 5.9 in display units at 64) is clipped there:
    /// highlights come back at 1.0.
    Srgb,
    /// ACEScct's logarithmic curve, per channel: [0, 1] in display units covers scene-linear
    /// light up to 222, so highlights are stylised and come back above 1.0.
    AcesCct,
    /// A studio's view baked from its OpenColorIO config, with its inverse.
    Lut(Arc<LutPair>),
}

impl View {
    /// A built-in view by name (`srgb`, `acescct`); errors name `field`.
    pub fn builtin(field: &str, name: &str) -> Result<Self> {
        match name {
            "srgb" => Ok(View::Srgb),
            "acescct" => Ok(View::AcesCct),
            other => Err(Error::invalid(
                field,
                format!("`{other}` is not a built-in view (srgb or acescct)"),
            )),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            View::Srgb => "srgb",
            View::AcesCct => "acescct",
            View::Lut(_) => "lut",
        }
    }

    /// Scene-linear RGB to display values.
    pub fn encode(&self, rgb: [f32; 3]) -> [f32; 3] {
        match self {
            View::Srgb => rgb.map(srgb_encode),
            View::AcesCct => rgb.map(cct_encode),
            View::Lut(pair) => pair.forward.apply(rgb, pair.interpolation),
        }
    }

    /// Display values back to scene-linear RGB.
    pub fn decode(&self, rgb: [f32; 3]) -> [f32; 3] {
        match self {
            View::Srgb => rgb.map(srgb_decode),
            View::AcesCct => rgb.map(cct_decode),
            View::Lut(pair) => pair.inverse.apply(rgb, pair.interpolation),
        }
    }
}

/// sRGB's curve, odd-symmetric below 0 and extended above 1.
pub(crate) fn srgb_encode(x: f32) -> f32 {
    let a = x.abs();
    let y = if a <= 0.003_130_8 {
        12.92 * a
    } else {
        1.055 * a.powf(1.0 / 2.4) - 0.055
    };
    y.copysign(x)
}

pub(crate) fn srgb_decode(y: f32) -> f32 {
    let a = y.abs();
    let x = if a <= 0.040_45 {
        a / 12.92
    } else {
        ((a + 0.055) / 1.055).powf(2.4)
    };
    x.copysign(y)
}

pub(crate) fn cct_encode(x: f32) -> f32 {
    if x <= CCT_CUT_LINEAR {
        CCT_A * x + CCT_B
    } else {
        (x.log2() + 9.72) / 17.52
    }
}

pub(crate) fn cct_decode(y: f32) -> f32 {
    if y <= CCT_CUT_LOG {
        (y - CCT_B) / CCT_A
    } else {
        (y * 17.52 - 9.72).exp2()
    }
}

/// A studio's view: the forward LUT (scene-linear to display) and its inverse, as
/// `ociobakelut` bakes them.
#[derive(Debug)]
pub struct LutPair {
    pub forward: CubeLut,
    pub inverse: CubeLut,
    pub interpolation: Interpolation,
    /// The measured round-trip error (`round_trip_error`), kept for reports.
    pub round_trip: f64,
}

impl LutPair {
    /// The pair in the files `forward` and `inverse` (`.cube`), refused naming a file and
    /// line when malformed, or `field` when they do not invert each other.
    pub fn load(
        field: &str,
        forward: &std::path::Path,
        inverse: &std::path::Path,
        interpolation: Interpolation,
    ) -> Result<Self> {
        let read = |path: &std::path::Path| -> Result<CubeLut> {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            CubeLut::parse(&path.display().to_string(), &text)
        };
        Self::new(field, read(forward)?, read(inverse)?, interpolation)
    }

    /// The pair, refused (naming `field`) when forward-then-inverse strays from the input by
    /// more than `LUT_ROUND_TRIP_TOLERANCE`.
    pub fn new(
        field: &str,
        forward: CubeLut,
        inverse: CubeLut,
        interpolation: Interpolation,
    ) -> Result<Self> {
        let mut pair = Self {
            forward,
            inverse,
            interpolation,
            round_trip: 0.0,
        };
        pair.round_trip = pair.round_trip_error();
        // A NaN error (a LUT producing NaN) is refused too.
        if pair.round_trip.is_nan() || pair.round_trip > LUT_ROUND_TRIP_TOLERANCE {
            return Err(Error::invalid(
                field,
                format!(
                    "the inverse LUT undoes the forward one within {:.3}%, beyond the {:.1}% a \
                     view must keep (are they the same view, both directions?)",
                    100.0 * pair.round_trip,
                    100.0 * LUT_ROUND_TRIP_TOLERANCE
                ),
            ));
        }
        Ok(pair)
    }

    /// The largest relative error of inverse(forward(x)) over probe colours: greys and
    /// saturated colours from 1/64 up to 64 (or the forward LUT's domain, if smaller) that the
    /// view shows unclipped (every channel inside `DISPLAY_KEPT`), the error of each channel
    /// relative to the colour's brightest channel (or to mid-grey, 0.18, for darker colours).
    pub fn round_trip_error(&self) -> f64 {
        let top = self.forward.input_max().min(64.0);
        let mut worst = 0f64;
        let mut level = 1.0 / 64.0;
        while level <= top {
            for tint in [
                [1.0, 1.0, 1.0],
                [1.0, 0.5, 0.25],
                [0.25, 1.0, 0.5],
                [0.5, 0.25, 1.0],
            ] {
                let x = tint.map(|t: f32| t * level);
                let shown = self.forward.apply(x, self.interpolation);
                if shown
                    .iter()
                    .any(|&v| !(DISPLAY_KEPT.0..=DISPLAY_KEPT.1).contains(&v))
                {
                    // Clipped by the view (a tone-mapped view's peak): no inverse recovers it.
                    continue;
                }
                let back = self.inverse.apply(shown, self.interpolation);
                for (a, b) in x.iter().zip(back) {
                    worst = worst.max(((b - a).abs() / level.max(MID_GREY)) as f64);
                }
            }
            level *= 2f32.sqrt();
        }
        worst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_views_round_trip_over_zero_to_sixty_four() {
        for view in [View::Srgb, View::AcesCct] {
            let mut worst = 0f32;
            for i in 0..=64_000 {
                let x = i as f32 / 1000.0;
                let back = view.decode(view.encode([x, x * 0.5, x * 0.25]));
                for (a, b) in [x, x * 0.5, x * 0.25].iter().zip(back) {
                    worst = worst.max((b - a).abs() / a.max(1e-3));
                }
            }
            assert!(worst < 1e-4, "{}: {worst}", view.name());
        }
    }

    #[test]
    fn acescct_keeps_highlights_inside_the_display_range_and_srgb_does_not() {
        let cct = View::AcesCct.encode([64.0, 10.0, 1.0]);
        assert!(cct.iter().all(|v| (0.0..1.0).contains(v)), "{cct:?}");
        // ACEScct's published points: 0.18 -> 0.4135884, 1.0 -> 0.5547945.
        let mid = View::AcesCct.encode([0.18, 1.0, 0.0]);
        assert!((mid[0] - 0.413_588_4).abs() < 1e-6 && (mid[1] - 0.554_794_5).abs() < 1e-6);
        assert!((mid[2] - CCT_B).abs() < 1e-7);
        assert!(View::Srgb.encode([10.0, 0.0, 0.0])[0] > 1.0);
        assert!(View::builtin("view", "agx").is_err());
    }
}
