//! Tolerance-aware comparison of tensors, shared by the conformance runner,
//! fixture tests and differential tests of every back end.

use d2nn_runtime::Tensor;

/// Where two tensors differ most, or why they cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    #[error("dtype {actual} differs from expected {expected}")]
    DType { actual: String, expected: String },
    #[error("shape {actual:?} differs from expected {expected:?}")]
    Shape { actual: Vec<usize>, expected: Vec<usize> },
    #[error("element {index}: got {actual}, expected {expected} (max abs diff {max_abs_diff:e})")]
    Value { index: usize, actual: String, expected: String, max_abs_diff: f64 },
}

/// Checks `|actual - expected| <= atol + rtol·|expected|` element-wise (NaN
/// matches NaN, infinities must match exactly); integers and bools must be equal.
pub fn compare(actual: &Tensor, expected: &Tensor, atol: f64, rtol: f64) -> Result<(), Mismatch> {
    if actual.dtype() != expected.dtype() {
        return Err(Mismatch::DType { actual: actual.dtype().to_string(), expected: expected.dtype().to_string() });
    }
    if actual.shape() != expected.shape() {
        return Err(Mismatch::Shape { actual: actual.shape().to_vec(), expected: expected.shape().to_vec() });
    }
    let (a, e) = (actual.to_f32_vec(), expected.to_f32_vec());
    let exact = !actual.dtype().is_float();
    let mut worst: Option<(usize, f64)> = None;
    let mut max_abs_diff = 0f64;
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let (x, y) = (x as f64, y as f64);
        let ok = if exact {
            x == y
        } else if x.is_nan() || y.is_nan() {
            x.is_nan() && y.is_nan()
        } else if x.is_infinite() || y.is_infinite() {
            x == y
        } else {
            let d = (x - y).abs();
            max_abs_diff = max_abs_diff.max(d);
            d <= atol + rtol * y.abs()
        };
        if !ok {
            let excess = if exact { f64::INFINITY } else { (x - y).abs() - (atol + rtol * y.abs()) };
            if worst.is_none_or(|(_, w)| excess > w || excess.is_nan()) {
                worst = Some((i, excess));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((index, _)) => Err(Mismatch::Value {
            index,
            actual: a[index].to_string(),
            expected: e[index].to_string(),
            max_abs_diff,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerances_and_nan() {
        let a = Tensor::from_f32(&[3], vec![1.0, f32::NAN, 100.05]).unwrap();
        let b = Tensor::from_f32(&[3], vec![1.00005, f32::NAN, 100.0]).unwrap();
        assert!(compare(&a, &b, 1e-4, 1e-3).is_ok());
        let c = Tensor::from_f32(&[3], vec![1.1, f32::NAN, 100.0]).unwrap();
        let err = compare(&c, &b, 1e-4, 1e-3).unwrap_err();
        assert!(matches!(err, Mismatch::Value { index: 0, .. }), "{err}");
    }

    #[test]
    fn ints_are_exact() {
        let a = Tensor::from_i64(&[2], vec![1, 2]).unwrap();
        let b = Tensor::from_i64(&[2], vec![1, 3]).unwrap();
        assert!(compare(&a, &b, 1.0, 1.0).is_err());
    }
}
