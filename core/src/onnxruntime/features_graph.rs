//! The style precompute's ONNX graph: VGG19's stack (`net::onnx_vgg`) up to the deepest
//! requested layer, with the Gram matrices computed inside the graph so only C x C tensors
//! cross back to the caller (and feature maps where asked for).

use crate::model::{Layer, Vgg19Weights};
use crate::net::Pooling;
use crate::onnxruntime::graph::{Dim, GraphBuilder};
use crate::onnxruntime::vgg_graph::{add_gram, add_vgg, image_dims};

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
