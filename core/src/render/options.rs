//! What a stylisation may ask for: every user-facing option with the contract's defaults,
//! the request that carries them with its images, and their validation (each refusal names
//! the field).

use image::RgbImage;

use crate::engine::optim::LineSearch;
use crate::engine::{OptimizerKind, StopRules, TermWeights};
use crate::error::{Error, Result};
use crate::image_io::fit_longest;
use crate::model::Layer;

/// Largest output side accepted.
pub const MAX_SIZE: u32 = 4096;
/// Most coarse-to-fine scales.
pub const MAX_SCALES: usize = 8;
/// Most L-BFGS curvature pairs a request may ask for (0 lets the server choose).
pub const MAX_HISTORY: usize = 1000;
/// Smallest tile core side a request may ask for.
pub const MIN_TILE: u32 = 16;
/// Noise initialisation's standard deviation, in 8-bit levels.
pub const NOISE_LEVELS: f32 = 32.0;

/// How the optimisation starts.
#[derive(Debug, Clone, PartialEq)]
pub enum InitChoice {
    Content,
    Noise,
    Image(RgbImage),
}

/// Every user-facing option of a stylisation, with the contract's defaults.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Longest side of the output, in pixels.
    pub size: u32,
    /// Iterations at each scale.
    pub iterations: usize,
    pub optimizer: OptimizerKind,
    pub weights: TermWeights,
    pub content_layers: Vec<(Layer, f64)>,
    pub style_layers: Vec<(Layer, f64)>,
    /// Style images are rendered at `size * style_scale` (longest side).
    pub style_scale: f64,
    pub init: InitChoice,
    pub seed: u64,
    pub preserve_colors: bool,
    /// Number of coarse-to-fine scales; each halves the size of the next.
    pub scales: usize,
    /// Attach the current image to every Nth progress report (0: never).
    pub preview_every: usize,
    /// Tile cores at most this many pixels on a side (`None`: the server chooses to fit its
    /// memory, whole frames when they fit). The result is the same either way.
    pub tile_size: Option<u32>,
    /// Keep the image inside the 8-bit pixel box while optimising (default); `false` gives
    /// the contract's unbounded trajectory.
    pub bounded: bool,
    /// How L-BFGS chooses its steps (default strong-Wolfe; `Fixed` is the contract's).
    pub line_search: LineSearch,
    /// The longest L-BFGS history the server may choose when the request leaves it to the
    /// server (a preset's cap; default 100, the contract's).
    pub max_history: usize,
    pub stop: StopRules,
    /// The finest scale's iterations instead of `iterations` (`None`: the same): a draft
    /// still, which a shot rendered in parallel chunks finishes later
    /// (`sequence::SequenceState::draft`).
    pub last_scale_iterations: Option<usize>,
}

pub fn default_content_layers() -> Vec<(Layer, f64)> {
    vec![(Layer::new(4, 2).expect("relu4_2 exists"), 1.0)]
}

/// The default style layers without their weights.
pub fn default_style_taps() -> Vec<Layer> {
    default_style_layers().iter().map(|(l, _)| *l).collect()
}

pub fn default_style_layers() -> Vec<(Layer, f64)> {
    (1..=5)
        .map(|block| (Layer::new(block, 1).expect("reluB_1 exists"), 1.0))
        .collect()
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            size: 512,
            iterations: 500,
            optimizer: OptimizerKind::Lbfgs { history: 0 },
            weights: TermWeights::default(),
            content_layers: default_content_layers(),
            style_layers: default_style_layers(),
            style_scale: 1.0,
            init: InitChoice::Content,
            seed: 0,
            preserve_colors: false,
            scales: 1,
            preview_every: 0,
            tile_size: None,
            bounded: true,
            line_search: LineSearch::StrongWolfe,
            max_history: DEFAULT_HISTORY,
            stop: StopRules::default(),
            last_scale_iterations: None,
        }
    }
}

fn non_negative(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{value} must be a finite number >= 0"),
        ))
    }
}

/// L-BFGS pairs kept when the request leaves it to the server and memory allows.
pub const DEFAULT_HISTORY: usize = 100;

/// Longest time limit a request may set (about 31 years: longer is a mistake).
const MAX_SECONDS: f64 = 1e9;

/// An optional positive setting where 0 means off: `None` for 0, a finite positive value
/// (below 1e9) as given, anything else refused naming `field` (a request field or CLI flag).
pub fn positive_or_off(field: &str, value: f64) -> Result<Option<f64>> {
    if value == 0.0 {
        Ok(None)
    } else if value.is_finite() && value > 0.0 && value < MAX_SECONDS {
        Ok(Some(value))
    } else if value >= MAX_SECONDS {
        Err(Error::invalid(
            field,
            format!("{value} s is beyond the longest allowed, {MAX_SECONDS:e} s (0: off)"),
        ))
    } else {
        Err(Error::invalid(
            field,
            format!("{value} is not a positive number (0: off)"),
        ))
    }
}

impl RenderOptions {
    /// Checks every option, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if !(16..=MAX_SIZE).contains(&self.size) {
            return Err(Error::invalid(
                "size",
                format!("{} is outside 16..={MAX_SIZE}", self.size),
            ));
        }
        if self.iterations == 0 {
            return Err(Error::invalid("iterations", "must be at least 1"));
        }
        if !(1..=MAX_SCALES).contains(&self.scales) {
            return Err(Error::invalid(
                "scales",
                format!("{} is outside 1..={MAX_SCALES}", self.scales),
            ));
        }
        non_negative("content_weight", self.weights.content)?;
        non_negative("style_weight", self.weights.style)?;
        non_negative("tv_weight", self.weights.tv)?;
        for (field, layers) in [
            ("content_layers", &self.content_layers),
            ("style_layers", &self.style_layers),
        ] {
            for (k, (layer, weight)) in layers.iter().enumerate() {
                non_negative(&format!("{field} ({layer})"), *weight)?;
                if layers[..k].iter().any(|(earlier, _)| earlier == layer) {
                    return Err(Error::invalid(
                        field,
                        format!("{layer} is listed twice (give it once, with its weight)"),
                    ));
                }
            }
        }
        if self.content_layers.is_empty() && self.style_layers.is_empty() {
            return Err(Error::invalid(
                "style_layers",
                "at least one content or style layer is needed",
            ));
        }
        if !(self.style_scale.is_finite() && self.style_scale > 0.0 && self.style_scale <= 8.0) {
            return Err(Error::invalid(
                "style_scale",
                format!("{} is outside (0, 8]", self.style_scale),
            ));
        }
        match self.optimizer {
            OptimizerKind::Adam { lr } if !(lr.is_finite() && lr > 0.0) => {
                Err(Error::invalid("learning_rate", format!("{lr} must be > 0")))
            }
            OptimizerKind::Lbfgs { history } if history > MAX_HISTORY => Err(Error::invalid(
                "lbfgs_history",
                format!("{history} is more than {MAX_HISTORY}"),
            )),
            _ => Ok(()),
        }?;
        match self.tile_size {
            Some(side) if !(MIN_TILE..=MAX_SIZE).contains(&side) => Err(Error::invalid(
                "tile_size",
                format!("{side} is outside {MIN_TILE}..={MAX_SIZE}"),
            )),
            _ => Ok(()),
        }
    }

    /// Longest side at each scale, smallest first; the last is `size`.
    pub fn scale_sizes(&self) -> Vec<u32> {
        (0..self.scales)
            .rev()
            .map(|k| ((self.size as f64) / 2f64.powi(k as i32)).round().max(1.0) as u32)
            .collect()
    }

    pub(crate) fn deepest_layer(&self) -> Option<Layer> {
        self.content_layers
            .iter()
            .chain(&self.style_layers)
            .map(|(l, _)| *l)
            .max()
    }
}

/// A stylisation request in core types.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    pub content: super::Content,
    pub styles: Vec<RgbImage>,
    /// One weight per style (normalised to sum to 1); empty means equal weights.
    pub blend: Vec<f64>,
    pub options: RenderOptions,
}

impl RenderRequest {
    pub fn validate(&self) -> Result<()> {
        validate_parts(
            &self.options,
            &self.styles,
            &self.blend,
            self.content.dimensions(),
        )
    }

    /// Every size-dependent check, before any work is queued: the content and each style at
    /// every scale against the deepest layer. The message names the option at fault:
    /// `scales` when only a coarser scale is too small, `size` when the output is,
    /// `style_scale` when the styles are shrunk below it, else the image's own shape.
    pub fn check_sizes(&self) -> Result<()> {
        check_sizes(&self.options, &self.styles, self.content.dimensions())
    }

    pub(crate) fn blend_weights(&self) -> Vec<f64> {
        if self.blend.is_empty() {
            vec![1.0; self.styles.len()]
        } else {
            self.blend.clone()
        }
    }
}

/// Everything a request is checked for, its content's dimensions given.
fn validate_parts(
    options: &RenderOptions,
    styles: &[RgbImage],
    blend: &[f64],
    content: (u32, u32),
) -> Result<()> {
    options.validate()?;
    check_sizes(options, styles, content)?;
    if styles.is_empty() && !options.style_layers.is_empty() {
        return Err(Error::invalid(
            "styles",
            "at least one style image is needed",
        ));
    }
    if !blend.is_empty() {
        if blend.len() != styles.len() {
            return Err(Error::invalid(
                "blend",
                format!("{} weights for {} styles", blend.len(), styles.len()),
            ));
        }
        for &w in blend {
            non_negative("blend", w)?;
        }
        if blend.iter().all(|&w| w == 0.0) {
            return Err(Error::invalid("blend", "weights must not all be zero"));
        }
    }
    Ok(())
}

/// `RenderRequest::check_sizes` for `content`'s dimensions.
fn check_sizes(options: &RenderOptions, styles: &[RgbImage], content: (u32, u32)) -> Result<()> {
    let Some(deepest) = options.deepest_layer() else {
        return Ok(());
    };
    let sizes = options.scale_sizes();
    let fits = |(w, h): (u32, u32), longest: u32| {
        check_fits("", fit_longest(w, h, longest), deepest).is_ok()
    };
    for (k, &longest) in sizes.iter().enumerate() {
        let fitted = fit_longest(content.0, content.1, longest);
        if !fits(content, longest) {
            let field = if k + 1 < sizes.len() && fits(content, options.size) {
                "scales"
            } else if fits((1, 1), options.size) {
                "content"
            } else {
                "size"
            };
            return check_fits(field, fitted, deepest).map_err(|e| at_scale(e, longest));
        }
        if options.style_layers.is_empty() {
            continue;
        }
        let side = style_side(longest, options.style_scale);
        for (s, style) in styles.iter().enumerate() {
            let dims = style.dimensions();
            if !fits(dims, side) {
                let field = if options.style_scale < 1.0 && fits(dims, longest) {
                    "style_scale".to_string()
                } else if k + 1 < sizes.len()
                    && fits(dims, style_side(options.size, options.style_scale))
                {
                    "scales".to_string()
                } else {
                    format!("styles[{s}]")
                };
                return check_fits(&field, fit_longest(dims.0, dims.1, side), deepest)
                    .map_err(|e| at_scale(e, longest));
            }
        }
    }
    Ok(())
}

/// Everything of a request but its content: what a shot's frames share, each frame bringing
/// its own content.
#[derive(Debug, Clone)]
pub struct Styling {
    pub styles: Vec<RgbImage>,
    /// One weight per style (normalised to sum to 1); empty means equal weights.
    pub blend: Vec<f64>,
    pub options: RenderOptions,
}

impl Styling {
    /// Every check that holds for any frame: the options, the styles and blend, and the
    /// sizes for a frame whose longest side is the output's at each scale (each frame's
    /// shorter side is checked when the frame arrives).
    pub fn validate(&self) -> Result<()> {
        // A 1x1 image fits to a square of each scale's side.
        validate_parts(&self.options, &self.styles, &self.blend, (1, 1))
    }

    /// The request rendering `content` with these settings.
    pub fn with_content(&self, content: impl Into<super::Content>) -> RenderRequest {
        RenderRequest {
            content: content.into(),
            styles: self.styles.clone(),
            blend: self.blend.clone(),
            options: self.options.clone(),
        }
    }
}

/// Longest side a style is rendered at for a content scale of `longest` pixels.
pub(crate) fn style_side(longest: u32, style_scale: f64) -> u32 {
    ((longest as f64) * style_scale).round().max(1.0) as u32
}

/// Checks an image is large enough for the deepest layer (each pool halves it).
pub(crate) fn check_fits(field: &str, (width, height): (u32, u32), deepest: Layer) -> Result<()> {
    let min = 1u32 << (deepest.block() - 1);
    if width < min || height < min {
        return Err(Error::invalid(
            field,
            format!(
                "{}x{} is too small for {deepest}: each side needs at least {min} pixels at every scale",
                width, height
            ),
        ));
    }
    Ok(())
}

/// `error` saying which scale it was found at.
fn at_scale(error: Error, longest: u32) -> Error {
    match error {
        Error::InvalidOption { field, reason } => {
            Error::invalid(field, format!("{reason} (at the {longest} px scale)"))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_sizes_halve_towards_the_target() {
        let options = RenderOptions {
            size: 500,
            scales: 3,
            ..Default::default()
        };
        assert_eq!(options.scale_sizes(), vec![125, 250, 500]);
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(RenderOptions, &str)> = vec![
            (
                RenderOptions {
                    size: 0,
                    ..Default::default()
                },
                "size",
            ),
            (
                RenderOptions {
                    iterations: 0,
                    ..Default::default()
                },
                "iterations",
            ),
            (
                RenderOptions {
                    weights: TermWeights {
                        style: -1.0,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "style_weight",
            ),
            (
                RenderOptions {
                    style_scale: 0.0,
                    ..Default::default()
                },
                "style_scale",
            ),
            (
                RenderOptions {
                    style_layers: vec![(Layer::new(1, 1).unwrap(), f64::NAN)],
                    ..Default::default()
                },
                "style_layers",
            ),
        ];
        for (options, field) in cases {
            let err = options.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }
}
