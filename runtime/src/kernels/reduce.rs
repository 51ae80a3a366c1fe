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
//! `outer` is derived from the slice lengths, so the batch may vary.

use super::scratch::Reused;
use std::cell::RefCell;

thread_local! {
    static ACC: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}
use super::{blocks, expect_len, max_nan, min_nan, KernelError};

/// What a reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
