//! Slice and Pad kernels: per-axis index arithmetic, element by element.
//! Negative pads crop before the other side is extended (slice, then pad).

use super::{axes, check_volume, ints, pick};
use crate::interp::EvalCtx;
use crate::ir::PadMode;
use crate::passes::infer::symbolic::slice_bounds;
use d2nn_runtime::{map_tensor_same, Tensor};
use ndarray::{ArrayD, Dimension, IxDyn};

pub(super) fn slice(ctx: &EvalCtx) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let (starts, ends) = (ints(ctx, 1, "starts")?, ints(ctx, 2, "ends")?);
    let n = starts.len();
    let sliced = match ctx.opt_input(3) {
        Some(_) => axes(&ints(ctx, 3, "axes")?, x.rank())?,
        None => (0..n).collect(),
    };
    let steps = match ctx.opt_input(4) {
        Some(_) => ints(ctx, 4, "steps")?,
        None => vec![1; n],
    };
    if ends.len() != n || sliced.len() != n || steps.len() != n {
        return Err(format!("starts {starts:?}, ends {ends:?}, axes {sliced:?} and steps {steps:?} differ in length"));
    }
    // Per axis: first source index and step; untouched axes copy.
    let mut first = vec![0i64; x.rank()];
    let mut step = vec![1i64; x.rank()];
    let mut shape = x.shape().to_vec();
    for k in 0..n {
        let a = sliced[k];
        let (f, len) = slice_bounds(x.shape()[a], starts[k], ends[k], steps[k]).ok_or("a slice step is 0")?;
        (first[a], step[a], shape[a]) = (f, steps[k], len);
    }
    let source = |idx: &[usize]| idx.iter().enumerate().map(|(a, &i)| (first[a] + i as i64 * step[a]) as usize).collect();
    Ok(map_tensor_same!(x, arr => pick(arr, &shape, source)))
}

/// Where input coordinate `x` (the output coordinate shifted by the begin
/// pad) reads from, or `None` for the constant fill. Negative pads crop
/// first, so the non-constant modes extend the kept range `lo..hi`.
fn pad_source(x: i64, lo: i64, hi: i64, mode: PadMode) -> Option<usize> {
    if (lo..hi).contains(&x) {
        return Some(x as usize);
    }
    let len = hi - lo;
    let offset = match mode {
        PadMode::Constant => return None,
        PadMode::Edge => (x - lo).clamp(0, len - 1),
        PadMode::Reflect if len == 1 => 0,
        PadMode::Reflect => {
            // Mirror without repeating the edge, periodically as numpy does for wide pads.
            let period = 2 * (len - 1);
            let m = (x - lo).rem_euclid(period);
            if m < len { m } else { period - m }
        }
        PadMode::Wrap => (x - lo).rem_euclid(len),
    };
    Some((lo + offset) as usize)
}

/// The input range each axis keeps after negative pads crop it.
struct Kept {
    lo: i64,
    hi: i64,
}

fn pad_array<T: Clone>(a: &ArrayD<T>, shape: &[usize], begins: &[i64], kept: &[Kept], mode: PadMode, fill: T) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(shape), |idx| {
        let mut src = Vec::with_capacity(kept.len());
        for (k, &i) in idx.slice().iter().enumerate() {
            match pad_source(i as i64 - begins[k], kept[k].lo, kept[k].hi, mode) {
                Some(s) => src.push(s),
                None => return fill.clone(),
            }
        }
        a[IxDyn(&src)].clone()
    })
}

pub(super) fn pad(ctx: &EvalCtx, mode: PadMode) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let rank = x.rank();
    let padded = match ctx.opt_input(3) {
        Some(_) => axes(&ints(ctx, 3, "axes")?, rank)?,
        None => (0..rank).collect(),
    };
    let pads = ints(ctx, 1, "pads")?;
    if pads.len() != 2 * padded.len() {
        return Err(format!("pads {pads:?} do not fit {} axes", padded.len()));
    }
    let mut begins = vec![0i64; rank];
    let mut shape = x.shape().to_vec();
    let mut kept: Vec<Kept> = x.shape().iter().map(|&d| Kept { lo: 0, hi: d as i64 }).collect();
    for (k, &a) in padded.iter().enumerate() {
        let (b, e) = (pads[k], pads[k + padded.len()]);
        let d = x.shape()[a] as i64;
        let out = d.checked_add(b).and_then(|o| o.checked_add(e)).filter(|&o| o >= 0);
        let out = out.ok_or_else(|| format!("pads {pads:?} remove more than axis {a}'s {d} elements"))?;
        let axis_kept = Kept { lo: (-b).max(0), hi: d - (-e).max(0) };
        if axis_kept.hi <= axis_kept.lo && out > 0 && mode != PadMode::Constant {
            return Err(format!("cannot {mode:?}-pad axis {a}: no element of it is left to extend"));
        }
        (begins[a], shape[a], kept[a]) = (b, out as usize, axis_kept);
    }
    check_volume(&shape)?;
    let fill = match ctx.opt_input(2) {
        Some(v) if !v.is_empty() => v.clone(),
        _ => Tensor::zeros(x.dtype(), &[]),
    };
    Ok(match (x, &fill) {
        (Tensor::F32(a), Tensor::F32(f)) => Tensor::F32(pad_array(a, &shape, &begins, &kept, mode, first(f)?)),
        (Tensor::I64(a), Tensor::I64(f)) => Tensor::I64(pad_array(a, &shape, &begins, &kept, mode, first(f)?)),
        (Tensor::I32(a), Tensor::I32(f)) => Tensor::I32(pad_array(a, &shape, &begins, &kept, mode, first(f)?)),
        (Tensor::Bool(a), Tensor::Bool(f)) => Tensor::Bool(pad_array(a, &shape, &begins, &kept, mode, first(f)?)),
        _ => return Err(format!("constant_value is {}, data is {}", fill.dtype(), x.dtype())),
    })
}

fn first<T: Clone>(f: &ArrayD<T>) -> Result<T, String> {
    f.iter().next().cloned().ok_or_else(|| "constant_value is empty".to_string())
}
