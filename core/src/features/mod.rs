//! Style targets: the `FeatureExtractor` trait that turns a style image into Gram matrices
//! (implemented in `crate::onnxruntime` and `crate::candle`), and blending several styles'
//! Grams.

pub use crate::net::{Gram, TargetIdentity};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::{InputImage, Layer};
use crate::net::tiling::{TilePlan, core_gram_sum, tile_image};

/// Computes Gram matrices of an image at chosen layers (a forward pass, no gradient).
pub trait FeatureExtractor: Send + Sync {
    /// Short name for logs and metrics, e.g. `candle-cpu`.
    fn name(&self) -> String;
    /// What determines this extractor's results besides its inputs (for cache keys).
    fn identity(&self) -> TargetIdentity;
    /// One Gram per layer, in the order given.
    fn grams(&self, image: &InputImage, layers: &[Layer]) -> Result<Vec<Gram>>;
    /// The feature maps (1 x C x h x w) at `layers`, in order.
    fn maps(&self, image: &InputImage, layers: &[Layer]) -> Result<Vec<Tensor>>;

    /// `grams`, computed tile by tile with cores of at most `tile_side` pixels so the
    /// forward pass's memory is bounded by a tile (the Grams are the same sums; see
    /// `net::tiling`). `None`, or an image that fits one tile: `grams`.
    fn grams_tiled(
        &self,
        image: &InputImage,
        layers: &[Layer],
        tile_side: Option<usize>,
    ) -> Result<Vec<Gram>> {
        let deepest = *layers
            .iter()
            .max()
            .ok_or_else(|| Error::invalid("style_layers", "no style layer given"))?;
        let (h, w) = (image.height, image.width);
        let plan = TilePlan::new(h, w, deepest, tile_side);
        if plan.is_whole() {
            return self.grams(image, layers);
        }
        let x = Tensor::from_slice(&image.data, image.shape(), &Device::Cpu)?;
        let mut sums: Vec<Option<Tensor>> = vec![None; layers.len()];
        for tile in &plan.tiles {
            let part = tile_image(&x, tile)?;
            let input = InputImage {
                height: tile.height(),
                width: tile.width(),
                data: part.flatten_all()?.to_vec1::<f32>()?,
            };
            for ((layer, map), sum) in layers.iter().zip(self.maps(&input, layers)?).zip(&mut sums)
            {
                let gram =
                    core_gram_sum(&map, tile.core_in_tile(*layer))?.to_device(&Device::Cpu)?;
                *sum = Some(match sum.take() {
                    Some(acc) => (acc + gram)?,
                    None => gram,
                });
            }
        }
        layers
            .iter()
            .zip(sums)
            .map(|(layer, sum)| {
                let channels = layer.channels();
                let (lh, lw) = layer.output_size(h, w);
                let sum = sum.ok_or_else(|| Error::invalid("style_layers", "no tile"))?;
                let gram = (sum / (channels * lh * lw) as f64)?.to_dtype(DType::F32)?;
                Ok(Gram {
                    channels,
                    data: gram.flatten_all()?.to_vec1::<f32>()?,
                })
            })
            .collect()
    }
}

/// `sum_k b_k G_k` per layer with the weights normalised to sum to 1. `per_style[k][l]` is
/// style k's Gram at layer l; all styles must list the same layers.
pub fn blend(per_style: &[&[Gram]], weights: &[f64]) -> Vec<Gram> {
    // Scaled by the largest first, so weights near f64::MAX do not overflow their sum.
    let largest = weights.iter().copied().fold(0f64, f64::max);
    let weights: Vec<f64> = weights.iter().map(|w| w / largest).collect();
    let total: f64 = weights.iter().sum();
    let Some(first) = per_style.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|layer| {
            let channels = first[layer].channels;
            let mut acc = vec![0f64; channels * channels];
            for (grams, &w) in per_style.iter().zip(&weights) {
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
