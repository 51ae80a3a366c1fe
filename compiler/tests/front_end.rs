//! Forms of ONNX that real exporters write, built as protobuf messages and
//! checked end to end through the interpreter: initializers in typed fields
//! and in `raw_data`, initializers repeated as graph inputs, `Constant` value
//! kinds, and `If` branches with initializers of their own that read
//! outer-scope values.

use d2nn_runtime::Tensor;
use d2nnc::front::onnx::load_bytes;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use onnx_protobuf::*;
use std::collections::HashMap;

fn value_info(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for &d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        if d < 0 {
            dim.set_dim_param("N".into());
        } else {
            dim.set_dim_value(d);
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

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    let mut n = NodeProto::new();
    n.name = format!("{op}_{}", outputs[0]);
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n
}

fn floats_typed(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = DataType::FLOAT as i32;
    t.dims = dims.to_vec();
    t.float_data = v.to_vec();
    t
}

fn floats_raw(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.data_type = DataType::FLOAT as i32;
    t.dims = dims.to_vec();
    t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    t
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::GRAPH.into();
    a.g = Some(g).into();
    a
}

fn model(g: GraphProto, ir_version: i64, opset: i64) -> Vec<u8> {
    let mut m = ModelProto::new();
    m.ir_version = ir_version;
    let mut op = OperatorSetIdProto::new();
    op.version = opset;
    m.opset_import.push(op);
    m.graph = Some(g).into();
    m.write_to_bytes().unwrap()
}

fn run(bytes: &[u8], x: Tensor) -> Vec<f32> {
    let m = load_bytes(bytes, None, "test.onnx").unwrap_or_else(|e| panic!("{e}"));
    d2nnc::ir::verify::verify(&m.graph).unwrap();
    let out = d2nnc::interp::run(&m.graph, &HashMap::from([("x".to_string(), x)])).unwrap();
    out[0].to_f32_vec()
}

/// y = If(sum(x) > 0) then (x * w_outer + b_then) else (x - c_else), where
/// b_then and c_else are initializers of the branches and w_outer is an outer initializer.
fn if_model() -> Vec<u8> {
    let mut then_g = GraphProto::new();
    then_g.name = "then".into();
    then_g.initializer.push(floats_raw("b_then", &[3], &[100.0, 200.0, 300.0]));
    then_g.node.push(node("Mul", &["x", "w_outer"], &["scaled"]));
    then_g.node.push(node("Add", &["scaled", "b_then"], &["then_out"]));
    then_g.output.push(value_info("then_out", DataType::FLOAT, &[-1, 3]));

    let mut else_g = GraphProto::new();
    else_g.name = "else".into();
    else_g.initializer.push(floats_typed("c_else", &[1], &[1.0]));
    else_g.node.push(node("Sub", &["x", "c_else"], &["else_out"]));
    else_g.output.push(value_info("else_out", DataType::FLOAT, &[-1, 3]));

    let mut g = GraphProto::new();
    g.name = "if_model".into();
    g.initializer.push(floats_typed("w_outer", &[3], &[1.0, 2.0, 3.0]));
    g.input.push(value_info("x", DataType::FLOAT, &[-1, 3]));
    // Old IR: the initializer is listed again as a graph input.
    g.input.push(value_info("w_outer", DataType::FLOAT, &[3]));
    let mut sum = node("ReduceSum", &["x"], &["total"]);
    let mut keep = AttributeProto::new();
    keep.name = "keepdims".into();
    keep.type_ = AttributeType::INT.into();
    keep.i = 0;
    sum.attribute.push(keep);
    g.node.push(sum);
    let mut zero = node("Constant", &[], &["zero"]);
    let mut value = AttributeProto::new();
    value.name = "value_float".into();
    value.type_ = AttributeType::FLOAT.into();
    value.f = 0.0;
    zero.attribute.push(value);
    g.node.push(zero);
    g.node.push(node("Greater", &["total", "zero"], &["cond"]));
    let mut if_node = node("If", &["cond"], &["y"]);
    if_node.attribute.push(graph_attr("then_branch", then_g));
    if_node.attribute.push(graph_attr("else_branch", else_g));
    g.node.push(if_node);
    g.output.push(value_info("y", DataType::FLOAT, &[-1, 3]));
    model(g, 7, 13)
}

#[test]
fn if_branches_read_outer_values_and_own_initializers() {
    let bytes = if_model();
    let pos = Tensor::from_f32(&[2, 3], vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]).unwrap();
    assert_eq!(run(&bytes, pos), vec![101.0, 202.0, 303.0, 102.0, 204.0, 306.0]);
    let neg = Tensor::from_f32(&[1, 3], vec![-1.0, -2.0, -3.0]).unwrap();
    assert_eq!(run(&bytes, neg), vec![-2.0, -3.0, -4.0]);
}

#[test]
fn if_with_constant_condition_is_inlined_by_the_passes() {
    // Replace the data-dependent condition by a constant: the pipeline keeps only the taken branch.
    let mut m = ModelProto::parse_from_bytes(&if_model()).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.node.retain(|n| n.op_type != "ReduceSum" && n.op_type != "Greater");
    let mut cond = TensorProto::new();
    cond.name = "cond".into();
    cond.data_type = DataType::BOOL as i32;
    cond.int32_data = vec![0];
    g.initializer.push(cond);
    let bytes = m.write_to_bytes().unwrap();
    let mut loaded = load_bytes(&bytes, None, "test.onnx").unwrap();
    d2nnc::passes::optimize(&mut loaded.graph).unwrap();
    let text = d2nnc::ir::printer::print(&loaded.graph);
    assert!(!text.contains("If(") && text.contains("Sub("), "{text}");
    let x = Tensor::from_f32(&[1, 3], vec![5.0, 6.0, 7.0]).unwrap();
    let out = d2nnc::interp::run(&loaded.graph, &HashMap::from([("x".to_string(), x)])).unwrap();
    assert_eq!(out[0].to_f32_vec(), vec![4.0, 5.0, 6.0]);
}

#[test]
fn constant_value_kinds() {
    let mut g = GraphProto::new();
    g.name = "consts".into();
    g.input.push(value_info("x", DataType::FLOAT, &[3]));
    let mut c = node("Constant", &[], &["k"]);
    let mut a = AttributeProto::new();
    a.name = "value_floats".into();
    a.type_ = AttributeType::FLOATS.into();
    a.floats = vec![0.5, 1.5, 2.5];
    c.attribute.push(a);
    g.node.push(c);
    let mut c2 = node("Constant", &[], &["t"]);
    let mut a2 = AttributeProto::new();
    a2.name = "value".into();
    a2.type_ = AttributeType::TENSOR.into();
    a2.t = Some(floats_raw("", &[3], &[10.0, 20.0, 30.0])).into();
    c2.attribute.push(a2);
    g.node.push(c2);
    g.node.push(node("Add", &["x", "k"], &["s"]));
    g.node.push(node("Mul", &["s", "t"], &["y"]));
    g.output.push(value_info("y", DataType::FLOAT, &[3]));
    let bytes = model(g, 8, 17);
    assert_eq!(run(&bytes, Tensor::from_f32(&[3], vec![1.0, 1.0, 1.0]).unwrap()), vec![15.0, 50.0, 105.0]);
}
