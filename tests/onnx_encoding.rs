//! The core writes its ONNX models without a protobuf library; here prost, built from the same
//! `proto/onnx/onnx_subset.proto`, decodes what it wrote: every field arrives where the
//! schema puts it, and re-encoding the decoded model gives back the very same bytes (nothing
//! unknown was skipped, nothing was left out or written twice).

use prost::Message;
use stylize::onnxruntime::graph::{DataType, Dim, GraphBuilder, int, ints, to_float};

#[allow(clippy::all)]
mod prost_onnx {
    include!(concat!(env!("OUT_DIR"), "/stylize.onnx.rs"));
}

#[test]
fn prost_reads_the_core_s_models_field_for_field() {
    let mut b = GraphBuilder::new("encoding");
    let x = b.input(
        "x",
        &[
            Dim::Named("batch"),
            Dim::Fixed(3),
            Dim::Fixed(0),
            Dim::Fixed(-1),
        ],
    );
    let w = b.floats("w", &[2, 2], &[1.0, -2.5, 0.0, 3.25]);
    let axes = b.int64s(&[-1, 0, 300]);
    let half = b.scalar(0.5);
    let conv = b.op("Conv", &[&x, &w], vec![ints("pads", &[1, 1, 1, 1])], "conv");
    let mean = b.op(
        "ReduceMean",
        &[&conv, &axes],
        vec![int("keepdims", 0)],
        "mean",
    );
    let custom = b.custom_op("stylize.test", "Twice", &[&mean, &half], vec![], "twice");
    let cast = b.op("Cast", &[&custom], vec![to_float()], "cast");
    b.output(&cast, "y", &[Dim::Named("batch")]);
    b.typed_output(&mean, "mask", DataType::Bool, &[]);
    let bytes = b.finish();

    let model = prost_onnx::ModelProto::decode(bytes.as_slice()).expect("prost decodes it");
    assert_eq!(
        model.encode_to_vec(),
        bytes,
        "prost re-encodes the same bytes"
    );

    assert_eq!(model.producer_name, "stylize");
    let domains: Vec<(&str, i64)> = model
        .opset_import
        .iter()
        .map(|o| (o.domain.as_str(), o.version))
        .collect();
    assert_eq!(
        domains,
        [
            ("", stylize::onnxruntime::graph::OPSET),
            ("stylize.test", 1)
        ]
    );
    let graph = model.graph.expect("a graph");
    assert_eq!(graph.name, "encoding");
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        [
            "Conv",
            "ReduceMean",
            "Twice",
            "Cast",
            "Identity",
            "Identity"
        ]
    );
    assert_eq!(graph.node[0].input, [x.as_str(), w.as_str()]);
    assert_eq!(graph.node[0].attribute[0].ints, [1, 1, 1, 1]);
    assert_eq!(graph.node[1].attribute[0].name, "keepdims");
    assert_eq!(graph.node[2].domain, "stylize.test");
    assert_eq!(graph.node[3].attribute[0].i, DataType::Float as i64);

    let w_init = &graph.initializer[0];
    assert_eq!(
        (w_init.name.as_str(), w_init.dims.as_slice()),
        ("w", &[2i64, 2][..])
    );
    let values: Vec<f32> = w_init
        .raw_data
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, [1.0, -2.5, 0.0, 3.25]);
    let axes_init = &graph.initializer[1];
    assert_eq!(axes_init.data_type, DataType::Int64 as i32);
    let axes_values: Vec<i64> = axes_init
        .raw_data
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(axes_values, [-1, 0, 300]);

    use prost_onnx::tensor_shape_proto::dimension::Value;
    use prost_onnx::type_proto::Value as Type;
    let Some(Type::TensorType(input)) = graph.input[0].r#type.clone().and_then(|t| t.value) else {
        panic!("the input is a tensor")
    };
    assert_eq!(input.elem_type, DataType::Float as i32);
    let dims: Vec<Option<Value>> = input
        .shape
        .unwrap()
        .dim
        .into_iter()
        .map(|d| d.value)
        .collect();
    assert_eq!(
        dims,
        [
            Some(Value::DimParam("batch".into())),
            Some(Value::DimValue(3)),
            Some(Value::DimValue(0)),
            Some(Value::DimValue(-1)),
        ]
    );
    let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["y", "mask"]);
}
