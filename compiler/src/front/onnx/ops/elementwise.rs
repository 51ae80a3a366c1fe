//! Converters for the elementwise family: matrix products (Gemm, MatMul),
//! unary activations and math, binary and variadic arithmetic, comparisons,
//! logic, Clip, Where and Cast.

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
    let plain_unary: [(&'static str, i64, Converter); 18] = [
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
        ("Not", MIN_OPSET, |_| Ok(Op::Unary(UnaryOp::Not))),
        ("PRelu", MIN_OPSET, |_| Ok(Op::Binary(BinaryOp::PRelu))),
    ];
    for (op_type, since, convert) in plain_unary {
        let inputs = if op_type == "PRelu" { 2..=2 } else { 1..=1 };
        reg.insert(def(op_type, since..=MAX_OPSET, inputs, &[], convert));
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

    let binary: [(&'static str, i64, Converter); 13] = [
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
    // `saturate` and `round_mode` only affect float8 targets, which d2nnc
    // rejects above, so every value of them means the same here.
    c.attr_int("saturate")?;
    c.attr_string("round_mode")?;
    Ok(Op::Cast { to })
}
