//! What an engine hands the shared optimisation loop: the objective it evaluates (loss and
//! gradient at a point) and where the image lives while it is optimised.

use candle_core::{DType, Device, Tensor};

use super::LossBreakdown;
use crate::error::Result;
use crate::model::{InputConvention, InputImage};

/// Loss and gradient at a point, for one scale's targets.
pub trait Evaluate {
    fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)>;

    /// `evaluate`, then hand back working memory kept for the next evaluation (called on a
    /// scale's last iteration, so an idle server does not hold its largest job's buffers).
    fn evaluate_and_release(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        self.evaluate(x)
    }
}

/// Where the image lives while it is optimised.
pub struct Placement<'a> {
    pub device: &'a Device,
    pub dtype: DType,
    pub convention: &'a InputConvention,
}

impl Placement<'_> {
    pub fn upload(&self, image: &InputImage) -> Result<Tensor> {
        Ok(Tensor::from_slice(&image.data, image.shape(), self.device)?.to_dtype(self.dtype)?)
    }

    pub fn download(&self, x: &Tensor) -> Result<InputImage> {
        let (_, _, height, width) = x.dims4()?;
        let data = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(InputImage {
            height,
            width,
            data,
        })
    }
}
