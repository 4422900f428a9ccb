//! VGG19's feature stack on a candle device: a forward pass that taps ReLU outputs and a
//! hand-written backward pass that returns only the gradient with respect to the image.
//!
//! Weights are frozen, so no kernel gradient is ever formed. The input gradient of each
//! 3x3/stride-1/pad-1 convolution is a forward convolution with the kernel flipped and its
//! channels swapped; max-pool gradients go to the first maximum of each window, as in
//! PyTorch (candle's own `max_pool2d` backward is wrong).

use candle_core::{D, DType, Device, Tensor};

use super::stages::Stage;
use super::{Pooling, TargetIdentity};
use crate::error::Result;
use crate::model::{Layer, Vgg19Weights};

struct Conv {
    weight: Tensor,
    /// The kernel flipped in both spatial axes with in/out channels swapped.
    weight_flipped: Tensor,
    bias: Tensor,
}

/// VGG19 resident on one device in one dtype.
pub struct VggNet {
    convs: Vec<Conv>,
    pooling: Pooling,
    identity: TargetIdentity,
    device: Device,
    dtype: DType,
}

/// ReLU outputs of a forward pass, indexed by convolution position.
pub struct Activations {
    relu: Vec<Option<Tensor>>,
}

impl Activations {
    /// The output of `layer`, when the pass kept it.
    pub fn get(&self, layer: Layer) -> Option<&Tensor> {
        self.relu
            .get(layer.conv_position())
            .and_then(Option::as_ref)
    }
}

/// The kept ReLU output at `position`.
fn relu_kept(acts: &Activations, position: usize) -> Result<&Tensor> {
    acts.relu
        .get(position)
        .and_then(Option::as_ref)
        .ok_or_else(|| {
            candle_core::Error::Msg("forward pass did not keep activations".into()).into()
        })
}

/// `grad` plus the tap gradients given at `layer`.
fn sum_taps(
    mut grad: Option<Tensor>,
    tap_grads: &[(Layer, Tensor)],
    layer: Layer,
) -> Result<Option<Tensor>> {
    for (_, g) in tap_grads.iter().filter(|(l, _)| *l == layer) {
        grad = Some(match grad {
            Some(acc) => (acc + g)?,
            None => g.clone(),
        });
    }
    Ok(grad)
}

impl VggNet {
    /// Uploads the convolutions up to and including `deepest` (all 16 when `None`).
    pub fn new(
        weights: &Vgg19Weights,
        deepest: Option<Layer>,
        pooling: Pooling,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let count = deepest.map_or(16, |l| l.conv_position() + 1);
        let convs = Layer::all()
            .zip(&weights.convs)
            .take(count)
            .map(|(layer, params)| {
                let (out, inp) = (layer.channels(), layer.in_channels());
                let upload = |data: &[f32], shape: (usize, usize, usize, usize)| {
                    Tensor::from_slice(data, shape, device)?.to_dtype(dtype)
                };
                Ok(Conv {
                    weight: upload(&params.weight, (out, inp, 3, 3))?,
                    weight_flipped: upload(
                        &params.input_gradient_kernel(out, inp),
                        (inp, out, 3, 3),
                    )?,
                    bias: upload(&params.bias, (1, out, 1, 1))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            convs,
            pooling,
            identity: TargetIdentity::new(weights, pooling),
            device: device.clone(),
            dtype,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// What determines this network's features besides its input.
    pub fn identity(&self) -> &TargetIdentity {
        &self.identity
    }

    /// The deepest layer this network holds.
    pub fn depth(&self) -> Layer {
        Layer::at_position(self.convs.len() - 1)
    }

    fn check_depth(&self, layer: Layer) -> Result<()> {
        if layer.conv_position() >= self.convs.len() {
            let msg = format!(
                "{layer} is deeper than the loaded network ({})",
                self.depth()
            );
            return Err(candle_core::Error::Msg(msg).into());
        }
        Ok(())
    }

    /// Runs the stack on `x` (1x3xHxW) up to `deepest`. Keeps every ReLU output when
    /// `for_backward`, otherwise only those listed in `taps`.
    pub fn forward(
        &self,
        x: &Tensor,
        deepest: Layer,
        taps: &[Layer],
        for_backward: bool,
    ) -> Result<Activations> {
        self.check_depth(deepest)?;
        let mut relu = vec![None; deepest.conv_position() + 1];
        let mut h = x.clone();
        for (position, slot) in relu.iter_mut().enumerate() {
            let layer = Layer::at_position(position);
            if layer.pooled_before() {
                h = self.pool(&h)?;
            }
            h = self.conv_relu(&h, position)?;
            if for_backward || taps.contains(&layer) {
                *slot = Some(h.clone());
            }
        }
        Ok(Activations { relu })
    }

    fn pool(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.pooling {
            Pooling::Max => x.max_pool2d(2)?,
            Pooling::Average => x.avg_pool2d(2)?,
        })
    }

    fn conv_relu(&self, x: &Tensor, position: usize) -> Result<Tensor> {
        let conv = &self.convs[position];
        Ok(x.conv2d(&conv.weight, 1, 1, 1, 1)?
            .broadcast_add(&conv.bias)?
            .relu()?)
    }

    /// Runs one `stage` on its input map `x`: the ReLU outputs (every one when
    /// `for_backward`, else those in `taps`) and the pooled output when the stage pools.
    pub fn stage_forward(
        &self,
        x: &Tensor,
        stage: Stage,
        taps: &[Layer],
        for_backward: bool,
    ) -> Result<(Activations, Option<Tensor>)> {
        self.check_depth(Layer::at_position(stage.last))?;
        let mut relu = vec![None; stage.last + 1];
        let mut h = x.clone();
        for (position, slot) in relu.iter_mut().enumerate().skip(stage.first) {
            h = self.conv_relu(&h, position)?;
            if for_backward || taps.contains(&Layer::at_position(position)) {
                *slot = Some(h.clone());
            }
        }
        let pooled = if stage.pooled_after {
            Some(self.pool(&h)?)
        } else {
            None
        };
        Ok((Activations { relu }, pooled))
    }

    /// Back-propagates through one `stage` to its input map: `out_grad` is dL/d(pooled
    /// output) when the stage pools, `tap_grads` dL/d(ReLU output) at its tapped layers;
    /// `acts` must come from `stage_forward` with `for_backward`.
    pub fn stage_backward(
        &self,
        acts: &Activations,
        stage: Stage,
        tap_grads: &[(Layer, Tensor)],
        out_grad: Option<&Tensor>,
    ) -> Result<Tensor> {
        let relu_out = |position: usize| relu_kept(acts, position);
        let mut grad = match out_grad {
            Some(g) => Some(self.pool_backward(g, relu_out(stage.last)?)?),
            None => None,
        };
        for position in (stage.first..=stage.last).rev() {
            let layer = Layer::at_position(position);
            grad = sum_taps(grad, tap_grads, layer)?;
            let Some(g) = grad.take() else { continue };
            grad = Some(self.relu_conv_backward(&g, relu_out(position)?, position)?);
        }
        grad.ok_or_else(|| candle_core::Error::Msg("no gradient reached the input".into()).into())
    }

    /// dL/d(conv input) from dL/d(ReLU output) `g`, given that ReLU's output.
    fn relu_conv_backward(&self, g: &Tensor, relu: &Tensor, position: usize) -> Result<Tensor> {
        let g = relu.gt(0.0)?.where_cond(g, &g.zeros_like()?)?;
        Ok(g.conv2d(&self.convs[position].weight_flipped, 1, 1, 1, 1)?)
    }

    /// The ReLU outputs at `layers` for `x`, in order (a forward pass to the deepest of them).
    pub fn tapped(&self, x: &Tensor, layers: &[Layer]) -> Result<Vec<Tensor>> {
        let deepest = layers
            .iter()
            .copied()
            .max()
            .ok_or_else(|| candle_core::Error::Msg("no layer to compute".into()))?;
        let acts = self.forward(x, deepest, layers, false)?;
        layers
            .iter()
            .map(|&layer| {
                acts.get(layer)
                    .cloned()
                    .ok_or_else(|| candle_core::Error::Msg(format!("{layer} not computed")).into())
            })
            .collect()
    }

    /// Back-propagates gradients given at tapped ReLU outputs to the input image.
    /// `tap_grads` pairs layers with dL/d(ReLU output); `acts` must come from a forward
    /// pass with `for_backward` that reached the deepest of them.
    pub fn backward(&self, acts: &Activations, tap_grads: &[(Layer, Tensor)]) -> Result<Tensor> {
        let deepest = tap_grads
            .iter()
            .map(|(l, _)| *l)
            .max()
            .ok_or_else(|| candle_core::Error::Msg("backward needs at least one tap".into()))?;
        let relu_out = |position: usize| relu_kept(acts, position);
        let mut grad: Option<Tensor> = None;
        for position in (0..=deepest.conv_position()).rev() {
            let layer = Layer::at_position(position);
            grad = sum_taps(grad, tap_grads, layer)?;
            let Some(g) = grad.take() else { continue };
            let g = self.relu_conv_backward(&g, relu_out(position)?, position)?;
            grad = Some(if layer.pooled_before() {
                self.pool_backward(&g, relu_out(position - 1)?)?
            } else {
                g
            });
        }
        grad.ok_or_else(|| candle_core::Error::Msg("no gradient reached the input".into()).into())
    }

    /// Gradient through a 2x2/stride-2 floor-mode pool whose input was `input`.
    fn pool_backward(&self, grad: &Tensor, input: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = input.dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let spread = match self.pooling {
            Pooling::Average => (grad.upsample_nearest2d(2 * ho, 2 * wo)? * 0.25)?,
            Pooling::Max => {
                let windows = input
                    .narrow(2, 0, 2 * ho)?
                    .narrow(3, 0, 2 * wo)?
                    .reshape((n, c, ho, 2, wo, 2))?
                    .permute((0, 1, 2, 4, 3, 5))?
                    .reshape((n, c, ho, wo, 4))?;
                let winner = windows.argmax_keepdim(D::Minus1)?;
                let slots = Tensor::arange(0u32, 4, &self.device)?.reshape((1, 1, 1, 1, 4))?;
                let one_hot = winner.broadcast_eq(&slots)?.to_dtype(self.dtype)?;
                one_hot
                    .broadcast_mul(&grad.unsqueeze(D::Minus1)?)?
                    .reshape((n, c, ho, wo, 2, 2))?
                    .permute((0, 1, 2, 4, 3, 5))?
                    .reshape((n, c, 2 * ho, 2 * wo))?
            }
        };
        Ok(spread
            .pad_with_zeros(2, 0, h - 2 * ho)?
            .pad_with_zeros(3, 0, w - 2 * wo)?)
    }
}
