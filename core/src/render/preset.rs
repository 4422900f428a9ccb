//! Quality presets: named trade-offs between time and the delivered image's loss, each
//! choosing scales, iterations per scale, the stopping tolerance and the longest L-BFGS
//! history (memory: 2 x history image-size tensors; the server may choose less to fit) for
//! an output size. Explicit options override a preset's; without one the contract's defaults
//! apply. Measured in docs/quality.md ("Presets").

use std::str::FromStr;

use crate::error::Result;

/// A named quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// A quick look: two scales, 20 iterations each.
    Draft,
    /// Better than PyTorch's 300-iteration L-BFGS image in a fraction of its time.
    Standard,
    /// Until the loss settles.
    Final,
}

/// What a preset sets (all L-BFGS with the strong-Wolfe search, inside the pixel box).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub scales: usize,
    pub iterations: usize,
    pub tolerance: f64,
    pub max_history: usize,
}

impl Quality {
    /// Every preset, quickest first.
    pub const ALL: [Quality; 3] = [Quality::Draft, Quality::Standard, Quality::Final];

    /// The name `--quality` takes.
    pub fn name(self) -> &'static str {
        match self {
            Quality::Draft => "draft",
            Quality::Standard => "standard",
            Quality::Final => "final",
        }
    }

    /// The preset for outputs whose longest side is `size`: one scale fewer below 128 px
    /// (the coarsest would be too small to carry style), one more from 1024 px.
    pub fn preset(self, size: u32) -> Preset {
        let (scales, iterations, tolerance, max_history) = match self {
            Quality::Draft => (2, 20, 1e-2, 20),
            Quality::Standard => (3, 30, 1e-3, 50),
            Quality::Final => (3, 150, 1e-4, 100),
        };
        let scales = match size {
            0..128 => scales - 1,
            1024.. => scales + 1,
            _ => scales,
        };
        Preset {
            scales,
            iterations,
            tolerance,
            max_history,
        }
    }
}

impl Preset {
    /// The preset's options at `size`, everything else the defaults.
    pub fn options(self, size: u32) -> super::RenderOptions {
        super::RenderOptions {
            size,
            scales: self.scales,
            iterations: self.iterations,
            max_history: self.max_history,
            stop: crate::engine::StopRules {
                tolerance: Some(self.tolerance),
                time_budget: None,
            },
            ..Default::default()
        }
    }
}

/// The stopping tolerance for a given value (0: the preset's, else none), checked and
/// named by `field` when refused.
pub fn stop_tolerance(field: &str, given: f64, preset: Option<Preset>) -> Result<Option<f64>> {
    match (given, preset) {
        (0.0, Some(preset)) => Ok(Some(preset.tolerance)),
        (given, _) => super::positive_or_off(field, given),
    }
}

impl FromStr for Quality {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Quality::ALL
            .into_iter()
            .find(|q| q.name() == name)
            .ok_or_else(|| format!("unknown quality `{name}` (draft, standard or final)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_grow_in_work_and_adapt_scales_to_the_size() {
        let at = |q: Quality| q.preset(512);
        assert!(at(Quality::Draft).iterations < at(Quality::Standard).iterations);
        assert!(at(Quality::Standard).iterations < at(Quality::Final).iterations);
        assert!(at(Quality::Final).tolerance < at(Quality::Draft).tolerance);
        assert_eq!(Quality::Standard.preset(64).scales, 2);
        assert_eq!(Quality::Standard.preset(2048).scales, 4);
        assert_eq!("final".parse(), Ok(Quality::Final));
        assert!("best".parse::<Quality>().is_err());
    }
}
