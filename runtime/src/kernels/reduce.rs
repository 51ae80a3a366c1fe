//! Reductions over one contiguous block of axes: the input is viewed as
//! `[outer, len, inner]` and reduced over `len` into `[outer, inner]`.
//!
//! Sums and means accumulate in f64, as the reference interpreter does.
//! With `inner = 1` a row is summed in four interleaved f64 partial sums so
//! the loop vectorises; the result then differs from a sequential f64 sum
//! only by f64 rounding (~1e-16 relative), which the final rounding to f32
//! almost always hides. With `inner > 1` each output accumulates its
//! elements in order. Max and Min propagate NaN; an empty reduction gives the
//! identity (0 for Sum, NaN for Mean, -inf for Max, +inf for Min).
//!
//! [`arg_reduce`] (ArgMax / ArgMin) returns the index of the extreme element
//! along the middle axis, for f32, i64 and i32: NaN counts as the extreme
//! for both (the first NaN wins, or the last with `select_last_index`),
//! ties go to the lower index unless `select_last_index`, and `-0.0` ties
//! with `0.0`, exactly as the reference interpreter decides.
//!
//! `outer` is derived from the slice lengths, so the batch may vary.

use super::scratch::Reused;
use std::cell::RefCell;

thread_local! {
    static ACC: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}
use super::{blocks, expect_len, max_nan, min_nan, KernelError};

/// What a reduction computes.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
}

/// Reduces `x` (`[outer, len, inner]`) over its middle axis into `out` (`[outer, inner]`).
pub fn reduce(kind: ReduceKind, len: usize, inner: usize, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    let outer = blocks("output", out.len(), inner)?;
    let block = len.checked_mul(inner).ok_or_else(|| KernelError::Geometry(format!("len {len} × inner {inner} overflows")))?;
    expect_len("input", x.len(), outer.checked_mul(block).ok_or_else(|| KernelError::Geometry("input size overflows".into()))?)?;
    if out.is_empty() {
        return Ok(());
    }
    if inner == 1 {
        let count = out.len();
        for (o, row) in out.iter_mut().zip(rows(x, len, count)) {
            *o = match kind {
                ReduceKind::Sum => sum_row(row) as f32,
                // 0 / 0 makes the mean of an empty row NaN, as numpy does.
                ReduceKind::Mean => (sum_row(row) / len as f64) as f32,
                ReduceKind::Max => fold_row(row, f32::NEG_INFINITY, max_nan),
                ReduceKind::Min => fold_row(row, f32::INFINITY, min_nan),
            };
        }
        return Ok(());
    }
    let mut acc = Reused::new(&ACC, inner, 0.0);
    for (o, dst) in out.chunks_exact_mut(inner).enumerate() {
        let src = &x[o * block..(o + 1) * block];
        match kind {
            ReduceKind::Sum | ReduceKind::Mean => {
                acc.fill(0.0);
                for row in src.chunks_exact(inner) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += f64::from(v);
                    }
                }
                let scale = if kind == ReduceKind::Mean { len as f64 } else { 1.0 };
                for (d, &a) in dst.iter_mut().zip(acc.iter()) {
                    *d = if kind == ReduceKind::Mean { (a / scale) as f32 } else { a as f32 };
                }
            }
            ReduceKind::Max | ReduceKind::Min => {
                let (init, f): (f32, fn(f32, f32) -> f32) =
                    if kind == ReduceKind::Max { (f32::NEG_INFINITY, max_nan) } else { (f32::INFINITY, min_nan) };
                dst.fill(init);
                for row in src.chunks_exact(inner) {
                    for (d, &v) in dst.iter_mut().zip(row) {
                        *d = f(*d, v);
                    }
                }
            }
        }
    }
    Ok(())
}

/// ArgMax or ArgMin over the middle axis of `[outer, len, inner]`, giving
/// `[outer, inner]` i64 indices in `0..len` (`keepdims` does not change the layout).
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgReduce {
    /// ArgMax (else ArgMin).
    pub max: bool,
    /// Ties (and NaNs) go to the last index rather than the first.
    pub select_last_index: bool,
    /// Length of the reduced axis (at least 1).
    pub len: usize,
    /// Elements after the reduced axis.
    pub inner: usize,
}

/// An element type [`arg_reduce`] orders.
pub trait ArgElement: Copy + PartialOrd {
    fn is_nan(self) -> bool;
}

impl ArgElement for f32 {
    #[inline(always)]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl ArgElement for i64 {
    #[inline(always)]
    fn is_nan(self) -> bool {
        false
    }
}

impl ArgElement for i32 {
    #[inline(always)]
    fn is_nan(self) -> bool {
        false
    }
}

/// Whether `candidate` (at a later index) replaces `best`: it is more
/// extreme, or as extreme and `last` asks for the last such index. NaN is
/// more extreme than any number, for ArgMax and ArgMin alike.
#[inline(always)]
fn replaces<T: ArgElement>(candidate: T, best: T, max: bool, last: bool) -> bool {
    use std::cmp::Ordering;
    let more_extreme = match (candidate.is_nan(), best.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) if max => candidate.partial_cmp(&best).unwrap_or(Ordering::Equal),
        (false, false) => best.partial_cmp(&candidate).unwrap_or(Ordering::Equal),
    };
    more_extreme == Ordering::Greater || (last && more_extreme == Ordering::Equal)
}

/// The index of the extreme element of every `len`-long lane of `x`
/// (`[outer, len, inner]`, `outer` derived from `out`'s length) into `out`
/// (`[outer, inner]`).
pub fn arg_reduce<T: ArgElement>(g: &ArgReduce, x: &[T], out: &mut [i64]) -> Result<(), KernelError> {
    let (len, inner) = (g.len, g.inner);
    if len == 0 {
        return Err(KernelError::Geometry("ArgMax/ArgMin over an empty axis has no index to return".into()));
    }
    let outer = blocks("output", out.len(), inner)?;
    let block = len.checked_mul(inner).ok_or_else(|| KernelError::Geometry(format!("len {len} × inner {inner} overflows")))?;
    expect_len("input", x.len(), outer.checked_mul(block).ok_or_else(|| KernelError::Geometry("input size overflows".into()))?)?;
    if out.is_empty() {
        return Ok(());
    }
    let (max, last) = (g.max, g.select_last_index);
    if inner == 1 {
        for (o, row) in out.iter_mut().zip(x.chunks_exact(len)) {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate().skip(1) {
                if replaces(v, row[best], max, last) {
                    best = j;
                }
            }
            *o = best as i64;
        }
        return Ok(());
    }
    // Sweep the lanes of a block row by row (contiguous), keeping each
    // lane's best index in `out`.
    for (src, dst) in x.chunks_exact(block).zip(out.chunks_exact_mut(inner)) {
        dst.fill(0);
        for (j, row) in src.chunks_exact(inner).enumerate().skip(1) {
            for (i, (d, &v)) in dst.iter_mut().zip(row).enumerate() {
                if replaces(v, src[*d as usize * inner + i], max, last) {
                    *d = j as i64;
                }
            }
        }
    }
    Ok(())
}

/// The `count` consecutive `len`-element rows of `x` (`len` may be 0).
fn rows(x: &[f32], len: usize, count: usize) -> impl Iterator<Item = &[f32]> {
    (0..count).map(move |r| &x[r * len..(r + 1) * len])
}

/// The f64 sum of a row in four interleaved partial sums.
fn sum_row(row: &[f32]) -> f64 {
    let mut lanes = [0f64; 4];
    let chunks = row.chunks_exact(4);
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f64::from(v);
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

/// Folds a row with an associative, NaN-propagating `f` in eight lanes.
#[inline(always)]
fn fold_row(row: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(init, |m, &v| f(m, v));
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = f(*l, v);
        }
    }
    lanes.iter().fold(tail, |m, &v| f(m, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: every output cell folds its elements in order.
    fn naive(kind: ReduceKind, outer: usize, len: usize, inner: usize, x: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        for o in 0..outer {
            for i in 0..inner {
                let values = (0..len).map(|j| x[(o * len + j) * inner + i]);
                out.push(match kind {
                    ReduceKind::Sum => values.map(f64::from).sum::<f64>() as f32,
                    ReduceKind::Mean => (values.map(f64::from).sum::<f64>() / len as f64) as f32,
                    ReduceKind::Max => values.fold(f32::NEG_INFINITY, |m, v| if m.is_nan() || v.is_nan() { f32::NAN } else { m.max(v) }),
                    ReduceKind::Min => values.fold(f32::INFINITY, |m, v| if m.is_nan() || v.is_nan() { f32::NAN } else { m.min(v) }),
                });
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_the_definition(
            kind in prop::sample::select(vec![ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min]),
            outer in 0usize..4, len in 0usize..20, inner in 1usize..6, nan in any::<bool>(), seed in any::<u32>(),
        ) {
            let n = outer * len * inner;
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    let h = (i as u32 ^ seed).wrapping_mul(2654435761);
                    if nan && h.is_multiple_of(13) { f32::NAN } else { (h % 1000) as f32 / 37.0 - 13.0 }
                })
                .collect();
            let mut out = vec![0.0; outer * inner];
            reduce(kind, len, inner, &x, &mut out).unwrap();
            for (&got, want) in out.iter().zip(naive(kind, outer, len, inner, &x)) {
                let ok = (got.is_nan() && want.is_nan()) || got == want || (got - want).abs() <= 1e-6 * want.abs();
                prop_assert!(ok, "{kind:?} [{outer},{len},{inner}]: got {got}, want {want}");
            }
        }
    }

    /// ArgMax/ArgMin from the definition: scan each lane keeping the
    /// extreme, NaN above everything.
    fn naive_arg(max: bool, last: bool, outer: usize, len: usize, inner: usize, x: &[f32]) -> Vec<i64> {
        // NaN above every number; ArgMin orders by the negated value.
        let key = |v: f32| if v.is_nan() { (1, 0.0) } else { (0, if max { f64::from(v) } else { -f64::from(v) }) };
        let mut out = Vec::new();
        for o in 0..outer {
            for i in 0..inner {
                let lane: Vec<(u8, f64)> = (0..len).map(|j| key(x[(o * len + j) * inner + i])).collect();
                let top = lane.iter().copied().fold((0, f64::NEG_INFINITY), |m, k| if k.0 > m.0 || (k.0 == m.0 && k.1 > m.1) { k } else { m });
                let hits: Vec<usize> = (0..len).filter(|&j| lane[j] == top).collect();
                out.push(if last { *hits.last().unwrap() } else { hits[0] } as i64);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn arg_reduce_matches_the_definition(
            max in any::<bool>(), last in any::<bool>(), outer in 0usize..4, len in 1usize..12, inner in 1usize..5,
            x in prop::collection::vec(prop_oneof![6 => (-3i32..4).prop_map(|v| v as f32), 1 => prop::sample::select(vec![f32::NAN, -0.0, f32::INFINITY, f32::NEG_INFINITY])], 4 * 12 * 5),
        ) {
            let x = &x[..outer * len * inner];
            let g = ArgReduce { max, select_last_index: last, len, inner };
            let mut out = vec![-1; outer * inner];
            arg_reduce(&g, x, &mut out).unwrap();
            prop_assert_eq!(&out, &naive_arg(max, last, outer, len, inner, x));
            // Integers order the same way (without NaN).
            let ints: Vec<i64> = x.iter().map(|&v| if v.is_nan() { 0 } else { v as i64 }).collect();
            let as_f: Vec<f32> = ints.iter().map(|&v| v as f32).collect();
            arg_reduce(&g, &ints, &mut out).unwrap();
            prop_assert_eq!(&out, &naive_arg(max, last, outer, len, inner, &as_f));
        }
    }

    #[test]
    fn arg_reduce_edges() {
        let mut out = [0i64; 2];
        let g = ArgReduce { max: true, select_last_index: false, len: 3, inner: 1 };
        arg_reduce(&g, &[-0.0f32, 0.0, -1.0, 1.0, f32::NAN, f32::NAN], &mut out).unwrap();
        assert_eq!(out, [0, 1]);
        arg_reduce(&ArgReduce { select_last_index: true, ..g }, &[-0.0f32, 0.0, -1.0, 1.0, f32::NAN, f32::NAN], &mut out).unwrap();
        assert_eq!(out, [1, 2]);
        assert!(arg_reduce(&ArgReduce { len: 0, ..g }, &[0.0f32; 0], &mut out).is_err());
        assert!(arg_reduce(&g, &[0.0f32; 5], &mut out).is_err());
    }

    #[test]
    fn empty_reductions_give_identities() {
        let mut out = [1.0; 2];
        reduce(ReduceKind::Sum, 0, 1, &[], &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0]);
        reduce(ReduceKind::Mean, 0, 2, &[], &mut out).unwrap();
        assert!(out.iter().all(|v| v.is_nan()));
        reduce(ReduceKind::Max, 0, 1, &[], &mut out).unwrap();
        assert_eq!(out, [f32::NEG_INFINITY; 2]);
        assert!(reduce(ReduceKind::Sum, 3, 1, &[1.0; 5], &mut out).is_err());
        assert!(reduce(ReduceKind::Sum, 3, 2, &[1.0; 6], &mut [0.0; 3]).is_err());
    }
}
