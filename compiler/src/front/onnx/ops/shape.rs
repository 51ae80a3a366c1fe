//! Converters for the shape and indexing ops: they bring older opsets' forms
//! (attributes that became inputs, `Dropout`, deprecated `Upsample`) to the
//! newest semantics of the IR ops. `Resize` and `Upsample` live in `resize`.

mod resize;
#[cfg(test)]
mod tests;

use crate::front::onnx::ctx::ConvertCtx;
use crate::front::onnx::error::{invalid, unsupported, ConvertResult};
use crate::front::onnx::registry::{Converter, OpDef, Registry, MAX_OPSET};
use crate::ir::{Op, PadMode};
use d2nn_runtime::{DType, Tensor};
use std::ops::RangeInclusive;

/// Any number of inputs or outputs.
const MANY: usize = usize::MAX;

/// Each op is registered from the opset whose form its converter handles,
/// which may predate the oldest opset the loader reads.
pub(super) fn register(reg: &mut Registry) {
    let mut add = |op_type: &'static str,
                   opsets: RangeInclusive<i64>,
                   inputs: RangeInclusive<usize>,
                   outputs: RangeInclusive<usize>,
                   attrs: &'static [&'static str],
                   convert: Converter| {
        reg.insert(OpDef { op_type, opsets, inputs, outputs, attrs, convert });
    };
    add("Identity", 1..=MAX_OPSET, 1..=1, 1..=1, &[], |_| Ok(Op::Identity));
    add("Dropout", 6..=MAX_OPSET, 1..=3, 1..=2, &["ratio", "is_test", "seed"], dropout);
    add("Flatten", 1..=MAX_OPSET, 1..=1, 1..=1, &["axis"], |ctx| Ok(Op::Flatten { axis: ctx.attr_int_or("axis", 1)? }));
    add("Reshape", 5..=MAX_OPSET, 2..=2, 1..=1, &["allowzero"], |ctx| {
        Ok(Op::Reshape { allowzero: flag(ctx, "allowzero", false)? })
    });
    add("Transpose", 1..=MAX_OPSET, 1..=1, 1..=1, &["perm"], transpose);
    add("Concat", 1..=MAX_OPSET, 1..=MANY, 1..=1, &["axis"], |ctx| {
        // `axis` became required in opset 4; before, it defaulted to 1.
        let axis = if ctx.opset < 4 { ctx.attr_int_or("axis", 1)? } else { ctx.require("axis", ctx.attr_int("axis"))? };
        Ok(Op::Concat { axis })
    });
    add("Split", 2..=MAX_OPSET, 1..=2, 1..=MANY, &["axis", "split", "num_outputs"], split);
    add("Slice", 1..=MAX_OPSET, 1..=5, 1..=1, &["starts", "ends", "axes"], slice);
    add("Squeeze", 1..=MAX_OPSET, 1..=2, 1..=1, &["axes"], |ctx| axes_attr_to_input(ctx, false).map(|()| Op::Squeeze));
    add("Unsqueeze", 1..=MAX_OPSET, 1..=2, 1..=1, &["axes"], |ctx| axes_attr_to_input(ctx, true).map(|()| Op::Unsqueeze));
    add("Gather", 1..=MAX_OPSET, 2..=2, 1..=1, &["axis"], |ctx| Ok(Op::Gather { axis: ctx.attr_int_or("axis", 0)? }));
    add("Shape", 1..=MAX_OPSET, 1..=1, 1..=1, &["start", "end"], |ctx| {
        Ok(Op::Shape { start: ctx.attr_int_or("start", 0)?, end: ctx.attr_int("end")? })
    });
    add("Size", 1..=MAX_OPSET, 1..=1, 1..=1, &[], |_| Ok(Op::Size));
    add("Expand", 8..=MAX_OPSET, 2..=2, 1..=1, &[], |_| Ok(Op::Expand));
    add("Tile", 6..=MAX_OPSET, 2..=2, 1..=1, &[], |_| Ok(Op::Tile));
    add("Pad", 2..=MAX_OPSET, 1..=4, 1..=1, &["mode", "pads", "value"], pad);
    add(
        "Resize",
        10..=MAX_OPSET,
        1..=4,
        1..=1,
        &[
            "mode",
            "coordinate_transformation_mode",
            "nearest_mode",
            "cubic_coeff_a",
            "exclude_outside",
            "extrapolation_value",
            "antialias",
            "axes",
            "keep_aspect_ratio_policy",
        ],
        resize::resize,
    );
    // Deprecated in opset 10 in favour of Resize.
    add("Upsample", 7..=9, 1..=2, 1..=1, &["mode", "scales"], resize::upsample);
    add("Range", 11..=MAX_OPSET, 3..=3, 1..=1, &["stash_type"], |_| Ok(Op::Range));
    add("ConstantOfShape", 9..=MAX_OPSET, 1..=1, 1..=1, &["value"], constant_of_shape);
}

/// A 0/1 integer attribute.
fn flag(ctx: &ConvertCtx, name: &str, default: bool) -> ConvertResult<bool> {
    match ctx.attr_int_or(name, default as i64)? {
        0 => Ok(false),
        1 => Ok(true),
        v => invalid(format!("attribute `{name}` = {v} must be 0 or 1")),
    }
}

/// Rejects an attribute that a newer opset turned into an input.
fn reject_attr_in_new_opset(ctx: &ConvertCtx, name: &str, since: i64) -> ConvertResult<()> {
    if ctx.opset >= since && ctx.has_attr(name) {
        return invalid(format!("attribute `{name}` is an input since opset {since}"));
    }
    Ok(())
}

/// Checks the number of operands an opset-dependent signature allows.
fn expect_inputs(ctx: &ConvertCtx, allowed: RangeInclusive<usize>) -> ConvertResult<()> {
    let n = ctx.inputs.len();
    if allowed.contains(&n) {
        Ok(())
    } else {
        invalid(format!("has {n} inputs, opset {} expects {}–{}", ctx.opset, allowed.start(), allowed.end()))
    }
}

/// Inference-time dropout passes its data through; only the data operand is
/// kept, and the `mask` output, when used, is all true.
fn dropout(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    if ctx.opset < 12 {
        expect_inputs(ctx, 1..=1)?;
        // Opset 6 dropped elements unless `is_test` said otherwise.
        if ctx.attr_int_or("is_test", (ctx.opset >= 7) as i64)? == 0 {
            return unsupported("attribute `is_test` = 0 is not supported: d2nnc compiles inference graphs only");
        }
    } else if ctx.input(2).is_some() {
        let training = match ctx.const_input(2) {
            Some(t) if t.len() == 1 => t.to_i64_vec()[0] != 0,
            Some(t) => return invalid(format!("input `training_mode` must hold one element, it has {}", t.len())),
            None => {
                return unsupported(
                    "input `training_mode` is not a constant: d2nnc compiles inference graphs only and needs it to be a constant false",
                )
            }
        };
        if training {
            return unsupported("input `training_mode` is true: d2nnc compiles inference graphs only");
        }
    }
    ctx.inputs.truncate(1);
    Ok(Op::Dropout)
}

fn transpose(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let perm = match ctx.attr_ints("perm")? {
        Some(perm) => {
            let mut seen = vec![false; perm.len()];
            let mut out = Vec::with_capacity(perm.len());
            for &p in &perm {
                match usize::try_from(p).ok().filter(|&p| p < perm.len() && !seen[p]) {
                    Some(p) => {
                        seen[p] = true;
                        out.push(p);
                    }
                    None => return invalid(format!("attribute `perm` = {perm:?} is not a permutation")),
                }
            }
            out
        }
        None => {
            let rank = ctx.input_type(0).map_or(0, |t| t.rank());
            (0..rank).rev().collect()
        }
    };
    Ok(Op::Transpose { perm })
}

fn split(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let axis = ctx.attr_int_or("axis", 0)?;
    reject_attr_in_new_opset(ctx, "split", 13)?;
    if let Some(sizes) = ctx.attr_ints("split")? {
        expect_inputs(ctx, 1..=1)?;
        let v = ctx.add_const("split", Tensor::vec_i64(sizes));
        ctx.set_input(1, Some(v));
    }
    let declared = ctx.proto.output.len();
    match ctx.attr_int("num_outputs")? {
        Some(_) if ctx.opset < 18 => return invalid("attribute `num_outputs` exists only since opset 18"),
        Some(_) if ctx.input(1).is_some() => return invalid("attribute `num_outputs` and input `split` are exclusive"),
        Some(n) if n < 1 || n as usize != declared => {
            return invalid(format!("attribute `num_outputs` = {n} but the node declares {declared} outputs"))
        }
        _ => {}
    }
    if ctx.input(1).is_none() {
        // Without explicit sizes the chunking depends on the output count, so
        // unused trailing outputs must still be produced.
        ctx.num_outputs = declared;
    }
    Ok(Op::Split { axis })
}

fn slice(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    if ctx.opset >= 10 {
        for name in ["starts", "ends", "axes"] {
            reject_attr_in_new_opset(ctx, name, 10)?;
        }
        expect_inputs(ctx, 3..=5)?;
        return Ok(Op::Slice);
    }
    expect_inputs(ctx, 1..=1)?;
    let starts = ctx.require("starts", ctx.attr_ints("starts"))?;
    let ends = ctx.require("ends", ctx.attr_ints("ends"))?;
    if starts.len() != ends.len() {
        return invalid(format!("attributes `starts` ({}) and `ends` ({}) differ in length", starts.len(), ends.len()));
    }
    let (s, e) = (ctx.add_const("starts", Tensor::vec_i64(starts)), ctx.add_const("ends", Tensor::vec_i64(ends)));
    ctx.set_input(1, Some(s));
    ctx.set_input(2, Some(e));
    // An empty `axes` means the default, as in the reference implementation.
    if let Some(axes) = ctx.attr_ints("axes")?.filter(|a| !a.is_empty()) {
        let a = ctx.add_const("axes", Tensor::vec_i64(axes));
        ctx.set_input(3, Some(a));
    }
    Ok(Op::Slice)
}

/// Squeeze/Unsqueeze took `axes` as an attribute before opset 13.
fn axes_attr_to_input(ctx: &mut ConvertCtx, required: bool) -> ConvertResult<()> {
    reject_attr_in_new_opset(ctx, "axes", 13)?;
    if ctx.opset >= 13 {
        return expect_inputs(ctx, if required { 2..=2 } else { 1..=2 });
    }
    expect_inputs(ctx, 1..=1)?;
    let axes = if required { Some(ctx.require("axes", ctx.attr_ints("axes"))?) } else { ctx.attr_ints("axes")? };
    if let Some(axes) = axes {
        let v = ctx.add_const("axes", Tensor::vec_i64(axes));
        ctx.set_input(1, Some(v));
    }
    Ok(())
}

fn pad(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let mode = match ctx.attr_string_or("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" if ctx.opset >= 19 => PadMode::Wrap,
        "wrap" => return invalid(format!("attribute `mode` = \"wrap\" exists only since opset 19 (this model uses opset {})", ctx.opset)),
        other => return invalid(format!("attribute `mode` = {other:?} is not a Pad mode")),
    };
    reject_attr_in_new_opset(ctx, "pads", 11)?;
    reject_attr_in_new_opset(ctx, "value", 11)?;
    if ctx.opset >= 11 {
        expect_inputs(ctx, if ctx.opset >= 18 { 2..=4 } else { 2..=3 })?;
        return Ok(Op::Pad { mode });
    }
    expect_inputs(ctx, 1..=1)?;
    let pads = ctx.require("pads", ctx.attr_ints("pads"))?;
    let value = ctx.attr_float_or("value", 0.0)?;
    let dtype = ctx.input_type(0).map_or(DType::F32, |t| t.dtype);
    let p = ctx.add_const("pads", Tensor::vec_i64(pads));
    ctx.set_input(1, Some(p));
    if mode == PadMode::Constant {
        let v = ctx.add_const("value", Tensor::scalar_f32(value).cast(dtype));
        ctx.set_input(2, Some(v));
    }
    Ok(Op::Pad { mode })
}

fn constant_of_shape(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let value = match ctx.attr_tensor("value")? {
        Some(t) if t.len() == 1 => t,
        Some(t) => return invalid(format!("attribute `value` must hold one element, it has {}", t.len())),
        None => Tensor::from_f32(&[1], vec![0.0]).map_err(|e| crate::front::onnx::ConvertError::Invalid(e.to_string()))?,
    };
    Ok(Op::ConstantOfShape { value })
}
