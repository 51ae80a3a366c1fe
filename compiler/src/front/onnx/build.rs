//! Builders for ONNX protobuf messages: small models made in memory, for tests, fuzzers and tools.
//!
//! Each function fills in one message the way an exporter would and leaves
//! every other field at its default. Nothing is validated: shapes, data
//! lengths and names are written as given, so malformed models can be built
//! on purpose (to test how the loader rejects them).
//!
//! ```
//! use d2nnc::front::onnx::build::*;
//!
//! let relu = node("Relu", &["x"], &["y"]).with_name("relu");
//! let g = graph(
//!     "tiny",
//!     vec![relu],
//!     vec![value_info_dims("x", DataType::FLOAT, &[Dim::param("N"), Dim::Fixed(4)])],
//!     vec![value_info("y", DataType::FLOAT, &[])],
//!     vec![],
//! );
//! let model = d2nnc::front::onnx::load_bytes(&model_bytes(g, 8, 13), None, "tiny.onnx").unwrap();
//! assert_eq!(model.opset, 13);
//! ```

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

pub use onnx_protobuf::tensor_proto::DataType;

/// The value of a node attribute; each variant sets the matching field and `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Floats(Vec<f32>),
    /// Stored as the UTF-8 bytes of the string.
    Str(String),
    Tensor(TensorProto),
    Graph(GraphProto),
}

/// An attribute named `name` holding `value`.
pub fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    let ty = match value {
        Attr::Int(i) => {
            a.i = i;
            AttributeType::INT
        }
        Attr::Ints(v) => {
            a.ints = v;
            AttributeType::INTS
        }
        Attr::Float(f) => {
            a.f = f;
            AttributeType::FLOAT
        }
        Attr::Floats(v) => {
            a.floats = v;
            AttributeType::FLOATS
        }
        Attr::Str(s) => {
            a.s = s.into_bytes();
            AttributeType::STRING
        }
        Attr::Tensor(t) => {
            a.t = Some(t).into();
            AttributeType::TENSOR
        }
        Attr::Graph(g) => {
            a.g = Some(g).into();
            AttributeType::GRAPH
        }
    };
    a.type_ = ty.into();
    a
}

/// One dimension of a declared tensor shape (the protobuf's, not [`crate::ir::Dim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// `dim_value`, written as given (even when negative).
    Fixed(i64),
    /// `dim_param`: a symbolic size such as a batch `N`.
    Param(String),
}

impl Dim {
    /// A symbolic dimension named `name`.
    pub fn param(name: &str) -> Dim {
        Dim::Param(name.into())
    }
}

/// A tensor value named `name` of element type `elem` and shape `dims`, all fixed
/// (an empty `dims` declares a scalar, which the loader re-infers for outputs).
pub fn value_info(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Fixed(d)).collect();
    value_info_dims(name, elem, &dims)
}

/// A tensor value whose shape may have symbolic dimensions.
pub fn value_info_dims(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in dims {
        let mut dim = Dimension::new();
        match d {
            Dim::Fixed(v) => dim.set_dim_value(*v),
            Dim::Param(p) => dim.set_dim_param(p.clone()),
        }
        shape.dim.push(dim);
    }
    let mut tt = TypeTensor::new();
    tt.elem_type = elem as i32;
    tt.shape = Some(shape).into();
    let mut tp = TypeProto::new();
    tp.value = Some(TypeValue::TensorType(tt));
    let mut vi = ValueInfoProto::new();
    vi.name = name.into();
    vi.type_ = Some(tp).into();
    vi
}

/// A node of the default domain, unnamed and without attributes; the
/// [`NodeExt`] methods add those. An empty input name marks an omitted optional input.
pub fn node(op_type: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.op_type = op_type.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n
}

/// Builder methods for the optional parts of a [`NodeProto`].
pub trait NodeExt: Sized {
    /// Sets the node's name.
    fn with_name(self, name: &str) -> Self;
    /// Sets the operator's domain (`""` is the default ONNX domain).
    fn with_domain(self, domain: &str) -> Self;
    /// Appends one attribute.
    fn with_attr(self, name: &str, value: Attr) -> Self;
    /// Appends attributes in order.
    fn with_attrs<'a>(self, attrs: impl IntoIterator<Item = (&'a str, Attr)>) -> Self;
}

impl NodeExt for NodeProto {
    fn with_name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    fn with_domain(mut self, domain: &str) -> Self {
        self.domain = domain.into();
        self
    }

    fn with_attr(mut self, name: &str, value: Attr) -> Self {
        self.attribute.push(attribute(name, value));
        self
    }

    fn with_attrs<'a>(mut self, attrs: impl IntoIterator<Item = (&'a str, Attr)>) -> Self {
        self.attribute.extend(attrs.into_iter().map(|(name, value)| attribute(name, value)));
        self
    }
}

fn tensor(name: &str, elem: DataType, dims: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = elem as i32;
    t.dims = dims.to_vec();
    t
}

/// An f32 tensor with its data in `float_data`. `data` is not checked
/// against `dims`; an empty `name` suits a `Constant`'s `value`.
pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = tensor(name, DataType::FLOAT, dims);
    t.float_data = data.to_vec();
    t
}

/// An f32 tensor with its data in `raw_data` (little-endian), as most exporters write it.
pub fn tensor_f32_raw(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    let mut t = tensor(name, DataType::FLOAT, dims);
    t.raw_data = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    t
}

/// An i64 tensor with its data in `int64_data`.
pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    let mut t = tensor(name, DataType::INT64, dims);
    t.int64_data = data.to_vec();
    t
}

/// A bool tensor with its data in `int32_data` (0 or 1), as ONNX stores it.
pub fn tensor_bool(name: &str, dims: &[i64], data: &[bool]) -> TensorProto {
    let mut t = tensor(name, DataType::BOOL, dims);
    t.int32_data = data.iter().map(|&b| b as i32).collect();
    t
}

/// A graph, argument order as in `onnx.helper.make_graph` (name first).
/// Nodes must be in topological order for the loader; that is not checked here.
pub fn graph(
    name: &str,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    initializers: Vec<TensorProto>,
) -> GraphProto {
    let mut g = GraphProto::new();
    g.name = name.into();
    g.node = nodes;
    g.input = inputs;
    g.output = outputs;
    g.initializer = initializers;
    g
}

/// A model of `graph` at `ir_version`, importing the default domain at `opset`.
pub fn model(graph: GraphProto, ir_version: i64, opset: i64) -> ModelProto {
    let mut m = ModelProto::new();
    m.ir_version = ir_version;
    let mut import = OperatorSetIdProto::new();
    import.version = opset;
    m.opset_import.push(import);
    m.graph = Some(graph).into();
    m
}

/// [`model`], serialised.
///
/// # Panics
/// If protobuf cannot encode the message, which happens only for a model over 2 GiB.
pub fn model_bytes(graph: GraphProto, ir_version: i64, opset: i64) -> Vec<u8> {
    model(graph, ir_version, opset).write_to_bytes().expect("an ONNX model under 2 GiB encodes")
}
