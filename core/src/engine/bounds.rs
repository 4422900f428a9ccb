//! The box the image may occupy: every pixel of an 8-bit output lies in [0, 255] per channel,
//! which the weights' input convention maps to an interval per network channel. Here as
//! tensor ops; the optimisers' in-place host passes over it are in `vector`.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::model::InputConvention;

/// Per network channel, the input-space image of pixel values 0 and 255.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelBox {
    pub lo: [f32; 3],
    pub hi: [f32; 3],
}

impl PixelBox {
    pub fn of(convention: &InputConvention) -> Self {
        let map = |c: usize, pixel: f32| {
            (pixel / 255.0 * convention.pixel_range - convention.mean[c]) / convention.std[c]
        };
        let (mut lo, mut hi) = ([0.0; 3], [0.0; 3]);
        for c in 0..3 {
            let (a, b) = (map(c, 0.0), map(c, 255.0));
            (lo[c], hi[c]) = (a.min(b), a.max(b));
        }
        Self { lo, hi }
    }

    /// The narrowest channel interval's width.
    pub fn width(&self) -> f64 {
        (0..3)
            .map(|c| f64::from(self.hi[c] - self.lo[c]))
            .fold(f64::INFINITY, f64::min)
    }

    /// Network channel `c`'s interval.
    pub fn interval(&self, c: usize) -> (f64, f64) {
        (f64::from(self.lo[c]), f64::from(self.hi[c]))
    }

    /// The bounds as 1x3x1x1 tensors on `like`'s device and dtype.
    fn tensors(&self, like: &Tensor) -> Result<(Tensor, Tensor)> {
        let make = |v: [f32; 3]| -> Result<Tensor> {
            Ok(Tensor::from_slice(&v, (1, 3, 1, 1), like.device())?.to_dtype(like.dtype())?)
        };
        Ok((make(self.lo)?, make(self.hi)?))
    }

    /// The nearest point of the box, as tensor ops (the optimisers' in-place host pass is
    /// `vector::project`).
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        let (lo, hi) = self.tensors(x)?;
        Ok(x.broadcast_maximum(&lo)?.broadcast_minimum(&hi)?)
    }

    /// 1 where a coordinate may move along `-grad` (the gradient does not push it through the
    /// bound it sits on), 0 where a bound holds it.
    pub fn free(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let (lo, hi) = self.tensors(x)?;
        let dtype = x.dtype();
        let zero = grad.zeros_like()?;
        let at_lo = (x.broadcast_le(&lo)?.to_dtype(dtype)? * grad.gt(&zero)?.to_dtype(dtype)?)?;
        let at_hi = (x.broadcast_ge(&hi)?.to_dtype(dtype)? * grad.lt(&zero)?.to_dtype(dtype)?)?;
        Ok(((at_lo + at_hi)?.affine(-1.0, 1.0))?)
    }

    /// 1 where `x` lies strictly inside its channel's interval (a move changes it), else 0.
    pub fn inside(&self, x: &Tensor) -> Result<Tensor> {
        let (lo, hi) = self.tensors(x)?;
        let dtype = x.dtype();
        Ok((x.broadcast_gt(&lo)?.to_dtype(dtype)? * x.broadcast_lt(&hi)?.to_dtype(dtype)?)?)
    }

    /// Whether every coordinate of `x` lies in the box.
    pub fn contains(&self, x: &Tensor) -> Result<bool> {
        let outside = (self.project(x)? - x)?
            .abs()?
            .max_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        Ok(outside == 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_box_is_the_pixel_range_in_each_convention() {
        let caffe = PixelBox::of(&InputConvention::caffe());
        assert_eq!(caffe.lo, [-103.939, -116.779, -123.68]);
        assert!((caffe.hi[0] - 151.061).abs() < 1e-4);
        let torchvision = PixelBox::of(&InputConvention::torchvision());
        assert!((torchvision.lo[0] - -0.485 / 0.229).abs() < 1e-6);
        assert!((torchvision.hi[2] - (1.0 - 0.406) / 0.225).abs() < 1e-6);
    }

    #[test]
    fn projection_masks_and_containment() {
        let bounds = PixelBox {
            lo: [0.0, 0.0, 0.0],
            hi: [1.0, 2.0, 3.0],
        };
        let x = Tensor::new(&[-1.0f32, 0.5, 5.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 1, 1))
            .unwrap();
        let projected = bounds.project(&x).unwrap();
        assert_eq!(
            projected.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 0.5, 3.0]
        );
        assert!(!bounds.contains(&x).unwrap());
        assert!(bounds.contains(&projected).unwrap());
        // At the lower bound, a positive gradient (descent goes down) holds the coordinate;
        // a negative one frees it. At the upper bound the reverse.
        let grad = Tensor::new(&[1.0f32, 1.0, -1.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 1, 1))
            .unwrap();
        let free = bounds.free(&projected, &grad).unwrap();
        assert_eq!(
            free.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 1.0, 0.0]
        );
        let free = bounds.free(&projected, &grad.neg().unwrap()).unwrap();
        assert_eq!(
            free.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.0, 1.0, 1.0]
        );
        let inside = bounds.inside(&projected).unwrap();
        assert_eq!(
            inside.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 1.0, 0.0]
        );
    }
}
