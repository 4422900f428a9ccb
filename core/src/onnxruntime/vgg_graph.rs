//! VGG19's feature stack as ONNX graph pieces, written in Rust from loaded weights: the
//! convolution/ReLU/pooling stack and an in-graph Gram matrix, in standard operators (wide
//! convolutions optionally through the Winograd custom operators). Graphs for particular
//! jobs (the style precompute, the loss and gradient) are assembled from these.

use crate::model::{Layer, Vgg19Weights};
use crate::net::Pooling;
use crate::onnxruntime::graph::{Dim, GraphBuilder, ints, winograd};

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
pub fn conv3x3_attrs() -> Vec<crate::onnxruntime::graph::proto::AttributeProto> {
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
    for layer in Layer::all().take(deepest.conv_position() + 1) {
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
        current = add_conv_relu(b, weights, layer, &current, winograd);
        relus.push(current.clone());
        indices.push(index);
    }
    (relus, indices)
}

/// `layer`'s convolution and ReLU on `input`; returns the ReLU output's name.
pub fn add_conv_relu(
    b: &mut GraphBuilder,
    weights: &Vgg19Weights,
    layer: Layer,
    input: &str,
    winograd: bool,
) -> String {
    let conv = &weights.convs[layer.conv_position()];
    let (out, inp) = (layer.channels() as i64, layer.in_channels() as i64);
    let bias = b.floats(&format!("{layer}.bias"), &[out], &conv.bias);
    if winograd && winograd::worthwhile(inp as usize) {
        let kernels = (conv.weight.as_slice(), out as usize, inp as usize);
        let name = layer.to_string();
        winograd::add_conv(b, input, &name, kernels, &bias, true, &name)
    } else {
        let w = b.floats(&format!("{layer}.weight"), &[out, inp, 3, 3], &conv.weight);
        let z = b.op("Conv", &[input, &w, &bias], conv3x3_attrs(), "conv");
        b.op("Relu", &[&z], vec![], &layer.to_string())
    }
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
