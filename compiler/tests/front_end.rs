//! Forms of ONNX that real exporters write, built as protobuf messages and
//! checked end to end through the interpreter: initializers in typed fields
//! and in `raw_data`, initializers repeated as graph inputs, `Constant` value
//! kinds, and `If` branches with initializers of their own that read
//! outer-scope values.

use d2nn_runtime::Tensor;
use d2nnc::front::onnx::build::{
    graph, model_bytes, node, tensor_bool, tensor_f32, tensor_f32_raw, value_info, value_info_dims, Attr, DataType, Dim, NodeExt,
};
use d2nnc::front::onnx::load_bytes;
use onnx_protobuf::{Message, ModelProto, NodeProto, ValueInfoProto};
use std::collections::HashMap;

/// A node named after its op and first output, as exporters name them.
fn named_node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    node(op, inputs, outputs).with_name(&format!("{op}_{}", outputs[0]))
}

/// A float value of shape [N, 3], N symbolic.
fn batch_by_3(name: &str) -> ValueInfoProto {
    value_info_dims(name, DataType::FLOAT, &[Dim::param("N"), Dim::Fixed(3)])
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
    let then_g = graph(
        "then",
        vec![named_node("Mul", &["x", "w_outer"], &["scaled"]), named_node("Add", &["scaled", "b_then"], &["then_out"])],
        vec![],
        vec![batch_by_3("then_out")],
        vec![tensor_f32_raw("b_then", &[3], &[100.0, 200.0, 300.0])],
    );
    let else_g = graph(
        "else",
        vec![named_node("Sub", &["x", "c_else"], &["else_out"])],
        vec![],
        vec![batch_by_3("else_out")],
        vec![tensor_f32("c_else", &[1], &[1.0])],
    );
    let nodes = vec![
        named_node("ReduceSum", &["x"], &["total"]).with_attr("keepdims", Attr::Int(0)),
        named_node("Constant", &[], &["zero"]).with_attr("value_float", Attr::Float(0.0)),
        named_node("Greater", &["total", "zero"], &["cond"]),
        named_node("If", &["cond"], &["y"]).with_attr("then_branch", Attr::Graph(then_g)).with_attr("else_branch", Attr::Graph(else_g)),
    ];
    // Old IR: the initializer is listed again as a graph input.
    let inputs = vec![batch_by_3("x"), value_info("w_outer", DataType::FLOAT, &[3])];
    let g = graph("if_model", nodes, inputs, vec![batch_by_3("y")], vec![tensor_f32("w_outer", &[3], &[1.0, 2.0, 3.0])]);
    model_bytes(g, 7, 13)
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
    g.initializer.push(tensor_bool("cond", &[], &[false]));
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
    let nodes = vec![
        named_node("Constant", &[], &["k"]).with_attr("value_floats", Attr::Floats(vec![0.5, 1.5, 2.5])),
        named_node("Constant", &[], &["t"]).with_attr("value", Attr::Tensor(tensor_f32_raw("", &[3], &[10.0, 20.0, 30.0]))),
        named_node("Add", &["x", "k"], &["s"]),
        named_node("Mul", &["s", "t"], &["y"]),
    ];
    let g = graph("consts", nodes, vec![value_info("x", DataType::FLOAT, &[3])], vec![value_info("y", DataType::FLOAT, &[3])], vec![]);
    let bytes = model_bytes(g, 8, 17);
    assert_eq!(run(&bytes, Tensor::from_f32(&[3], vec![1.0, 1.0, 1.0]).unwrap()), vec![15.0, 50.0, 105.0]);
}
