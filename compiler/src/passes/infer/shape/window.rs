//! Inference for the ops that cut, grow or resample each axis: Slice, Pad
//! and Resize. A dim stays exact when its operands are known; a symbolic dim
//! survives only changes that keep it a multiple of its symbol.

use super::{axes_list, int_operand, IntOperand};
use crate::ir::{AspectRatioPolicy, Dim, Op, ResizeMode, TensorType};
use crate::passes::infer::symbolic::{slice_bounds, SymInt};
use crate::passes::infer::{InferCtx, InferError};
use d2nn_runtime::DType;

/// An `end` this large means "to the end of the axis" for any real dim.
const OPEN_END: i64 = i32::MAX as i64;

/// Elements of an optional integer operand, or `None` when not known.
fn optional_ints(ctx: &InferCtx, i: usize, what: &str) -> Result<Option<Option<Vec<i64>>>, InferError> {
    if ctx.input_value(i).is_none() {
        return Ok(None);
    }
    Ok(Some(int_operand(ctx, i, what, false)?.ints()))
}

pub(super) fn slice(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    let rank = x.rank();
    let starts = int_operand(ctx, 1, "starts", false)?;
    let ends = int_operand(ctx, 2, "ends", false)?;
    let n = starts.len();
    if ends.len() != n {
        return Err(ctx.err(format!("inputs `starts` ({n}) and `ends` ({}) differ in length", ends.len())));
    }
    let axes = match optional_ints(ctx, 3, "axes")? {
        None => (0..n as i64).collect(),
        Some(Some(axes)) => axes,
        Some(None) => return Ok(TensorType::new(x.dtype, vec![Dim::Unknown; rank])),
    };
    if axes.len() != n {
        return Err(ctx.err(format!("input `axes` has {} elements for {n} starts", axes.len())));
    }
    let axes = axes_list(ctx, &axes, rank, "axes")?;
    let steps = match optional_ints(ctx, 4, "steps")? {
        None => Some(vec![1; n]),
        Some(steps) => steps,
    };
    if let Some(steps) = &steps {
        if steps.len() != n {
            return Err(ctx.err(format!("input `steps` has {} elements for {n} starts", steps.len())));
        }
        if steps.contains(&0) {
            return Err(ctx.err("input `steps` holds a 0 step"));
        }
    }
    let (IntOperand::Values(starts), IntOperand::Values(ends)) = (&starts, &ends) else {
        let mut shape = x.shape.clone();
        for &a in &axes {
            shape[a] = Dim::Unknown;
        }
        return Ok(TensorType::new(x.dtype, shape));
    };
    let mut shape = x.shape.clone();
    for (k, &a) in axes.iter().enumerate() {
        let step = steps.as_ref().map(|s| s[k]);
        shape[a] = sliced_dim(x.shape[a], starts[k], ends[k], step);
    }
    Ok(TensorType::new(x.dtype, shape))
}

fn sliced_dim(dim: Dim, start: SymInt, end: SymInt, step: Option<i64>) -> Dim {
    let whole_axis = step == Some(1)
        && start == SymInt::Int(0)
        && (matches!(end, SymInt::Int(e) if e >= OPEN_END) || SymInt::from_dim(dim) == Some(end));
    if whole_axis {
        return dim;
    }
    match (dim, start, end, step) {
        (Dim::Known(d), SymInt::Int(s), SymInt::Int(e), Some(step)) => {
            slice_bounds(d, s, e, step).map_or(Dim::Unknown, |(_, len)| Dim::Known(len))
        }
        _ => Dim::Unknown,
    }
}

pub(super) fn pad(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    let rank = x.rank();
    if let Some(value) = ctx.opt_input(2) {
        if value.dtype != x.dtype || value.volume().known().is_some_and(|n| n != 1) {
            return Err(ctx.err(format!("input `constant_value` must be one {} element", x.dtype)));
        }
    }
    let axes = match optional_ints(ctx, 3, "axes")? {
        None => (0..rank).collect(),
        Some(Some(axes)) => axes_list(ctx, &axes, rank, "axes")?,
        Some(None) => return Ok(TensorType::new(x.dtype, vec![Dim::Unknown; rank])),
    };
    let pads = int_operand(ctx, 1, "pads", false)?;
    if pads.len() != 2 * axes.len() {
        return Err(ctx.err(format!("input `pads` has {} elements for {} axes", pads.len(), axes.len())));
    }
    let mut shape = x.shape.clone();
    let pads = pads.ints();
    for (k, &a) in axes.iter().enumerate() {
        let Some(pads) = &pads else {
            shape[a] = Dim::Unknown;
            continue;
        };
        let grow = pads[k].checked_add(pads[k + axes.len()]).ok_or_else(|| ctx.err("pads overflow"))?;
        shape[a] = match x.shape[a] {
            _ if grow == 0 => x.shape[a],
            Dim::Known(d) => {
                let out = (d as i64).checked_add(grow).filter(|&o| o >= 0);
                Dim::Known(out.ok_or_else(|| ctx.err(format!("pads {pads:?} remove more than axis {a}'s {d} elements")))? as usize)
            }
            _ => Dim::Unknown,
        };
    }
    Ok(TensorType::new(x.dtype, shape))
}

pub(super) fn resize(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let Op::Resize(attrs) = ctx.op() else { return Err(ctx.err("not a Resize")) };
    let x = ctx.input(0)?;
    if attrs.mode != ResizeMode::Nearest && x.dtype != DType::F32 {
        return Err(ctx.err(format!("{:?} resize needs f32 data, got {}", attrs.mode, x.dtype)));
    }
    let rank = x.rank();
    let axes = match &attrs.axes {
        None => (0..rank).collect(),
        Some(axes) => {
            let as_i64: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
            axes_list(ctx, &as_i64, rank, "axes")?
        }
    };
    let n = axes.len();
    if let Some(roi) = ctx.opt_input(1) {
        let fits = roi.dtype == DType::F32 && roi.rank() == 1 && roi.shape[0].known().is_none_or(|len| len == 2 * n);
        if !fits {
            return Err(ctx.err(format!("input `roi` must be {} f32 values (starts, then ends), it is {}{:?}", 2 * n, roi.dtype, roi.shape)));
        }
    }
    let mut shape = x.shape.clone();
    match (ctx.opt_input(2), ctx.input_value(3)) {
        (Some(_), Some(_)) => return Err(ctx.err("inputs `scales` and `sizes` are exclusive")),
        (None, None) => return Err(ctx.err("one of the inputs `scales` and `sizes` must be given")),
        (None, Some(_)) => match int_operand(ctx, 3, "sizes", false)? {
            IntOperand::Values(sizes) if sizes.len() == n => {
                if attrs.keep_aspect_ratio == AspectRatioPolicy::Stretch {
                    for (&a, s) in axes.iter().zip(&sizes) {
                        shape[a] = s.to_dim().ok_or_else(|| ctx.err(format!("input `sizes` holds {s:?}, which is not a dimension")))?;
                    }
                } else {
                    let dims = kept_aspect_dims(ctx, attrs.keep_aspect_ratio, &axes, &x.shape, &sizes)?;
                    for (&a, d) in axes.iter().zip(dims) {
                        shape[a] = d;
                    }
                }
            }
            IntOperand::Len(len) if len == n => {
                for &a in &axes {
                    shape[a] = Dim::Unknown;
                }
            }
            other => return Err(ctx.err(format!("input `sizes` has {} elements for {n} resized axes", other.len()))),
        },
        (Some(scales_ty), None) => {
            if scales_ty.dtype != DType::F32 || scales_ty.rank() != 1 {
                return Err(ctx.err(format!("input `scales` must be an f32 vector, it is {}{:?}", scales_ty.dtype, scales_ty.shape)));
            }
            if let Some(len) = scales_ty.shape[0].known().filter(|&len| len != n) {
                return Err(ctx.err(format!("input `scales` has {len} elements for {n} resized axes")));
            }
            match ctx.const_input(2) {
                Some(scales) => {
                    let scales = scales.to_f32_vec();
                    if let Some(s) = scales.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
                        return Err(ctx.err(format!("input `scales` holds {s}, scales must be positive")));
                    }
                    for (&a, &s) in axes.iter().zip(&scales) {
                        shape[a] = scaled_dim(x.shape[a], s);
                    }
                }
                None => {
                    for &a in &axes {
                        shape[a] = Dim::Unknown;
                    }
                }
            }
        }
    }
    Ok(TensorType::new(x.dtype, shape))
}

/// `keep_aspect_ratio_policy` other than stretch: one scale for every resized
/// axis, the smallest (not_larger) or largest (not_smaller) `size / input`,
/// and each axis `round_half_up(scale × input)`. Unknown unless the sizes and
/// resized input dims are known.
fn kept_aspect_dims(ctx: &InferCtx, policy: AspectRatioPolicy, axes: &[usize], input: &[Dim], sizes: &[SymInt]) -> Result<Vec<Dim>, InferError> {
    let mut ratios = Vec::with_capacity(axes.len());
    for (&a, s) in axes.iter().zip(sizes) {
        if let SymInt::Int(v) = s {
            if *v < 0 {
                return Err(ctx.err(format!("input `sizes` holds {v}, which is not a dimension")));
            }
        }
        match (s.int(), input[a].known()) {
            (Some(size), Some(d)) => ratios.push(size as f64 / d as f64),
            _ => return Ok(vec![Dim::Unknown; axes.len()]),
        }
    }
    let pick = |a: f64, b: f64| if policy == AspectRatioPolicy::NotLarger { a.min(b) } else { a.max(b) };
    let Some(scale) = ratios.into_iter().reduce(pick) else { return Ok(Vec::new()) };
    Ok(axes.iter().map(|&a| Dim::Known((scale * input[a].known().unwrap_or(0) as f64 + 0.5) as usize)).collect())
}

/// `floor(dim × scale)`, computed in f64 like the reference implementation.
fn scaled_dim(dim: Dim, scale: f32) -> Dim {
    let scale = scale as f64;
    match dim {
        Dim::Known(d) => Dim::Known((d as f64 * scale).floor() as usize),
        Dim::Sym { .. } if scale.fract() == 0.0 && scale <= u32::MAX as f64 => dim * Dim::Known(scale as usize),
        _ => Dim::Unknown,
    }
}
