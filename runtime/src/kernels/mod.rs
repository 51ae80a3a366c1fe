//! Fast f32 kernels for the cheap but frequent ops: elementwise activations
//! and broadcasting arithmetic, pooling, softmax, per-channel and layer
//! normalisation, reductions over a contiguous block of axes and
//! arg-reductions, and transposed convolution; for any element type, the
//! data-movement kernels ([`copy`]: transpose, slice, constant pad, concat,
//! split and gather), which copy exactly, and the exact ones of control
//! logic: comparisons and `Where` ([`logic`]), `Cast` ([`cast`]) and
//! `OneHot` ([`one_hot`]). Bool is one byte, 0 or 1.
//!
//! Every kernel works on row-major slices with the geometry given as plain
//! numbers, so a compiler can compute it once and a generated program or the
//! plan executor can call it without knowing any IR. Kernels check that the
//! slices fit the geometry and return [`KernelError`] otherwise; they never
//! panic on a bad call. Where the batch size is not known until run time, the
//! kernels take the batch-independent sizes and derive the outer count from
//! the slice length (documented on each).
//!
//! Numerics follow the compiler's reference interpreter: the ops it computes
//! in f64 (averages, sums, softmax, batch norm, several activations) are
//! computed in f64 here too, with the same expressions, so most kernels agree
//! with it bit for bit. The exceptions, each documented in its module, are
//! row sums split into interleaved partial sums so they vectorise
//! ([`reduce`], global average pooling) and batch norm's folded per-channel
//! factor: they differ only by f64 rounding before the final f32 rounding;
//! and transposed convolution ([`conv_transpose`]), which sums in f32 on the
//! GEMM core, within the error bound of an f32 sum of each output's terms.

pub mod cast;
pub mod conv;
pub mod conv_transpose;
pub mod copy;
pub mod depthwise;
pub mod elementwise;
pub mod logic;
pub mod norm;
pub mod one_hot;
pub mod pool;
pub mod reduce;
mod scratch;
pub mod softmax;
pub mod typed;
pub mod winograd;

/// Why a kernel cannot run on the slices it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("{what} holds {actual} elements, expected {expected}")]
    Length { what: &'static str, expected: usize, actual: usize },
    #[error("{what} holds {actual} elements, not a whole number of {unit}-element blocks")]
    Ragged { what: &'static str, unit: usize, actual: usize },
    #[error("invalid geometry: {0}")]
    Geometry(String),
}

/// Checks that `slice` holds exactly `expected` elements.
fn expect_len(what: &'static str, slice_len: usize, expected: usize) -> Result<(), KernelError> {
    if slice_len == expected {
        Ok(())
    } else {
        Err(KernelError::Length { what, expected, actual: slice_len })
    }
}

/// How many `unit`-element blocks `len` holds (0 when `unit` is 0 and `len` is 0).
fn blocks(what: &'static str, len: usize, unit: usize) -> Result<usize, KernelError> {
    match unit {
        0 if len == 0 => Ok(0),
        0 => Err(KernelError::Ragged { what, unit, actual: len }),
        _ if len.is_multiple_of(unit) => Ok(len / unit),
        _ => Err(KernelError::Ragged { what, unit, actual: len }),
    }
}

/// NaN-propagating maximum, as numpy's `maximum` (and the reference) computes it.
#[inline(always)]
fn max_nan(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.max(y)
    }
}

/// NaN-propagating minimum.
#[inline(always)]
fn min_nan(x: f32, y: f32) -> f32 {
    if x.is_nan() || y.is_nan() {
        f32::NAN
    } else {
        x.min(y)
    }
}
