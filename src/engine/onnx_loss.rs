//! The loss-and-gradient graph for ONNX Runtime, written in Rust: VGG19's forward pass, the
//! content, style and total-variation terms, and the hand-derived backward pass to the image
//! (ReLU masks, flipped-kernel convolutions for the input gradient, max-pool gradients
//! placed at the pool's argmax indices), all as standard opset-17 operators.

use crate::engine::TermWeights;
use crate::features::onnx_graph::{add_gram, add_vgg, conv3x3_attrs, image_dims};
use crate::model::{Layer, Vgg19Weights};
use crate::onnx::{Dim, GraphBuilder, int, ints, to_float, winograd};

use super::Pooling;

pub const IMAGE: &str = "image";
pub const GRAD: &str = "grad";
pub const TV: &str = "tv";

pub fn content_input(layer: Layer) -> String {
    format!("content_target_{layer}")
}

pub fn style_input(layer: Layer) -> String {
    format!("style_target_{layer}")
}

pub fn content_loss(layer: Layer) -> String {
    format!("content_loss_{layer}")
}

pub fn style_loss(layer: Layer) -> String {
    format!("style_loss_{layer}")
}

/// What one loss graph computes. Targets are graph inputs; weights are baked in.
#[derive(Debug, Clone, PartialEq)]
pub struct LossSpec {
    pub content: Vec<(Layer, f64)>,
    pub style: Vec<(Layer, f64)>,
    pub weights: TermWeights,
}

impl LossSpec {
    /// A hashable identity (weights as bit patterns).
    pub fn key(&self) -> String {
        format!("{:?}|{:?}|{:?}", self.content, self.style, self.weights)
    }
}

/// The gradient of a 2x2/stride-2 max pool: `grad` placed at the argmax `indices` of
/// `input` (as ONNX MaxPool reports them) and zero elsewhere, which is what MaxUnpool does.
fn max_pool_backward(b: &mut GraphBuilder, grad: &str, indices: &str, input: &str) -> String {
    let shape = b.op("Shape", &[input], vec![], "pool_in_shape");
    let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
    b.op("MaxUnpool", &[grad, indices, &shape], attrs, "pool_grad")
}

/// Total variation of `x` (an output) and its gradient times `gamma`.
fn total_variation(b: &mut GraphBuilder, x: &str, gamma: f64) -> (String, String) {
    let mut tv: Option<String> = None;
    let mut grad: Option<String> = None;
    let twice_gamma = b.scalar((2.0 * gamma) as f32);
    for axis in [2i64, 3] {
        let (one, zero, end, minus_one, axes) = (
            b.int64s(&[1]),
            b.int64s(&[0]),
            b.int64s(&[i64::MAX]),
            b.int64s(&[-1]),
            b.int64s(&[axis]),
        );
        let later = b.op("Slice", &[x, &one, &end, &axes], vec![], "later");
        let earlier = b.op("Slice", &[x, &zero, &minus_one, &axes], vec![], "earlier");
        let diff = b.op("Sub", &[&later, &earlier], vec![], "diff");
        let squared = b.op("Mul", &[&diff, &diff], vec![], "diff_sq");
        let sum = b.op(
            "ReduceSum",
            &[&squared],
            vec![int("keepdims", 0)],
            "tv_part",
        );
        tv = Some(match tv {
            Some(acc) => b.op("Add", &[&acc, &sum], vec![], "tv_sum"),
            None => sum,
        });
        let scaled = b.op("Mul", &[&diff, &twice_gamma], vec![], "tv_scaled");
        let mut before = [0i64; 8];
        before[axis as usize] = 1;
        let mut after = [0i64; 8];
        after[4 + axis as usize] = 1;
        let (before, after) = (b.int64s(&before), b.int64s(&after));
        let plus = b.op("Pad", &[&scaled, &before], vec![], "tv_plus");
        let minus = b.op("Pad", &[&scaled, &after], vec![], "tv_minus");
        let part = b.op("Sub", &[&plus, &minus], vec![], "tv_grad_part");
        grad = Some(match grad {
            Some(acc) => b.op("Add", &[&acc, &part], vec![], "tv_grad"),
            None => part,
        });
    }
    (tv.expect("two axes"), grad.expect("two axes"))
}

/// Encodes the loss-and-gradient model for `spec` (max pooling only).
pub fn build(weights: &Vgg19Weights, spec: &LossSpec) -> Vec<u8> {
    let mut b = GraphBuilder::new("stylize_vgg19_loss_and_gradient");
    b.input(IMAGE, &image_dims());
    let deepest = spec
        .content
        .iter()
        .chain(&spec.style)
        .map(|(l, _)| *l)
        .max();
    let mut image_grad: Option<String> = None;
    if let Some(deepest) = deepest {
        let (relus, indices) = add_vgg(&mut b, weights, IMAGE, deepest, Pooling::Max, true, true);
        let mut tap_grads: Vec<Vec<String>> = vec![Vec::new(); relus.len()];
        for &(layer, weight) in &spec.content {
            let relu = &relus[layer.conv_position()];
            let c = layer.channels() as i64;
            let target = b.input(
                &content_input(layer),
                &[
                    Dim::Fixed(1),
                    Dim::Fixed(c),
                    Dim::Named("fh"),
                    Dim::Named("fw"),
                ],
            );
            let diff = b.op("Sub", &[relu, &target], vec![], "content_diff");
            let squared = b.op("Mul", &[&diff, &diff], vec![], "content_sq");
            let loss = b.op(
                "ReduceMean",
                &[&squared],
                vec![int("keepdims", 0)],
                "content_loss",
            );
            b.output(&loss, &content_loss(layer), &[]);
            let count = b.count(relu);
            let coef = b.scalar((2.0 * spec.weights.content * weight) as f32);
            let coef = b.op("Div", &[&coef, &count], vec![], "content_coef");
            let grad = b.op("Mul", &[&diff, &coef], vec![], "content_grad");
            tap_grads[layer.conv_position()].push(grad);
        }
        for &(layer, weight) in &spec.style {
            let relu = relus[layer.conv_position()].clone();
            let c = layer.channels() as i64;
            let target = b.input(&style_input(layer), &[Dim::Fixed(c), Dim::Fixed(c)]);
            let (gram, flat, count) = add_gram(&mut b, &relu, c);
            let diff = b.op("Sub", &[&gram, &target], vec![], "style_diff");
            let squared = b.op("Mul", &[&diff, &diff], vec![], "style_sq");
            let loss = b.op(
                "ReduceMean",
                &[&squared],
                vec![int("keepdims", 0)],
                "style_loss",
            );
            b.output(&loss, &style_loss(layer), &[]);
            let coef = b.scalar((4.0 * spec.weights.style * weight / (c * c) as f64) as f32);
            let coef = b.op("Div", &[&coef, &count], vec![], "style_coef");
            let product = b.op("MatMul", &[&diff, &flat], vec![], "style_grad_flat");
            let scaled = b.op("Mul", &[&product, &coef], vec![], "style_grad_scaled");
            let shape = b.op("Shape", &[&relu], vec![], "relu_shape");
            let grad = b.op("Reshape", &[&scaled, &shape], vec![], "style_grad");
            tap_grads[layer.conv_position()].push(grad);
        }
        let zero = b.scalar(0.0);
        let mut grad: Option<String> = None;
        for position in (0..relus.len()).rev() {
            let layer = Layer::at_position(position);
            for tap in &tap_grads[position] {
                grad = Some(match grad {
                    Some(acc) => b.op("Add", &[&acc, tap], vec![], "tap_sum"),
                    None => tap.clone(),
                });
            }
            let Some(g) = grad.take() else { continue };
            let positive = b.op("Greater", &[&relus[position], &zero], vec![], "relu_on");
            let positive = b.op("Cast", &[&positive], vec![to_float()], "relu_mask");
            let masked = b.op("Mul", &[&g, &positive], vec![], "pre_relu_grad");
            let (out, inp) = (layer.channels(), layer.in_channels());
            let flipped = weights.convs[position].input_gradient_kernel(out, inp);
            let name = format!("{layer}.weight_flipped");
            let input_grad = if winograd::worthwhile(out) {
                let zeros = b.floats(
                    &format!("{layer}.zero_bias"),
                    &[inp as i64],
                    &vec![0.0; inp],
                );
                let kernels = (flipped.as_slice(), inp, out);
                winograd::add_conv(
                    &mut b,
                    &masked,
                    &name,
                    kernels,
                    &zeros,
                    false,
                    "conv_input_grad",
                )
            } else {
                let kernel = b.floats(&name, &[inp as i64, out as i64, 3, 3], &flipped);
                b.op(
                    "Conv",
                    &[&masked, &kernel],
                    conv3x3_attrs(),
                    "conv_input_grad",
                )
            };
            grad = Some(match &indices[position] {
                Some(idx) => max_pool_backward(&mut b, &input_grad, idx, &relus[position - 1]),
                None => input_grad,
            });
        }
        image_grad = grad;
    }
    let (tv, tv_grad) = total_variation(&mut b, IMAGE, spec.weights.tv);
    b.output(&tv, TV, &[]);
    let total_grad = match image_grad {
        Some(g) => b.op("Add", &[&g, &tv_grad], vec![], "image_grad"),
        None => tv_grad,
    };
    b.output(&total_grad, GRAD, &image_dims());
    b.finish()
}
