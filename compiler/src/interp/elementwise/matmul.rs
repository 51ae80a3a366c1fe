//! Gemm and numpy-style MatMul as plain triple loops. Float products are
//! accumulated in f64 and rounded once, so the oracle is at least as accurate
//! as any f32 kernel checked against it; integer products wrap like numpy's.

use crate::interp::util::{broadcast, broadcast_to};
use d2nn_runtime::Tensor;
use ndarray::{ArrayD, IxDyn};

/// An element type matrix products are defined on.
pub(super) trait Element: Copy {
    /// `Σ x·y` over the pairs.
    fn dot(pairs: impl Iterator<Item = (Self, Self)>) -> Self;
}

impl Element for f32 {
    fn dot(pairs: impl Iterator<Item = (f32, f32)>) -> f32 {
        pairs.map(|(x, y)| x as f64 * y as f64).sum::<f64>() as f32
    }
}

impl Element for i64 {
    fn dot(pairs: impl Iterator<Item = (i64, i64)>) -> i64 {
        pairs.fold(0i64, |acc, (x, y)| acc.wrapping_add(x.wrapping_mul(y)))
    }
}

impl Element for i32 {
    fn dot(pairs: impl Iterator<Item = (i32, i32)>) -> i32 {
        pairs.fold(0i32, |acc, (x, y)| acc.wrapping_add(x.wrapping_mul(y)))
    }
}

/// `alpha·A'·B' + beta·C` on f32 matrices, C broadcast to `[M, N]`.
pub(super) fn gemm(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> Result<Tensor, String> {
    let (a, b) = (a.as_f32().map_err(|e| format!("A: {e}"))?, b.as_f32().map_err(|e| format!("B: {e}"))?);
    if a.ndim() != 2 || b.ndim() != 2 {
        return Err(format!("Gemm needs matrices, got shapes {:?} and {:?}", a.shape(), b.shape()));
    }
    let at = |i: usize, k: usize| if trans_a { a[[k, i]] } else { a[[i, k]] };
    let bt = |k: usize, j: usize| if trans_b { b[[j, k]] } else { b[[k, j]] };
    let (m, ka) = if trans_a { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
    let (kb, n) = if trans_b { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
    if ka != kb {
        return Err(format!("inner dimensions differ: A' is {m}x{ka}, B' is {kb}x{n}"));
    }
    // The reference adds C only when beta ≠ 0, so a NaN in an unused C stays out.
    let c = match c {
        Some(c) if beta != 0.0 => {
            let c = c.as_f32().map_err(|e| format!("C: {e}"))?;
            Some(broadcast_to(c, &[m, n]).map_err(|e| format!("C: {e}"))?)
        }
        _ => None,
    };
    let mut out = ArrayD::<f32>::zeros(IxDyn(&[m, n]));
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..ka).map(|k| at(i, k) as f64 * bt(k, j) as f64).sum();
            let bias = c.as_ref().map_or(0.0, |c| beta as f64 * c[[i, j]] as f64);
            out[[i, j]] = (alpha as f64 * dot + bias) as f32;
        }
    }
    Ok(Tensor::F32(out))
}

/// numpy `matmul`: 1-D operands are promoted to a row (left) or column
/// (right) vector and the added dim dropped; batch dims broadcast.
pub(super) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => matmul_arrays(x, y).map(Tensor::F32),
        (Tensor::I64(x), Tensor::I64(y)) => matmul_arrays(x, y).map(Tensor::I64),
        (Tensor::I32(x), Tensor::I32(y)) => matmul_arrays(x, y).map(Tensor::I32),
        _ => Err(format!("MatMul is defined on equal f32, i64 or i32 operands, got {} and {}", a.dtype(), b.dtype())),
    }
}

pub(super) fn matmul_arrays<T: Element>(a: &ArrayD<T>, b: &ArrayD<T>) -> Result<ArrayD<T>, String> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return Err("MatMul operands must have rank 1 or more".into());
    }
    let a_shape: Vec<usize> = if a.ndim() == 1 { vec![1, a.len()] } else { a.shape().to_vec() };
    let b_shape: Vec<usize> = if b.ndim() == 1 { vec![b.len(), 1] } else { b.shape().to_vec() };
    let (ra, rb) = (a_shape.len(), b_shape.len());
    let (m, k) = (a_shape[ra - 2], a_shape[ra - 1]);
    let (kb, n) = (b_shape[rb - 2], b_shape[rb - 1]);
    if k != kb {
        return Err(format!("inner dimensions differ: {:?} @ {:?}", a.shape(), b.shape()));
    }
    let batch = broadcast(&[&a_shape[..ra - 2], &b_shape[..rb - 2]])?;
    let batches: usize = batch.iter().product();
    // Materialise both operands as contiguous [batch.., rows, cols] blocks.
    let flat = |x: &ArrayD<T>, shape: &[usize], rows: usize, cols: usize| -> Result<Vec<T>, String> {
        let promoted = ArrayD::from_shape_vec(IxDyn(shape), x.iter().copied().collect()).map_err(|e| e.to_string())?;
        let full: Vec<usize> = batch.iter().copied().chain([rows, cols]).collect();
        Ok(broadcast_to(&promoted, &full)?.iter().copied().collect())
    };
    let (a_flat, b_flat) = (flat(a, &a_shape, m, k)?, flat(b, &b_shape, k, n)?);
    let mut data = Vec::with_capacity(batches * m * n);
    for p in 0..batches {
        let (a_block, b_block) = (&a_flat[p * m * k..(p + 1) * m * k], &b_flat[p * k * n..(p + 1) * k * n]);
        for i in 0..m {
            for j in 0..n {
                data.push(T::dot((0..k).map(|q| (a_block[i * k + q], b_block[q * n + j]))));
            }
        }
    }
    let mut out_shape = batch;
    if a.ndim() > 1 {
        out_shape.push(m);
    }
    if b.ndim() > 1 {
        out_shape.push(n);
    }
    ArrayD::from_shape_vec(IxDyn(&out_shape), data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arr(shape: &[usize], data: Vec<f32>) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
    }

    #[test]
    fn vectors_promote_and_drop_their_dim() {
        let v = arr(&[3], vec![1.0, 2.0, 3.0]);
        assert_eq!(matmul_arrays(&v, &v).unwrap(), arr(&[], vec![14.0]));
        let m = arr(&[2, 3, 1], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // [3] @ [2,3,1] → [2,1]
        assert_eq!(matmul_arrays(&v, &m).unwrap(), arr(&[2, 1], vec![14.0, 32.0]));
        let w = arr(&[1], vec![2.0]);
        // [2,3,1] @ [1] → [2,3]
        assert_eq!(matmul_arrays(&m, &w).unwrap().shape(), &[2, 3]);
    }

    #[test]
    fn batch_dims_broadcast() {
        let a = arr(&[2, 1, 1, 2], vec![1.0, 0.0, 0.0, 1.0]);
        let b = arr(&[3, 2, 1], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let out = matmul_arrays(&a, &b).unwrap();
        assert_eq!(out.shape(), &[2, 3, 1, 1]);
        assert_eq!(out.iter().copied().collect::<Vec<_>>(), vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn empty_inner_dim_gives_zeros() {
        let a = arr(&[2, 0], vec![]);
        let b = arr(&[0, 3], vec![]);
        assert_eq!(matmul_arrays(&a, &b).unwrap(), ArrayD::zeros(IxDyn(&[2, 3])));
    }

    #[test]
    fn gemm_ignores_c_when_beta_is_zero() {
        let a = Tensor::from_f32(&[1, 1], vec![2.0]).unwrap();
        let c = Tensor::from_f32(&[1], vec![f32::NAN]).unwrap();
        let out = gemm(&a, &a, Some(&c), 1.0, 0.0, false, false).unwrap();
        assert_eq!(out.to_f32_vec(), vec![4.0]);
    }

    proptest! {
        /// Gemm with transposes equals MatMul of explicitly transposed operands.
        #[test]
        fn gemm_agrees_with_matmul(m in 1usize..4, k in 0usize..4, n in 1usize..4, ta: bool, tb: bool,
                                   seed in proptest::collection::vec(-4i32..4, 64)) {
            let take = |count: usize, offset: usize| -> Vec<f32> { (0..count).map(|i| seed[(i + offset) % 64] as f32).collect() };
            let a_shape = if ta { [k, m] } else { [m, k] };
            let b_shape = if tb { [n, k] } else { [k, n] };
            let a = arr(&a_shape, take(m * k, 0));
            let b = arr(&b_shape, take(k * n, 7));
            let c = arr(&[n], take(n, 13));
            let got = gemm(&Tensor::F32(a.clone()), &Tensor::F32(b.clone()), Some(&Tensor::F32(c.clone())), 2.0, 0.5, ta, tb).unwrap();
            let a2 = if ta { a.t().to_owned() } else { a };
            let b2 = if tb { b.t().to_owned() } else { b };
            let prod = matmul_arrays(&a2, &b2).unwrap();
            let want = prod.mapv(|v| 2.0 * v) + c.mapv(|v| 0.5 * v);
            prop_assert_eq!(got.as_f32().unwrap(), &want);
        }
    }
}
