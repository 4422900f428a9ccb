//! Writing ONNX models in Rust: the project's ONNX subset (`proto/onnx/onnx_subset.proto`)
//! and its encoding (`proto`), and a small graph builder over them. Graph builders for
//! particular networks (the feature extractor, the loss-and-gradient graph) use this.

pub mod proto;
pub mod winograd;

pub use proto::DataType;
use proto::{AttributeType, Dimension, Encode};

/// ONNX opset the graphs are written against (supported by every current runtime).
pub const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;

/// A dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

pub fn ints(name: &str, values: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.to_string(),
        ints: values.to_vec(),
        r#type: AttributeType::Ints,
        ..Default::default()
    }
}

pub fn int(name: &str, value: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.to_string(),
        i: value,
        r#type: AttributeType::Int,
        ..Default::default()
    }
}

/// The `to` attribute of a Cast to float32.
pub fn to_float() -> proto::AttributeProto {
    int("to", DataType::Float as i64)
}

/// The `to` attribute of a Cast to float64 (for reductions whose float32 sum would lose
/// digits).
pub fn to_double() -> proto::AttributeProto {
    int("to", DataType::Double as i64)
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: name.to_string(),
        elem_type: elem,
        shape: dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(v) => Dimension::Value(*v),
                Dim::Named(n) => Dimension::Param(n.to_string()),
            })
            .collect(),
    }
}

/// Accumulates nodes, initializers, inputs and outputs; names intermediate values.
pub struct GraphBuilder {
    graph: proto::GraphProto,
    next: usize,
    /// Custom operator domains the graph uses (each at version 1).
    custom_domains: Vec<String>,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            graph: proto::GraphProto {
                name: name.to_string(),
                ..Default::default()
            },
            next: 0,
            custom_domains: Vec::new(),
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// Adds a node with one output named after `hint`; returns the output's name.
    pub fn op(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<proto::AttributeProto>,
        hint: &str,
    ) -> String {
        let output = self.fresh(hint);
        self.op_into(op, inputs, attrs, &[&output]);
        output
    }

    /// Adds a node writing the given output names.
    pub fn op_into(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<proto::AttributeProto>,
        outputs: &[&str],
    ) {
        self.graph.node.push(proto::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: outputs.first().map(|s| s.to_string()).unwrap_or_default(),
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// Adds a node of a custom operator (registered on the session by the caller).
    pub fn custom_op(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<proto::AttributeProto>,
        hint: &str,
    ) -> String {
        let output = self.op(op, inputs, attrs, hint);
        if let Some(node) = self.graph.node.last_mut() {
            node.domain = domain.to_string();
        }
        if !self.custom_domains.iter().any(|d| d == domain) {
            self.custom_domains.push(domain.to_string());
        }
        output
    }

    /// A float32 initializer.
    pub fn floats(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        self.graph.initializer.push(proto::TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            name: name.to_string(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.to_string()
    }

    /// A float32 scalar constant.
    pub fn scalar(&mut self, value: f32) -> String {
        let name = self.fresh("scalar");
        self.floats(&name, &[], &[value])
    }

    /// A 1-D int64 initializer.
    pub fn int64s(&mut self, values: &[i64]) -> String {
        let name = self.fresh("ints");
        self.graph.initializer.push(proto::TensorProto {
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// A float32 graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.typed_input(name, DataType::Float, dims)
    }

    /// A graph input of element type `elem`.
    pub fn typed_input(&mut self, name: &str, elem: DataType, dims: &[Dim]) -> String {
        self.graph.input.push(value_info(name, elem, dims));
        name.to_string()
    }

    /// Whether the graph already has an output called `name`.
    pub fn has_output(&self, name: &str) -> bool {
        self.graph.output.iter().any(|o| o.name == name)
    }

    /// Exposes the float32 `value` as the graph output `name` (through an Identity node).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        self.typed_output(value, name, DataType::Float, dims);
    }

    /// Exposes `value`, of element type `elem`, as the graph output `name`.
    pub fn typed_output(&mut self, value: &str, name: &str, elem: DataType, dims: &[Dim]) {
        self.op_into("Identity", &[value], vec![], &[name]);
        self.graph.output.push(value_info(name, elem, dims));
    }

    /// Exposes the float64 scalar `value` as the graph output `name`.
    pub fn output_double_scalar(&mut self, value: &str, name: &str) {
        self.typed_output(value, name, DataType::Double, &[]);
    }

    /// `Cast(Size(x))`: the element count of `x` as a float32 scalar.
    pub fn count(&mut self, x: &str) -> String {
        let size = self.op("Size", &[x], vec![], "size");
        self.op("Cast", &[&size], vec![to_float()], "count")
    }

    /// Encodes the model.
    pub fn finish(self) -> Vec<u8> {
        proto::ModelProto {
            ir_version: IR_VERSION,
            producer_name: "stylize".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            opset_import: std::iter::once(proto::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            })
            .chain(
                self.custom_domains
                    .into_iter()
                    .map(|domain| proto::OperatorSetIdProto { domain, version: 1 }),
            )
            .collect(),
        }
        .encode_to_vec()
    }
}
