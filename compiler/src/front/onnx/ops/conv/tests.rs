//! Converter tests: opset-dependent forms (legacy softmax, BatchNorm
//! `spatial`), attribute defaults and the reasons given for rejected values.

use crate::front::onnx::build::{graph, model_bytes, node, tensor_f32, value_info, Attr, DataType, NodeExt};
use crate::front::onnx::{load_bytes, LoadError};
use crate::ir::{Op, Padding, PoolKind};
use d2nn_runtime::Tensor;
use onnx_protobuf::TensorProto;
use std::collections::HashMap;

/// A one-node model reading graph input `x` of `x_dims` plus `inits`, writing `outputs`.
fn model(
    opset: i64,
    op_type: &str,
    x_dims: &[i64],
    inits: Vec<TensorProto>,
    attrs: &[(&str, Attr)],
    outputs: &[&str],
) -> Vec<u8> {
    let inputs: Vec<&str> = std::iter::once("x").chain(inits.iter().map(|t| t.name.as_str())).collect();
    let n = node(op_type, &inputs, outputs).with_attrs(attrs.iter().cloned());
    let outs = outputs.iter().map(|o| value_info(o, DataType::FLOAT, &[])).collect();
    model_bytes(graph("t", vec![n], vec![value_info("x", DataType::FLOAT, x_dims)], outs, inits), 8, opset)
}

fn load_op(bytes: &[u8]) -> Result<(Op, crate::front::onnx::Model), String> {
    let m = load_bytes(bytes, None, "t.onnx").map_err(|e| e.to_string())?;
    let node = m.graph.walk_nodes()[0];
    Ok((m.graph.nodes[node].op.clone(), m))
}

fn unsupported_reason(bytes: &[u8]) -> String {
    match load_bytes(bytes, None, "t.onnx") {
        Err(LoadError::Nodes(issues)) => issues[0].reason.clone(),
        other => panic!("expected a node issue, got {other:?}"),
    }
}

#[test]
fn legacy_softmax_coerces_unless_the_axis_is_last() {
    let (op, m) = load_op(&model(11, "Softmax", &[2, 3, 4], vec![], &[], &["y"])).unwrap();
    assert_eq!(op, Op::Softmax { axis: 1, log: false, coerce_2d: true });
    let x = Tensor::from_f32(&[2, 3, 4], (0..24).map(|i| i as f32).collect()).unwrap();
    let y = crate::interp::run(&m.graph, &HashMap::from([("x".to_string(), x)])).unwrap().remove(0);
    // The 12 values after the batch axis sum to one.
    let total: f32 = y.to_f32_vec()[..12].iter().sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");

    let (op, _) = load_op(&model(12, "LogSoftmax", &[2, 3, 4], vec![], &[("axis", Attr::Int(-1))], &["y"])).unwrap();
    assert_eq!(op, Op::Softmax { axis: -1, log: true, coerce_2d: false });
    let (op, _) = load_op(&model(13, "Softmax", &[2, 3, 4], vec![], &[], &["y"])).unwrap();
    assert_eq!(op, Op::Softmax { axis: -1, log: false, coerce_2d: false });
}

#[test]
fn conv_kernel_comes_from_the_weight_and_valid_means_no_pads() {
    let w = tensor_f32("w", &[4, 2, 3, 1], &[0.0; 24]);
    let bytes = model(13, "Conv", &[1, 2, 5, 5], vec![w], &[("auto_pad", Attr::Str("VALID".into())), ("strides", Attr::Ints(vec![2, 1]))], &["y"]);
    let (op, m) = load_op(&bytes).unwrap();
    let Op::Conv(a) = op else { panic!("{op:?}") };
    assert_eq!((a.kernel, a.strides, a.dilations, a.group), (vec![3, 1], vec![2, 1], vec![1, 1], 1));
    assert_eq!(a.padding, Padding::Explicit(vec![0; 4]));
    let y = m.graph.outputs()[0];
    assert_eq!(m.graph.values[y].ty.known_shape(), Some(vec![1, 4, 2, 5]));
}

#[test]
fn conv_transpose_takes_the_spatial_part_of_a_full_output_shape() {
    let w = tensor_f32("w", &[1, 2, 3, 3], &[1.0; 18]);
    let attrs = [("strides", Attr::Ints(vec![3, 2])), ("output_shape", Attr::Ints(vec![1, 2, 10, 8]))];
    let (op, m) = load_op(&model(13, "ConvTranspose", &[1, 1, 3, 3], vec![w], &attrs, &["y"])).unwrap();
    let Op::ConvTranspose(a) = op else { panic!("{op:?}") };
    assert_eq!(a.output_shape, Some(vec![10, 8]));
    let y = m.graph.outputs()[0];
    assert_eq!(m.graph.values[y].ty.known_shape(), Some(vec![1, 2, 10, 8]));
}

#[test]
fn rejected_attribute_values_say_why() {
    let stats = || (0..4).map(|i| tensor_f32(&format!("s{i}"), &[2], &[1.0, 1.0])).collect::<Vec<_>>();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (model(7, "BatchNormalization", &[1, 2, 3], stats(), &[("spatial", Attr::Int(0))], &["y"]), "`spatial` = 0 is not supported"),
        (model(15, "BatchNormalization", &[1, 2, 3], stats(), &[("training_mode", Attr::Int(1))], &["y"]), "`training_mode` = 1"),
        (model(15, "BatchNormalization", &[1, 2, 3], stats(), &[], &["y", "mean", "var"]), "only exist for training"),
        (model(9, "BatchNormalization", &[1, 2, 3], stats(), &[("spatial", Attr::Int(1))], &["y"]), "removed in opset 9"),
        (model(6, "BatchNormalization", &[1, 2, 3], stats(), &[], &["y"]), "`is_test` = 0"),
        (model(5, "BatchNormalization", &[1, 2, 3], stats(), &[("consumed_inputs", Attr::Ints(vec![0, 0, 0, 1, 1]))], &["y"]), "`consumed_inputs` is not supported"),
        (
            model(17, "LayerNormalization", &[2, 3], vec![tensor_f32("s", &[3], &[1.0; 3])], &[("stash_type", Attr::Int(0))], &["y"]),
            "`stash_type` = 0 is not supported",
        ),
        (model(13, "MaxPool", &[1, 1, 4, 4], vec![], &[("kernel_shape", Attr::Ints(vec![2, 2])), ("storage_order", Attr::Int(2))], &["y", "i"]), "`storage_order` = 2"),
        (model(13, "MaxPool", &[1, 1, 4, 4], vec![], &[("kernel_shape", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![-1, 0, 0, 0]))], &["y"]), "negative pads"),
        (model(13, "AveragePool", &[1, 1, 4, 4], vec![], &[("kernel_shape", Attr::Ints(vec![2, 2])), ("auto_pad", Attr::Str("SAME".into()))], &["y"]), "auto_pad"),
        (model(13, "AveragePool", &[1, 1, 4, 4], vec![], &[("strides", Attr::Ints(vec![2, 2]))], &["y"]), "`kernel_shape` is missing"),
        (model(13, "MaxPool", &[1, 1, 4, 4], vec![], &[("kernel_shape", Attr::Ints(vec![2, 2])), ("strides", Attr::Ints(vec![2]))], &["y"]), "`strides` has 1 entries"),
        (model(13, "LRN", &[1, 2, 2, 2], vec![], &[("alpha", Attr::Float(0.1))], &["y"]), "`size` is missing"),
        (model(13, "Conv", &[1, 2, 4, 4], vec![tensor_f32("w", &[2, 2, 3, 3], &[0.0; 36])], &[("kernel_shape", Attr::Ints(vec![2, 2]))], &["y"]), "does not match"),
    ];
    for (bytes, want) in cases {
        let reason = unsupported_reason(&bytes);
        assert!(reason.contains(want), "expected {want:?} in {reason:?}");
    }
}

#[test]
fn max_pool_storage_order_numbers_the_indices() {
    let attrs = [("kernel_shape", Attr::Ints(vec![2, 2])), ("storage_order", Attr::Int(1))];
    let (op, m) = load_op(&model(12, "MaxPool", &[1, 1, 2, 2], vec![], &attrs, &["y", "i"])).unwrap();
    assert!(matches!(op, Op::Pool { kind: PoolKind::Max { column_major_indices: true }, .. }), "{op:?}");
    let x = Tensor::from_f32(&[1, 1, 2, 2], vec![0.0, 3.0, 1.0, 2.0]).unwrap();
    let outs = crate::interp::run(&m.graph, &HashMap::from([("x".to_string(), x)])).unwrap();
    // The maximum sits at row 0, column 1: flat index 1 row-major, 2 column-major.
    assert_eq!(outs[1], Tensor::from_i64(&[1, 1, 1, 1], vec![2]).unwrap());
}

#[test]
fn opset_6_batch_norm_in_test_mode_loads() {
    let stats = (0..4).map(|i| tensor_f32(&format!("s{i}"), &[2], &[1.0, 1.0])).collect();
    let (op, _) = load_op(&model(6, "BatchNormalization", &[1, 2, 3], stats, &[("is_test", Attr::Int(1))], &["y"])).unwrap();
    assert_eq!(op, Op::BatchNorm { epsilon: 1e-5 });
}

#[test]
fn pool_defaults_and_ceil_mode() {
    let attrs = [("kernel_shape", Attr::Ints(vec![3, 3])), ("strides", Attr::Ints(vec![2, 2])), ("ceil_mode", Attr::Int(1))];
    let (op, m) = load_op(&model(10, "AveragePool", &[1, 1, 4, 4], vec![], &attrs, &["y"])).unwrap();
    let Op::Pool { kind, attrs } = op else { panic!("{op:?}") };
    assert_eq!(kind, crate::ir::PoolKind::Average { count_include_pad: false });
    assert!(attrs.ceil_mode);
    assert_eq!(attrs.dilations, vec![1, 1]);
    let x = Tensor::from_f32(&[1, 1, 4, 4], (1..=16).map(|i| i as f32).collect()).unwrap();
    let y = crate::interp::run(&m.graph, &HashMap::from([("x".to_string(), x)])).unwrap().remove(0);
    // The ONNX test `averagepool_2d_ceil`.
    assert_eq!(y.to_f32_vec(), vec![6.0, 7.5, 12.0, 13.5]);
}
