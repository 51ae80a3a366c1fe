//! Converter tests: opset-dependent forms (legacy softmax, BatchNorm
//! `spatial`), attribute defaults and the reasons given for rejected values.

use crate::front::onnx::{load_bytes, LoadError};
use crate::ir::{Op, Padding, PoolKind};
use d2nn_runtime::Tensor;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::type_proto::{Tensor as TypeTensor, Value as TypeValue};
use onnx_protobuf::*;
use std::collections::HashMap;

enum Attr {
    Int(i64),
    Ints(&'static [i64]),
    Float(f32),
    Str(&'static str),
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    let ty = match value {
        Attr::Int(i) => {
            a.i = *i;
            AttributeType::INT
        }
        Attr::Ints(v) => {
            a.ints = v.to_vec();
            AttributeType::INTS
        }
        Attr::Float(f) => {
            a.f = *f;
            AttributeType::FLOAT
        }
        Attr::Str(s) => {
            a.s = s.as_bytes().to_vec();
            AttributeType::STRING
        }
    };
    a.type_ = ty.into();
    a
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for &d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.set_dim_value(d);
        shape.dim.push(dim);
    }
    let mut tt = TypeTensor::new();
    tt.elem_type = DataType::FLOAT as i32;
    tt.shape = Some(shape).into();
    let mut tp = TypeProto::new();
    tp.value = Some(TypeValue::TensorType(tt));
    let mut vi = ValueInfoProto::new();
    vi.name = name.into();
    vi.type_ = Some(tp).into();
    vi
}

fn initializer(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = DataType::FLOAT as i32;
    t.float_data = data;
    t
}

/// A one-node model reading graph input `x` of `x_dims` plus `inits`, writing `outputs`.
fn model(
    opset: i64,
    op_type: &str,
    x_dims: &[i64],
    inits: Vec<TensorProto>,
    attrs: &[(&str, Attr)],
    outputs: &[&str],
) -> Vec<u8> {
    let mut n = NodeProto::new();
    n.op_type = op_type.into();
    n.input = std::iter::once("x".to_string()).chain(inits.iter().map(|t| t.name.clone())).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n.attribute = attrs.iter().map(|(name, v)| attribute(name, v)).collect();
    let mut g = GraphProto::new();
    g.name = "t".into();
    g.node.push(n);
    g.initializer = inits;
    g.input.push(value_info("x", x_dims));
    g.output = outputs.iter().map(|o| value_info(o, &[])).collect();
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut op = OperatorSetIdProto::new();
    op.version = opset;
    m.opset_import.push(op);
    m.graph = Some(g).into();
    m.write_to_bytes().unwrap()
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
    let w = initializer("w", &[4, 2, 3, 1], vec![0.0; 24]);
    let bytes = model(13, "Conv", &[1, 2, 5, 5], vec![w], &[("auto_pad", Attr::Str("VALID")), ("strides", Attr::Ints(&[2, 1]))], &["y"]);
    let (op, m) = load_op(&bytes).unwrap();
    let Op::Conv(a) = op else { panic!("{op:?}") };
    assert_eq!((a.kernel, a.strides, a.dilations, a.group), (vec![3, 1], vec![2, 1], vec![1, 1], 1));
    assert_eq!(a.padding, Padding::Explicit(vec![0; 4]));
    let y = m.graph.outputs()[0];
    assert_eq!(m.graph.values[y].ty.known_shape(), Some(vec![1, 4, 2, 5]));
}

#[test]
fn conv_transpose_takes_the_spatial_part_of_a_full_output_shape() {
    let w = initializer("w", &[1, 2, 3, 3], vec![1.0; 18]);
    let attrs = [("strides", Attr::Ints(&[3, 2])), ("output_shape", Attr::Ints(&[1, 2, 10, 8]))];
    let (op, m) = load_op(&model(13, "ConvTranspose", &[1, 1, 3, 3], vec![w], &attrs, &["y"])).unwrap();
    let Op::ConvTranspose(a) = op else { panic!("{op:?}") };
    assert_eq!(a.output_shape, Some(vec![10, 8]));
    let y = m.graph.outputs()[0];
    assert_eq!(m.graph.values[y].ty.known_shape(), Some(vec![1, 2, 10, 8]));
}

#[test]
fn rejected_attribute_values_say_why() {
    let stats = || (0..4).map(|i| initializer(&format!("s{i}"), &[2], vec![1.0, 1.0])).collect::<Vec<_>>();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (model(7, "BatchNormalization", &[1, 2, 3], stats(), &[("spatial", Attr::Int(0))], &["y"]), "`spatial` = 0 is not supported"),
        (model(15, "BatchNormalization", &[1, 2, 3], stats(), &[("training_mode", Attr::Int(1))], &["y"]), "`training_mode` = 1"),
        (model(15, "BatchNormalization", &[1, 2, 3], stats(), &[], &["y", "mean", "var"]), "only exist for training"),
        (model(9, "BatchNormalization", &[1, 2, 3], stats(), &[("spatial", Attr::Int(1))], &["y"]), "removed in opset 9"),
        (model(6, "BatchNormalization", &[1, 2, 3], stats(), &[], &["y"]), "`is_test` = 0"),
        (model(5, "BatchNormalization", &[1, 2, 3], stats(), &[("consumed_inputs", Attr::Ints(&[0, 0, 0, 1, 1]))], &["y"]), "`consumed_inputs` is not supported"),
        (
            model(17, "LayerNormalization", &[2, 3], vec![initializer("s", &[3], vec![1.0; 3])], &[("stash_type", Attr::Int(0))], &["y"]),
            "`stash_type` = 0 is not supported",
        ),
        (model(13, "MaxPool", &[1, 1, 4, 4], vec![], &[("kernel_shape", Attr::Ints(&[2, 2])), ("storage_order", Attr::Int(2))], &["y", "i"]), "`storage_order` = 2"),
        (model(13, "MaxPool", &[1, 1, 4, 4], vec![], &[("kernel_shape", Attr::Ints(&[2, 2])), ("pads", Attr::Ints(&[-1, 0, 0, 0]))], &["y"]), "negative pads"),
        (model(13, "AveragePool", &[1, 1, 4, 4], vec![], &[("kernel_shape", Attr::Ints(&[2, 2])), ("auto_pad", Attr::Str("SAME"))], &["y"]), "auto_pad"),
        (model(13, "AveragePool", &[1, 1, 4, 4], vec![], &[("strides", Attr::Ints(&[2, 2]))], &["y"]), "`kernel_shape` is missing"),
        (model(13, "MaxPool", &[1, 1, 4, 4], vec![], &[("kernel_shape", Attr::Ints(&[2, 2])), ("strides", Attr::Ints(&[2]))], &["y"]), "`strides` has 1 entries"),
        (model(13, "LRN", &[1, 2, 2, 2], vec![], &[("alpha", Attr::Float(0.1))], &["y"]), "`size` is missing"),
        (model(13, "Conv", &[1, 2, 4, 4], vec![initializer("w", &[2, 2, 3, 3], vec![0.0; 36])], &[("kernel_shape", Attr::Ints(&[2, 2]))], &["y"]), "does not match"),
    ];
    for (bytes, want) in cases {
        let reason = unsupported_reason(&bytes);
        assert!(reason.contains(want), "expected {want:?} in {reason:?}");
    }
}

#[test]
fn max_pool_storage_order_numbers_the_indices() {
    let attrs = [("kernel_shape", Attr::Ints(&[2, 2])), ("storage_order", Attr::Int(1))];
    let (op, m) = load_op(&model(12, "MaxPool", &[1, 1, 2, 2], vec![], &attrs, &["y", "i"])).unwrap();
    assert!(matches!(op, Op::Pool { kind: PoolKind::Max { column_major_indices: true }, .. }), "{op:?}");
    let x = Tensor::from_f32(&[1, 1, 2, 2], vec![0.0, 3.0, 1.0, 2.0]).unwrap();
    let outs = crate::interp::run(&m.graph, &HashMap::from([("x".to_string(), x)])).unwrap();
    // The maximum sits at row 0, column 1: flat index 1 row-major, 2 column-major.
    assert_eq!(outs[1], Tensor::from_i64(&[1, 1, 1, 1], vec![2]).unwrap());
}

#[test]
fn opset_6_batch_norm_in_test_mode_loads() {
    let stats = (0..4).map(|i| initializer(&format!("s{i}"), &[2], vec![1.0, 1.0])).collect();
    let (op, _) = load_op(&model(6, "BatchNormalization", &[1, 2, 3], stats, &[("is_test", Attr::Int(1))], &["y"])).unwrap();
    assert_eq!(op, Op::BatchNorm { epsilon: 1e-5 });
}

#[test]
fn pool_defaults_and_ceil_mode() {
    let attrs = [("kernel_shape", Attr::Ints(&[3, 3])), ("strides", Attr::Ints(&[2, 2])), ("ceil_mode", Attr::Int(1))];
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
