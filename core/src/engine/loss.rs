//! The Gatys loss terms on candle tensors, which both engines' shared tiled evaluation uses
//! as its data type: content, style and total-variation losses with their analytic
//! gradients, term weights, per-layer targets and the loss breakdown. Definitions follow the
//! numerical contract (shared/docs/algorithm.md) exactly. The candle engine's whole-image
//! objective is `candle::objective`.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::model::Layer;
use crate::net::{Gram, gram};

/// A scalar tensor's value as f64.
pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// `reduce(x²)` summed in float64: float32 sums over millions of elements lose the digits
/// the tiled evaluation and the fixtures are checked to.
fn squares_f64(x: &Tensor, mean: bool) -> Result<f64> {
    let squares = x.to_dtype(DType::F64)?.sqr()?;
    scalar(&if mean {
        squares.mean_all()?
    } else {
        squares.sum_all()?
    })
}

/// `mean((G(F) - A)^2)` and its gradient with respect to F.
pub fn style_term(features: &Tensor, target: &Tensor) -> Result<(f64, Tensor)> {
    let (_, c, h, w) = features.dims4()?;
    let diff = (gram(features)? - target)?;
    let loss = squares_f64(&diff, true)?;
    let flat = features.reshape((c, h * w))?;
    let scale = 4.0 / ((c * c) as f64 * (c * h * w) as f64);
    let grad = (diff.matmul(&flat)? * scale)?.reshape((1, c, h, w))?;
    Ok((loss, grad))
}

/// `mean((F - P)^2)` and its gradient with respect to F.
pub fn content_term(features: &Tensor, target: &Tensor) -> Result<(f64, Tensor)> {
    let diff = (features - target)?;
    let loss = squares_f64(&diff, true)?;
    let grad = (diff * (2.0 / features.elem_count() as f64))?;
    Ok((loss, grad))
}

/// Total variation (a sum of squared neighbour differences) and its gradient.
pub fn total_variation(x: &Tensor) -> Result<(f64, Tensor)> {
    let (_, _, h, w) = x.dims4()?;
    let mut loss = 0.0;
    let mut grad = x.zeros_like()?;
    for (dim, len) in [(2, h), (3, w)] {
        if len < 2 {
            continue;
        }
        let diff = (x.narrow(dim, 1, len - 1)? - x.narrow(dim, 0, len - 1)?)?;
        loss += squares_f64(&diff, false)?;
        let twice = (diff * 2.0)?;
        grad = ((grad + twice.pad_with_zeros(dim, 1, 0)?)? - twice.pad_with_zeros(dim, 0, 1)?)?;
    }
    Ok((loss, grad))
}

/// Relative weights of the three terms: `L = alpha L_c + beta L_s + gamma TV`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TermWeights {
    pub content: f64,
    pub style: f64,
    pub tv: f64,
}

impl Default for TermWeights {
    /// jcjohnson/neural-style's defaults for the Caffe weights.
    fn default() -> Self {
        Self {
            content: 5.0,
            style: 100.0,
            tv: 1e-3,
        }
    }
}

/// Loss values at one point, unweighted per layer and weighted in `total`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossBreakdown {
    pub total: f64,
    /// `L_c`: sum of layer-weighted content means.
    pub content: f64,
    /// `L_s`: sum of layer-weighted style means.
    pub style: f64,
    pub tv: f64,
    /// `L_t`: a sequence frame's temporal term (0 for stills).
    pub temporal: f64,
    pub content_per_layer: Vec<f64>,
    pub style_per_layer: Vec<f64>,
}

impl LossBreakdown {
    pub fn is_finite(&self) -> bool {
        [self.total, self.content, self.style, self.tv, self.temporal]
            .iter()
            .all(|v| v.is_finite())
    }
}

/// A target at one layer: its weight and the tensor to match (features or a Gram).
pub struct LayerTarget {
    pub layer: Layer,
    pub weight: f64,
    pub target: Tensor,
}

/// Style targets: each layer's Gram on `device` in `dtype`.
pub fn style_targets(
    style: &[(Layer, f64, Gram)],
    device: &Device,
    dtype: DType,
) -> Result<Vec<LayerTarget>> {
    style
        .iter()
        .map(|(layer, weight, gram)| {
            let shape = (gram.channels, gram.channels);
            Ok(LayerTarget {
                layer: *layer,
                weight: *weight,
                target: Tensor::from_slice(&gram.data, shape, device)?.to_dtype(dtype)?,
            })
        })
        .collect()
}

/// Content targets: each weighted layer paired with its feature map, in order.
pub fn content_targets(layers: &[(Layer, f64)], maps: Vec<Tensor>) -> Vec<LayerTarget> {
    layers
        .iter()
        .zip(maps)
        .map(|(&(layer, weight), target)| LayerTarget {
            layer,
            weight,
            target,
        })
        .collect()
}

/// The layers the targets read, content first.
pub fn taps(content: &[LayerTarget], style: &[LayerTarget]) -> Vec<Layer> {
    content.iter().chain(style).map(|t| t.layer).collect()
}
