//! `OneHot`: indices `[outer, inner]` (the axes before and from the one-hot
//! axis) expand into `[outer, depth, inner]`, `on` where the depth position
//! equals the index and `off` elsewhere.
//!
//! As in the reference interpreter: float indices truncate toward zero (as
//! Rust's `as i64`: NaN is 0, out-of-range values saturate), a negative
//! index counts from the end (`index + depth`), and an index still outside
//! `0..depth` leaves its whole lane `off`.

use super::{blocks, expect_len, KernelError};

/// The geometry of a one-hot expansion.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OneHot {
    /// Length of the new axis.
    pub depth: usize,
    /// Index elements from the one-hot axis on (1 when it is last).
    pub inner: usize,
}

/// An index element type of [`one_hot`].
pub trait OneHotIndex: Copy {
    /// The index as the interpreter reads it (`as i64`).
    fn to_index(self) -> i64;
}

impl OneHotIndex for i64 {
    #[inline(always)]
    fn to_index(self) -> i64 {
        self
    }
}

impl OneHotIndex for i32 {
    #[inline(always)]
    fn to_index(self) -> i64 {
        i64::from(self)
    }
}

impl OneHotIndex for f32 {
    #[inline(always)]
    fn to_index(self) -> i64 {
        self as i64
    }
}

/// Expands `indices` (`[outer, inner]`, `outer` derived from the length)
/// into `out` (`[outer, depth, inner]`).
pub fn one_hot<I: OneHotIndex, T: Copy>(g: &OneHot, indices: &[I], off: T, on: T, out: &mut [T]) -> Result<(), KernelError> {
    let depth = i64::try_from(g.depth).map_err(|_| KernelError::Geometry(format!("depth {} is too large", g.depth)))?;
    let outer = blocks("indices", indices.len(), g.inner)?;
    let block = g.depth.checked_mul(g.inner).ok_or_else(|| KernelError::Geometry("depth × inner overflows".into()))?;
    expect_len("output", out.len(), outer.checked_mul(block).ok_or_else(|| KernelError::Geometry("output size overflows".into()))?)?;
    out.fill(off);
    if out.is_empty() {
        return Ok(());
    }
    for (lanes, dst) in indices.chunks_exact(g.inner).zip(out.chunks_exact_mut(block)) {
        for (i, &raw) in lanes.iter().enumerate() {
            let index = raw.to_index();
            // `index + depth` cannot overflow: index < 0 ≤ depth.
            let index = if index < 0 { index + depth } else { index };
            if (0..depth).contains(&index) {
                dst[index as usize * g.inner + i] = on;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `out[o, d, i] = on` exactly when the (wrapped) index of `[o, i]` is `d`.
        #[test]
        fn matches_the_definition(outer in 0usize..4, depth in 0usize..6, inner in 1usize..4, raw in prop::collection::vec(-8i64..8, 4 * 3)) {
            let idx = &raw[..outer * inner];
            let g = OneHot { depth, inner };
            let mut out = vec![7i32; outer * depth * inner];
            one_hot(&g, idx, -1, 5, &mut out).unwrap();
            for o in 0..outer {
                for d in 0..depth {
                    for i in 0..inner {
                        let k = idx[o * inner + i];
                        let k = if k < 0 { k + depth as i64 } else { k };
                        let want = if k == d as i64 { 5 } else { -1 };
                        prop_assert_eq!(out[(o * depth + d) * inner + i], want);
                    }
                }
            }
            // f32 and i32 indices give the same result.
            let as_f: Vec<f32> = idx.iter().map(|&v| v as f32 + if v < 0 { -0.5 } else { 0.5 }).collect();
            let mut again = vec![0i32; out.len()];
            one_hot(&g, &as_f, -1, 5, &mut again).unwrap();
            prop_assert_eq!(&again, &out);
            let as_i: Vec<i32> = idx.iter().map(|&v| v as i32).collect();
            one_hot(&g, &as_i, -1, 5, &mut again).unwrap();
            prop_assert_eq!(&again, &out);
        }
    }

    #[test]
    fn float_indices_truncate_and_nan_is_zero() {
        let mut out = [0u8; 12];
        one_hot(&OneHot { depth: 3, inner: 1 }, &[f32::NAN, -0.7, 2.9, f32::INFINITY], 0, 1, &mut out).unwrap();
        assert_eq!(out, [1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert!(one_hot(&OneHot { depth: 3, inner: 2 }, &[0i64; 3], 0, 1, &mut out).is_err());
        assert!(one_hot(&OneHot { depth: 3, inner: 1 }, &[0i64; 3], 0, 1, &mut out).is_err());
    }
}
