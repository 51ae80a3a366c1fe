//! Inference rules for the shape and indexing ops. Shape operands (reshape
//! targets, expand shapes, sizes) are read symbolically, so torch's
//! `x.view(x.size(0), -1)` over a symbolic batch still gets an exact type.
//! Window-like ops (Slice, Pad, Resize) are in `window`.

#[cfg(test)]
mod tests;
mod window;

use super::symbolic::{shape_range, SymInt};
use super::{broadcast_shapes, InferCtx, InferError};
use crate::ir::types::volume;
use crate::ir::{Dim, Op, TensorType};
use d2nn_runtime::DType;

pub(super) fn infer(ctx: &InferCtx) -> Result<Vec<TensorType>, InferError> {
    let one = |t: TensorType| Ok(vec![t]);
    match ctx.op() {
        Op::Identity | Op::Dropout => identity(ctx),
        Op::Flatten { axis } => one(flatten(ctx, *axis)?),
        Op::Reshape { allowzero } => one(reshape(ctx, *allowzero)?),
        Op::Transpose { perm } => one(transpose(ctx, perm)?),
        Op::Concat { axis } => one(concat(ctx, *axis)?),
        Op::Split { axis } => split(ctx, *axis),
        Op::Slice => one(window::slice(ctx)?),
        Op::Squeeze => one(squeeze(ctx)?),
        Op::Unsqueeze => one(unsqueeze(ctx)?),
        Op::Gather { axis } => one(gather(ctx, *axis)?),
        Op::Shape { start, end } => {
            let (s, e) = shape_range(ctx.input(0)?.rank(), *start, *end);
            one(TensorType::fixed(DType::I64, &[e - s]))
        }
        Op::Size => {
            ctx.input(0)?;
            one(TensorType::scalar(DType::I64))
        }
        Op::Expand => one(expand(ctx)?),
        Op::Tile => one(tile(ctx)?),
        Op::Pad { .. } => one(window::pad(ctx)?),
        Op::Resize(_) => one(window::resize(ctx)?),
        Op::Range => one(range(ctx)?),
        Op::ConstantOfShape { value } => one(constant_of_shape(ctx, value.dtype())?),
        other => Err(ctx.err(format!("{} is not a shape op", other.name()))),
    }
}

/// X's type, and for a second output (Dropout's inference-time `mask`) a
/// bool tensor of X's shape.
fn identity(ctx: &InferCtx) -> Result<Vec<TensorType>, InferError> {
    let x = ctx.input(0)?;
    match ctx.num_outputs() {
        1 => Ok(vec![x.clone()]),
        2 => Ok(vec![x.clone(), TensorType::new(DType::Bool, x.shape.clone())]),
        n => Err(ctx.err(format!("has {n} outputs, expected the data and optionally a mask"))),
    }
}

/// The type already stored on output 0: the target of a shape op whose
/// shape operand folding has removed.
fn stored_output(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let node = &ctx.graph.nodes[ctx.node];
    let out = node.outputs.first().ok_or_else(|| ctx.err("node has no output"))?;
    Ok(ctx.graph.values[*out].ty.clone())
}

/// What is known before running of a rank-1 integer operand such as a shape.
pub(super) enum IntOperand {
    /// Every element, possibly symbolic.
    Values(Vec<SymInt>),
    /// Only the element count.
    Len(usize),
}

/// Reads integer operand `i` (named `what` in errors), which must be a
/// vector (or a scalar, when `scalar_ok`) whose length is static.
pub(super) fn int_operand(ctx: &InferCtx, i: usize, what: &str, scalar_ok: bool) -> Result<IntOperand, InferError> {
    let ty = ctx.input(i)?;
    if !ty.dtype.is_int() {
        return Err(ctx.err(format!("input `{what}` has dtype {}, expected i64 or i32", ty.dtype)));
    }
    let len = match (&ty.shape[..], scalar_ok) {
        ([], true) => Dim::Known(1),
        ([d], _) => *d,
        _ => return Err(ctx.err(format!("input `{what}` must be a vector, it has rank {}", ty.rank()))),
    };
    if let Some(values) = ctx.sym_input(i) {
        return Ok(IntOperand::Values(values));
    }
    match len {
        Dim::Known(n) => Ok(IntOperand::Len(n)),
        _ => Err(ctx.err(format!(
            "input `{what}` has a dynamic length, so the output rank is unknown; it must be constant or of static length"
        ))),
    }
}

impl IntOperand {
    pub(super) fn len(&self) -> usize {
        match self {
            IntOperand::Values(v) => v.len(),
            IntOperand::Len(n) => *n,
        }
    }

    /// The elements when every one is a known integer.
    pub(super) fn ints(&self) -> Option<Vec<i64>> {
        match self {
            IntOperand::Values(v) => v.iter().map(|x| x.int()).collect(),
            IntOperand::Len(_) => None,
        }
    }
}

/// Normalises and de-duplicates axes against `rank`.
pub(super) fn axes_list(ctx: &InferCtx, axes: &[i64], rank: usize, what: &str) -> Result<Vec<usize>, InferError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        match super::normalize_axis(a, rank) {
            Some(a) if !out.contains(&a) => out.push(a),
            Some(_) => return Err(ctx.err(format!("`{what}` {axes:?} repeats an axis"))),
            None => return Err(ctx.err(format!("`{what}` {axes:?} has an axis out of range for rank {rank}"))),
        }
    }
    Ok(out)
}

/// `a + b` when it is representable.
pub(super) fn dim_add(a: Dim, b: Dim) -> Dim {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => x.checked_add(y).map_or(Dim::Unknown, Dim::Known),
        (Dim::Known(0), d) | (d, Dim::Known(0)) => d,
        (Dim::Sym { sym: s1, factor: f1 }, Dim::Sym { sym: s2, factor: f2 }) if s1 == s2 => {
            f1.checked_add(f2).map_or(Dim::Unknown, |factor| Dim::Sym { sym: s1, factor })
        }
        _ => Dim::Unknown,
    }
}

fn flatten(ctx: &InferCtx, axis: i64) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    let r = x.rank() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(ctx.err(format!("attribute `axis` = {axis} is out of range for rank {r}")));
    }
    let (outer, inner) = x.shape.split_at(a as usize);
    Ok(TensorType::new(x.dtype, vec![volume(outer), volume(inner)]))
}

/// The output dims of a reshape with known target `target` (ONNX rules: 0
/// copies the input dim unless `allowzero`, one -1 is inferred).
pub(super) fn reshape_dims(input: &[Dim], target: &[SymInt], allowzero: bool) -> Result<Vec<Dim>, String> {
    let mut dims = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &t) in target.iter().enumerate() {
        let d = match t {
            SymInt::Int(-1) => {
                if inferred.replace(i).is_some() {
                    return Err(format!("shape {target:?} has more than one -1"));
                }
                Dim::Unknown
            }
            SymInt::Int(0) if !allowzero => {
                *input.get(i).ok_or_else(|| format!("shape element {i} is 0 (copy) but the input has rank {}", input.len()))?
            }
            t => t.to_dim().ok_or_else(|| format!("shape element {i} is {t:?}, which is not a dimension"))?,
        };
        dims.push(d);
    }
    let total = volume(input);
    if let Some(i) = inferred {
        if allowzero && target.contains(&SymInt::Int(0)) {
            return Err("shape has both -1 and 0 with allowzero set".into());
        }
        let rest = volume(&dims.iter().enumerate().map(|(j, &d)| if j == i { Dim::Known(1) } else { d }).collect::<Vec<_>>());
        dims[i] = match total.div_exact(rest) {
            Some(d) => d,
            None if total.is_known() && rest.is_known() => {
                return Err(format!("cannot reshape {total:?} elements into a shape whose other dims hold {rest:?}"))
            }
            None => Dim::Unknown,
        };
    } else if total.is_known() && volume(&dims).is_known() && total != volume(&dims) {
        return Err(format!("cannot reshape {total:?} elements into {target:?}"));
    }
    Ok(dims)
}

fn reshape(ctx: &InferCtx, allowzero: bool) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    if ctx.input_value(1).is_none() {
        return stored_output(ctx);
    }
    let shape = match int_operand(ctx, 1, "shape", false)? {
        IntOperand::Values(target) => reshape_dims(&x.shape, &target, allowzero).map_err(|e| ctx.err(e))?,
        IntOperand::Len(n) => vec![Dim::Unknown; n],
    };
    Ok(TensorType::new(x.dtype, shape))
}

fn transpose(ctx: &InferCtx, perm: &[usize]) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if sorted != (0..x.rank()).collect::<Vec<_>>() {
        return Err(ctx.err(format!("perm {perm:?} is not a permutation of the input's {} axes", x.rank())));
    }
    Ok(TensorType::new(x.dtype, perm.iter().map(|&p| x.shape[p]).collect()))
}

/// Two dims that must be equal at run time: the more informative one.
fn unify(a: Dim, b: Dim) -> Result<Dim, String> {
    match (a, b) {
        (x, y) if x == y => Ok(x),
        (Dim::Known(x), Dim::Known(y)) => Err(format!("dims {x} and {y} differ")),
        (Dim::Unknown, d) | (d, Dim::Unknown) => Ok(d),
        (Dim::Known(k), Dim::Sym { .. }) | (Dim::Sym { .. }, Dim::Known(k)) => Ok(Dim::Known(k)),
        _ => Ok(Dim::Unknown),
    }
}

fn concat(ctx: &InferCtx, axis: i64) -> Result<TensorType, InferError> {
    let first = ctx.input(0)?;
    let a = ctx.axis(axis, first.rank())?;
    let mut shape = first.shape.clone();
    for i in 1..ctx.num_inputs() {
        let t = ctx.input(i)?;
        if t.dtype != first.dtype || t.rank() != first.rank() {
            return Err(ctx.err(format!(
                "input {i} is {} of rank {}, input 0 is {} of rank {}",
                t.dtype,
                t.rank(),
                first.dtype,
                first.rank()
            )));
        }
        for (d, (o, &n)) in shape.iter_mut().zip(&t.shape).enumerate() {
            *o = if d == a {
                dim_add(*o, n)
            } else {
                unify(*o, n).map_err(|e| ctx.err(format!("input {i}, axis {d}: {e}")))?
            };
        }
    }
    Ok(TensorType::new(first.dtype, shape))
}

/// Sizes of `n` chunks of a dim split without explicit sizes: equal chunks,
/// or (opset 18) ⌈d/n⌉-sized ones with a smaller last chunk.
fn even_split(d: usize, n: usize) -> Option<Vec<usize>> {
    let chunk = d.div_ceil(n.max(1));
    let last = d.checked_sub(chunk * n.checked_sub(1)?)?;
    let mut sizes = vec![chunk; n - 1];
    sizes.push(last);
    Some(sizes)
}

fn split(ctx: &InferCtx, axis: i64) -> Result<Vec<TensorType>, InferError> {
    let x = ctx.input(0)?;
    let a = ctx.axis(axis, x.rank())?;
    let n = ctx.num_outputs();
    let parts: Vec<Dim> = if ctx.input_value(1).is_some() {
        let operand = int_operand(ctx, 1, "split", false)?;
        let len = operand.len();
        if len != n {
            return Err(ctx.err(format!("input `split` has {len} sizes for {n} outputs")));
        }
        match operand.ints() {
            Some(sizes) => {
                if sizes.iter().any(|&s| s < 0) {
                    return Err(ctx.err(format!("input `split` = {sizes:?} has a negative size")));
                }
                let total: i64 = sizes.iter().sum();
                if let Dim::Known(d) = x.shape[a] {
                    if total != d as i64 {
                        return Err(ctx.err(format!("split sizes {sizes:?} add up to {total}, axis {a} has {d}")));
                    }
                }
                sizes.iter().map(|&s| Dim::Known(s as usize)).collect()
            }
            None => vec![Dim::Unknown; n],
        }
    } else {
        match x.shape[a] {
            // An unsplittable dim is left unknown rather than rejected: function
            // bodies carry such splits in `If` branches that never run.
            Dim::Known(d) => even_split(d, n).map_or(vec![Dim::Unknown; n], |s| s.into_iter().map(Dim::Known).collect()),
            d => vec![d.div_exact(Dim::Known(n)).unwrap_or(Dim::Unknown); n],
        }
    };
    Ok(parts
        .into_iter()
        .map(|p| {
            let mut shape = x.shape.clone();
            shape[a] = p;
            TensorType::new(x.dtype, shape)
        })
        .collect())
}

fn squeeze(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    if ctx.input_value(1).is_none() {
        if let Some(i) = x.shape.iter().position(|d| !d.is_known()) {
            return Err(ctx.err(format!(
                "Squeeze without `axes` needs every input dim static (dim {i} is dynamic, so whether it is dropped is decided at run time)"
            )));
        }
        let shape = x.shape.iter().copied().filter(|&d| d != Dim::Known(1)).collect();
        return Ok(TensorType::new(x.dtype, shape));
    }
    let operand = int_operand(ctx, 1, "axes", true)?;
    let Some(axes) = operand.ints() else {
        let n = operand.len();
        let rank = x.rank().checked_sub(n).ok_or_else(|| ctx.err(format!("cannot squeeze {n} axes of a rank-{} input", x.rank())))?;
        return Ok(TensorType::new(x.dtype, vec![Dim::Unknown; rank]));
    };
    let axes = axes_list(ctx, &axes, x.rank(), "axes")?;
    for &a in &axes {
        if let Dim::Known(d) = x.shape[a] {
            if d != 1 {
                return Err(ctx.err(format!("cannot squeeze axis {a} of size {d}")));
            }
        }
    }
    let shape = x.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
    Ok(TensorType::new(x.dtype, shape))
}

fn unsqueeze(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    let operand = int_operand(ctx, 1, "axes", true)?;
    let Some(axes) = operand.ints() else {
        return Ok(TensorType::new(x.dtype, vec![Dim::Unknown; x.rank() + operand.len()]));
    };
    let rank = x.rank() + axes.len();
    let axes = axes_list(ctx, &axes, rank, "axes")?;
    let mut rest = x.shape.iter();
    let shape = (0..rank).map(|i| if axes.contains(&i) { Some(Dim::Known(1)) } else { rest.next().copied() }).collect::<Option<Vec<_>>>();
    Ok(TensorType::new(x.dtype, shape.ok_or_else(|| ctx.err("axes do not fit the output rank"))?))
}

fn gather(ctx: &InferCtx, axis: i64) -> Result<TensorType, InferError> {
    let data = ctx.input(0)?;
    let indices = ctx.input(1)?;
    if !indices.dtype.is_int() {
        return Err(ctx.err(format!("input `indices` has dtype {}, expected i64 or i32", indices.dtype)));
    }
    let a = ctx.axis(axis, data.rank())?;
    let mut shape = data.shape[..a].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&data.shape[a + 1..]);
    Ok(TensorType::new(data.dtype, shape))
}

/// Dims of a target-shape operand (negative elements are errors).
fn target_dims(ctx: &InferCtx, target: &[SymInt], what: &str) -> Result<Vec<Dim>, InferError> {
    target
        .iter()
        .map(|&t| t.to_dim().ok_or_else(|| ctx.err(format!("input `{what}` holds {t:?}, which is not a dimension"))))
        .collect()
}

fn expand(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    if ctx.input_value(1).is_none() {
        return stored_output(ctx);
    }
    let shape = match int_operand(ctx, 1, "shape", false)? {
        IntOperand::Values(target) => {
            let target = target_dims(ctx, &target, "shape")?;
            broadcast_shapes(&x.shape, &target).map_err(|e| ctx.err(e))?
        }
        IntOperand::Len(n) => {
            // A target of 1 keeps the input dim, any other must equal it: an
            // input dim other than 1 is the output dim either way.
            let rank = n.max(x.rank());
            (0..rank)
                .map(|i| match (i + x.rank()).checked_sub(rank).map(|j| x.shape[j]) {
                    Some(d) if d != Dim::Known(1) && d != Dim::Unknown => d,
                    _ => Dim::Unknown,
                })
                .collect()
        }
    };
    Ok(TensorType::new(x.dtype, shape))
}

fn tile(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    let operand = int_operand(ctx, 1, "repeats", false)?;
    let len = operand.len();
    if len != x.rank() {
        return Err(ctx.err(format!("input `repeats` has {len} elements for a rank-{} input", x.rank())));
    }
    let shape = match operand.ints() {
        Some(reps) => x
            .shape
            .iter()
            .zip(&reps)
            .map(|(&d, &r)| {
                usize::try_from(r).map(|r| d * Dim::Known(r)).map_err(|_| ctx.err(format!("input `repeats` = {reps:?} is negative")))
            })
            .collect::<Result<_, _>>()?,
        None => vec![Dim::Unknown; x.rank()],
    };
    Ok(TensorType::new(x.dtype, shape))
}

/// Number of elements of `Range(start, limit, delta)`, computed in f64 as the
/// reference does (exactly for integers).
fn range_len(start: f64, limit: f64, delta: f64) -> Result<usize, String> {
    if delta == 0.0 || !delta.is_finite() || !start.is_finite() || !limit.is_finite() {
        return Err(format!("Range({start}, {limit}, {delta}) has no finite length"));
    }
    let n = ((limit - start) / delta).ceil();
    if n > crate::front::onnx::tensor::MAX_ELEMENTS as f64 {
        return Err(format!("Range({start}, {limit}, {delta}) is too long"));
    }
    Ok(n.max(0.0) as usize)
}

fn range_len_int(start: i64, limit: i64, delta: i64) -> Result<usize, String> {
    if delta == 0 {
        return Err("Range delta is 0".into());
    }
    let (span, delta) = ((limit as i128) - (start as i128), delta as i128);
    let n = if (span > 0) != (delta > 0) || span == 0 { 0 } else { (span + delta - delta.signum()) / delta };
    if n > crate::front::onnx::tensor::MAX_ELEMENTS as i128 {
        return Err(format!("Range({start}, {limit}, {delta}) is too long"));
    }
    Ok(n as usize)
}

fn range(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let dtype = ctx.expect_dtype(0, &[DType::F32, DType::I64, DType::I32])?;
    for i in 0..3 {
        let t = ctx.input(i)?;
        if t.dtype != dtype || t.volume() != Dim::Known(1) {
            return Err(ctx.err(format!("input {i} must be a one-element {dtype} tensor, it is {}{:?}", t.dtype, t.shape)));
        }
    }
    let len = if dtype == DType::F32 {
        match (ctx.const_input(0), ctx.const_input(1), ctx.const_input(2)) {
            (Some(s), Some(l), Some(d)) => {
                let v = |t: &d2nn_runtime::Tensor| t.to_f32_vec()[0] as f64;
                Dim::Known(range_len(v(s), v(l), v(d)).map_err(|e| ctx.err(e))?)
            }
            _ => Dim::Unknown,
        }
    } else {
        let scalar = |i| ctx.sym_input(i).and_then(|v| v.first().copied());
        match (scalar(0), scalar(1), scalar(2)) {
            (Some(SymInt::Int(s)), Some(SymInt::Int(l)), Some(SymInt::Int(d))) => {
                Dim::Known(range_len_int(s, l, d).map_err(|e| ctx.err(e))?)
            }
            // `arange(x.size(k))` over a symbolic dim counts exactly that dim.
            (Some(SymInt::Int(0)), Some(limit), Some(SymInt::Int(1))) => limit.to_dim().unwrap_or(Dim::Unknown),
            _ => Dim::Unknown,
        }
    };
    Ok(TensorType::new(dtype, vec![len]))
}

fn constant_of_shape(ctx: &InferCtx, dtype: DType) -> Result<TensorType, InferError> {
    if ctx.input_value(0).is_none() {
        return stored_output(ctx);
    }
    let shape = match int_operand(ctx, 0, "shape", false)? {
        IntOperand::Values(target) => target_dims(ctx, &target, "shape")?,
        IntOperand::Len(n) => vec![Dim::Unknown; n],
    };
    Ok(TensorType::new(dtype, shape))
}
