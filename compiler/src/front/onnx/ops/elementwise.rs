//! Converters for the elementwise family: matrix products (Gemm, MatMul),
//! unary activations and math, binary and variadic arithmetic, comparisons,
//! logic, Clip, Where, Cast and CastLike.

use crate::front::onnx::ctx::ConvertCtx;
use crate::front::onnx::error::{invalid, unsupported, ConvertResult};
use crate::front::onnx::registry::{OpDef, Registry, MAX_OPSET};
use crate::front::onnx::tensor::dtype_from_onnx;
use crate::ir::{BinaryOp, Op, UnaryOp, VariadicOp};
use d2nn_runtime::Tensor;
use std::ops::RangeInclusive;

mod legacy;

/// The attribute `default` that ONNX gives `Selu`'s `alpha` (float32 rounding of the paper's constant).
const SELU_ALPHA: f32 = 1.673_263_2;
/// The attribute `default` that ONNX gives `Selu`'s `gamma`.
const SELU_GAMMA: f32 = 1.050_701;
/// Selu-1's default `alpha`.
const SELU_V1_ALPHA: f32 = 1.6732;
/// Selu-1's default `gamma`.
const SELU_V1_GAMMA: f32 = 1.0507;

/// Variadic ops accept any number of operands; this bounds the declared range.
const MANY: usize = usize::MAX;

/// Ops whose only change since opset 1 is the removed `consumed_inputs` hint
/// (which the attribute check rejects) start here; ops with legacy
/// broadcasting convert it in [`legacy`].
const SINCE_OPSET_1: i64 = 1;

pub(super) fn register(reg: &mut Registry) {
    let all = SINCE_OPSET_1..=MAX_OPSET;
    let def = |op_type, opsets: RangeInclusive<i64>, inputs, attrs, convert| OpDef {
        op_type,
        opsets,
        inputs,
        outputs: 1..=1,
        attrs,
        convert,
    };

    // `broadcast` is Gemm's up to opset 6, but some opset-7 exporters still
    // write it; unidirectional broadcasting of C covers both of its values then.
    reg.insert(def("Gemm", all.clone(), 2..=3, &["alpha", "beta", "transA", "transB", "broadcast"], gemm));
    reg.insert(def("MatMul", all.clone(), 2..=2, &[], |_| Ok(Op::MatMul)));

    // Unary ops without attributes, with the opset that introduced each.
    let plain_unary: [(&'static str, i64, Converter); 17] = [
        ("Relu", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Relu))),
        ("Sigmoid", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Sigmoid))),
        ("HardSwish", 14, |_| Ok(Op::Unary(UnaryOp::HardSwish))),
        ("Tanh", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Tanh))),
        ("Softplus", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Softplus))),
        ("Exp", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Exp))),
        ("Log", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Log))),
        ("Sqrt", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Sqrt))),
        ("Reciprocal", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Reciprocal))),
        ("Neg", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Neg))),
        ("Abs", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Abs))),
        ("Erf", 9, |_| Ok(Op::Unary(UnaryOp::Erf))),
        ("Floor", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Floor))),
        ("Ceil", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Ceil))),
        ("Round", 11, |_| Ok(Op::Unary(UnaryOp::Round))),
        ("Sign", 9, |_| Ok(Op::Unary(UnaryOp::Sign))),
        ("Not", SINCE_OPSET_1, |_| Ok(Op::Unary(UnaryOp::Not))),
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
    reg.insert(def("Selu", all.clone(), 1..=1, &["alpha", "gamma"], selu));

    let binary: [(&'static str, i64, Converter); 13] = [
        ("Add", SINCE_OPSET_1, |c| binary(c, BinaryOp::Add)),
        ("Sub", SINCE_OPSET_1, |c| binary(c, BinaryOp::Sub)),
        ("Mul", SINCE_OPSET_1, |c| binary(c, BinaryOp::Mul)),
        ("Div", SINCE_OPSET_1, |c| binary(c, BinaryOp::Div)),
        ("Pow", SINCE_OPSET_1, |c| binary(c, BinaryOp::Pow)),
        ("Greater", SINCE_OPSET_1, |c| binary(c, BinaryOp::Greater)),
        ("Less", SINCE_OPSET_1, |c| binary(c, BinaryOp::Less)),
        ("GreaterOrEqual", 12, |c| binary(c, BinaryOp::GreaterOrEqual)),
        ("LessOrEqual", 12, |c| binary(c, BinaryOp::LessOrEqual)),
        ("Equal", SINCE_OPSET_1, |c| binary(c, BinaryOp::Equal)),
        ("And", SINCE_OPSET_1, |c| binary(c, BinaryOp::And)),
        ("Or", SINCE_OPSET_1, |c| binary(c, BinaryOp::Or)),
        ("Xor", SINCE_OPSET_1, |c| binary(c, BinaryOp::Xor)),
    ];
    for (op_type, since, convert) in binary {
        reg.insert(def(op_type, since..=MAX_OPSET, 2..=2, &["broadcast", "axis"], convert));
    }
    reg.insert(def("PRelu", all.clone(), 2..=2, &[], |c| {
        if c.opset < legacy::NUMPY_BROADCAST_SINCE {
            legacy::prelu_slope(c)?;
        }
        Ok(Op::Binary(BinaryOp::PRelu))
    }));

    let variadic: [(&'static str, Converter); 4] = [
        ("Sum", |c| variadic(c, VariadicOp::Sum)),
        ("Mean", |c| variadic(c, VariadicOp::Mean)),
        ("Max", |c| variadic(c, VariadicOp::Max)),
        ("Min", |c| variadic(c, VariadicOp::Min)),
    ];
    for (op_type, convert) in variadic {
        reg.insert(def(op_type, all.clone(), 1..=MANY, &[], convert));
    }

    reg.insert(def("Clip", all.clone(), 1..=3, &["min", "max"], clip));
    reg.insert(def("Where", 9..=MAX_OPSET, 3..=3, &[], |_| Ok(Op::Where)));
    // Cast-1 named the target type with a string; Cast-6 on has today's form.
    reg.insert(def("Cast", 6..=MAX_OPSET, 1..=1, &["to", "saturate", "round_mode"], cast));
    reg.insert(def("CastLike", 15..=MAX_OPSET, 2..=2, &["saturate", "round_mode"], cast_like));
}

type Converter = fn(&mut ConvertCtx) -> ConvertResult<Op>;

fn gemm(c: &mut ConvertCtx) -> ConvertResult<Op> {
    let broadcast = legacy::flag(c, "broadcast")?;
    let (trans_a, trans_b) = (legacy::flag(c, "transA")?, legacy::flag(c, "transB")?);
    if c.opset < legacy::NUMPY_BROADCAST_SINCE {
        legacy::gemm_c(c, broadcast, trans_a, trans_b)?;
    }
    // From opset 7 C broadcasts unidirectionally, which `broadcast = 1` also
    // meant, and a C of the output shape (`broadcast = 0`) broadcasts trivially.
    Ok(Op::Gemm { alpha: c.attr_float_or("alpha", 1.0)?, beta: c.attr_float_or("beta", 1.0)?, trans_a, trans_b })
}

/// Selu-1's defaults were four-digit roundings of the constants Selu-6 spells out.
fn selu(c: &mut ConvertCtx) -> ConvertResult<Op> {
    let (alpha, gamma) = if c.opset < 6 { (SELU_V1_ALPHA, SELU_V1_GAMMA) } else { (SELU_ALPHA, SELU_GAMMA) };
    Ok(Op::Unary(UnaryOp::Selu { alpha: c.attr_float_or("alpha", alpha)?, gamma: c.attr_float_or("gamma", gamma)? }))
}

fn binary(c: &mut ConvertCtx, op: BinaryOp) -> ConvertResult<Op> {
    if c.opset < legacy::NUMPY_BROADCAST_SINCE {
        legacy::broadcast_operand(c)?;
    } else {
        legacy::reject_broadcast_attrs(c)?;
    }
    Ok(Op::Binary(op))
}

/// Two-operand Max/Min/Sum become binary ops so that shape arithmetic such as
/// `Max(shape, 1)` stays symbolically evaluable; `Mean` has no binary form.
fn variadic(c: &mut ConvertCtx, op: VariadicOp) -> ConvertResult<Op> {
    if c.opset < 8 {
        legacy::variadic_same_shapes(c)?;
    }
    let binary = match op {
        VariadicOp::Sum => Some(BinaryOp::Add),
        VariadicOp::Max => Some(BinaryOp::Max),
        VariadicOp::Min => Some(BinaryOp::Min),
        VariadicOp::Mean => None,
    };
    Ok(match binary {
        Some(b) if c.inputs.len() == 2 && c.inputs.iter().all(Option::is_some) => Op::Binary(b),
        _ => Op::Variadic(op),
    })
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
    // Clip-1's absent bounds do not clamp at all.
    let (lowest, highest) = if c.opset < 6 { (f32::NEG_INFINITY, f32::INFINITY) } else { (f32::MIN, f32::MAX) };
    let min = c.attr_float_or("min", lowest)?;
    let max = c.attr_float_or("max", highest)?;
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
    use crate::front::onnx::build::{graph, model_bytes, node, tensor_f32, value_info, Attr, DataType, NodeExt};
    use crate::front::onnx::load_bytes;
    use crate::ir::Graph;
    use std::collections::HashMap;

    /// One-node model over f32 inputs `x0..` of shape [3]; returns the load result.
    fn load_node(op: &str, opset: i64, inputs: usize, attrs: &[(&str, Attr)]) -> Result<Graph, String> {
        let operands: Vec<Operand> = (0..inputs).map(|_| Operand::Input(&[3])).collect();
        load_model(op, opset, &operands, attrs)
    }

    /// A node operand: a graph input of that shape, or an f32 initializer.
    enum Operand<'a> {
        Input(&'a [i64]),
        Const(&'a [i64], Vec<f32>),
    }

    /// One-node model whose operands are named `x0..`.
    fn load_model(op: &str, opset: i64, operands: &[Operand], attrs: &[(&str, Attr)]) -> Result<Graph, String> {
        let names: Vec<String> = (0..operands.len()).map(|i| format!("x{i}")).collect();
        let inputs: Vec<&str> = names.iter().map(String::as_str).collect();
        let n = node(op, &inputs, &["y"]).with_name("n").with_attrs(attrs.iter().cloned());
        let (mut graph_inputs, mut inits) = (vec![], vec![]);
        for (name, operand) in names.iter().zip(operands) {
            match operand {
                Operand::Input(dims) => graph_inputs.push(value_info(name, DataType::FLOAT, dims)),
                Operand::Const(dims, data) => inits.push(tensor_f32(name, dims, data)),
            }
        }
        // The loader takes the output's type from inference; this one only names it.
        let outputs = vec![value_info("y", DataType::FLOAT, &[3])];
        let bytes = model_bytes(graph("", vec![n], graph_inputs, outputs, inits), 7, opset);
        load_bytes(&bytes, None, "test").map(|m| m.graph).map_err(|e| e.to_string())
    }

    /// Runs a loaded graph on its inputs `x{i}` (f32, filled with `0, 1, 2…`).
    fn run_counting(g: &Graph) -> Tensor {
        let inputs = g
            .inputs
            .iter()
            .map(|&v| {
                let value = &g.values[v];
                let shape: Vec<usize> = value.ty.shape.iter().map(|d| d.known().unwrap()).collect();
                let len = shape.iter().product::<usize>();
                (value.name.clone(), Tensor::from_f32(&shape, (0..len).map(|i| i as f32).collect()).unwrap())
            })
            .collect::<HashMap<_, _>>();
        crate::interp::run(g, &inputs).unwrap().remove(0)
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
    fn legacy_broadcast_needs_the_flag_and_matching_dims() {
        let (a, b) = (Operand::Input(&[2, 3]), Operand::Input(&[3]));
        let err = load_model("Add", 6, &[a, b], &[]).unwrap_err();
        assert!(err.contains("`broadcast` = 0"), "{err}");
        let g = load_model("Add", 6, &[Operand::Input(&[2, 3]), Operand::Input(&[3])], &[("broadcast", Attr::Int(1))]).unwrap();
        assert_eq!(run_counting(&g).to_f32_vec(), vec![0.0, 2.0, 4.0, 3.0, 5.0, 7.0]);
        // No "1-dim expansion": B's dims must equal A's, not merely broadcast.
        let err = load_model("Mul", 6, &[Operand::Input(&[2, 3]), Operand::Input(&[1, 3])], &[("broadcast", Attr::Int(1))]).unwrap_err();
        assert!(err.contains("does not equal"), "{err}");
        // A one-element B broadcasts whatever its rank.
        load_model("Sub", 6, &[Operand::Input(&[2, 3]), Operand::Input(&[1, 1])], &[("broadcast", Attr::Int(1))]).unwrap();
        let err = load_model("Add", 13, &[Operand::Input(&[2, 3]), Operand::Input(&[3])], &[("broadcast", Attr::Int(1))]).unwrap_err();
        assert!(err.contains("only before opset 7"), "{err}");
    }

    #[test]
    fn legacy_broadcast_with_axis_realigns_a_constant_operand() {
        let b = Operand::Const(&[2], vec![10.0, 20.0]);
        let attrs = [("broadcast", Attr::Int(1)), ("axis", Attr::Int(0))];
        let g = load_model("Add", 6, &[Operand::Input(&[2, 3]), b], &attrs).unwrap();
        assert_eq!(run_counting(&g).to_f32_vec(), vec![10.0, 11.0, 12.0, 23.0, 24.0, 25.0]);
        let err = load_model("Add", 6, &[Operand::Input(&[2, 3]), Operand::Input(&[2])], &attrs).unwrap_err();
        assert!(err.contains("non-constant B"), "{err}");
        let err = load_model("Add", 6, &[Operand::Input(&[2, 3]), Operand::Input(&[2])], &[("broadcast", Attr::Int(1)), ("axis", Attr::Int(2))])
            .unwrap_err();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn legacy_prelu_applies_a_vector_slope_per_channel() {
        let slope = Operand::Const(&[2], vec![-1.0, 0.5]);
        let x = Tensor::from_f32(&[1, 2, 3], vec![-1.0, 2.0, -3.0, -4.0, 5.0, -6.0]).unwrap();
        let g = load_model("PRelu", 6, &[Operand::Input(&[1, 2, 3]), slope], &[]).unwrap();
        let y = crate::interp::run(&g, &HashMap::from([("x0".to_string(), x)])).unwrap().remove(0);
        assert_eq!(y.to_f32_vec(), vec![1.0, 2.0, 3.0, -2.0, 5.0, -3.0]);
    }

    #[test]
    fn legacy_gemm_without_broadcast_needs_a_full_c() {
        let ops = |c: &'static [i64]| [Operand::Input(&[2, 3]), Operand::Input(&[3, 4]), Operand::Input(c)];
        load_model("Gemm", 6, &ops(&[2, 4]), &[]).unwrap();
        let err = load_model("Gemm", 6, &ops(&[4]), &[]).unwrap_err();
        assert!(err.contains("output shape"), "{err}");
        load_model("Gemm", 6, &ops(&[4]), &[("broadcast", Attr::Int(1))]).unwrap();
    }

    #[test]
    fn legacy_variadic_ops_do_not_broadcast() {
        let err = load_model("Max", 6, &[Operand::Input(&[2, 3]), Operand::Input(&[3])], &[]).unwrap_err();
        assert!(err.contains("same shape"), "{err}");
        load_model("Max", 8, &[Operand::Input(&[2, 3]), Operand::Input(&[3])], &[]).unwrap();
    }

    #[test]
    fn selu_1_has_its_own_defaults() {
        let Op::Unary(UnaryOp::Selu { alpha, gamma }) = only_op(&load_node("Selu", 1, 1, &[]).unwrap()) else { panic!() };
        assert_eq!((alpha, gamma), (1.6732, 1.0507));
    }

    #[test]
    fn ops_respect_their_first_opset() {
        let err = load_node("HardSwish", 13, 1, &[]).unwrap_err();
        assert!(err.contains("opsets 14"), "{err}");
    }
}
