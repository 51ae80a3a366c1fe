//! `Cast` between the element types a tensor holds: f32, i64, i32 and bool,
//! stored as one `u8` byte, 0 or 1 (any non-zero byte reads as true).
//!
//! Each conversion is the reference interpreter's (`Tensor::cast`): Rust's
//! `as`, so float → integer truncates toward zero, saturates at the
//! integer's range and maps NaN to 0; i64 → i32 wraps; integer → f32 rounds
//! to nearest; anything → bool is `!= 0` (NaN is true, -0.0 false); bool →
//! number is 0 or 1.

use super::{expect_len, KernelError};

/// A conversion from `S` to `Self`, as `Cast` computes it.
pub trait CastFrom<S>: Copy {
    fn cast_from(v: S) -> Self;
}

macro_rules! cast_as {
    ($($s:ty => $d:ty),* $(,)?) => {
        $(impl CastFrom<$s> for $d {
            #[inline(always)]
            fn cast_from(v: $s) -> $d {
                v as $d
            }
        })*
    };
}

cast_as!(
    f32 => f32, f32 => i64, f32 => i32,
    i64 => f32, i64 => i64, i64 => i32,
    i32 => f32, i32 => i64, i32 => i32,
);

macro_rules! to_bool {
    ($($s:ty: $zero:expr),*) => {
        $(impl CastFrom<$s> for u8 {
            #[inline(always)]
            fn cast_from(v: $s) -> u8 {
                u8::from(v != $zero)
            }
        })*
    };
}

to_bool!(f32: 0.0, i64: 0, i32: 0, u8: 0);

macro_rules! from_bool {
    ($($d:ty),*) => {
        $(impl CastFrom<u8> for $d {
            #[inline(always)]
            fn cast_from(v: u8) -> $d {
                u8::from(v != 0) as $d
            }
        })*
    };
}

from_bool!(f32, i64, i32);

/// `out[i] = D::cast_from(x[i])`; `u8` is bool on either side.
pub fn cast<S: Copy, D: CastFrom<S>>(x: &[S], out: &mut [D]) -> Result<(), KernelError> {
    expect_len("output", out.len(), x.len())?;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = D::cast_from(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn via<S: Copy, D: CastFrom<S>>(x: &[S]) -> Vec<D> {
        let mut out = vec![D::cast_from(x[0]); x.len()];
        cast(x, &mut out).unwrap();
        out
    }

    #[test]
    fn edge_values() {
        let f = [1.7f32, -1.7, f32::NAN, 3e12, -3e12, f32::INFINITY, -0.0, 0.0];
        assert_eq!(via::<f32, i32>(&f), vec![1, -1, 0, i32::MAX, i32::MIN, i32::MAX, 0, 0]);
        assert_eq!(via::<f32, i64>(&f), vec![1, -1, 0, 3e12f32 as i64, -3e12f32 as i64, i64::MAX, 0, 0]);
        assert_eq!(via::<f32, u8>(&f), vec![1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(via::<i64, i32>(&[1 << 32 | 5, -1, i64::MIN]), vec![5, -1, 0]);
        assert_eq!(via::<i64, f32>(&[(1 << 24) + 1, -3]), vec![16_777_216.0, -3.0]);
        assert_eq!(via::<u8, f32>(&[0, 1, 2]), vec![0.0, 1.0, 1.0]);
        assert_eq!(via::<u8, u8>(&[0, 1, 2]), vec![0, 1, 1]);
        assert!(cast(&[1.0f32; 2], &mut [0i64; 3]).is_err());
    }

    proptest! {
        /// Every pair agrees with `Tensor::cast`, the interpreter's Cast.
        #[test]
        fn matches_tensor_cast(v in prop::collection::vec(prop_oneof![
            4 => -1e10f32..1e10,
            1 => prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.5, -0.5, 2.5e9, -2.5e9, 1e19, -1e19]),
        ], 1..20)) {
            use crate::{DType, Tensor};
            let t = Tensor::from_f32(&[v.len()], v.clone()).unwrap();
            prop_assert_eq!(Tensor::from_i64(&[v.len()], via::<f32, i64>(&v)).unwrap(), t.cast(DType::I64));
            prop_assert_eq!(Tensor::from_i32(&[v.len()], via::<f32, i32>(&v)).unwrap(), t.cast(DType::I32));
            let b: Vec<bool> = via::<f32, u8>(&v).iter().map(|&b| b != 0).collect();
            prop_assert_eq!(Tensor::from_bool(&[v.len()], b.clone()).unwrap(), t.cast(DType::Bool));
            let ints = t.cast(DType::I64);
            let i: Vec<i64> = ints.to_i64_vec();
            let to_f = |t: Tensor| t.to_f32_vec();
            prop_assert_eq!(via::<i64, f32>(&i), to_f(ints.cast(DType::F32)));
            prop_assert_eq!(via::<i64, i32>(&i).iter().map(|&x| x as i64).collect::<Vec<_>>(), ints.cast(DType::I32).to_i64_vec());
            let bytes: Vec<u8> = b.iter().map(|&x| u8::from(x)).collect();
            let bools = Tensor::from_bool(&[v.len()], b).unwrap();
            prop_assert_eq!(via::<u8, f32>(&bytes), to_f(bools.cast(DType::F32)));
            prop_assert_eq!(via::<u8, i64>(&bytes), bools.cast(DType::I64).to_i64_vec());
            let narrow = ints.cast(DType::I32);
            let n: Vec<i32> = narrow.to_i64_vec().iter().map(|&x| x as i32).collect();
            prop_assert_eq!(via::<i32, f32>(&n), to_f(narrow.cast(DType::F32)));
            prop_assert_eq!(via::<i32, u8>(&n).iter().map(|&x| x != 0).collect::<Vec<_>>(), narrow.cast(DType::Bool).as_bool().unwrap().iter().copied().collect::<Vec<_>>());
        }
    }
}
