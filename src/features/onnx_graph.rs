//! Builds, in Rust, the ONNX model of VGG19's feature stack from loaded weights: standard
//! operators only (Conv, Relu, MaxPool/AveragePool, Reshape, MatMul, ...), with the Gram
//! matrices computed inside the graph so only C x C tensors cross back to the caller.

use crate::engine::Pooling;
use crate::model::{Layer, Vgg19Weights};
use crate::onnx::{Dim, GraphBuilder, ints, winograd};

/// The graph's only input: a 1x3xHxW image in the weights' input space.
pub const INPUT: &str = "image";

/// Output name of the Gram matrix at `layer`.
pub fn gram_output(layer: Layer) -> String {
    format!("gram_{layer}")
}

/// Output name of the feature map at `layer`.
pub fn features_output(layer: Layer) -> String {
    format!("features_{layer}")
}

/// What the generated graph computes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GraphSpec {
    pub gram_layers: Vec<Layer>,
    pub feature_layers: Vec<Layer>,
    pub pooling: Pooling,
    /// Wide convolutions through the Winograd operators; they are CPU kernels, so a graph
    /// for the CUDA provider leaves them out.
    pub winograd: bool,
}

/// The image input's dimensions.
pub fn image_dims() -> [Dim; 4] {
    [
        Dim::Fixed(1),
        Dim::Fixed(3),
        Dim::Named("height"),
        Dim::Named("width"),
    ]
}

/// The attributes of VGG's 3x3, stride-1, pad-1 convolutions.
pub fn conv3x3_attrs() -> Vec<crate::onnx::proto::AttributeProto> {
    vec![
        ints("kernel_shape", &[3, 3]),
        ints("pads", &[1, 1, 1, 1]),
        ints("strides", &[1, 1]),
    ]
}

/// Adds VGG19's stack up to `deepest` reading `input`; returns each ReLU output's name and,
/// for max pooling, the pool indices before each block (for gradients). `winograd` lets
/// wide convolutions use the (CPU) Winograd operators.
pub fn add_vgg(
    b: &mut GraphBuilder,
    weights: &Vgg19Weights,
    input: &str,
    deepest: Layer,
    pooling: Pooling,
    with_indices: bool,
    winograd: bool,
) -> (Vec<String>, Vec<Option<String>>) {
    let mut relus = Vec::new();
    let mut indices = Vec::new();
    let mut current = input.to_string();
    for (layer, conv) in Layer::all()
        .zip(&weights.convs)
        .take(deepest.conv_position() + 1)
    {
        let (out, inp) = (layer.channels() as i64, layer.in_channels() as i64);
        let mut index = None;
        if layer.pooled_before() {
            let attrs = || vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
            current = match (pooling, with_indices) {
                (Pooling::Max, true) => {
                    let (pooled, idx) = (
                        format!("pool_before_{layer}"),
                        format!("pool_index_{layer}"),
                    );
                    b.op_into("MaxPool", &[&current], attrs(), &[&pooled, &idx]);
                    index = Some(idx);
                    pooled
                }
                (Pooling::Max, false) => b.op("MaxPool", &[&current], attrs(), "pool"),
                (Pooling::Average, _) => b.op("AveragePool", &[&current], attrs(), "pool"),
            };
        }
        let bias = b.floats(&format!("{layer}.bias"), &[out], &conv.bias);
        current = if winograd && winograd::worthwhile(inp as usize) {
            let kernels = (conv.weight.as_slice(), out as usize, inp as usize);
            let name = layer.to_string();
            winograd::add_conv(b, &current, &name, kernels, &bias, true, &name)
        } else {
            let w = b.floats(&format!("{layer}.weight"), &[out, inp, 3, 3], &conv.weight);
            let z = b.op("Conv", &[&current, &w, &bias], conv3x3_attrs(), "conv");
            b.op("Relu", &[&z], vec![], &layer.to_string())
        };
        relus.push(current.clone());
        indices.push(index);
    }
    (relus, indices)
}

/// `F F^T / (C H W)` of a ReLU output inside the graph; also returns the flattened `F` and
/// the element count, which gradient graphs reuse.
pub fn add_gram(b: &mut GraphBuilder, relu: &str, channels: i64) -> (String, String, String) {
    let shape = b.int64s(&[channels, -1]);
    let flat = b.op("Reshape", &[relu, &shape], vec![], "flat");
    let flat_t = b.op("Transpose", &[&flat], vec![ints("perm", &[1, 0])], "flat_t");
    let product = b.op("MatMul", &[&flat, &flat_t], vec![], "product");
    let count = b.count(relu);
    let gram = b.op("Div", &[&product, &count], vec![], "gram");
    (gram, flat, count)
}

/// Encodes the ONNX model for `spec` with the given weights.
pub fn build(weights: &Vgg19Weights, spec: &GraphSpec) -> Vec<u8> {
    let mut b = GraphBuilder::new("stylize_vgg19_features");
    b.input(INPUT, &image_dims());
    let Some(deepest) = spec
        .gram_layers
        .iter()
        .chain(&spec.feature_layers)
        .copied()
        .max()
    else {
        return b.finish();
    };
    let (relus, _) = add_vgg(
        &mut b,
        weights,
        INPUT,
        deepest,
        spec.pooling,
        false,
        spec.winograd,
    );
    for layer in Layer::all().take(deepest.conv_position() + 1) {
        let relu = relus[layer.conv_position()].clone();
        let c = layer.channels() as i64;
        if spec.feature_layers.contains(&layer) {
            let dims = [
                Dim::Fixed(1),
                Dim::Fixed(c),
                Dim::Named("fh"),
                Dim::Named("fw"),
            ];
            b.output(&relu, &features_output(layer), &dims);
        }
        if spec.gram_layers.contains(&layer) {
            let (gram, _, _) = add_gram(&mut b, &relu, c);
            b.output(&gram, &gram_output(layer), &[Dim::Fixed(c), Dim::Fixed(c)]);
        }
    }
    b.finish()
}
