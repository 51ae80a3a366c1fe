//! Inference for reductions (`Reduce*`, `ArgMax`/`ArgMin`), `TopK` and `OneHot`.
//!
//! Operand-dependent sizes (reduction axes, K, depth) come from constants or
//! symbolic shape arithmetic; when they are only known at run time the
//! affected dims are `Unknown`, and the rank must still be derivable.

use super::{InferCtx, InferError, SymInt};
use crate::ir::{Dim, Op, ReduceOp, TensorType};
use d2nn_runtime::DType;

const NUMERIC: &[DType] = &[DType::F32, DType::I64, DType::I32];
const INDEX: &[DType] = &[DType::I64, DType::I32];

pub(super) fn infer(ctx: &InferCtx) -> Result<Vec<TensorType>, InferError> {
    match ctx.op() {
        Op::Reduce { op, keepdims, noop_with_empty_axes } => reduce(ctx, *op, *keepdims, *noop_with_empty_axes),
        Op::ArgReduce { axis, keepdims, .. } => arg_reduce(ctx, *axis, *keepdims),
        Op::TopK { axis, .. } => top_k(ctx, *axis),
        Op::OneHot { axis } => one_hot(ctx, *axis),
        other => Err(ctx.err(format!("{} is not in the reduce family", other.name()))),
    }
}

/// Input `i` as integers, from a constant or fully known shape arithmetic.
fn known_ints(ctx: &InferCtx, i: usize) -> Option<Vec<i64>> {
    ctx.const_ints(i).or_else(|| ctx.sym_input(i)?.into_iter().map(SymInt::int).collect())
}

/// Which axes a reduction folds, one flag per axis; duplicates and
/// out-of-range axes are errors.
fn reduced_axes(ctx: &InferCtx, axes: &[i64], rank: usize) -> Result<Vec<bool>, InferError> {
    let mut reduced = vec![false; rank];
    for &a in axes {
        let axis = ctx.axis(a, rank)?;
        if std::mem::replace(&mut reduced[axis], true) {
            return Err(ctx.err(format!("axes {axes:?} name axis {axis} twice")));
        }
    }
    Ok(reduced)
}

fn reduce(ctx: &InferCtx, op: ReduceOp, keepdims: bool, noop: bool) -> Result<Vec<TensorType>, InferError> {
    let data = ctx.input(0)?;
    let allowed: &[DType] = match op {
        ReduceOp::Max | ReduceOp::Min => &[DType::F32, DType::I64, DType::I32, DType::Bool],
        _ => NUMERIC,
    };
    ctx.expect_dtype(0, allowed)?;
    let rank = data.rank();
    let axes = match ctx.opt_input(1) {
        None => Some(Vec::new()),
        Some(axes_ty) => {
            ctx.expect_dtype(1, INDEX)?;
            if axes_ty.rank() > 1 {
                return Err(ctx.err(format!("axes must be a 1-D tensor, it has rank {}", axes_ty.rank())));
            }
            if axes_ty.shape.first() == Some(&Dim::Known(0)) {
                Some(Vec::new())
            } else {
                known_ints(ctx, 1)
            }
        }
    };
    let Some(axes) = axes else {
        return Ok(vec![reduce_over_unknown_axes(ctx, data, keepdims)?]);
    };
    if axes.is_empty() && noop {
        return Ok(vec![data.clone()]);
    }
    let reduced = if axes.is_empty() { vec![true; rank] } else { reduced_axes(ctx, &axes, rank)? };
    let shape = data
        .shape
        .iter()
        .zip(&reduced)
        .filter_map(|(&d, &r)| match (r, keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(Dim::Known(1)),
            (true, false) => None,
        })
        .collect();
    Ok(vec![TensorType::new(data.dtype, shape)])
}

/// Axes known only at run time: with keepdims the rank is kept and only
/// size-1 dims are certain; without it the axes count must be known.
fn reduce_over_unknown_axes(ctx: &InferCtx, data: &TensorType, keepdims: bool) -> Result<TensorType, InferError> {
    if keepdims {
        let shape = data.shape.iter().map(|&d| if d == Dim::Known(1) { d } else { Dim::Unknown }).collect();
        return Ok(TensorType::new(data.dtype, shape));
    }
    let count = ctx.input(1)?.shape.first().and_then(|d| d.known());
    match count {
        Some(n) if n <= data.rank() => Ok(TensorType::new(data.dtype, vec![Dim::Unknown; data.rank() - n])),
        Some(n) => Err(ctx.err(format!("{n} axes given for rank {}", data.rank()))),
        None => Err(ctx.err("input 1 (axes) must be constant when keepdims = 0: the output rank depends on it")),
    }
}

fn arg_reduce(ctx: &InferCtx, axis: i64, keepdims: bool) -> Result<Vec<TensorType>, InferError> {
    ctx.expect_dtype(0, NUMERIC)?;
    let data = ctx.input(0)?;
    let axis = ctx.axis(axis, data.rank())?;
    if data.shape[axis] == Dim::Known(0) {
        return Err(ctx.err(format!("axis {axis} is empty; there is no index to return")));
    }
    let mut shape = data.shape.clone();
    if keepdims {
        shape[axis] = Dim::Known(1);
    } else {
        shape.remove(axis);
    }
    Ok(vec![TensorType::new(DType::I64, shape)])
}

/// Checks that input `i` is a scalar or a 1-D tensor holding exactly one element.
fn expect_single_element(ctx: &InferCtx, i: usize, what: &str) -> Result<(), InferError> {
    let ty = ctx.input(i)?;
    let count = ty.volume().known();
    if ty.rank() > 1 || count.is_some_and(|n| n != 1) {
        return Err(ctx.err(format!("{what} must hold exactly one element, it has shape {:?}", ty.shape)));
    }
    Ok(())
}

fn top_k(ctx: &InferCtx, axis: i64) -> Result<Vec<TensorType>, InferError> {
    let x_dtype = ctx.expect_dtype(0, NUMERIC)?;
    let x = ctx.input(0)?;
    let axis = ctx.axis(axis, x.rank())?;
    ctx.expect_dtype(1, INDEX)?;
    expect_single_element(ctx, 1, "K")?;
    let k = if let Some(k) = ctx.const_ints(1) {
        let k = k.first().copied().ok_or_else(|| ctx.err("K is empty"))?;
        let k = usize::try_from(k).map_err(|_| ctx.err(format!("K = {k} must not be negative")))?;
        if let Dim::Known(n) = x.shape[axis] {
            if k > n {
                return Err(ctx.err(format!("K = {k} exceeds the size {n} of axis {axis}")));
            }
        }
        Dim::Known(k)
    } else {
        ctx.sym_input(1).and_then(|s| s.first().copied()?.to_dim()).unwrap_or(Dim::Unknown)
    };
    let mut shape = x.shape.clone();
    shape[axis] = k;
    let types = [TensorType::new(x_dtype, shape.clone()), TensorType::new(DType::I64, shape)];
    if !(1..=2).contains(&ctx.num_outputs()) {
        return Err(ctx.err(format!("has {} outputs, expected values and optionally indices", ctx.num_outputs())));
    }
    Ok(types[..ctx.num_outputs()].to_vec())
}

fn one_hot(ctx: &InferCtx, axis: i64) -> Result<Vec<TensorType>, InferError> {
    ctx.expect_dtype(0, NUMERIC)?;
    ctx.expect_dtype(1, NUMERIC)?;
    expect_single_element(ctx, 1, "depth")?;
    let indices = ctx.input(0)?;
    let values = ctx.input(2)?;
    if values.rank() != 1 || values.shape[0].known().is_some_and(|n| n != 2) {
        return Err(ctx.err(format!("values must be a 1-D tensor [off, on], it has shape {:?}", values.shape)));
    }
    let axis = ctx.axis(axis, indices.rank() + 1)?;
    let depth = if let Some(depth) = ctx.const_ints(1) {
        let d = depth.first().copied().ok_or_else(|| ctx.err("depth is empty"))?;
        Dim::Known(usize::try_from(d).map_err(|_| ctx.err(format!("depth = {d} must not be negative")))?)
    } else {
        ctx.sym_input(1).and_then(|s| s.first().copied()?.to_dim()).unwrap_or(Dim::Unknown)
    };
    let mut shape = indices.shape.clone();
    shape.insert(axis, depth);
    Ok(vec![TensorType::new(values.dtype, shape)])
}

#[cfg(test)]
mod tests {
    use super::super::infer_node;
    use crate::ir::{Dim, Graph, Op, ReduceOp, TensorType};
    use d2nn_runtime::{DType, Tensor};

    fn reduce_type(data: TensorType, axes: Option<Vec<i64>>, keepdims: bool, noop: bool) -> Result<TensorType, String> {
        let mut g = Graph::new("t");
        let x = g.add_input("x", data);
        let axes = axes.map(|a| g.add_const("axes", Tensor::vec_i64(a)));
        let op = Op::Reduce { op: ReduceOp::Sum, keepdims, noop_with_empty_axes: noop };
        let n = g.add_node(g.root, "r", op, vec![Some(x), axes], vec![("y".into(), TensorType::scalar(DType::F32))]);
        infer_node(&g, n).map(|mut t| t.remove(0)).map_err(|e| e.reason)
    }

    #[test]
    fn reductions_keep_symbolic_batch_and_drop_or_keep_axes() {
        let mut g = Graph::new("t");
        let n = Dim::sym(g.symbol("N"));
        let ty = TensorType::new(DType::F32, vec![n, Dim::Known(3), Dim::Known(4)]);
        let kept = reduce_type(ty.clone(), Some(vec![-1]), true, false).unwrap();
        assert_eq!(kept.shape, vec![n, Dim::Known(3), Dim::Known(1)]);
        let dropped = reduce_type(ty.clone(), Some(vec![1, 2]), false, false).unwrap();
        assert_eq!(dropped.shape, vec![n]);
        assert_eq!(reduce_type(ty.clone(), None, false, false).unwrap().shape, vec![]);
        assert_eq!(reduce_type(ty.clone(), Some(vec![]), true, true).unwrap(), ty);
        assert_eq!(reduce_type(ty.clone(), None, true, false).unwrap().shape, vec![Dim::Known(1); 3]);
    }

    #[test]
    fn bad_axes_are_reported() {
        let ty = TensorType::fixed(DType::F32, &[2, 3]);
        assert!(reduce_type(ty.clone(), Some(vec![2]), true, false).unwrap_err().contains("out of range"));
        assert!(reduce_type(ty, Some(vec![1, -1]), true, false).unwrap_err().contains("twice"));
    }

    #[test]
    fn runtime_axes_keep_the_rank_with_keepdims_and_need_a_count_without() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[1, 5, 6]));
        let axes = g.add_input("axes", TensorType::new(DType::I64, vec![Dim::Unknown]));
        let out = || vec![("y".to_string(), TensorType::scalar(DType::F32))];
        let keep = g.add_node(g.root, "k", Op::Reduce { op: ReduceOp::Max, keepdims: true, noop_with_empty_axes: false }, vec![Some(x), Some(axes)], out());
        assert_eq!(infer_node(&g, keep).unwrap()[0].shape, vec![Dim::Known(1), Dim::Unknown, Dim::Unknown]);
        let drop = g.add_node(g.root, "d", Op::Reduce { op: ReduceOp::Max, keepdims: false, noop_with_empty_axes: false }, vec![Some(x), Some(axes)], out());
        assert!(infer_node(&g, drop).unwrap_err().reason.contains("must be constant"));
    }

    #[test]
    fn top_k_and_one_hot_shapes() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[3, 4]));
        let k = g.add_const("k", Tensor::vec_i64(vec![2]));
        let outs = vec![("v".to_string(), TensorType::scalar(DType::F32)), ("i".to_string(), TensorType::scalar(DType::I64))];
        let n = g.add_node(g.root, "t", Op::TopK { axis: 0, largest: true, sorted: true }, vec![Some(x), Some(k)], outs);
        let types = infer_node(&g, n).unwrap();
        assert_eq!(types[0], TensorType::fixed(DType::F32, &[2, 4]));
        assert_eq!(types[1], TensorType::fixed(DType::I64, &[2, 4]));

        let idx = g.add_input("idx", TensorType::fixed(DType::I64, &[2, 3]));
        let depth = g.add_const("depth", Tensor::scalar_f32(5.0));
        let values = g.add_const("values", Tensor::from_i32(&[2], vec![0, 1]).unwrap());
        let n = g.add_node(g.root, "o", Op::OneHot { axis: -2 }, vec![Some(idx), Some(depth), Some(values)], vec![("y".into(), TensorType::scalar(DType::F32))]);
        assert_eq!(infer_node(&g, n).unwrap()[0], TensorType::fixed(DType::I32, &[2, 5, 3]));
    }
}
