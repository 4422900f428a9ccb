//! The candle engine's objective: the loss and its gradient for one image size in one
//! forward and one hand-written backward pass of `net::vgg`.

use candle_core::Tensor;

use crate::engine::loss::{
    LayerTarget, LossBreakdown, TermWeights, content_term, style_term, taps, total_variation,
};
use crate::error::{Error, Result};
use crate::net::vgg::VggNet;

/// Everything needed to evaluate the loss and its gradient for one image size.
pub struct Objective<'a> {
    pub net: &'a VggNet,
    pub content: Vec<LayerTarget>,
    pub style: Vec<LayerTarget>,
    pub weights: TermWeights,
}

impl Objective<'_> {
    /// The loss at `x` and `dL/dx`, in one forward and one backward pass.
    pub fn evaluate(&self, x: &Tensor) -> Result<(LossBreakdown, Tensor)> {
        let taps = taps(&self.content, &self.style);
        let deepest = *taps
            .iter()
            .max()
            .ok_or_else(|| Error::invalid("layers", "no content or style layer given"))?;
        let acts = self.net.forward(x, deepest, &taps, true)?;
        let mut out = LossBreakdown::default();
        let mut tap_grads = Vec::with_capacity(taps.len());
        let terms = [
            (&self.content, self.weights.content, true),
            (&self.style, self.weights.style, false),
        ];
        for (targets, term_weight, is_content) in terms {
            for t in targets {
                let features = acts
                    .get(t.layer)
                    .ok_or_else(|| Error::invalid("layers", format!("{} not computed", t.layer)))?;
                let (loss, grad) = if is_content {
                    content_term(features, &t.target)?
                } else {
                    style_term(features, &t.target)?
                };
                if is_content {
                    out.content += t.weight * loss;
                    out.content_per_layer.push(loss);
                } else {
                    out.style += t.weight * loss;
                    out.style_per_layer.push(loss);
                }
                tap_grads.push((t.layer, (grad * (term_weight * t.weight))?));
            }
        }
        let (tv, tv_grad) = total_variation(x)?;
        out.tv = tv;
        out.total = self.weights.content * out.content
            + self.weights.style * out.style
            + self.weights.tv * tv;
        let grad = (self.net.backward(&acts, &tap_grads)? + (tv_grad * self.weights.tv)?)?;
        Ok((out, grad))
    }
}
