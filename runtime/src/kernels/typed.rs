//! The mixed-dtype kernels (comparisons, `Where`, the logical ops on
//! bools, `Cast`, ArgMax/ArgMin, `OneHot`) over operands whose element type
//! is known only at run time:
//! one `match` per kernel on the operands' dtypes, shared by the plan
//! executor and the compiled models' kernel table.

use super::cast::cast as cast_elems;
use super::logic::{bool_strided, compare_strided, not as not_bytes, where_strided, BoolOp, Compare};
use super::one_hot::{one_hot as one_hot_elems, OneHot};
use super::reduce::{arg_reduce as arg_reduce_elems, ArgReduce};
use super::KernelError;
use crate::DType;

/// Elements of one operand (bool as 0/1 bytes).
#[derive(Clone, Copy, Debug)]
pub enum Elems<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    Bool(&'a [u8]),
}

/// The output's elements.
#[derive(Debug)]
pub enum ElemsMut<'a> {
    F32(&'a mut [f32]),
    I64(&'a mut [i64]),
    I32(&'a mut [i32]),
    Bool(&'a mut [u8]),
}

impl<'a> Elems<'a> {
    /// Bytes of `dtype` elements as elements (`None` when misaligned or ragged).
    pub fn from_bytes(dtype: DType, bytes: &'a [u8]) -> Option<Elems<'a>> {
        // An empty byte slice may sit at any address; it is every type's empty slice.
        if bytes.is_empty() {
            return Some(match dtype {
                DType::F32 => Elems::F32(&[]),
                DType::I64 => Elems::I64(&[]),
                DType::I32 => Elems::I32(&[]),
                DType::Bool => Elems::Bool(&[]),
            });
        }
        Some(match dtype {
            DType::F32 => Elems::F32(bytemuck::try_cast_slice(bytes).ok()?),
            DType::I64 => Elems::I64(bytemuck::try_cast_slice(bytes).ok()?),
            DType::I32 => Elems::I32(bytemuck::try_cast_slice(bytes).ok()?),
            DType::Bool => Elems::Bool(bytes),
        })
    }
}

impl<'a> ElemsMut<'a> {
    /// Bytes of `dtype` elements as elements (`None` when misaligned or ragged).
    pub fn from_bytes(dtype: DType, bytes: &'a mut [u8]) -> Option<ElemsMut<'a>> {
        if bytes.is_empty() {
            return Some(match dtype {
                DType::F32 => ElemsMut::F32(&mut []),
                DType::I64 => ElemsMut::I64(&mut []),
                DType::I32 => ElemsMut::I32(&mut []),
                DType::Bool => ElemsMut::Bool(&mut []),
            });
        }
        Some(match dtype {
            DType::F32 => ElemsMut::F32(bytemuck::try_cast_slice_mut(bytes).ok()?),
            DType::I64 => ElemsMut::I64(bytemuck::try_cast_slice_mut(bytes).ok()?),
            DType::I32 => ElemsMut::I32(bytemuck::try_cast_slice_mut(bytes).ok()?),
            DType::Bool => ElemsMut::Bool(bytes),
        })
    }
}

fn mismatch(what: &str) -> KernelError {
    KernelError::Geometry(format!("{what}: the operands' dtypes do not fit the kernel"))
}

/// [`compare_strided`] of two operands of one dtype into bool bytes
/// (bool operands only for `Equal`).
pub fn compare(op: Compare, a: Elems, b: Elems, dims: &[usize], a_strides: &[usize], b_strides: &[usize], out: ElemsMut) -> Result<(), KernelError> {
    let ElemsMut::Bool(o) = out else { return Err(mismatch("Compare")) };
    match (a, b) {
        (Elems::F32(a), Elems::F32(b)) => compare_strided(op, a, b, dims, a_strides, b_strides, o),
        (Elems::I64(a), Elems::I64(b)) => compare_strided(op, a, b, dims, a_strides, b_strides, o),
        (Elems::I32(a), Elems::I32(b)) => compare_strided(op, a, b, dims, a_strides, b_strides, o),
        (Elems::Bool(a), Elems::Bool(b)) if op == Compare::Equal => compare_strided(op, a, b, dims, a_strides, b_strides, o),
        _ => Err(mismatch("Compare")),
    }
}

/// [`where_strided`] for any data dtype.
pub fn select(cond: Elems, x: Elems, y: Elems, dims: &[usize], strides: [&[usize]; 3], out: ElemsMut) -> Result<(), KernelError> {
    let Elems::Bool(c) = cond else { return Err(mismatch("Where")) };
    match (x, y, out) {
        (Elems::F32(a), Elems::F32(b), ElemsMut::F32(o)) => where_strided(c, a, b, dims, strides, o),
        (Elems::I64(a), Elems::I64(b), ElemsMut::I64(o)) => where_strided(c, a, b, dims, strides, o),
        (Elems::I32(a), Elems::I32(b), ElemsMut::I32(o)) => where_strided(c, a, b, dims, strides, o),
        (Elems::Bool(a), Elems::Bool(b), ElemsMut::Bool(o)) => where_strided(c, a, b, dims, strides, o),
        _ => Err(mismatch("Where")),
    }
}

/// [`bool_strided`]: `And`/`Or`/`Xor` of two bool operands into bool bytes;
/// any other dtype is an error rather than a reinterpretation of its bytes.
pub fn logic(op: BoolOp, a: Elems, b: Elems, dims: &[usize], a_strides: &[usize], b_strides: &[usize], out: ElemsMut) -> Result<(), KernelError> {
    match (a, b, out) {
        (Elems::Bool(a), Elems::Bool(b), ElemsMut::Bool(o)) => bool_strided(op, a, b, dims, a_strides, b_strides, o),
        _ => Err(mismatch("And/Or/Xor")),
    }
}

/// Logical `Not` of a bool operand into bool bytes.
pub fn not(x: Elems, out: ElemsMut) -> Result<(), KernelError> {
    match (x, out) {
        (Elems::Bool(x), ElemsMut::Bool(o)) => not_bytes(x, o),
        _ => Err(mismatch("Not")),
    }
}

/// `Cast` between any two dtypes, as the interpreter converts.
pub fn cast(x: Elems, out: ElemsMut) -> Result<(), KernelError> {
    macro_rules! to {
        ($x:expr) => {
            match out {
                ElemsMut::F32(o) => cast_elems($x, o),
                ElemsMut::I64(o) => cast_elems($x, o),
                ElemsMut::I32(o) => cast_elems($x, o),
                ElemsMut::Bool(o) => cast_elems($x, o),
            }
        };
    }
    match x {
        Elems::F32(v) => to!(v),
        Elems::I64(v) => to!(v),
        Elems::I32(v) => to!(v),
        Elems::Bool(v) => to!(v),
    }
}

/// ArgMax/ArgMin of f32, i64 or i32 into i64 indices.
pub fn arg_reduce(g: &ArgReduce, x: Elems, out: ElemsMut) -> Result<(), KernelError> {
    let ElemsMut::I64(o) = out else { return Err(mismatch("ArgMax/ArgMin")) };
    match x {
        Elems::F32(v) => arg_reduce_elems(g, v, o),
        Elems::I64(v) => arg_reduce_elems(g, v, o),
        Elems::I32(v) => arg_reduce_elems(g, v, o),
        Elems::Bool(_) => Err(mismatch("ArgMax/ArgMin")),
    }
}

/// OneHot of f32, i64 or i32 indices; `off_on` holds `[off, on]` in the
/// output's dtype.
pub fn one_hot(g: &OneHot, indices: Elems, off_on: Elems, out: ElemsMut) -> Result<(), KernelError> {
    fn pair<T: Copy>(v: &[T]) -> Result<(T, T), KernelError> {
        match v {
            &[off, on] => Ok((off, on)),
            _ => Err(KernelError::Geometry("the one-hot values are not an [off, on] pair".into())),
        }
    }
    macro_rules! values {
        ($idx:expr) => {
            match (off_on, out) {
                (Elems::F32(v), ElemsMut::F32(o)) => pair(v).and_then(|(off, on)| one_hot_elems(g, $idx, off, on, o)),
                (Elems::I64(v), ElemsMut::I64(o)) => pair(v).and_then(|(off, on)| one_hot_elems(g, $idx, off, on, o)),
                (Elems::I32(v), ElemsMut::I32(o)) => pair(v).and_then(|(off, on)| one_hot_elems(g, $idx, off, on, o)),
                (Elems::Bool(v), ElemsMut::Bool(o)) => pair(v).and_then(|(off, on)| one_hot_elems(g, $idx, off, on, o)),
                _ => Err(mismatch("OneHot")),
            }
        };
    }
    match indices {
        Elems::F32(v) => values!(v),
        Elems::I64(v) => values!(v),
        Elems::I32(v) => values!(v),
        Elems::Bool(_) => Err(mismatch("OneHot")),
    }
}
