//! The fused epilogue: `C = act(A·B + bias + residual)`.
//!
//! Applied in registers on the last K block of every tile when it can be (the
//! common case: row-major `C` and residual), otherwise by a scalar pass over
//! the finished block right after it was computed.

use super::mat::MatRef;
use super::simd::Simd;

/// Element-wise activation applied last.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    /// No activation.
    #[default]
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)` (ONNX `Clip`; `Relu6` is `Clip { min: 0, max: 6 }`).
    Clip { min: f32, max: f32 },
    /// `x` if `x >= 0`, else `alpha * x`.
    LeakyRelu { alpha: f32 },
    /// `1 / (1 + e^-x)`, vectorised with a polynomial `exp` (≈ 1e-7 relative).
    Sigmoid,
}

impl Activation {
    /// The activation of every lane of `v`.
    ///
    /// # Safety
    /// The CPU must support `S`.
    #[inline(always)]
    pub(crate) unsafe fn apply_vec<S: Simd>(self, v: S::V) -> S::V {
        // SAFETY: register-only lane arithmetic; the caller guarantees the CPU supports `S`.
        unsafe {
            match self {
                Activation::Identity => v,
                // The value goes second: `max`/`min` return the second
                // operand when either is NaN, so NaN propagates as in ONNX.
                Activation::Relu => S::max(S::zero(), v),
                Activation::Clip { min, max } => S::min(S::splat(max), S::max(S::splat(min), v)),
                Activation::LeakyRelu { alpha } => S::leaky(v, S::splat(alpha)),
                Activation::Sigmoid => S::sigmoid(v),
            }
        }
    }

    /// The activation of one value (the reference for the vector forms).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            // Written so that NaN passes through, as ONNX (numpy) defines it.
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Clip { min, max } => {
                let y = if x < min { min } else { x };
                if y > max {
                    max
                } else {
                    y
                }
            }
            Activation::LeakyRelu { alpha } => {
                if x < 0.0 {
                    x * alpha
                } else {
                    x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }
}

/// A bias broadcast along one dimension of `C` (`M × N`).
#[derive(Clone, Copy, Debug, Default)]
pub enum Bias<'a> {
    #[default]
    None,
    /// One value per row of `C` (length `M`): the conv bias when `C` is
    /// `[C_out, pixels]`.
    PerRow(&'a [f32]),
    /// One value per column of `C` (length `N`): the FC bias when `C` is
    /// `[batch, out]`.
    PerCol(&'a [f32]),
}

/// What happens to `A·B` before it lands in `C`:
/// `C[i, j] = activation(A·B[i, j] + bias + residual[i, j])`.
///
/// `Epilogue::default()` is the plain product.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Bias<'a>,
    /// Added before the activation (ResNet's shortcut); must be `M × N`, any strides.
    pub residual: Option<MatRef<'a>>,
    pub activation: Activation,
}

impl<'a> Epilogue<'a> {
    /// The plain product.
    pub const NONE: Epilogue<'static> = Epilogue { bias: Bias::None, residual: None, activation: Activation::Identity };

    pub fn with_bias(mut self, bias: Bias<'a>) -> Self {
        self.bias = bias;
        self
    }
    pub fn with_residual(mut self, residual: MatRef<'a>) -> Self {
        self.residual = Some(residual);
        self
    }
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    pub(crate) fn validate(&self, m: usize, n: usize) {
        match self.bias {
            Bias::None => {}
            Bias::PerRow(b) => assert_eq!(b.len(), m, "per-row bias has {} values for {m} rows", b.len()),
            Bias::PerCol(b) => assert_eq!(b.len(), n, "per-column bias has {} values for {n} columns", b.len()),
        }
        if let Some(r) = self.residual {
            assert!(r.rows() == m && r.cols() == n, "residual is {}x{} but C is {m}x{n}", r.rows(), r.cols());
        }
    }

    /// The epilogue in the kernels' orientation: raw pointers at element
    /// `(0, 0)`, transposed when the driver computes `Cᵀ = Bᵀ·Aᵀ`.
    pub(crate) fn raw(&self, transposed: bool) -> RawEpi {
        let (mut row, mut col) = match self.bias {
            Bias::None => (std::ptr::null(), std::ptr::null()),
            Bias::PerRow(b) => (b.as_ptr(), std::ptr::null()),
            Bias::PerCol(b) => (std::ptr::null(), b.as_ptr()),
        };
        let (res, mut rs, mut cs) = match self.residual {
            Some(r) => (r.ptr(), r.row_stride(), r.col_stride()),
            None => (std::ptr::null(), 0, 0),
        };
        if transposed {
            std::mem::swap(&mut row, &mut col);
            std::mem::swap(&mut rs, &mut cs);
        }
        RawEpi { bias_row: row, bias_col: col, res, res_rs: rs, res_cs: cs, act: self.activation }
    }
}

/// An orientation-resolved epilogue. Null pointers mean "absent". Valid for
/// the internal `m × n` problem it was made for: `bias_row[i]`, `bias_col[j]`
/// and `res[i * res_rs + j * res_cs]` are in bounds for every `(i, j)` of it
/// (checked by [`Epilogue::validate`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawEpi {
    pub bias_row: *const f32,
    pub bias_col: *const f32,
    pub res: *const f32,
    pub res_rs: usize,
    pub res_cs: usize,
    pub act: Activation,
}

impl RawEpi {
    /// Nothing to do.
    pub fn is_none(&self) -> bool {
        self.bias_row.is_null() && self.bias_col.is_null() && self.res.is_null() && self.act == Activation::Identity
    }

    /// Whether the vector path applies: the residual, if any, has unit
    /// column stride like `C`'s tiles.
    pub fn vector_ok(&self) -> bool {
        self.res.is_null() || self.res_cs == 1
    }

    /// The same epilogue with `(i, j)` as its origin. Pointers are advanced
    /// with `wrapping_add` (null stays null; no dereference happens here).
    pub fn at(&self, i: usize, j: usize) -> RawEpi {
        let adv = |p: *const f32, o: usize| if p.is_null() { p } else { p.wrapping_add(o) };
        RawEpi {
            bias_row: adv(self.bias_row, i),
            bias_col: adv(self.bias_col, j),
            res: adv(self.res, i * self.res_rs + j * self.res_cs),
            ..*self
        }
    }

    /// Scalar form of element `(i, j)` relative to the origin.
    ///
    /// # Safety
    /// `(i, j)` must be inside the problem this epilogue was made for.
    #[inline]
    pub unsafe fn apply_scalar(&self, x: f32, i: usize, j: usize) -> f32 {
        let mut v = x;
        // SAFETY: the caller keeps (i, j) in the validated m × n range, so
        // each non-null pointer indexes inside its slice.
        unsafe {
            if !self.bias_row.is_null() {
                v += *self.bias_row.add(i);
            }
            if !self.bias_col.is_null() {
                v += *self.bias_col.add(j);
            }
            if !self.res.is_null() {
                v += *self.res.add(i * self.res_rs + j * self.res_cs);
            }
        }
        self.act.apply(v)
    }

    /// Vector form on lanes `[j, j + w)` of row `i`, `w ≤ S::LANES`.
    ///
    /// # Safety
    /// The lanes must be inside the problem, `vector_ok()` must hold, and
    /// the CPU must support `S`.
    #[inline(always)]
    pub(crate) unsafe fn apply_vec<S: Simd>(&self, mut v: S::V, i: usize, j: usize, w: usize) -> S::V {
        // SAFETY: per the contract, every pointer read covers lanes inside
        // the validated problem; partial loads touch only the first `w`.
        unsafe {
            let ld = |p: *const f32| {
                if w == S::LANES {
                    S::load(p)
                } else {
                    S::load_partial(p, w)
                }
            };
            if !self.bias_row.is_null() {
                v = S::add(v, S::splat(*self.bias_row.add(i)));
            }
            if !self.bias_col.is_null() {
                v = S::add(v, ld(self.bias_col.add(j)));
            }
            if !self.res.is_null() {
                v = S::add(v, ld(self.res.add(i * self.res_rs + j)));
            }
            self.act.apply_vec::<S>(v)
        }
    }
}
