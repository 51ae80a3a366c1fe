//! The opset 1–6 forms of the elementwise ops, brought to the IR's numpy
//! broadcasting.
//!
//! Before opset 7, binary arithmetic, comparisons and logic broadcast only
//! when `broadcast = 1`, and then only B onto A: B is one element, or B's
//! shape equals a contiguous run of A's dims starting at `axis` (suffix
//! alignment by default). A suffix-aligned B broadcasts identically under
//! numpy rules; a B aligned further left becomes numpy-compatible by appending
//! size-1 dims, which a converter can only do to a constant. PRelu before
//! opset 7 applies a 1-D slope per channel (axis 1), and Gemm's C must already
//! be `[M, N]` unless `broadcast = 1`.

use crate::front::onnx::ctx::ConvertCtx;
use crate::front::onnx::error::{invalid, unsupported, ConvertResult};
use crate::ir::{Dim, TensorType};
use crate::passes::infer::broadcast_shapes;

/// The first opset with numpy broadcasting (and without `broadcast`/`axis`).
pub(super) const NUMPY_BROADCAST_SINCE: i64 = 7;

/// A 0/1 integer attribute (0 when absent).
pub(super) fn flag(c: &ConvertCtx, name: &str) -> ConvertResult<bool> {
    match c.attr_int_or(name, 0)? {
        0 => Ok(false),
        1 => Ok(true),
        v => invalid(format!("attribute `{name}` = {v} must be 0 or 1")),
    }
}

fn conflict(a: Dim, b: Dim) -> bool {
    matches!((a, b), (Dim::Known(x), Dim::Known(y)) if x != y)
}

/// Same rank and no two known dims that differ.
fn same_shape(a: &TensorType, b: &TensorType) -> bool {
    a.rank() == b.rank() && a.shape.iter().zip(&b.shape).all(|(&x, &y)| !conflict(x, y))
}

/// The operand types, which the loader knows for every defined input.
fn operand_types(c: &ConvertCtx) -> ConvertResult<(TensorType, TensorType)> {
    match (c.input_type(0), c.input_type(1)) {
        (Some(a), Some(b)) => Ok((a.clone(), b.clone())),
        _ => invalid("both operands are required"),
    }
}

/// `broadcast` and `axis` were removed in opset 7.
pub(super) fn reject_broadcast_attrs(c: &ConvertCtx) -> ConvertResult<()> {
    for name in ["broadcast", "axis"] {
        if c.has_attr(name) {
            return invalid(format!("attribute `{name}` exists only before opset {NUMPY_BROADCAST_SINCE} (this model uses opset {})", c.opset));
        }
    }
    Ok(())
}

/// Checks the legacy `broadcast`/`axis` contract of a binary op and, for a
/// constant B aligned away from A's trailing dims, swaps in B reshaped with
/// trailing 1s so numpy broadcasting gives the same result.
pub(super) fn broadcast_operand(c: &mut ConvertCtx) -> ConvertResult<()> {
    let broadcast = flag(c, "broadcast")?;
    let axis = c.attr_int("axis")?;
    let (a, b) = operand_types(c)?;
    if !broadcast {
        // `axis` only places a broadcast B; without broadcasting it has no effect.
        if !same_shape(&a, &b) {
            return invalid(format!(
                "with `broadcast` = 0 (the default before opset 7) both operands must have the same shape; A is {:?}, B is {:?}",
                a.shape, b.shape
            ));
        }
        return Ok(());
    }
    let (rank_a, rank_b) = (a.rank(), b.rank());
    if rank_b > rank_a {
        return invalid(format!("B has rank {rank_b}, more than A's {rank_a}: legacy broadcasting only extends B onto A"));
    }
    if b.shape.iter().all(|&d| d == Dim::Known(1)) {
        // One element (a scalar included) broadcasts anywhere, whatever `axis` says.
        return Ok(());
    }
    let start = match axis {
        None => rank_a - rank_b,
        Some(axis) => {
            let start = if axis < 0 { axis + rank_a as i64 } else { axis };
            match usize::try_from(start).ok().filter(|&s| s + rank_b <= rank_a) {
                Some(s) => s,
                None => {
                    return invalid(format!(
                        "attribute `axis` = {axis} places B's {rank_b} dims outside A's {rank_a}"
                    ))
                }
            }
        }
    };
    let aligned = &a.shape[start..start + rank_b];
    // Legacy broadcasting never stretches a size-1 dim of B ("1-dim expansion").
    if b.shape.iter().zip(aligned).any(|(&x, &y)| conflict(x, y)) {
        return invalid(format!("B's shape {:?} does not equal A's dims {aligned:?} from axis {start}", b.shape));
    }
    let trailing = rank_a - start - rank_b;
    if trailing == 0 {
        return Ok(());
    }
    let Some(constant) = c.const_input(1) else {
        return unsupported(format!(
            "legacy broadcasting of a non-constant B from `axis` = {start} (not aligned with A's last dims) is not supported: only a constant B can be re-aligned"
        ));
    };
    let mut shape = constant.shape().to_vec();
    shape.extend(std::iter::repeat_n(1, trailing));
    let reshaped = constant.reshaped(&shape).or_else(|e| invalid(format!("input B: {e}")))?;
    let v = c.add_const("B_aligned", reshaped);
    c.set_input(1, Some(v));
    Ok(())
}

/// PRelu before opset 7: a 1-D slope with one value per channel applies along
/// axis 1 (not the last axis, as numpy would align it); any other slope must
/// broadcast onto X, as from opset 7.
pub(super) fn prelu_slope(c: &mut ConvertCtx) -> ConvertResult<()> {
    let (x, slope) = operand_types(c)?;
    let per_channel = x.rank() >= 3 && slope.rank() == 1 && slope.shape[0] == x.shape[1] && slope.shape[0] != Dim::Known(1);
    if per_channel {
        let Some(constant) = c.const_input(1) else {
            return unsupported("a non-constant per-channel `slope` before opset 7 is not supported: only a constant slope can be aligned with axis 1");
        };
        let mut shape = constant.shape().to_vec();
        shape.extend(std::iter::repeat_n(1, x.rank() - 2));
        let reshaped = constant.reshaped(&shape).or_else(|e| invalid(format!("input `slope`: {e}")))?;
        let v = c.add_const("slope_per_channel", reshaped);
        c.set_input(1, Some(v));
        return Ok(());
    }
    let fits = slope.rank() <= x.rank() && broadcast_shapes(&x.shape, &slope.shape).is_ok_and(|s| s.iter().zip(&x.shape).all(|(&o, &d)| !conflict(o, d)));
    if !fits {
        return invalid(format!(
            "`slope` of shape {:?} is neither one value per channel of X {:?} nor broadcastable onto it",
            slope.shape, x.shape
        ));
    }
    Ok(())
}

/// Max/Min/Sum/Mean before opset 8 do not broadcast: every operand has the first one's shape.
pub(super) fn variadic_same_shapes(c: &ConvertCtx) -> ConvertResult<()> {
    let types: Vec<&TensorType> = (0..c.inputs.len()).filter_map(|i| c.input_type(i)).collect();
    if let Some(first) = types.first() {
        if let Some(other) = types.iter().find(|t| !same_shape(first, t)) {
            return invalid(format!(
                "before opset 8 all operands must have the same shape (no broadcasting); found {:?} and {:?}",
                first.shape, other.shape
            ));
        }
    }
    Ok(())
}

/// Gemm before opset 7: C is required, and without `broadcast` it must
/// already be `[M, N]`.
pub(super) fn gemm_c(c: &ConvertCtx, broadcast: bool, trans_a: bool, trans_b: bool) -> ConvertResult<()> {
    let Some(c_type) = c.input_type(2) else { return invalid("before opset 7 Gemm's input C is required") };
    if broadcast {
        return Ok(());
    }
    let (a, b) = operand_types(c)?;
    if a.rank() != 2 || b.rank() != 2 {
        // Inference reports the ranks with the operands' full types.
        return Ok(());
    }
    let output = [a.shape[usize::from(trans_a)], b.shape[usize::from(!trans_b)]];
    if c_type.rank() != 2 || c_type.shape.iter().zip(&output).any(|(&x, &y)| conflict(x, y)) {
        return invalid(format!(
            "with `broadcast` = 0 (the default before opset 7) C must have the output shape {output:?}, it has {:?}",
            c_type.shape
        ));
    }
    Ok(())
}
