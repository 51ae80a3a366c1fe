//! Converters for reductions (`Reduce*`, `ArgMax`/`ArgMin`), `TopK` and `OneHot`.
//!
//! Older opsets passed `axes` (reductions) and `k` (TopK) as attributes; the IR
//! follows the newest opsets, where they are inputs, so the attribute forms
//! become constant inputs here.

use crate::front::onnx::ctx::ConvertCtx;
use crate::front::onnx::error::{invalid, ConvertResult};
use crate::front::onnx::registry::{Converter, OpDef, Registry, MAX_OPSET};
use crate::ir::{Op, ReduceOp};
use d2nn_runtime::Tensor;

/// Reductions, arg-reductions and TopK kept their opset-1 semantics until the
/// attribute-to-input moves handled below (opset 11 only added negative axes).
const SINCE_OPSET_1: std::ops::RangeInclusive<i64> = 1..=MAX_OPSET;

pub(super) fn register(reg: &mut Registry) {
    let reductions: [(&'static str, Converter); 6] = [
        ("ReduceMean", |c| reduce(c, ReduceOp::Mean, 18)),
        ("ReduceMax", |c| reduce(c, ReduceOp::Max, 18)),
        ("ReduceMin", |c| reduce(c, ReduceOp::Min, 18)),
        ("ReduceSum", |c| reduce(c, ReduceOp::Sum, 13)),
        ("ReduceProd", |c| reduce(c, ReduceOp::Prod, 18)),
        ("ReduceL2", |c| reduce(c, ReduceOp::L2, 18)),
    ];
    for (op_type, convert) in reductions {
        reg.insert(OpDef {
            op_type,
            opsets: SINCE_OPSET_1,
            inputs: 1..=2,
            outputs: 1..=1,
            attrs: &["axes", "keepdims", "noop_with_empty_axes"],
            convert,
        });
    }
    for (op_type, max) in [("ArgMax", true), ("ArgMin", false)] {
        reg.insert(OpDef {
            op_type,
            opsets: SINCE_OPSET_1,
            inputs: 1..=1,
            outputs: 1..=1,
            attrs: &["axis", "keepdims", "select_last_index"],
            convert: if max { |c| arg_reduce(c, true) } else { |c| arg_reduce(c, false) },
        });
    }
    reg.insert(OpDef {
        op_type: "TopK",
        opsets: SINCE_OPSET_1,
        inputs: 1..=2,
        outputs: 1..=2,
        attrs: &["k", "axis", "largest", "sorted"],
        convert: top_k,
    });
    reg.insert(OpDef {
        op_type: "OneHot",
        opsets: 9..=MAX_OPSET,
        inputs: 3..=3,
        outputs: 1..=1,
        attrs: &["axis"],
        convert: one_hot,
    });
}

/// Reads a 0/1 flag attribute; other values are malformed.
fn flag(ctx: &ConvertCtx, name: &str, default: bool) -> ConvertResult<bool> {
    match ctx.attr_int(name)? {
        None => Ok(default),
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(v) => invalid(format!("attribute `{name}` = {v} must be 0 or 1")),
    }
}

/// `axes_input_since`: the opset in which `axes` moved from an attribute to an input.
fn reduce(ctx: &mut ConvertCtx, op: ReduceOp, axes_input_since: i64) -> ConvertResult<Op> {
    let keepdims = flag(ctx, "keepdims", true)?;
    if ctx.opset < axes_input_since {
        if ctx.inputs.len() > 1 {
            return invalid(format!("takes one input before opset {axes_input_since} (axes is an attribute)"));
        }
        if ctx.has_attr("noop_with_empty_axes") {
            return invalid(format!("attribute `noop_with_empty_axes` exists only from opset {axes_input_since}"));
        }
        // An absent or empty `axes` attribute means "reduce everything", which
        // is what an absent or empty axes input means when noop is off.
        if let Some(axes) = ctx.attr_ints("axes")? {
            if !axes.is_empty() {
                let axes = ctx.add_const("axes", Tensor::vec_i64(axes));
                ctx.set_input(1, Some(axes));
            }
        }
        return Ok(Op::Reduce { op, keepdims, noop_with_empty_axes: false });
    }
    if ctx.has_attr("axes") {
        return invalid(format!("attribute `axes` was replaced by an input in opset {axes_input_since}"));
    }
    let noop_with_empty_axes = flag(ctx, "noop_with_empty_axes", false)?;
    Ok(Op::Reduce { op, keepdims, noop_with_empty_axes })
}

fn arg_reduce(ctx: &mut ConvertCtx, max: bool) -> ConvertResult<Op> {
    if ctx.opset < 12 && ctx.has_attr("select_last_index") {
        return invalid("attribute `select_last_index` exists only from opset 12");
    }
    Ok(Op::ArgReduce {
        max,
        axis: ctx.attr_int_or("axis", 0)?,
        keepdims: flag(ctx, "keepdims", true)?,
        select_last_index: flag(ctx, "select_last_index", false)?,
    })
}

fn top_k(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    if ctx.opset < 10 {
        if ctx.inputs.len() != 1 {
            return invalid("takes one input before opset 10 (k is an attribute)");
        }
        let k = ctx.require("k", ctx.attr_int("k"))?;
        if k < 0 {
            return invalid(format!("attribute `k` = {k} must not be negative"));
        }
        let k = ctx.add_const("k", Tensor::vec_i64(vec![k]));
        ctx.set_input(1, Some(k));
    } else {
        if ctx.has_attr("k") {
            return invalid("attribute `k` was replaced by an input in opset 10");
        }
        if ctx.input(1).is_none() {
            return invalid("input K is required");
        }
    }
    if ctx.opset < 11 && (ctx.has_attr("largest") || ctx.has_attr("sorted")) {
        return invalid("attributes `largest` and `sorted` exist only from opset 11");
    }
    Ok(Op::TopK {
        axis: ctx.attr_int_or("axis", -1)?,
        largest: flag(ctx, "largest", true)?,
        // Unsorted output has an unspecified order, so sorting is always conformant;
        // the flag is kept for back ends that may skip the sort.
        sorted: flag(ctx, "sorted", true)?,
    })
}

/// Opsets 9–10 left negative indices undefined; they follow opset 11 (wrap once),
/// as ONNX Runtime does for every opset.
fn one_hot(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    if (0..3).any(|i| ctx.input(i).is_none()) {
        return invalid("inputs indices, depth and values are all required");
    }
    Ok(Op::OneHot { axis: ctx.attr_int_or("axis", -1)? })
}

#[cfg(test)]
mod tests {
    use crate::front::onnx::registry::Registry;

    #[test]
    fn every_required_op_is_registered_and_the_others_are_not() {
        let reg = Registry::standard();
        for op in ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL2", "ArgMax", "ArgMin", "TopK", "OneHot"] {
            assert!(reg.get(op).is_some(), "{op} missing");
        }
        for op in ["ReduceL1", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"] {
            assert!(reg.get(op).is_none(), "{op} should be reported as unsupported");
        }
    }
}
