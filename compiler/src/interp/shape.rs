//! Kernels for the shape and indexing ops. Most are written as "output
//! element at index i is input element at source(i)" ([`pick`]), which keeps
//! each kernel a direct transcription of the spec. Slice, Pad and Resize are
//! in `window` and `resize`.

mod resize;
#[cfg(test)]
mod tests;
mod window;

use super::util::{axis as norm_axis, broadcast};
use super::EvalCtx;
use crate::ir::Op;
use d2nn_runtime::{map_tensor_same, DType, Tensor};
use ndarray::{ArrayD, Axis, Dimension, IxDyn, Slice};

pub(super) fn eval(ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
    let one = |t: Tensor| Ok(vec![t]);
    match ctx.op() {
        Op::Identity | Op::Dropout => identity(ctx),
        Op::Flatten { axis } => one(flatten(ctx.input(0)?, *axis)?),
        Op::Reshape { allowzero } => one(reshape(ctx, *allowzero)?),
        Op::Transpose { perm } => one(transpose(ctx.input(0)?, perm)?),
        Op::Concat { axis } => one(concat(ctx, *axis)?),
        Op::Split { axis } => split(ctx, *axis),
        Op::Slice => one(window::slice(ctx)?),
        Op::Squeeze => one(squeeze(ctx)?),
        Op::Unsqueeze => one(unsqueeze(ctx)?),
        Op::Gather { axis } => one(gather(ctx, *axis)?),
        Op::Shape { start, end } => {
            let dims = ctx.input(0)?.shape();
            let (s, e) = crate::passes::infer::symbolic::shape_range(dims.len(), *start, *end);
            one(Tensor::vec_i64(dims[s..e].iter().map(|&d| d as i64).collect()))
        }
        Op::Size => one(Tensor::scalar_i64(ctx.input(0)?.len() as i64)),
        Op::Expand => one(expand(ctx)?),
        Op::Tile => one(tile(ctx)?),
        Op::Pad { mode } => one(window::pad(ctx, *mode)?),
        Op::Resize(attrs) => one(resize::resize(ctx, attrs)?),
        Op::Range => one(range(ctx)?),
        Op::ConstantOfShape { value } => one(constant_of_shape(ctx, value)?),
        other => Err(format!("{} is not a shape op", other.name())),
    }
}

/// X, and for a second output (Dropout's inference-time `mask`) all `true`
/// in X's shape: nothing is dropped.
fn identity(ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
    let x = ctx.input(0)?;
    match ctx.num_outputs() {
        1 => Ok(vec![x.clone()]),
        2 => {
            let mask = Tensor::from_bool(x.shape(), vec![true; x.len()]).map_err(|e| e.to_string())?;
            Ok(vec![x.clone(), mask])
        }
        n => Err(format!("has {n} outputs, expected the data and optionally a mask")),
    }
}

/// An array of `shape` whose element at each index is `a[source(index)]`.
/// `source` must return in-bounds indices.
pub(super) fn pick<T: Clone>(a: &ArrayD<T>, shape: &[usize], source: impl Fn(&[usize]) -> Vec<usize>) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(shape), |idx| a[IxDyn(&source(idx.slice()))].clone())
}

/// Rejects output shapes no machine could hold before allocating them.
pub(super) fn check_volume(shape: &[usize]) -> Result<(), String> {
    let limit = crate::front::onnx::tensor::MAX_ELEMENTS;
    match shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)) {
        Some(n) if n <= limit => Ok(()),
        _ => Err(format!("output shape {shape:?} has more than {limit} elements")),
    }
}

/// Operand `i` as integers (axes, shapes, pads…).
pub(super) fn ints(ctx: &EvalCtx, i: usize, what: &str) -> Result<Vec<i64>, String> {
    let t = ctx.input(i)?;
    if !t.dtype().is_int() {
        return Err(format!("input `{what}` has dtype {}, expected an integer type", t.dtype()));
    }
    Ok(t.to_i64_vec())
}

/// Normalises distinct axes against `rank`.
pub(super) fn axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank)?;
        if out.contains(&a) {
            return Err(format!("axes {axes:?} repeat axis {a}"));
        }
        out.push(a);
    }
    Ok(out)
}

fn reshaped(t: &Tensor, shape: &[usize]) -> Result<Tensor, String> {
    t.reshaped(shape).map_err(|e| e.to_string())
}

fn flatten(x: &Tensor, axis: i64) -> Result<Tensor, String> {
    let r = x.rank() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let (outer, inner) = x.shape().split_at(a as usize);
    reshaped(x, &[outer.iter().product(), inner.iter().product()])
}

/// The concrete target of a reshape: 0 copies the input dim (unless
/// `allowzero`), a single -1 takes the remaining elements.
fn reshape_target(input: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| format!("shape {target:?}: element {i} copies a missing input dim"))?),
            t if t >= 0 => out.push(t as usize),
            _ => return Err(format!("shape {target:?} is invalid")),
        }
    }
    let total: usize = input.iter().product();
    if let Some(i) = infer_at {
        let rest: usize = out.iter().product();
        if rest == 0 || !total.is_multiple_of(rest) {
            return Err(format!("cannot reshape {input:?} into {target:?}"));
        }
        out[i] = total / rest;
    }
    Ok(out)
}

fn reshape(ctx: &EvalCtx, allowzero: bool) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let shape = match ctx.opt_input(1) {
        Some(_) => reshape_target(x.shape(), &ints(ctx, 1, "shape")?, allowzero)?,
        None => ctx.output_shape(0)?,
    };
    reshaped(x, &shape)
}

fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor, String> {
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if sorted != (0..x.rank()).collect::<Vec<_>>() {
        return Err(format!("perm {perm:?} does not permute {} axes", x.rank()));
    }
    Ok(map_tensor_same!(x, a => a.view().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned()))
}

fn concat(ctx: &EvalCtx, axis: i64) -> Result<Tensor, String> {
    let first = ctx.input(0)?;
    let a = norm_axis(axis, first.rank())?;
    let inputs = (0..ctx.inputs.len()).map(|i| ctx.input(i)).collect::<Result<Vec<_>, _>>()?;
    macro_rules! join {
        ($variant:ident) => {{
            let views = inputs
                .iter()
                .map(|t| match t {
                    Tensor::$variant(x) => Ok(x.view()),
                    other => Err(format!("inputs mix {} and {}", first.dtype(), other.dtype())),
                })
                .collect::<Result<Vec<_>, String>>()?;
            Tensor::$variant(ndarray::concatenate(Axis(a), &views).map_err(|e| format!("cannot concatenate: {e}"))?)
        }};
    }
    Ok(match first.dtype() {
        DType::F32 => join!(F32),
        DType::I64 => join!(I64),
        DType::I32 => join!(I32),
        DType::Bool => join!(Bool),
    })
}

fn split(ctx: &EvalCtx, axis: i64) -> Result<Vec<Tensor>, String> {
    let x = ctx.input(0)?;
    let a = norm_axis(axis, x.rank())?;
    let (d, n) = (x.shape()[a], ctx.num_outputs());
    let sizes: Vec<usize> = match ctx.opt_input(1) {
        Some(_) => {
            let sizes = ints(ctx, 1, "split")?;
            if sizes.len() != n || sizes.iter().any(|&s| s < 0) || sizes.iter().sum::<i64>() != d as i64 {
                return Err(format!("split {sizes:?} does not divide a dim of {d} into {n} parts"));
            }
            sizes.iter().map(|&s| s as usize).collect()
        }
        None => {
            // Equal chunks of ⌈d/n⌉, the last one smaller (opset 18).
            let chunk = d.div_ceil(n.max(1));
            if n == 0 || chunk * (n - 1) > d {
                return Err(format!("a dim of {d} cannot be split into {n} chunks"));
            }
            (0..n).map(|i| if i + 1 < n { chunk } else { d - chunk * (n - 1) }).collect()
        }
    };
    let mut start = 0;
    Ok(sizes
        .into_iter()
        .map(|s| {
            let part = Slice::from(start..start + s);
            start += s;
            map_tensor_same!(x, arr => arr.slice_axis(Axis(a), part).to_owned())
        })
        .collect())
}

fn squeeze(ctx: &EvalCtx) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let drop = match ctx.opt_input(1) {
        Some(_) => axes(&ints(ctx, 1, "axes")?, x.rank())?,
        None => (0..x.rank()).filter(|&i| x.shape()[i] == 1).collect(),
    };
    if let Some(&a) = drop.iter().find(|&&a| x.shape()[a] != 1) {
        return Err(format!("cannot squeeze axis {a} of size {}", x.shape()[a]));
    }
    let shape: Vec<usize> = (0..x.rank()).filter(|i| !drop.contains(i)).map(|i| x.shape()[i]).collect();
    reshaped(x, &shape)
}

fn unsqueeze(ctx: &EvalCtx) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let new = ints(ctx, 1, "axes")?;
    let rank = x.rank() + new.len();
    let new = axes(&new, rank)?;
    let mut rest = x.shape().iter();
    let shape: Vec<usize> = (0..rank).map(|i| if new.contains(&i) { 1 } else { *rest.next().unwrap_or(&1) }).collect();
    reshaped(x, &shape)
}

fn gather(ctx: &EvalCtx, axis: i64) -> Result<Tensor, String> {
    let data = ctx.input(0)?;
    let a = norm_axis(axis, data.rank())?;
    let d = data.shape()[a] as i64;
    let raw = ctx.input(1)?;
    if !raw.dtype().is_int() {
        return Err(format!("indices have dtype {}, expected an integer type", raw.dtype()));
    }
    let mut normalised = Vec::with_capacity(raw.len());
    for i in raw.to_i64_vec() {
        let j = if i < 0 { i + d } else { i };
        if !(0..d).contains(&j) {
            return Err(format!("index {i} is out of range for an axis of size {d}"));
        }
        normalised.push(j as usize);
    }
    let q = raw.rank();
    let indices = ArrayD::from_shape_vec(IxDyn(raw.shape()), normalised).map_err(|e| e.to_string())?;
    let mut shape = data.shape()[..a].to_vec();
    shape.extend(raw.shape());
    shape.extend(&data.shape()[a + 1..]);
    let source = |idx: &[usize]| {
        let mut src = idx[..a].to_vec();
        src.push(indices[IxDyn(&idx[a..a + q])]);
        src.extend(&idx[a + q..]);
        src
    };
    Ok(map_tensor_same!(data, arr => pick(arr, &shape, source)))
}

fn expand(ctx: &EvalCtx) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let target = match ctx.opt_input(1) {
        Some(_) => {
            let t = ints(ctx, 1, "shape")?;
            t.iter().map(|&d| usize::try_from(d).map_err(|_| format!("shape {t:?} has a negative dim"))).collect::<Result<Vec<_>, _>>()?
        }
        None => ctx.output_shape(0)?,
    };
    let shape = broadcast(&[x.shape(), &target])?;
    check_volume(&shape)?;
    let (in_shape, offset) = (x.shape(), shape.len() - x.rank());
    let source = |idx: &[usize]| (0..in_shape.len()).map(|j| if in_shape[j] == 1 { 0 } else { idx[j + offset] }).collect();
    Ok(map_tensor_same!(x, arr => pick(arr, &shape, source)))
}

fn tile(ctx: &EvalCtx) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let reps = ints(ctx, 1, "repeats")?;
    if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
        return Err(format!("repeats {reps:?} do not fit a rank-{} input", x.rank()));
    }
    let in_shape = x.shape();
    let shape = in_shape
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.checked_mul(r as usize).ok_or_else(|| format!("repeats {reps:?} overflow")))
        .collect::<Result<Vec<_>, _>>()?;
    check_volume(&shape)?;
    let source = |idx: &[usize]| idx.iter().zip(in_shape).map(|(&i, &d)| i % d).collect();
    Ok(map_tensor_same!(x, arr => pick(arr, &shape, source)))
}

fn range(ctx: &EvalCtx) -> Result<Tensor, String> {
    let scalar = |i: usize| -> Result<&Tensor, String> {
        let t = ctx.input(i)?;
        if t.len() != 1 {
            return Err(format!("input {i} must hold one element, it has {}", t.len()));
        }
        Ok(t)
    };
    let (start, limit, delta) = (scalar(0)?, scalar(1)?, scalar(2)?);
    match start.dtype() {
        DType::F32 => {
            // In f64, as numpy's arange computes, then rounded to f32.
            let v = |t: &Tensor| t.to_f32_vec()[0] as f64;
            let (s, l, d) = (v(start), v(limit), v(delta));
            if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
                return Err(format!("Range({s}, {l}, {d}) has no finite length"));
            }
            let n = ((l - s) / d).ceil().max(0.0);
            if n > crate::front::onnx::tensor::MAX_ELEMENTS as f64 {
                return Err(format!("Range({s}, {l}, {d}) is too long"));
            }
            let n = n as usize;
            Tensor::from_f32(&[n], (0..n).map(|i| (s + i as f64 * d) as f32).collect()).map_err(|e| e.to_string())
        }
        DType::I64 | DType::I32 => {
            let v = |t: &Tensor| t.to_i64_vec()[0] as i128;
            let (s, l, d) = (v(start), v(limit), v(delta));
            if d == 0 {
                return Err("Range delta is 0".into());
            }
            let span = l - s;
            let n = if span == 0 || (span > 0) != (d > 0) { 0 } else { (span + d - d.signum()) / d };
            if n > crate::front::onnx::tensor::MAX_ELEMENTS as i128 {
                return Err(format!("Range({s}, {l}, {d}) is too long"));
            }
            let values: Vec<i64> = (0..n).map(|i| (s + i * d) as i64).collect();
            let n = values.len();
            let t = Tensor::from_i64(&[n], values).map_err(|e| e.to_string())?;
            Ok(if start.dtype() == DType::I32 { t.cast(DType::I32) } else { t })
        }
        other => Err(format!("Range does not take {other}")),
    }
}

fn constant_of_shape(ctx: &EvalCtx, value: &Tensor) -> Result<Tensor, String> {
    let shape = match ctx.opt_input(0) {
        Some(_) => {
            let s = ints(ctx, 0, "shape")?;
            s.iter().map(|&d| usize::try_from(d).map_err(|_| format!("shape {s:?} has a negative dim"))).collect::<Result<Vec<_>, _>>()?
        }
        None => ctx.output_shape(0)?,
    };
    if value.is_empty() {
        return Err("attribute `value` is empty".into());
    }
    check_volume(&shape)?;
    let shape = IxDyn(&shape);
    Ok(map_tensor_same!(value, v => ArrayD::from_elem(shape.clone(), v.iter().next().cloned().unwrap_or_default())))
}
