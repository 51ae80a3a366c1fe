//! Kernels for reductions (`Reduce*`, `ArgMax`/`ArgMin`), `TopK` and `OneHot`.
//!
//! Semantics follow the ONNX reference implementation: reductions over an
//! empty set give the operation's identity (0 for sums, 1 for products,
//! -inf / the integer minimum / false for max and the mirror for min, NaN for
//! a float mean); NaN propagates through max/min and wins arg-reductions and
//! TopK (it orders above every number); ties go to the lower index unless
//! `select_last_index` asks otherwise.

use super::util;
use super::EvalCtx;
use crate::ir::{Op, ReduceOp};
use d2nn_runtime::Tensor;
use ndarray::{ArrayD, Axis, IxDyn};
use std::cmp::Ordering;

/// Largest output the interpreter builds for OneHot, whose size comes from data.
const MAX_ONE_HOT_ELEMENTS: usize = 1 << 31;

pub(super) fn eval(ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
    match ctx.op() {
        Op::Reduce { op, keepdims, noop_with_empty_axes } => {
            let axes = ctx.opt_input(1).map(Tensor::to_i64_vec).unwrap_or_default();
            Ok(vec![reduce(ctx.input(0)?, &axes, *op, *keepdims, *noop_with_empty_axes)?])
        }
        Op::ArgReduce { max, axis, keepdims, select_last_index } => {
            Ok(vec![arg_reduce(ctx.input(0)?, *axis, *max, *keepdims, *select_last_index)?])
        }
        Op::TopK { axis, largest, .. } => {
            let (values, indices) = top_k(ctx.input(0)?, ctx.input(1)?, *axis, *largest)?;
            let mut outs = vec![values, indices];
            outs.truncate(ctx.num_outputs());
            Ok(outs)
        }
        Op::OneHot { axis } => Ok(vec![one_hot(ctx.input(0)?, ctx.input(1)?, ctx.input(2)?, *axis)?]),
        other => Err(format!("{} is not in the reduce family", other.name())),
    }
}

/// One flag per axis: whether the reduction folds it.
fn reduced_axes(axes: &[i64], rank: usize) -> Result<Vec<bool>, String> {
    let mut reduced = vec![false; rank];
    for &a in axes {
        let axis = util::axis(a, rank)?;
        if std::mem::replace(&mut reduced[axis], true) {
            return Err(format!("axes {axes:?} name axis {axis} twice"));
        }
    }
    Ok(reduced)
}

pub fn reduce(data: &Tensor, axes: &[i64], op: ReduceOp, keepdims: bool, noop_with_empty_axes: bool) -> Result<Tensor, String> {
    if axes.is_empty() && noop_with_empty_axes {
        return Ok(data.clone());
    }
    let rank = data.rank();
    let reduced = if axes.is_empty() { vec![true; rank] } else { reduced_axes(axes, rank)? };
    let count: usize = data.shape().iter().zip(&reduced).filter(|(_, &r)| r).map(|(&d, _)| d).product();
    let kept = match data {
        Tensor::F32(a) => Tensor::F32(reduce_f32(a, &reduced, op, count)),
        Tensor::I64(a) => Tensor::I64(reduce_int(a, &reduced, op, count, IntRange { min: i64::MIN, max: i64::MAX, wrap: |v| v })?),
        Tensor::I32(a) => {
            let wide = a.mapv(i64::from);
            let range = IntRange { min: i32::MIN.into(), max: i32::MAX.into(), wrap: |v| v as i32 as i64 };
            Tensor::I32(reduce_int(&wide, &reduced, op, count, range)?.mapv(|v| v as i32))
        }
        Tensor::Bool(a) => Tensor::Bool(reduce_bool(a, &reduced, op)?),
    };
    if keepdims {
        return Ok(kept);
    }
    let shape: Vec<usize> = data.shape().iter().zip(&reduced).filter(|(_, &r)| !r).map(|(&d, _)| d).collect();
    kept.reshaped(&shape).map_err(|e| e.to_string())
}

/// Folds every element into the output cell that shares its unreduced
/// coordinates (reduced axes are kept with size 1).
fn fold_axes<T: Copy, A: Copy>(x: &ArrayD<T>, reduced: &[bool], init: A, step: impl Fn(A, T) -> A) -> ArrayD<A> {
    let out_shape: Vec<usize> = x.shape().iter().zip(reduced).map(|(&d, &r)| if r { 1 } else { d }).collect();
    let mut out = ArrayD::from_elem(IxDyn(&out_shape), init);
    for (mut index, &v) in x.indexed_iter() {
        for (axis, &r) in reduced.iter().enumerate() {
            if r {
                index[axis] = 0;
            }
        }
        let cell = &mut out[index];
        *cell = step(*cell, v);
    }
    out
}

fn reduce_f32(a: &ArrayD<f32>, reduced: &[bool], op: ReduceOp, count: usize) -> ArrayD<f32> {
    // Sums accumulate in f64 so the oracle is close to the exact result;
    // back ends are compared against it with a tolerance.
    let sum = |square: bool| fold_axes(a, reduced, 0f64, |acc, v| acc + if square { f64::from(v) * f64::from(v) } else { f64::from(v) });
    match op {
        ReduceOp::Sum => sum(false).mapv(|s| s as f32),
        // 0 / 0 makes the mean of an empty set NaN, as numpy does.
        ReduceOp::Mean => sum(false).mapv(|s| (s / count as f64) as f32),
        ReduceOp::L2 => sum(true).mapv(|s| s.sqrt() as f32),
        ReduceOp::Prod => fold_axes(a, reduced, 1f32, |acc, v| acc * v),
        ReduceOp::Max => fold_axes(a, reduced, f32::NEG_INFINITY, |acc, v| if acc.is_nan() || v.is_nan() { f32::NAN } else { acc.max(v) }),
        ReduceOp::Min => fold_axes(a, reduced, f32::INFINITY, |acc, v| if acc.is_nan() || v.is_nan() { f32::NAN } else { acc.min(v) }),
    }
}

/// The value range of a narrower integer type computed in i64, and how its
/// arithmetic wraps.
struct IntRange {
    min: i64,
    max: i64,
    wrap: fn(i64) -> i64,
}

fn reduce_int(a: &ArrayD<i64>, reduced: &[bool], op: ReduceOp, count: usize, range: IntRange) -> Result<ArrayD<i64>, String> {
    let wrap = range.wrap;
    // Integer sums and products wrap on overflow, like numpy with an integer dtype.
    let sum = |square: bool| fold_axes(a, reduced, 0i64, |acc, v| wrap(acc.wrapping_add(if square { v.wrapping_mul(v) } else { v })));
    Ok(match op {
        ReduceOp::Sum => sum(false),
        ReduceOp::Mean => {
            if count == 0 {
                return Err("ReduceMean of an empty set of integers is undefined".into());
            }
            // Truncating division, as numpy's mean cast back to the integer type.
            sum(false).mapv(|s| s / count as i64)
        }
        // sqrt then truncation toward zero, as the spec's `.astype(data.dtype)`.
        ReduceOp::L2 => sum(true).mapv(|s| (s as f64).sqrt() as i64),
        ReduceOp::Prod => fold_axes(a, reduced, 1i64, |acc, v| wrap(acc.wrapping_mul(v))),
        ReduceOp::Max => fold_axes(a, reduced, range.min, i64::max),
        ReduceOp::Min => fold_axes(a, reduced, range.max, i64::min),
    })
}

fn reduce_bool(a: &ArrayD<bool>, reduced: &[bool], op: ReduceOp) -> Result<ArrayD<bool>, String> {
    match op {
        ReduceOp::Max => Ok(fold_axes(a, reduced, false, |acc, v| acc || v)),
        ReduceOp::Min => Ok(fold_axes(a, reduced, true, |acc, v| acc && v)),
        other => Err(format!("Reduce{other:?} is not defined for bool tensors")),
    }
}

/// Element types that arg-reductions and TopK order.
trait Ordered: Copy + PartialOrd {
    fn is_nan(self) -> bool;
}
impl Ordered for f32 {
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}
impl Ordered for i64 {
    fn is_nan(self) -> bool {
        false
    }
}
impl Ordered for i32 {
    fn is_nan(self) -> bool {
        false
    }
}

/// A total order with NaN above every number (numpy's sort order) and
/// `-0.0 == 0.0`, so such ties fall back to the index.
fn nan_greatest<T: Ordered>(a: T, b: T) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

pub fn arg_reduce(data: &Tensor, axis: i64, max: bool, keepdims: bool, select_last_index: bool) -> Result<Tensor, String> {
    let axis = util::axis(axis, data.rank())?;
    if data.shape()[axis] == 0 {
        return Err(format!("axis {axis} is empty; there is no index to return"));
    }
    let picked = match data {
        Tensor::F32(a) => arg_lanes(a, axis, max, select_last_index),
        Tensor::I64(a) => arg_lanes(a, axis, max, select_last_index),
        Tensor::I32(a) => arg_lanes(a, axis, max, select_last_index),
        Tensor::Bool(_) => return Err("ArgMax/ArgMin are not defined for bool tensors".into()),
    };
    Ok(Tensor::I64(if keepdims { picked.insert_axis(Axis(axis)) } else { picked }))
}

fn arg_lanes<T: Ordered>(a: &ArrayD<T>, axis: usize, max: bool, last: bool) -> ArrayD<i64> {
    a.map_axis(Axis(axis), |lane| {
        let mut best = 0;
        for i in 1..lane.len() {
            // Like numpy, NaN is the extreme for both ArgMax and ArgMin.
            let more_extreme = match (lane[i].is_nan(), lane[best].is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) if max => nan_greatest(lane[i], lane[best]),
                (false, false) => nan_greatest(lane[best], lane[i]),
            };
            if more_extreme == Ordering::Greater || (more_extreme == Ordering::Equal && last) {
                best = i;
            }
        }
        best as i64
    })
}

pub fn top_k(x: &Tensor, k: &Tensor, axis: i64, largest: bool) -> Result<(Tensor, Tensor), String> {
    let axis = util::axis(axis, x.rank())?;
    let k = match k.to_i64_vec()[..] {
        [k] => k,
        _ => return Err(format!("K must hold exactly one element, it has shape {:?}", k.shape())),
    };
    let n = x.shape()[axis];
    let k = usize::try_from(k).ok().filter(|&k| k <= n).ok_or_else(|| format!("K = {k} is outside 0..={n} (the size of axis {axis})"))?;
    Ok(match x {
        Tensor::F32(a) => wrap_top_k(top_k_lanes(a, axis, k, largest)),
        Tensor::I64(a) => wrap_top_k(top_k_lanes(a, axis, k, largest)),
        Tensor::I32(a) => wrap_top_k(top_k_lanes(a, axis, k, largest)),
        Tensor::Bool(_) => return Err("TopK is not defined for bool tensors".into()),
    })
}

fn wrap_top_k<T>((values, indices): (ArrayD<T>, ArrayD<i64>)) -> (Tensor, Tensor)
where
    Tensor: From<ArrayD<T>>,
{
    (Tensor::from(values), Tensor::I64(indices))
}

fn top_k_lanes<T: Ordered + Default>(a: &ArrayD<T>, axis: usize, k: usize, largest: bool) -> (ArrayD<T>, ArrayD<i64>) {
    let mut shape = a.shape().to_vec();
    shape[axis] = k;
    let mut values = ArrayD::from_elem(IxDyn(&shape), T::default());
    let mut indices = ArrayD::from_elem(IxDyn(&shape), 0i64);
    let lanes = a.lanes(Axis(axis)).into_iter();
    let outs = values.lanes_mut(Axis(axis)).into_iter().zip(indices.lanes_mut(Axis(axis)));
    for (src, (mut vals, mut idxs)) in lanes.zip(outs) {
        let mut order: Vec<usize> = (0..src.len()).collect();
        order.sort_by(|&i, &j| {
            let by_value = nan_greatest(src[i], src[j]);
            let by_value = if largest { by_value.reverse() } else { by_value };
            by_value.then(i.cmp(&j))
        });
        for (slot, &i) in order.iter().take(k).enumerate() {
            vals[slot] = src[i];
            idxs[slot] = i as i64;
        }
    }
    (values, indices)
}

pub fn one_hot(indices: &Tensor, depth: &Tensor, values: &Tensor, axis: i64) -> Result<Tensor, String> {
    let depth = match depth.to_i64_vec()[..] {
        [d] if d >= 0 => d,
        [d] => return Err(format!("depth = {d} must not be negative")),
        _ => return Err(format!("depth must hold exactly one element, it has shape {:?}", depth.shape())),
    };
    if values.shape() != [2] {
        return Err(format!("values must be [off, on], it has shape {:?}", values.shape()));
    }
    let axis = util::axis(axis, indices.rank() + 1)?;
    let mut shape = indices.shape().to_vec();
    shape.insert(axis, depth as usize);
    let total = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&t| t <= MAX_ONE_HOT_ELEMENTS);
    if total.is_none() {
        return Err(format!("output shape {shape:?} is too large"));
    }
    // Float indices are truncated toward zero, as the spec's cast to int64.
    let hot = indices.to_i64_vec();
    let inner: usize = indices.shape()[axis..].iter().product();
    let positions: Vec<Option<usize>> = hot
        .iter()
        .enumerate()
        .map(|(p, &i)| {
            let i = if i < 0 { i + depth } else { i };
            (0..depth).contains(&i).then(|| {
                // `inner` is non-zero whenever there is an index to place.
                let (outer, within) = (p / inner.max(1), p % inner.max(1));
                (outer * depth as usize + i as usize) * inner + within
            })
        })
        .collect();
    Ok(match values {
        Tensor::F32(v) => Tensor::F32(place(&shape, v, &positions)?),
        Tensor::I64(v) => Tensor::I64(place(&shape, v, &positions)?),
        Tensor::I32(v) => Tensor::I32(place(&shape, v, &positions)?),
        Tensor::Bool(v) => Tensor::Bool(place(&shape, v, &positions)?),
    })
}

/// A tensor of `shape` filled with `off_on[0]`, with `off_on[1]` at each position.
fn place<T: Copy>(shape: &[usize], off_on: &ArrayD<T>, positions: &[Option<usize>]) -> Result<ArrayD<T>, String> {
    let pair: Vec<T> = off_on.iter().copied().collect();
    let [off, on] = pair[..] else { return Err("values must hold [off, on]".into()) };
    let mut data = vec![off; shape.iter().product()];
    for &p in positions.iter().flatten() {
        data[p] = on;
    }
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f32s(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_f32(shape, v).unwrap()
    }

    #[test]
    fn reductions_over_empty_sets_give_the_identity() {
        let empty = f32s(&[2, 0, 4], vec![]);
        let all = |op| reduce(&empty, &[1], op, true, false).unwrap();
        assert_eq!(all(ReduceOp::Sum), f32s(&[2, 1, 4], vec![0.0; 8]));
        assert_eq!(all(ReduceOp::Prod), f32s(&[2, 1, 4], vec![1.0; 8]));
        assert_eq!(all(ReduceOp::Max), f32s(&[2, 1, 4], vec![f32::NEG_INFINITY; 8]));
        assert_eq!(all(ReduceOp::Min), f32s(&[2, 1, 4], vec![f32::INFINITY; 8]));
        assert!(all(ReduceOp::Mean).to_f32_vec().iter().all(|v| v.is_nan()));
        let empty_ints = Tensor::from_i32(&[0, 3], vec![]).unwrap();
        assert_eq!(reduce(&empty_ints, &[0], ReduceOp::Max, false, false).unwrap(), Tensor::from_i32(&[3], vec![i32::MIN; 3]).unwrap());
        let empty_bools = Tensor::from_bool(&[0], vec![]).unwrap();
        assert_eq!(reduce(&empty_bools, &[], ReduceOp::Min, false, false).unwrap().to_i64_vec(), vec![1]);
        // A zero-sized axis that is not reduced leaves an empty result.
        assert_eq!(reduce(&empty, &[2], ReduceOp::Sum, true, false).unwrap().shape(), &[2, 0, 1]);
    }

    #[test]
    fn empty_axes_reduce_everything_unless_noop() {
        let x = f32s(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(reduce(&x, &[], ReduceOp::Sum, false, false).unwrap(), Tensor::scalar_f32(10.0));
        assert_eq!(reduce(&x, &[], ReduceOp::Sum, true, true).unwrap(), x);
        assert_eq!(reduce(&x, &[-1], ReduceOp::L2, false, false).unwrap(), f32s(&[2], vec![5f32.sqrt(), 5.0]));
        assert!(reduce(&x, &[0, -2], ReduceOp::Sum, false, false).unwrap_err().contains("twice"));
    }

    #[test]
    fn max_and_min_propagate_nan() {
        let x = f32s(&[3], vec![1.0, f32::NAN, 3.0]);
        assert!(reduce(&x, &[], ReduceOp::Max, false, false).unwrap().to_f32_vec()[0].is_nan());
        assert!(reduce(&x, &[], ReduceOp::Min, false, false).unwrap().to_f32_vec()[0].is_nan());
    }

    #[test]
    fn integer_reductions_wrap_and_truncate() {
        let x = Tensor::from_i32(&[2], vec![i32::MAX, 2]).unwrap();
        assert_eq!(reduce(&x, &[], ReduceOp::Sum, false, false).unwrap().to_i64_vec(), vec![i32::MIN as i64 + 1]);
        let y = Tensor::from_i64(&[3], vec![-1, -2, -4]).unwrap();
        assert_eq!(reduce(&y, &[], ReduceOp::Mean, false, false).unwrap().to_i64_vec(), vec![-2]);
        assert_eq!(reduce(&y, &[], ReduceOp::L2, false, false).unwrap().to_i64_vec(), vec![4]);
    }

    #[test]
    fn arg_reductions_break_ties_by_index_and_prefer_nan() {
        let x = f32s(&[2, 3], vec![2.0, 5.0, 5.0, 1.0, f32::NAN, 1.0]);
        assert_eq!(arg_reduce(&x, 1, true, false, false).unwrap().to_i64_vec(), vec![1, 1]);
        assert_eq!(arg_reduce(&x, 1, true, true, true).unwrap().to_i64_vec(), vec![2, 1]);
        assert_eq!(arg_reduce(&x, -1, false, false, false).unwrap().to_i64_vec(), vec![0, 1]);
        assert_eq!(arg_reduce(&x, 0, false, true, false).unwrap().shape(), &[1, 3]);
        let empty = f32s(&[0, 2], vec![]);
        assert!(arg_reduce(&empty, 0, true, true, false).is_err());
    }

    #[test]
    fn top_k_orders_ties_by_lower_index() {
        let x = Tensor::from_i64(&[5], vec![3, 1, 3, 2, 1]).unwrap();
        let k = Tensor::vec_i64(vec![3]);
        let (v, i) = top_k(&x, &k, 0, true).unwrap();
        assert_eq!((v.to_i64_vec(), i.to_i64_vec()), (vec![3, 3, 2], vec![0, 2, 3]));
        let (v, i) = top_k(&x, &k, 0, false).unwrap();
        assert_eq!((v.to_i64_vec(), i.to_i64_vec()), (vec![1, 1, 2], vec![1, 4, 3]));
        assert!(top_k(&x, &Tensor::vec_i64(vec![6]), 0, true).is_err());
        let nan = f32s(&[3], vec![1.0, f32::NAN, 2.0]);
        let (_, i) = top_k(&nan, &Tensor::vec_i64(vec![1]), 0, true).unwrap();
        assert_eq!(i.to_i64_vec(), vec![1]);
    }

    #[test]
    fn one_hot_wraps_negative_indices_and_ignores_out_of_range() {
        let idx = Tensor::from_i64(&[4], vec![0, -1, 3, -4]).unwrap();
        let values = f32s(&[2], vec![0.5, 9.0]);
        let y = one_hot(&idx, &Tensor::scalar_f32(3.0), &values, -1).unwrap();
        assert_eq!(y.shape(), &[4, 3]);
        assert_eq!(y.to_f32_vec(), vec![9.0, 0.5, 0.5, 0.5, 0.5, 9.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
        let idx = Tensor::from_i64(&[2, 2], vec![0, 1, 1, 0]).unwrap();
        let y = one_hot(&idx, &Tensor::vec_i64(vec![2]), &Tensor::from_i64(&[2], vec![0, 1]).unwrap(), 1).unwrap();
        // output[i, d, j] = (idx[i, j] == d)
        assert_eq!(y.shape(), &[2, 2, 2]);
        assert_eq!(y.to_i64_vec(), vec![1, 0, 0, 1, 0, 1, 1, 0]);
    }

    proptest! {
        #[test]
        fn reducing_axes_one_at_a_time_matches_reducing_them_together(
            data in proptest::collection::vec(-4i64..5, 24),
            axes in proptest::sample::subsequence(vec![0i64, 1, 2], 1..=3),
        ) {
            let x = Tensor::from_i64(&[2, 3, 4], data).unwrap();
            for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::Prod] {
                let together = reduce(&x, &axes, op, true, false).unwrap();
                let mut stepwise = x.clone();
                for &a in &axes {
                    stepwise = reduce(&stepwise, &[a], op, true, false).unwrap();
                }
                prop_assert_eq!(&together, &stepwise);
            }
        }

        #[test]
        fn top_k_values_are_the_sorted_prefix(data in proptest::collection::vec(-50i32..50, 1..12), k in 0usize..12) {
            let n = data.len();
            let k = k.min(n);
            let x = Tensor::from_i32(&[n], data.clone()).unwrap();
            let (v, i) = top_k(&x, &Tensor::vec_i64(vec![k as i64]), 0, true).unwrap();
            let mut sorted = data.clone();
            sorted.sort_by(|a, b| b.cmp(a));
            let expect: Vec<i64> = sorted[..k].iter().map(|&v| v as i64).collect();
            prop_assert_eq!(v.to_i64_vec(), expect);
            for (value, index) in v.to_i64_vec().into_iter().zip(i.to_i64_vec()) {
                prop_assert_eq!(data[index as usize] as i64, value);
            }
        }
    }
}
