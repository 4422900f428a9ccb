//! Style targets: the `FeatureExtractor` trait that turns a style image into Gram matrices,
//! the host-side `Gram` type that crosses between backends and the cache, and blending.

pub mod candle;
pub mod onnx_graph;
pub mod ort;
pub mod ort_library;
pub mod ort_runtime;
pub mod select;

pub use candle::CandleFeatures;
pub use ort::OrtFeatures;

use crate::engine::Pooling;
use crate::error::Result;
use crate::model::{InputImage, Layer, Vgg19Weights};

/// The Gram normalisation every extractor implements (the contract's).
pub const GRAM_NORMALISATION: &str = "FFt/(C*H*W)";

/// What, besides the image, its size and the layers, determines a style's Grams: the
/// weights (values and input convention), the pooling and the Gram normalisation.
/// Backends that agree numerically share it, so their results share cache entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetIdentity {
    pub weights: String,
    pub pooling: Pooling,
    pub gram_normalisation: &'static str,
}

impl TargetIdentity {
    pub fn new(weights: &Vgg19Weights, pooling: Pooling) -> Self {
        Self {
            weights: weights.fingerprint().to_string(),
            pooling,
            gram_normalisation: GRAM_NORMALISATION,
        }
    }
}

/// A C x C Gram matrix on the host, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Gram {
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Gram {
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }
}

/// Computes Gram matrices of an image at chosen layers (a forward pass, no gradient).
pub trait FeatureExtractor: Send + Sync {
    /// Short name for logs and metrics, e.g. `candle-cpu`.
    fn name(&self) -> String;
    /// What determines this extractor's results besides its inputs (for cache keys).
    fn identity(&self) -> TargetIdentity;
    /// One Gram per layer, in the order given.
    fn grams(&self, image: &InputImage, layers: &[Layer]) -> Result<Vec<Gram>>;
}

/// `sum_k b_k G_k` per layer with the weights normalised to sum to 1. `per_style[k][l]` is
/// style k's Gram at layer l; all styles must list the same layers.
pub fn blend(per_style: &[&[Gram]], weights: &[f64]) -> Vec<Gram> {
    let total: f64 = weights.iter().sum();
    let Some(first) = per_style.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|layer| {
            let channels = first[layer].channels;
            let mut acc = vec![0f64; channels * channels];
            for (grams, &w) in per_style.iter().zip(weights) {
                for (a, &g) in acc.iter_mut().zip(&grams[layer].data) {
                    *a += w / total * g as f64;
                }
            }
            Gram {
                channels,
                data: acc.into_iter().map(|v| v as f32).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_normalises_weights() {
        let a = vec![Gram {
            channels: 1,
            data: vec![1.0],
        }];
        let b = vec![Gram {
            channels: 1,
            data: vec![3.0],
        }];
        let blended = blend(&[&a, &b], &[3.0, 1.0]);
        assert_eq!(blended[0].data, vec![1.5]);
    }
}
