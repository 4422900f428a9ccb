//! The candle implementation of `FeatureExtractor`: a forward pass of the shared `VggNet`.

use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::features::FeatureExtractor;
use crate::model::{InputImage, Layer};
use crate::net::gram;
use crate::net::vgg::VggNet;
use crate::net::{Gram, TargetIdentity};

pub struct CandleFeatures {
    net: Arc<VggNet>,
}

impl CandleFeatures {
    pub fn new(net: Arc<VggNet>) -> Self {
        Self { net }
    }
}

impl FeatureExtractor for CandleFeatures {
    fn name(&self) -> String {
        format!("candle-{}", device_name(self.net.device()))
    }

    fn identity(&self) -> TargetIdentity {
        self.net.identity().clone()
    }

    fn maps(&self, image: &InputImage, layers: &[Layer]) -> Result<Vec<Tensor>> {
        if layers.is_empty() {
            return Err(Error::invalid("style_layers", "no style layer given"));
        }
        self.net.tapped(&upload(image, &self.net)?, layers)
    }

    fn grams(&self, image: &InputImage, layers: &[Layer]) -> Result<Vec<Gram>> {
        let deepest = *layers
            .iter()
            .max()
            .ok_or_else(|| Error::invalid("style_layers", "no style layer given"))?;
        let x = upload(image, &self.net)?;
        let acts = self.net.forward(&x, deepest, layers, false)?;
        layers
            .iter()
            .map(|&layer| {
                let features = acts.get(layer).ok_or_else(|| {
                    Error::invalid("style_layers", format!("{layer} not computed"))
                })?;
                let g = gram(features)?;
                let channels = g.dim(0)?;
                let data = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Ok(Gram { channels, data })
            })
            .collect()
    }
}

/// Puts an input image on the network's device in its dtype, as 1x3xHxW.
fn upload(image: &InputImage, net: &VggNet) -> Result<Tensor> {
    Ok(Tensor::from_slice(&image.data, image.shape(), net.device())?.to_dtype(net.dtype())?)
}

pub fn device_name(device: &candle_core::Device) -> &'static str {
    match device {
        candle_core::Device::Cpu => "cpu",
        candle_core::Device::Cuda(_) => "cuda",
        candle_core::Device::Metal(_) => "metal",
    }
}
