//! A dynamically typed, owned n-dimensional tensor over the element types d2nnc computes with.
//!
//! Compute is f32; i64, i32 and bool exist because ONNX uses them for indices,
//! shapes and decisions. Every variant wraps an `ndarray::ArrayD` so that the
//! public API speaks ndarray.

use ndarray::{ArrayD, IxDyn};
use std::fmt;

/// Element type of a [`Tensor`].
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    I64,
    I32,
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_of(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
            DType::Bool => 1,
        }
    }

    /// The lower-case name used in diagnostics and IR text (`f32`, `i64`, …).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }

    pub fn is_float(self) -> bool {
        self == DType::F32
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors raised by tensor construction and conversion.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("shape {shape:?} needs {expected} elements but {got} were given")]
    ElementCount { shape: Vec<usize>, expected: usize, got: usize },
    #[error("expected a {expected} tensor, found {found}")]
    DType { expected: DType, found: DType },
}

/// An owned tensor of one of the supported element types.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    I32(ArrayD<i32>),
    Bool(ArrayD<bool>),
}

/// Applies the same expression to whichever array a [`Tensor`] holds.
///
/// `map_tensor!(t, a => expr)` evaluates `expr` with `a` bound to the inner
/// array; the expression must have the same type for every variant.
#[macro_export]
macro_rules! map_tensor {
    ($t:expr, $a:ident => $e:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $e,
            $crate::Tensor::I64($a) => $e,
            $crate::Tensor::I32($a) => $e,
            $crate::Tensor::Bool($a) => $e,
        }
    };
}

/// Like [`map_tensor!`], but re-wraps the result in the same variant.
#[macro_export]
macro_rules! map_tensor_same {
    ($t:expr, $a:ident => $e:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $crate::Tensor::F32($e),
            $crate::Tensor::I64($a) => $crate::Tensor::I64($e),
            $crate::Tensor::I32($a) => $crate::Tensor::I32($e),
            $crate::Tensor::Bool($a) => $crate::Tensor::Bool($e),
        }
    };
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::I64(_) => DType::I64,
            Tensor::I32(_) => DType::I32,
            Tensor::Bool(_) => DType::Bool,
        }
    }

    pub fn shape(&self) -> &[usize] {
        map_tensor!(self, a => a.shape())
    }

    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    pub fn len(&self) -> usize {
        map_tensor!(self, a => a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A tensor of `shape` filled with the zero of `dtype` (false for bool).
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        let dim = IxDyn(shape);
        match dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(dim)),
            DType::I64 => Tensor::I64(ArrayD::zeros(dim)),
            DType::I32 => Tensor::I32(ArrayD::zeros(dim)),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(dim, false)),
        }
    }

    pub fn from_f32(shape: &[usize], data: Vec<f32>) -> Result<Tensor, TensorError> {
        from_vec(shape, data).map(Tensor::F32)
    }

    pub fn from_i64(shape: &[usize], data: Vec<i64>) -> Result<Tensor, TensorError> {
        from_vec(shape, data).map(Tensor::I64)
    }

    pub fn from_i32(shape: &[usize], data: Vec<i32>) -> Result<Tensor, TensorError> {
        from_vec(shape, data).map(Tensor::I32)
    }

    pub fn from_bool(shape: &[usize], data: Vec<bool>) -> Result<Tensor, TensorError> {
        from_vec(shape, data).map(Tensor::Bool)
    }

    /// A rank-0 f32 tensor.
    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// A rank-0 i64 tensor.
    pub fn scalar_i64(v: i64) -> Tensor {
        Tensor::I64(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// A rank-1 i64 tensor.
    pub fn vec_i64(v: Vec<i64>) -> Tensor {
        let n = v.len();
        Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("length matches shape"))
    }

    pub fn as_f32(&self) -> Result<&ArrayD<f32>, TensorError> {
        match self {
            Tensor::F32(a) => Ok(a),
            other => Err(TensorError::DType { expected: DType::F32, found: other.dtype() }),
        }
    }

    pub fn as_i64(&self) -> Result<&ArrayD<i64>, TensorError> {
        match self {
            Tensor::I64(a) => Ok(a),
            other => Err(TensorError::DType { expected: DType::I64, found: other.dtype() }),
        }
    }

    pub fn as_bool(&self) -> Result<&ArrayD<bool>, TensorError> {
        match self {
            Tensor::Bool(a) => Ok(a),
            other => Err(TensorError::DType { expected: DType::Bool, found: other.dtype() }),
        }
    }

    /// Every element converted to i64 in logical (row-major) order; floats are
    /// truncated toward zero and bools map to 0/1. Used for shape-like operands.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match self {
            Tensor::F32(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::I64(a) => a.iter().copied().collect(),
            Tensor::I32(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::Bool(a) => a.iter().map(|&v| v as i64).collect(),
        }
    }

    /// Every element converted to f32 in logical order.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            Tensor::F32(a) => a.iter().copied().collect(),
            Tensor::I64(a) => a.iter().map(|&v| v as f32).collect(),
            Tensor::I32(a) => a.iter().map(|&v| v as f32).collect(),
            Tensor::Bool(a) => a.iter().map(|&v| v as u8 as f32).collect(),
        }
    }

    /// Converts to another element type with ONNX `Cast` semantics: float to
    /// int truncates toward zero (saturating; NaN becomes 0), anything to bool
    /// is `!= 0`.
    pub fn cast(&self, to: DType) -> Tensor {
        fn conv<A: Copy, B>(a: &ArrayD<A>, f: impl Fn(A) -> B) -> ArrayD<B> {
            a.mapv(f)
        }
        match (self, to) {
            (t, d) if t.dtype() == d => t.clone(),
            (Tensor::F32(a), DType::I64) => Tensor::I64(conv(a, |v| v as i64)),
            (Tensor::F32(a), DType::I32) => Tensor::I32(conv(a, |v| v as i32)),
            (Tensor::F32(a), DType::Bool) => Tensor::Bool(conv(a, |v| v != 0.0)),
            (Tensor::I64(a), DType::F32) => Tensor::F32(conv(a, |v| v as f32)),
            (Tensor::I64(a), DType::I32) => Tensor::I32(conv(a, |v| v as i32)),
            (Tensor::I64(a), DType::Bool) => Tensor::Bool(conv(a, |v| v != 0)),
            (Tensor::I32(a), DType::F32) => Tensor::F32(conv(a, |v| v as f32)),
            (Tensor::I32(a), DType::I64) => Tensor::I64(conv(a, |v| v as i64)),
            (Tensor::I32(a), DType::Bool) => Tensor::Bool(conv(a, |v| v != 0)),
            (Tensor::Bool(a), DType::F32) => Tensor::F32(conv(a, |v| v as u8 as f32)),
            (Tensor::Bool(a), DType::I64) => Tensor::I64(conv(a, |v| v as i64)),
            (Tensor::Bool(a), DType::I32) => Tensor::I32(conv(a, |v| v as i32)),
            (t, _) => t.clone(),
        }
    }

    /// The same data viewed with a new shape of equal element count.
    pub fn reshaped(&self, shape: &[usize]) -> Result<Tensor, TensorError> {
        let expected: usize = shape.iter().product();
        if expected != self.len() {
            return Err(TensorError::ElementCount { shape: shape.to_vec(), expected, got: self.len() });
        }
        Ok(map_tensor_same!(self, a => {
            let flat: Vec<_> = a.iter().cloned().collect();
            ArrayD::from_shape_vec(IxDyn(shape), flat).expect("count checked above")
        }))
    }
}

fn from_vec<T>(shape: &[usize], data: Vec<T>) -> Result<ArrayD<T>, TensorError> {
    let expected: usize = shape.iter().product();
    if expected != data.len() {
        return Err(TensorError::ElementCount { shape: shape.to_vec(), expected, got: data.len() });
    }
    Ok(ArrayD::from_shape_vec(IxDyn(shape), data).expect("count checked above"))
}

impl From<ArrayD<f32>> for Tensor {
    fn from(a: ArrayD<f32>) -> Self {
        Tensor::F32(a)
    }
}
impl From<ArrayD<i64>> for Tensor {
    fn from(a: ArrayD<i64>) -> Self {
        Tensor::I64(a)
    }
}
impl From<ArrayD<i32>> for Tensor {
    fn from(a: ArrayD<i32>) -> Self {
        Tensor::I32(a)
    }
}
impl From<ArrayD<bool>> for Tensor {
    fn from(a: ArrayD<bool>) -> Self {
        Tensor::Bool(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_float_to_int_truncates_and_nan_is_zero() {
        let t = Tensor::from_f32(&[4], vec![1.7, -1.7, f32::NAN, 3e12]).unwrap();
        assert_eq!(t.cast(DType::I32).to_i64_vec(), vec![1, -1, 0, i32::MAX as i64]);
    }

    #[test]
    fn element_count_mismatch_is_an_error() {
        let err = Tensor::from_f32(&[2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(err.to_string(), "shape [2, 3] needs 6 elements but 5 were given");
    }
}
