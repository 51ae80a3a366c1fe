//! Converters for the elementwise family: matrix products (Gemm, MatMul),
//! unary activations and math, binary and variadic arithmetic, comparisons,
//! logic, Clip, Where, Cast and CastLike.

use crate::front::onnx::ctx::ConvertCtx;
use crate::front::onnx::error::{invalid, unsupported, ConvertResult};
use crate::front::onnx::registry::{OpDef, Registry, MAX_OPSET, MIN_OPSET};
use crate::front::onnx::tensor::dtype_from_onnx;
use crate::ir::{BinaryOp, Op, UnaryOp, VariadicOp};
use d2nn_runtime::Tensor;
use std::ops::RangeInclusive;

/// The attribute `default` that ONNX gives `Selu`'s `alpha` (float32 rounding of the paper's constant).
const SELU_ALPHA: f32 = 1.673_263_2;
/// The attribute `default` that ONNX gives `Selu`'s `gamma`.
const SELU_GAMMA: f32 = 1.050_701;

/// Variadic ops accept any number of operands; this bounds the declared range.
const MANY: usize = usize::MAX;

pub(super) fn register(reg: &mut Registry) {
    let all = MIN_OPSET..=MAX_OPSET;
    let def = |op_type, opsets: RangeInclusive<i64>, inputs, attrs, convert| OpDef {
        op_type,
        opsets,
        inputs,
        outputs: 1..=1,
        attrs,
        convert,
    };

    // `broadcast` only existed up to Gemm-6, but some opset-7 exporters still
    // write it; unidirectional broadcasting of C covers both of its values.
    reg.insert(def("Gemm", all.clone(), 2..=3, &["alpha", "beta", "transA", "transB", "broadcast"], gemm));
    reg.insert(def("MatMul", all.clone(), 2..=2, &[], |_| Ok(Op::MatMul)));

    // Unary ops without attributes, with the opset that introduced each.
    let plain_unary: [(&'static str, i64, Converter); 17] = [
        ("Relu", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Relu))),
        ("Sigmoid", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Sigmoid))),
        ("HardSwish", 14, |_| Ok(Op::Unary(UnaryOp::HardSwish))),
        ("Tanh", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Tanh))),
        ("Softplus", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Softplus))),
        ("Exp", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Exp))),
        ("Log", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Log))),
        ("Sqrt", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Sqrt))),
        ("Reciprocal", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Reciprocal))),
        ("Neg", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Neg))),
        ("Abs", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Abs))),
        ("Erf", 9, |_| Ok(Op::Unary(UnaryOp::Erf))),
        ("Floor", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Floor))),
        ("Ceil", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Ceil))),
        ("Round", 11, |_| Ok(Op::Unary(UnaryOp::Round))),
        ("Sign", 9, |_| Ok(Op::Unary(UnaryOp::Sign))),
        // Not is unchanged since opset 1, and models using only it import opset 1.
        ("Not", 1, |_| Ok(Op::Unary(UnaryOp::Not))),
    ];
    for (op_type, since, convert) in plain_unary {
        reg.insert(def(op_type, since..=MAX_OPSET, 1..=1, &[], convert));
    }

    reg.insert(def("LeakyRelu", all.clone(), 1..=1, &["alpha"], |c| {
        Ok(Op::Unary(UnaryOp::LeakyRelu { alpha: c.attr_float_or("alpha", 0.01)? }))
    }));
    reg.insert(def("HardSigmoid", all.clone(), 1..=1, &["alpha", "beta"], |c| {
        Ok(Op::Unary(UnaryOp::HardSigmoid { alpha: c.attr_float_or("alpha", 0.2)?, beta: c.attr_float_or("beta", 0.5)? }))
    }));
    reg.insert(def("Elu", all.clone(), 1..=1, &["alpha"], |c| {
        Ok(Op::Unary(UnaryOp::Elu { alpha: c.attr_float_or("alpha", 1.0)? }))
    }));
    reg.insert(def("Selu", all.clone(), 1..=1, &["alpha", "gamma"], |c| {
        Ok(Op::Unary(UnaryOp::Selu { alpha: c.attr_float_or("alpha", SELU_ALPHA)?, gamma: c.attr_float_or("gamma", SELU_GAMMA)? }))
    }));

    let binary: [(&'static str, i64, Converter); 14] = [
        ("Add", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Add))),
        ("Sub", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Sub))),
        ("Mul", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Mul))),
        ("Div", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Div))),
        ("Pow", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Pow))),
        ("Greater", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Greater))),
        ("Less", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Less))),
        ("GreaterOrEqual", 12, |_| Ok(Op::Binary(BinaryOp::GreaterOrEqual))),
        ("LessOrEqual", 12, |_| Ok(Op::Binary(BinaryOp::LessOrEqual))),
        ("Equal", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Equal))),
        ("And", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::And))),
        ("Or", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Or))),
        ("Xor", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::Xor))),
        ("PRelu", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::PRelu))),
    ];
    for (op_type, since, convert) in binary {
        reg.insert(def(op_type, since..=MAX_OPSET, 2..=2, &[], convert));
    }

    let variadic: [(&'static str, Converter); 4] = [
        ("Sum", |c| Ok(variadic(c, VariadicOp::Sum))),
        ("Mean", |c| Ok(variadic(c, VariadicOp::Mean))),
        ("Max", |c| Ok(variadic(c, VariadicOp::Max))),
        ("Min", |c| Ok(variadic(c, VariadicOp::Min))),
    ];
    for (op_type, convert) in variadic {
        reg.insert(def(op_type, all.clone(), 1..=MANY, &[], convert));
    }

    reg.insert(def("Clip", all.clone(), 1..=3, &["min", "max"], clip));
    reg.insert(def("Where", 9..=MAX_OPSET, 3..=3, &[], |_| Ok(Op::Where)));
    reg.insert(def("Cast", all, 1..=1, &["to", "saturate", "round_mode"], cast));
    reg.insert(def("CastLike", 15..=MAX_OPSET, 2..=2, &["saturate", "round_mode"], cast_like));
}

type Converter = fn(&mut ConvertCtx) -> ConvertResult<Op>;

fn gemm(c: &mut ConvertCtx) -> ConvertResult<Op> {
    let flag = |c: &ConvertCtx, name: &str| -> ConvertResult<bool> {
        match c.attr_int_or(name, 0)? {
            0 => Ok(false),
            1 => Ok(true),
            v => invalid(format!("attribute `{name}` = {v} must be 0 or 1")),
        }
    };
    // Gemm-6's `broadcast = 0` demanded C be exactly [M, N]; broadcasting a
    // C of that shape is a no-op, so both values convert the same way.
    flag(c, "broadcast")?;
    Ok(Op::Gemm {
        alpha: c.attr_float_or("alpha", 1.0)?,
        beta: c.attr_float_or("beta", 1.0)?,
        trans_a: flag(c, "transA")?,
        trans_b: flag(c, "transB")?,
    })
}

/// Two-operand Max/Min/Sum become binary ops so that shape arithmetic such as
/// `Max(shape, 1)` stays symbolically evaluable; `Mean` has no binary form.
fn variadic(c: &ConvertCtx, op: VariadicOp) -> Op {
    let binary = match op {
        VariadicOp::Sum => Some(BinaryOp::Add),
        VariadicOp::Max => Some(BinaryOp::Max),
        VariadicOp::Min => Some(BinaryOp::Min),
        VariadicOp::Mean => None,
    };
    match binary {
        Some(b) if c.inputs.len() == 2 && c.inputs.iter().all(Option::is_some) => Op::Binary(b),
        _ => Op::Variadic(op),
    }
}

fn clip(c: &mut ConvertCtx) -> ConvertResult<Op> {
    if c.opset >= 11 {
        if c.has_attr("min") || c.has_attr("max") {
            return invalid("from opset 11 Clip takes `min` and `max` as inputs, not attributes");
        }
        return Ok(Op::Clip);
    }
    if c.inputs.len() != 1 {
        return invalid(format!("before opset 11 Clip has one input, this node has {}", c.inputs.len()));
    }
    // Clip-6's bounds default to ±FLT_MAX rather than "absent", so ±inf inputs
    // are clamped to finite values; materialising both keeps that exact.
    let min = c.attr_float_or("min", f32::MIN)?;
    let max = c.attr_float_or("max", f32::MAX)?;
    let min_v = c.add_const("min", Tensor::scalar_f32(min));
    let max_v = c.add_const("max", Tensor::scalar_f32(max));
    c.set_input(1, Some(min_v));
    c.set_input(2, Some(max_v));
    Ok(Op::Clip)
}

fn cast(c: &mut ConvertCtx) -> ConvertResult<Op> {
    let code = c.require("to", c.attr_int("to"))?;
    let code = i32::try_from(code).or_else(|_| invalid(format!("attribute `to` = {code} is not an ONNX element type")))?;
    let to = match dtype_from_onnx(code) {
        Ok(dt) => dt,
        Err(reason) => return unsupported(format!("attribute `to`: {reason}")),
    };
    float8_only_attrs(c)?;
    Ok(Op::Cast { to })
}

/// `CastLike(x, like)` is `Cast` to `like`'s dtype, which is known statically.
fn cast_like(c: &mut ConvertCtx) -> ConvertResult<Op> {
    let Some(like) = c.input_type(1) else { return invalid("input 1 (`target_type`) is required") };
    let to = like.dtype;
    float8_only_attrs(c)?;
    // Only the dtype of `target_type` matters; the IR Cast reads one input.
    c.inputs.truncate(1);
    Ok(Op::Cast { to })
}

/// `saturate` and `round_mode` only affect float8 targets, which d2nnc
/// rejects, so every value of them means the same here; they are still
/// type-checked.
fn float8_only_attrs(c: &ConvertCtx) -> ConvertResult<()> {
    c.attr_int("saturate")?;
    c.attr_string("round_mode")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::onnx::load_bytes;
    use crate::ir::Graph;
    use onnx_protobuf::attribute_proto::AttributeType;
    use onnx_protobuf::tensor_proto::DataType;
    use onnx_protobuf::type_proto::{Tensor as TypeTensor, Value as TypeValue};
    use onnx_protobuf::*;
    use std::collections::HashMap;

    fn value_info(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
        let mut shape = TensorShapeProto::new();
        for &d in dims {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.set_dim_value(d);
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

    enum Attr {
        Int(i64),
        Float(f32),
    }

    /// One-node model over f32 inputs `x0..` of shape [3]; returns the load result.
    fn load_node(op: &str, opset: i64, inputs: usize, attrs: &[(&str, Attr)]) -> Result<Graph, String> {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = "n".into();
        n.input = (0..inputs).map(|i| format!("x{i}")).collect();
        n.output = vec!["y".into()];
        for (name, value) in attrs {
            let mut a = AttributeProto::new();
            a.name = name.to_string();
            match value {
                Attr::Int(i) => (a.i, a.type_) = (*i, AttributeType::INT.into()),
                Attr::Float(f) => (a.f, a.type_) = (*f, AttributeType::FLOAT.into()),
            }
            n.attribute.push(a);
        }
        let mut g = GraphProto::new();
        g.node.push(n);
        g.input = (0..inputs).map(|i| value_info(&format!("x{i}"), DataType::FLOAT, &[3])).collect();
        g.output.push(value_info("y", DataType::FLOAT, &[3]));
        let mut m = ModelProto::new();
        m.ir_version = 7;
        let mut imp = OperatorSetIdProto::new();
        imp.version = opset;
        m.opset_import.push(imp);
        m.graph = Some(g).into();
        load_bytes(&m.write_to_bytes().map_err(|e| e.to_string())?, None, "test").map(|m| m.graph).map_err(|e| e.to_string())
    }

    fn only_op(g: &Graph) -> Op {
        g.nodes[g.regions[g.root].nodes[0]].op.clone()
    }

    #[test]
    fn old_clip_bounds_become_constant_inputs() {
        let g = load_node("Clip", 9, 1, &[("min", Attr::Float(-1.0))]).unwrap();
        let node = &g.nodes[g.regions[g.root].nodes[0]];
        assert_eq!(node.op, Op::Clip);
        let bound = |i: usize| node.input(i).and_then(|v| g.const_value(v)).map(Tensor::to_f32_vec);
        assert_eq!(bound(1), Some(vec![-1.0]));
        // Clip-6's default max is FLT_MAX, so +inf is clamped to it.
        assert_eq!(bound(2), Some(vec![f32::MAX]));
        let inputs = HashMap::from([("x0".to_string(), Tensor::from_f32(&[3], vec![f32::INFINITY, -5.0, 0.5]).unwrap())]);
        let y = crate::interp::run(&g, &inputs).unwrap();
        assert_eq!(y[0].to_f32_vec(), vec![f32::MAX, -1.0, 0.5]);
    }

    #[test]
    fn new_clip_rejects_attribute_bounds() {
        let err = load_node("Clip", 13, 1, &[("min", Attr::Float(0.0))]).unwrap_err();
        assert!(err.contains("`min`"), "{err}");
    }

    #[test]
    fn two_operand_max_is_binary() {
        assert_eq!(only_op(&load_node("Max", 13, 2, &[]).unwrap()), Op::Binary(BinaryOp::Max));
        assert_eq!(only_op(&load_node("Sum", 13, 2, &[]).unwrap()), Op::Binary(BinaryOp::Add));
        assert_eq!(only_op(&load_node("Max", 13, 3, &[]).unwrap()), Op::Variadic(VariadicOp::Max));
        assert_eq!(only_op(&load_node("Mean", 13, 2, &[]).unwrap()), Op::Variadic(VariadicOp::Mean));
    }

    #[test]
    fn cast_names_unsupported_targets() {
        let err = load_node("Cast", 13, 1, &[("to", Attr::Int(DataType::DOUBLE as i64))]).unwrap_err();
        assert!(err.contains("DOUBLE") && err.contains("unsupported"), "{err}");
        let g = load_node("Cast", 19, 1, &[("to", Attr::Int(DataType::INT64 as i64)), ("saturate", Attr::Int(0))]).unwrap();
        assert_eq!(only_op(&g), Op::Cast { to: d2nn_runtime::DType::I64 });
    }

    #[test]
    fn cast_like_takes_the_second_operands_dtype() {
        let g = load_node("CastLike", 15, 2, &[]).unwrap();
        let node = &g.nodes[g.regions[g.root].nodes[0]];
        assert_eq!(node.op, Op::Cast { to: d2nn_runtime::DType::F32 });
        assert_eq!(node.inputs.len(), 1);
    }

    #[test]
    fn gemm_flags_must_be_boolean() {
        let err = load_node("Gemm", 13, 2, &[("transA", Attr::Int(2))]).unwrap_err();
        assert!(err.contains("transA"), "{err}");
    }

    #[test]
    fn selu_defaults_are_the_onnx_constants() {
        // The schema's defaults, as printed by onnx.defs.
        assert_eq!(SELU_ALPHA, 1.673_263_192_176_818_8_f64 as f32);
        assert_eq!(SELU_GAMMA, 1.050_701_022_148_132_3_f64 as f32);
    }

    #[test]
    fn ops_respect_their_first_opset() {
        let err = load_node("HardSwish", 13, 1, &[]).unwrap_err();
        assert!(err.contains("opsets 14"), "{err}");
    }
}
