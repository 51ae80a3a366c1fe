//! Softmax and LogSoftmax along one axis of a row-major tensor viewed as
//! `[outer, len, inner]` (`inner = 1` for the last axis, and for the opset <
//! 13 form that normalises every axis from `axis` on jointly).
//!
//! Numerically stable: the row maximum (NaN elements ignored, as `f32::max`
//! does) is subtracted before `exp`. As in the reference interpreter, the
//! shifted values, their exponentials and the sum are f64 and each result is
//! rounded to f32 once, so the two agree bit for bit; the exponentials wait
//! in an f64 scratch block (one allocation per call).
//!
//! `outer` is derived from the slice length, so the batch may vary.

use super::scratch::Reused;
use super::{blocks, expect_len, KernelError};
use std::cell::RefCell;

thread_local! {
    static EXPS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
    static MAX: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SUMS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Softmax (or its log when `log`) of `x` along the middle axis of
/// `[outer, len, inner]`, into `out` of the same size.
pub fn softmax(log: bool, len: usize, inner: usize, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    expect_len("output", out.len(), x.len())?;
    let block = len.checked_mul(inner).ok_or_else(|| KernelError::Geometry(format!("len {len} × inner {inner} overflows")))?;
    blocks("input", x.len(), block)?;
    if x.is_empty() {
        return Ok(());
    }
    let mut exps = Reused::new(&EXPS, if log { 0 } else { block }, 0.0);
    if inner == 1 {
        for (src, dst) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
            row(log, src, dst, &mut exps);
        }
        return Ok(());
    }
    let mut max = Reused::new(&MAX, inner, 0.0);
    let mut sum = Reused::new(&SUMS, inner, 0.0);
    for (src, dst) in x.chunks_exact(block).zip(out.chunks_exact_mut(block)) {
        max.fill(f32::NEG_INFINITY);
        for r in src.chunks_exact(inner) {
            for (m, &v) in max.iter_mut().zip(r) {
                *m = m.max(v);
            }
        }
        sum.fill(0.0);
        if log {
            for r in src.chunks_exact(inner) {
                for ((s, &v), &m) in sum.iter_mut().zip(r).zip(max.iter()) {
                    *s += (f64::from(v) - f64::from(m)).exp();
                }
            }
            sum.iter_mut().for_each(|s| *s = s.ln());
            let log_sum = &sum;
            for (r, d) in src.chunks_exact(inner).zip(dst.chunks_exact_mut(inner)) {
                for (((d, &v), &m), &l) in d.iter_mut().zip(r).zip(max.iter()).zip(log_sum.iter()) {
                    *d = (f64::from(v) - f64::from(m) - l) as f32;
                }
            }
        } else {
            for (r, e) in src.chunks_exact(inner).zip(exps.chunks_exact_mut(inner)) {
                for (((s, e), &v), &m) in sum.iter_mut().zip(e.iter_mut()).zip(r).zip(max.iter()) {
                    *e = (f64::from(v) - f64::from(m)).exp();
                    *s += *e;
                }
            }
            for (d, e) in dst.chunks_exact_mut(inner).zip(exps.chunks_exact(inner)) {
                for ((d, &e), &s) in d.iter_mut().zip(e).zip(sum.iter()) {
                    *d = (e / s) as f32;
                }
            }
        }
    }
    Ok(())
}

/// One contiguous row; `exps` is scratch of the row's length (empty for log).
fn row(log: bool, src: &[f32], dst: &mut [f32], exps: &mut [f64]) {
    let m = f64::from(src.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    if log {
        let sum = src.iter().fold(0f64, |s, &v| s + (f64::from(v) - m).exp());
        let l = sum.ln();
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = (f64::from(v) - m - l) as f32;
        }
    } else {
        let mut sum = 0f64;
        for (e, &v) in exps.iter_mut().zip(src) {
            *e = (f64::from(v) - m).exp();
            sum += *e;
        }
        for (d, &e) in dst.iter_mut().zip(exps.iter()) {
            *d = (e / sum) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, element by element, in f64.
    fn naive(log: bool, outer: usize, len: usize, inner: usize, x: &[f32]) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| (o * len + j) * inner + i;
                let max = (0..len).map(|j| f64::from(x[at(j)])).filter(|v| !v.is_nan()).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = (0..len).map(|j| (f64::from(x[at(j)]) - max).exp()).sum();
                for j in 0..len {
                    let shifted = f64::from(x[at(j)]) - max;
                    out[at(j)] = if log { shifted - sum.ln() } else { shifted.exp() / sum };
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_the_definition(
            log in any::<bool>(), outer in 0usize..4, len in 1usize..12, inner in 1usize..5,
            xs in prop::collection::vec(prop_oneof![9 => -30.0f32..30.0, 1 => prop::sample::select(vec![f32::NAN, f32::NEG_INFINITY, 1e4])], 240),
        ) {
            let n = outer * len * inner;
            let x = &xs[..n];
            let mut out = vec![0.0; n];
            softmax(log, len, inner, x, &mut out).unwrap();
            for (k, (&got, want)) in out.iter().zip(naive(log, outer, len, inner, x)).enumerate() {
                let got = f64::from(got);
                let ok = (got.is_nan() && want.is_nan())
                    || got == want
                    || (got - want).abs() <= 1e-6 * want.abs() + 1e-30;
                prop_assert!(ok, "log={log} [{outer},{len},{inner}] element {k}: got {got}, want {want}");
            }
        }
    }

    #[test]
    fn large_inputs_do_not_overflow() {
        let mut out = [0.0; 3];
        softmax(false, 3, 1, &[1000.0, 1000.0, -1000.0], &mut out).unwrap();
        assert_eq!(out, [0.5, 0.5, 0.0]);
        softmax(true, 3, 1, &[1000.0, 1000.0, 1000.0], &mut out).unwrap();
        assert!(out.iter().all(|&v| (v + 3f32.ln()).abs() < 1e-6));
        assert!(softmax(false, 2, 1, &[1.0; 3], &mut out).is_err());
    }
}
