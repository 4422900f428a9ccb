//! What a caller gave for a job's options, and the one place it becomes complete render
//! options: each value as given, else the `quality` preset's, else the contract's default.
//! The CLI (flags) and the server (request messages, style registrations) both fill a
//! [`GivenOptions`] and call [`GivenOptions::resolve`]; errors name the option by its core
//! name (`tolerance`, `time_budget_seconds`), which each edge maps to its flag or field.

use std::time::Duration;

use super::options::{
    DEFAULT_HISTORY, InitChoice, RenderOptions, default_content_layers, default_style_layers,
    positive_or_off,
};
use super::preset::{Preset, Quality, stop_tolerance};
use crate::engine::optim::LineSearch;
use crate::engine::{OptimizerKind, StopRules, TermWeights};
use crate::error::Result;
use crate::model::Layer;

/// Adam's learning rate when none is given (input-space units; suits the Caffe weights).
pub const DEFAULT_LEARNING_RATE: f64 = 10.0;

/// Which optimiser a caller asked for (its parameters are separate options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptimizerChoice {
    /// L-BFGS (the contract's).
    #[default]
    Lbfgs,
    Adam,
}

/// Options as a caller gave them: `None`, an empty list or 0 where documented means "not
/// given".
#[derive(Debug, Clone)]
pub struct GivenOptions {
    pub size: Option<u32>,
    /// A preset for scales, iterations, tolerance and L-BFGS history cap.
    pub quality: Option<Quality>,
    pub iterations: Option<usize>,
    pub scales: Option<usize>,
    pub optimizer: OptimizerChoice,
    /// Adam's learning rate.
    pub learning_rate: Option<f64>,
    /// L-BFGS curvature pairs (0: the server chooses, up to the preset's cap).
    pub lbfgs_history: usize,
    pub content_weight: Option<f64>,
    pub style_weight: Option<f64>,
    pub tv_weight: Option<f64>,
    /// Empty: the contract's layers.
    pub content_layers: Vec<(Layer, f64)>,
    /// Empty: the contract's layers.
    pub style_layers: Vec<(Layer, f64)>,
    pub style_scale: Option<f64>,
    pub init: InitChoice,
    pub seed: u64,
    pub preserve_colors: bool,
    pub preview_every: usize,
    pub tile_size: Option<u32>,
    pub unbounded: bool,
    pub line_search: LineSearch,
    /// 0: the preset's tolerance, or none.
    pub tolerance: f64,
    /// 0: no time budget.
    pub time_budget_seconds: f64,
}

impl Default for GivenOptions {
    fn default() -> Self {
        Self {
            size: None,
            quality: None,
            iterations: None,
            scales: None,
            optimizer: OptimizerChoice::default(),
            learning_rate: None,
            lbfgs_history: 0,
            content_weight: None,
            style_weight: None,
            tv_weight: None,
            content_layers: Vec::new(),
            style_layers: Vec::new(),
            style_scale: None,
            init: InitChoice::Content,
            seed: 0,
            preserve_colors: false,
            preview_every: 0,
            tile_size: None,
            unbounded: false,
            line_search: LineSearch::StrongWolfe,
            tolerance: 0.0,
            time_budget_seconds: 0.0,
        }
    }
}

impl GivenOptions {
    /// The output side: as given, else the contract's.
    pub fn size(&self) -> u32 {
        self.size.unwrap_or(RenderOptions::default().size)
    }

    /// The preset `quality` names at this size, if any.
    pub fn preset(&self) -> Option<Preset> {
        self.quality.map(|q| q.preset(self.size()))
    }

    /// Iterations per scale and scales: as given, else the preset's, else the contract's.
    pub fn counts(&self) -> (usize, usize) {
        let defaults = RenderOptions::default();
        let preset = self.preset();
        (
            self.iterations
                .unwrap_or(preset.map_or(defaults.iterations, |p| p.iterations)),
            self.scales
                .unwrap_or(preset.map_or(defaults.scales, |p| p.scales)),
        )
    }

    /// The complete options. Refuses a tolerance or time budget that is not a positive
    /// number (or 0); everything else is checked by [`RenderOptions::validate`].
    pub fn resolve(self) -> Result<RenderOptions> {
        let preset = self.preset();
        let (iterations, scales) = self.counts();
        let weights = TermWeights::default();
        let or_default = |given: Vec<(Layer, f64)>, default: fn() -> Vec<(Layer, f64)>| {
            if given.is_empty() { default() } else { given }
        };
        Ok(RenderOptions {
            size: self.size(),
            iterations,
            optimizer: match self.optimizer {
                OptimizerChoice::Lbfgs => OptimizerKind::Lbfgs {
                    history: self.lbfgs_history,
                },
                OptimizerChoice::Adam => OptimizerKind::Adam {
                    lr: self.learning_rate.unwrap_or(DEFAULT_LEARNING_RATE),
                },
            },
            weights: TermWeights {
                content: self.content_weight.unwrap_or(weights.content),
                style: self.style_weight.unwrap_or(weights.style),
                tv: self.tv_weight.unwrap_or(weights.tv),
            },
            content_layers: or_default(self.content_layers, default_content_layers),
            style_layers: or_default(self.style_layers, default_style_layers),
            style_scale: self
                .style_scale
                .unwrap_or(RenderOptions::default().style_scale),
            init: self.init,
            seed: self.seed,
            preserve_colors: self.preserve_colors,
            scales,
            preview_every: self.preview_every,
            tile_size: self.tile_size,
            bounded: !self.unbounded,
            max_history: preset.map_or(DEFAULT_HISTORY, |p| p.max_history),
            line_search: self.line_search,
            stop: StopRules {
                tolerance: stop_tolerance("tolerance", self.tolerance, preset)?,
                time_budget: positive_or_off("time_budget_seconds", self.time_budget_seconds)?
                    .map(Duration::from_secs_f64),
            },
            last_scale_iterations: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_values_win_over_the_preset_and_the_preset_over_the_contract() {
        let contract = GivenOptions::default().resolve().unwrap();
        let defaults = RenderOptions::default();
        assert_eq!((contract.size, contract.iterations), (512, 500));
        assert_eq!(contract.scales, defaults.scales);
        assert_eq!(contract.stop.tolerance, None);

        let draft = Quality::Draft.preset(256);
        let preset = GivenOptions {
            size: Some(256),
            quality: Some(Quality::Draft),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            (preset.iterations, preset.scales),
            (draft.iterations, draft.scales)
        );
        assert_eq!(preset.stop.tolerance, Some(draft.tolerance));
        assert_eq!(preset.max_history, draft.max_history);

        let given = GivenOptions {
            size: Some(256),
            quality: Some(Quality::Draft),
            iterations: Some(7),
            tolerance: 0.25,
            optimizer: OptimizerChoice::Adam,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(given.iterations, 7);
        assert_eq!(given.scales, draft.scales);
        assert_eq!(given.stop.tolerance, Some(0.25));
        assert_eq!(given.optimizer, OptimizerKind::Adam { lr: 10.0 });
    }

    #[test]
    fn a_bad_tolerance_or_time_budget_names_its_option() {
        let name = |given: GivenOptions| match given.resolve() {
            Err(crate::Error::InvalidOption { field, .. }) => field,
            other => panic!("not refused: {other:?}"),
        };
        let tolerance = GivenOptions {
            tolerance: -1.0,
            ..Default::default()
        };
        assert_eq!(name(tolerance), "tolerance");
        let budget = GivenOptions {
            time_budget_seconds: f64::INFINITY,
            ..Default::default()
        };
        assert_eq!(name(budget), "time_budget_seconds");
    }
}
