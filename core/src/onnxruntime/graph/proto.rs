//! The project's ONNX subset (`proto/onnx/onnx_subset.proto`) as plain structs, and their
//! protobuf encoding. The core only ever writes models, so it encodes them itself rather than
//! linking a protobuf codec: the wire format of these seven messages is a few varints and
//! length-delimited fields. Field numbers follow the `.proto`; values equal to their default
//! are left out, and repeated numbers are packed, as proto3 encoders do (a test in the root
//! package decodes this output with prost and checks it re-encodes to the same bytes).

/// `TensorProto.DataType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum DataType {
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Uint16 = 4,
    Int16 = 5,
    Int32 = 6,
    Int64 = 7,
    Bool = 9,
    Double = 11,
}

/// `AttributeProto.AttributeType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(i32)]
pub enum AttributeType {
    #[default]
    Undefined = 0,
    Float = 1,
    Int = 2,
    String = 3,
    Tensor = 4,
    Graph = 5,
    Floats = 6,
    Ints = 7,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelProto {
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub graph: Option<GraphProto>,
    pub opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperatorSetIdProto {
    pub domain: String,
    pub version: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphProto {
    pub node: Vec<NodeProto>,
    pub name: String,
    pub initializer: Vec<TensorProto>,
    pub input: Vec<ValueInfoProto>,
    pub output: Vec<ValueInfoProto>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeProto {
    pub input: Vec<String>,
    pub output: Vec<String>,
    pub name: String,
    pub op_type: String,
    pub attribute: Vec<AttributeProto>,
    pub domain: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributeProto {
    pub name: String,
    pub f: f32,
    pub i: i64,
    pub s: Vec<u8>,
    pub t: Option<TensorProto>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
    pub r#type: AttributeType,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorProto {
    pub dims: Vec<i64>,
    /// A [`DataType`] as its number.
    pub data_type: i32,
    pub name: String,
    pub raw_data: Vec<u8>,
}

/// One dimension of a tensor's shape: a fixed size or a named (symbolic) one.
#[derive(Debug, Clone, PartialEq)]
pub enum Dimension {
    Value(i64),
    Param(String),
}

/// `ValueInfoProto` of a tensor: its name, element type and shape (the subset's only
/// `TypeProto`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfoProto {
    pub name: String,
    pub elem_type: DataType,
    pub shape: Vec<Dimension>,
}

/// A message's protobuf encoding.
pub trait Encode {
    fn encode_into(&self, out: &mut Vec<u8>);

    fn encode_to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

const VARINT: u8 = 0;
const LENGTH_DELIMITED: u8 = 2;
const FIXED32: u8 = 5;

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// An int32/int64/enum field; negative values take ten bytes, as protobuf sign-extends them.
fn int(out: &mut Vec<u8>, field: u32, value: i64) {
    if value != 0 {
        tag(out, field, VARINT);
        varint(out, value as u64);
    }
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        delimited(out, field, value);
    }
}

fn delimited(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    tag(out, field, LENGTH_DELIMITED);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn float(out: &mut Vec<u8>, field: u32, value: f32) {
    if value != 0.0 {
        tag(out, field, FIXED32);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn message(out: &mut Vec<u8>, field: u32, value: &impl Encode) {
    delimited(out, field, &value.encode_to_vec());
}

fn messages<T: Encode>(out: &mut Vec<u8>, field: u32, values: &[T]) {
    for value in values {
        message(out, field, value);
    }
}

fn strings(out: &mut Vec<u8>, field: u32, values: &[String]) {
    for value in values {
        delimited(out, field, value.as_bytes());
    }
}

fn packed_ints(out: &mut Vec<u8>, field: u32, values: &[i64]) {
    if !values.is_empty() {
        let mut packed = Vec::new();
        values.iter().for_each(|v| varint(&mut packed, *v as u64));
        delimited(out, field, &packed);
    }
}

fn packed_floats(out: &mut Vec<u8>, field: u32, values: &[f32]) {
    if !values.is_empty() {
        let packed: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        delimited(out, field, &packed);
    }
}

impl Encode for ModelProto {
    fn encode_into(&self, out: &mut Vec<u8>) {
        int(out, 1, self.ir_version);
        bytes(out, 2, self.producer_name.as_bytes());
        bytes(out, 3, self.producer_version.as_bytes());
        if let Some(graph) = &self.graph {
            message(out, 7, graph);
        }
        messages(out, 8, &self.opset_import);
    }
}

impl Encode for OperatorSetIdProto {
    fn encode_into(&self, out: &mut Vec<u8>) {
        bytes(out, 1, self.domain.as_bytes());
        int(out, 2, self.version);
    }
}

impl Encode for GraphProto {
    fn encode_into(&self, out: &mut Vec<u8>) {
        messages(out, 1, &self.node);
        bytes(out, 2, self.name.as_bytes());
        messages(out, 5, &self.initializer);
        messages(out, 11, &self.input);
        messages(out, 12, &self.output);
    }
}

impl Encode for NodeProto {
    fn encode_into(&self, out: &mut Vec<u8>) {
        strings(out, 1, &self.input);
        strings(out, 2, &self.output);
        bytes(out, 3, self.name.as_bytes());
        bytes(out, 4, self.op_type.as_bytes());
        messages(out, 5, &self.attribute);
        bytes(out, 7, self.domain.as_bytes());
    }
}

impl Encode for AttributeProto {
    fn encode_into(&self, out: &mut Vec<u8>) {
        bytes(out, 1, self.name.as_bytes());
        float(out, 2, self.f);
        int(out, 3, self.i);
        bytes(out, 4, &self.s);
        if let Some(tensor) = &self.t {
            message(out, 5, tensor);
        }
        packed_floats(out, 7, &self.floats);
        packed_ints(out, 8, &self.ints);
        int(out, 20, self.r#type as i64);
    }
}

impl Encode for TensorProto {
    fn encode_into(&self, out: &mut Vec<u8>) {
        packed_ints(out, 1, &self.dims);
        int(out, 2, i64::from(self.data_type));
        bytes(out, 8, self.name.as_bytes());
        bytes(out, 9, &self.raw_data);
    }
}

/// `TypeProto { tensor_type: Tensor { elem_type, shape: TensorShapeProto { dim } } }`.
struct TensorType<'a>(&'a ValueInfoProto);
struct TensorShape<'a>(&'a [Dimension]);

impl Encode for ValueInfoProto {
    fn encode_into(&self, out: &mut Vec<u8>) {
        bytes(out, 1, self.name.as_bytes());
        message(out, 2, &TensorType(self));
    }
}

impl Encode for TensorType<'_> {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let mut tensor = Vec::new();
        int(&mut tensor, 1, self.0.elem_type as i64);
        message(&mut tensor, 2, &TensorShape(&self.0.shape));
        delimited(out, 1, &tensor);
    }
}

impl Encode for TensorShape<'_> {
    fn encode_into(&self, out: &mut Vec<u8>) {
        messages(out, 1, self.0);
    }
}

impl Encode for Dimension {
    fn encode_into(&self, out: &mut Vec<u8>) {
        // A oneof member is written even when it holds its type's default.
        match self {
            Dimension::Value(value) => {
                tag(out, 1, VARINT);
                varint(out, *value as u64);
            }
            Dimension::Param(name) => delimited(out, 2, name.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_follow_the_protobuf_encoding() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut negative = Vec::new();
        int(&mut negative, 1, -1);
        assert_eq!(negative.len(), 11, "tag + ten bytes for a sign-extended -1");
    }

    #[test]
    fn defaults_are_left_out_and_numbers_packed() {
        let tensor = TensorProto {
            dims: vec![2, 3],
            data_type: DataType::Float as i32,
            ..Default::default()
        };
        assert_eq!(tensor.encode_to_vec(), [0x0a, 2, 2, 3, 0x10, 1]);
        assert!(OperatorSetIdProto::default().encode_to_vec().is_empty());
    }
}
