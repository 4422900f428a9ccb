//! Builds, in Rust, the ONNX model of VGG19's feature stack from loaded weights: standard
//! operators only (Conv, Relu, MaxPool/AveragePool, Reshape, MatMul, ...), with the Gram
//! matrices computed inside the graph so only C x C tensors cross back to the caller.

use prost::Message;

use crate::engine::Pooling;
use crate::model::{Layer, Vgg19Weights};

/// The prost types generated from `proto/onnx/onnx_subset.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/stylize.onnx.rs"));
}

use proto::attribute_proto::AttributeType;
use proto::tensor_proto::DataType;
use proto::tensor_shape_proto::{Dimension, dimension};
use proto::type_proto;

/// ONNX opset the graph is written against (supported by every current runtime).
pub const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;
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
}

impl GraphSpec {
    fn deepest(&self) -> Option<Layer> {
        self.gram_layers
            .iter()
            .chain(&self.feature_layers)
            .copied()
            .max()
    }
}

fn ints(name: &str, values: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.to_string(),
        ints: values.to_vec(),
        r#type: AttributeType::Ints as i32,
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.to_string(),
        i: value,
        r#type: AttributeType::Int as i32,
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<proto::AttributeProto>,
) -> proto::NodeProto {
    proto::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: output.to_string(),
        op_type: op.to_string(),
        attribute,
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> proto::TensorProto {
    proto::TensorProto {
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        name: name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn int64_tensor(name: &str, values: &[i64]) -> proto::TensorProto {
    proto::TensorProto {
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        name: name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn value_info(name: &str, dims: &[dimension::Value]) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(proto::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(proto::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(d.clone()),
                        })
                        .collect(),
                }),
            })),
        }),
    }
}

/// Encodes the ONNX model for `spec` with the given weights.
pub fn build(weights: &Vgg19Weights, spec: &GraphSpec) -> Vec<u8> {
    use dimension::Value::{DimParam, DimValue};
    let mut graph = proto::GraphProto {
        name: "stylize_vgg19_features".into(),
        ..Default::default()
    };
    graph.input.push(value_info(
        INPUT,
        &[
            DimValue(1),
            DimValue(3),
            DimParam("height".into()),
            DimParam("width".into()),
        ],
    ));
    let Some(deepest) = spec.deepest() else {
        return model(graph);
    };
    let mut current = INPUT.to_string();
    for (layer, conv) in Layer::all()
        .zip(&weights.convs)
        .take(deepest.conv_position() + 1)
    {
        let (out, inp) = (layer.channels() as i64, layer.in_channels() as i64);
        if layer.pooled_before() {
            let pooled = format!("pool_before_{layer}");
            let op = match spec.pooling {
                Pooling::Max => "MaxPool",
                Pooling::Average => "AveragePool",
            };
            let attrs = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
            graph.node.push(node(op, &[&current], &pooled, attrs));
            current = pooled;
        }
        let (w, b) = (format!("{layer}.weight"), format!("{layer}.bias"));
        graph
            .initializer
            .push(float_tensor(&w, &[out, inp, 3, 3], &conv.weight));
        graph.initializer.push(float_tensor(&b, &[out], &conv.bias));
        let conv_out = format!("conv_{layer}");
        let attrs = vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            ints("strides", &[1, 1]),
        ];
        graph
            .node
            .push(node("Conv", &[&current, &w, &b], &conv_out, attrs));
        let relu = layer.to_string();
        graph.node.push(node("Relu", &[&conv_out], &relu, vec![]));

        if spec.feature_layers.contains(&layer) {
            let name = features_output(layer);
            graph.node.push(node("Identity", &[&relu], &name, vec![]));
            let dims = [
                DimValue(1),
                DimValue(out),
                DimParam("fh".into()),
                DimParam("fw".into()),
            ];
            graph.output.push(value_info(&name, &dims));
        }
        if spec.gram_layers.contains(&layer) {
            let shape = format!("{layer}_flat_shape");
            graph.initializer.push(int64_tensor(&shape, &[out, -1]));
            let flat = format!("{layer}_flat");
            graph
                .node
                .push(node("Reshape", &[&relu, &shape], &flat, vec![]));
            let flat_t = format!("{layer}_flat_t");
            graph.node.push(node(
                "Transpose",
                &[&flat],
                &flat_t,
                vec![ints("perm", &[1, 0])],
            ));
            let product = format!("{layer}_product");
            graph
                .node
                .push(node("MatMul", &[&flat, &flat_t], &product, vec![]));
            let count = format!("{layer}_count");
            graph.node.push(node("Size", &[&relu], &count, vec![]));
            let count_f = format!("{layer}_count_f");
            graph.node.push(node(
                "Cast",
                &[&count],
                &count_f,
                vec![int("to", DataType::Float as i64)],
            ));
            let name = gram_output(layer);
            graph
                .node
                .push(node("Div", &[&product, &count_f], &name, vec![]));
            graph
                .output
                .push(value_info(&name, &[DimValue(out), DimValue(out)]));
        }
        current = relu;
    }
    model(graph)
}

fn model(graph: proto::GraphProto) -> Vec<u8> {
    proto::ModelProto {
        ir_version: IR_VERSION,
        producer_name: "stylize".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
    }
    .encode_to_vec()
}
