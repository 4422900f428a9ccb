//! The box the image may occupy: every pixel of an 8-bit output lies in [0, 255] per channel,
//! which the weights' input convention maps to an interval per network channel. Optimisers
//! project onto it and tell which coordinates a bound holds.

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

    /// The bounds as 1x3x1x1 tensors on `like`'s device and dtype.
    fn tensors(&self, like: &Tensor) -> Result<(Tensor, Tensor)> {
        let make = |v: [f32; 3]| -> Result<Tensor> {
            Ok(Tensor::from_slice(&v, (1, 3, 1, 1), like.device())?.to_dtype(like.dtype())?)
        };
        Ok((make(self.lo)?, make(self.hi)?))
    }

    /// `per_value(channel bounds, x, other)` over every value of a float32 1x3xHxW `x` on
    /// the CPU, in one pass (candle's broadcast ops walk strided indices, several times
    /// slower than this on the optimiser's per-iteration path); `None` for other tensors,
    /// which take the tensor-op path.
    fn on_host(
        &self,
        x: &Tensor,
        other: Option<&Tensor>,
        per_value: impl Fn(f32, f32, f32, f32) -> f32,
    ) -> Result<Option<Tensor>> {
        if !x.device().is_cpu() || x.dtype() != DType::F32 || !matches!(x.dims(), [1, 3, _, _]) {
            return Ok(None);
        }
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        let others = match other {
            Some(t) => t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; values.len()],
        };
        let plane = values.len() / 3;
        let out: Vec<f32> = values
            .iter()
            .zip(&others)
            .enumerate()
            .map(|(i, (&v, &o))| {
                let c = (i / plane.max(1)).min(2);
                per_value(self.lo[c], self.hi[c], v, o)
            })
            .collect();
        Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
    }

    /// The nearest point of the box.
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(t) = self.on_host(x, None, |lo, hi, v, _| v.clamp(lo, hi))? {
            return Ok(t);
        }
        let (lo, hi) = self.tensors(x)?;
        Ok(x.broadcast_maximum(&lo)?.broadcast_minimum(&hi)?)
    }

    /// 1 where a coordinate may move along `-grad` (the gradient does not push it through the
    /// bound it sits on), 0 where a bound holds it.
    pub fn free(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let held = |lo: f32, hi: f32, v: f32, g: f32| (v <= lo && g > 0.0) || (v >= hi && g < 0.0);
        if let Some(t) = self.on_host(x, Some(grad), |lo, hi, v, g| {
            f32::from(u8::from(!held(lo, hi, v, g)))
        })? {
            return Ok(t);
        }
        let (lo, hi) = self.tensors(x)?;
        let dtype = x.dtype();
        let zero = grad.zeros_like()?;
        let at_lo = (x.broadcast_le(&lo)?.to_dtype(dtype)? * grad.gt(&zero)?.to_dtype(dtype)?)?;
        let at_hi = (x.broadcast_ge(&hi)?.to_dtype(dtype)? * grad.lt(&zero)?.to_dtype(dtype)?)?;
        Ok(((at_lo + at_hi)?.affine(-1.0, 1.0))?)
    }

    /// 1 where `x` lies strictly inside its channel's interval (a move changes it), else 0.
    pub fn inside(&self, x: &Tensor) -> Result<Tensor> {
        let inside = |lo: f32, hi: f32, v: f32, _| f32::from(u8::from(v > lo && v < hi));
        if let Some(t) = self.on_host(x, None, inside)? {
            return Ok(t);
        }
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
    fn the_host_pass_agrees_with_the_tensor_ops() {
        let bounds = PixelBox::of(&InputConvention::caffe());
        let n = 3 * 5 * 7;
        let values: Vec<f32> = (0..n).map(|i| ((i * 37) % 400) as f32 - 180.0).collect();
        let grads: Vec<f32> = (0..n).map(|i| ((i * 11) % 9) as f32 - 4.0).collect();
        let x32 = Tensor::from_vec(values, (1, 3, 5, 7), &Device::Cpu).unwrap();
        let g32 = Tensor::from_vec(grads, (1, 3, 5, 7), &Device::Cpu).unwrap();
        // Float64 takes the tensor-op path.
        let (x64, g64) = (
            x32.to_dtype(DType::F64).unwrap(),
            g32.to_dtype(DType::F64).unwrap(),
        );
        let same = |a: Tensor, b: Tensor| {
            let a = a
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>();
            let b = b.flatten_all().unwrap().to_vec1::<f64>();
            assert_eq!(a.unwrap(), b.unwrap());
        };
        same(bounds.project(&x32).unwrap(), bounds.project(&x64).unwrap());
        let free64 = bounds.free(&bounds.project(&x64).unwrap(), &g64).unwrap();
        same(
            bounds.free(&bounds.project(&x32).unwrap(), &g32).unwrap(),
            free64,
        );
        same(bounds.inside(&x32).unwrap(), bounds.inside(&x64).unwrap());
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
