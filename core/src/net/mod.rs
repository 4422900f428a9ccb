//! The network both engines and both feature extractors share, below all of them: the
//! VGG19 stack on candle (`vgg`) and as ONNX graph pieces (`onnx_vgg`), the pooling between
//! blocks, the Gram matrix and what identifies a set of targets. It knows nothing of losses,
//! optimisers or requests.

pub mod stages;
pub mod tiling;
pub mod vgg;

use candle_core::Tensor;

use crate::error::Result;
use crate::model::Vgg19Weights;

/// The 2x2/stride-2 pooling between blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pooling {
    #[default]
    Max,
    Average,
}

impl std::str::FromStr for Pooling {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "max" => Ok(Pooling::Max),
            "avg" | "average" => Ok(Pooling::Average),
            other => Err(crate::error::Error::invalid(
                "pooling",
                format!("`{other}` is not max or avg"),
            )),
        }
    }
}

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

/// `F F^T / (C H W)` for a 1xCxHxW feature map.
pub fn gram(features: &Tensor) -> Result<Tensor> {
    let (_, c, h, w) = features.dims4()?;
    let flat = features.reshape((c, h * w))?;
    Ok((flat.matmul(&flat.t()?)? / (c * h * w) as f64)?)
}
