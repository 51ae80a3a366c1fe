//! Elementwise f32 kernels: unary activations and math, and binary
//! arithmetic with numpy broadcasting expressed as explicit strides.
//!
//! Each unary op computes exactly what the reference interpreter computes:
//! the ops it evaluates in f64 (Sigmoid, HardSigmoid, HardSwish, Elu, Selu,
//! Softplus, Exp, Log) are evaluated in f64 here too and rounded once, the
//! rest in f32 with the same expressions, so results agree bit for bit.
//! glibc's `expf` works in double internally anyway, so the f64 forms cost
//! little; the cheap ops (Relu, Clip, LeakyRelu, Neg, Abs, HardSwish…) are
//! branch-free selects that the compiler vectorises.
//!
//! Binary ops iterate the output in row-major order over `dims`; operand
//! element `index` is at `Σ index[i]·strides[i]`, with stride 0 on the axes
//! an operand is broadcast along. The innermost axis is the fast path:
//! contiguous or broadcast on each side ("same shape", "scalar operand",
//! "per-channel constant over a plane", "row vector") is a plain loop over a
//! row. Callers should coalesce axes ([`BroadcastLayout::new`] does) so rows
//! are long.

use super::scratch::Reused;
use std::cell::RefCell;

thread_local! {
    /// The digits of `strided`'s odometer over the outer axes.
    static ODOMETER: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}
use super::{expect_len, max_nan, min_nan, KernelError};

/// A single-input elementwise op.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    LeakyRelu { alpha: f32 },
    Sigmoid,
    /// `clamp(alpha·x + beta, 0, 1)`.
    HardSigmoid { alpha: f32, beta: f32 },
    /// `x · clamp(x/6 + 1/2, 0, 1)`.
    HardSwish,
    Tanh,
    /// `x < min → min`, then `x > max → max` (NaN stays NaN; with
    /// `min > max` everything becomes `max`, as numpy's clip). Absent bounds
    /// are infinities.
    Clip { min: f32, max: f32 },
    Elu { alpha: f32 },
    Selu { alpha: f32, gamma: f32 },
    /// `ln(1 + eˣ)`.
    Softplus,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Neg,
    Abs,
    Floor,
    Ceil,
    /// Half to even.
    Round,
    /// numpy's sign: ±0 for ±0, NaN for NaN.
    Sign,
}

/// A two-input elementwise op.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    /// NaN-propagating maximum.
    Max,
    /// NaN-propagating minimum.
    Min,
    /// `a < 0 ? b·a : a` (b is the slope).
    PRelu,
}

/// `out[i] = op(x[i])`.
pub fn unary(op: Unary, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    expect_len("output", out.len(), x.len())?;
    apply_unary(op, Separate { x, out });
    Ok(())
}

/// [`unary_in_place`] spread over `pool` in contiguous pieces when `data`
/// holds at least `min_parallel` elements.
pub fn unary_in_place_par(pool: &crate::pool::ThreadPool, min_parallel: usize, op: Unary, data: &mut [f32]) {
    let chunk = if pool.threads() > 1 && data.len() >= min_parallel.max(1) { data.len().div_ceil(2 * pool.threads()) } else { data.len() };
    pool.parallel_chunks_mut(data, chunk, &|_, piece| unary_in_place(op, piece));
}

/// `data[i] = op(data[i])`: [`unary`] on a buffer the plan reuses for the result.
pub fn unary_in_place(op: Unary, data: &mut [f32]) {
    apply_unary(op, InPlace(data));
}

/// Where a unary op reads and writes: so one `match` serves both forms.
trait Elements {
    fn map(self, f: impl Fn(f32) -> f32);
}

struct Separate<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
}

impl Elements for Separate<'_> {
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) {
        for (o, &v) in self.out.iter_mut().zip(self.x) {
            *o = f(v);
        }
    }
}

struct InPlace<'a>(&'a mut [f32]);

impl Elements for InPlace<'_> {
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) {
        for v in self.0.iter_mut() {
            *v = f(*v);
        }
    }
}

fn apply_unary(op: Unary, io: impl Elements) {
    match op {
        // `x < 0` rather than `max` keeps NaN, as the reference does.
        Unary::Relu => io.map(|v| if v < 0.0 { 0.0 } else { v }),
        Unary::LeakyRelu { alpha } => io.map(|v| if v < 0.0 { alpha * v } else { v }),
        Unary::Sigmoid => io.map(|v| sigmoid(f64::from(v)) as f32),
        Unary::HardSigmoid { alpha, beta } => {
            let (alpha, beta) = (f64::from(alpha), f64::from(beta));
            io.map(|v| (alpha * f64::from(v) + beta).clamp(0.0, 1.0) as f32)
        }
        Unary::HardSwish => io.map(|v| {
            let v = f64::from(v);
            (v * (v / 6.0 + 0.5).clamp(0.0, 1.0)) as f32
        }),
        Unary::Tanh => io.map(f32::tanh),
        Unary::Clip { min, max } => io.map(|v| {
            let v = if v < min { min } else { v };
            if v > max {
                max
            } else {
                v
            }
        }),
        Unary::Elu { alpha } => io.map(|v| if v > 0.0 { v } else { (f64::from(alpha) * f64::from(v).exp_m1()) as f32 }),
        Unary::Selu { alpha, gamma } => io.map(|v| {
            let y = if v > 0.0 { f64::from(v) } else { f64::from(alpha) * f64::from(v).exp_m1() };
            (f64::from(gamma) * y) as f32
        }),
        Unary::Softplus => io.map(|v| {
            let v = f64::from(v);
            // Two forms so that `exp` never overflows.
            (if v > 0.0 { v + (-v).exp().ln_1p() } else { v.exp().ln_1p() }) as f32
        }),
        Unary::Exp => io.map(|v| f64::from(v).exp() as f32),
        Unary::Log => io.map(|v| f64::from(v).ln() as f32),
        Unary::Sqrt => io.map(f32::sqrt),
        Unary::Reciprocal => io.map(|v| 1.0 / v),
        Unary::Neg => io.map(|v| -v),
        Unary::Abs => io.map(f32::abs),
        Unary::Floor => io.map(f32::floor),
        Unary::Ceil => io.map(f32::ceil),
        Unary::Round => io.map(f32::round_ties_even),
        Unary::Sign => io.map(|v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }),
    }
}

fn sigmoid(x: f64) -> f64 {
    // Two forms so that neither exponential overflows.
    if x > 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The iteration space of a broadcasting binary op: output dims and each
/// operand's strides over them, in elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastLayout {
    pub dims: Vec<usize>,
    pub a_strides: Vec<usize>,
    pub b_strides: Vec<usize>,
}

impl BroadcastLayout {
    /// The layout of `a ∘ b` under numpy broadcasting, with size-1 output
    /// axes dropped and adjacent axes merged wherever both operands step
    /// through them uniformly; `None` if the shapes do not broadcast.
    pub fn new(a_shape: &[usize], b_shape: &[usize]) -> Option<BroadcastLayout> {
        let rank = a_shape.len().max(b_shape.len());
        let aligned = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
        let (a, b) = (aligned(a_shape), aligned(b_shape));
        let mut dims = Vec::with_capacity(rank);
        for (&x, &y) in a.iter().zip(&b) {
            dims.push(match (x, y) {
                _ if x == y => x,
                (1, _) => y,
                (_, 1) => x,
                _ => return None,
            });
        }
        let strides = |s: &[usize]| -> Vec<usize> {
            let mut st = vec![0; rank];
            let mut step = 1;
            for i in (0..rank).rev() {
                st[i] = if s[i] == 1 { 0 } else { step };
                step *= s[i];
            }
            st
        };
        Some(BroadcastLayout::coalesced(&dims, &strides(&a), &strides(&b)))
    }

    /// Drops size-1 axes and merges axis `i` into `i + 1` when both operands'
    /// strides satisfy `stride[i] = stride[i+1]·dims[i+1]` (contiguous, or
    /// broadcast on both).
    pub fn coalesced(dims: &[usize], a_strides: &[usize], b_strides: &[usize]) -> BroadcastLayout {
        let mut out = BroadcastLayout { dims: Vec::new(), a_strides: Vec::new(), b_strides: Vec::new() };
        for i in 0..dims.len() {
            if dims[i] == 1 {
                continue;
            }
            if let (Some(&d), Some(&sa), Some(&sb)) = (out.dims.last(), out.a_strides.last(), out.b_strides.last()) {
                if sa == a_strides[i] * dims[i] && sb == b_strides[i] * dims[i] {
                    let last = out.dims.len() - 1;
                    (out.dims[last], out.a_strides[last], out.b_strides[last]) = (d * dims[i], a_strides[i], b_strides[i]);
                    continue;
                }
            }
            out.dims.push(dims[i]);
            out.a_strides.push(a_strides[i]);
            out.b_strides.push(b_strides[i]);
        }
        out
    }
}

/// `out[index] = op(a[index·a_strides], b[index·b_strides])` over every
/// index of `dims` in row-major order; `out` holds `Π dims` elements.
pub fn binary(op: Binary, a: &[f32], b: &[f32], layout: &BroadcastLayout, out: &mut [f32]) -> Result<(), KernelError> {
    binary_strided(op, a, b, &layout.dims, &layout.a_strides, &layout.b_strides, out)
}

/// [`binary`] over a layout given as slices (a caller resolving the dims per
/// call keeps them on its stack).
pub fn binary_strided(op: Binary, a: &[f32], b: &[f32], dims: &[usize], a_strides: &[usize], b_strides: &[usize], out: &mut [f32]) -> Result<(), KernelError> {
    if a_strides.len() != dims.len() || b_strides.len() != dims.len() {
        return Err(KernelError::Geometry(format!(
            "{} dims but {} and {} strides",
            dims.len(),
            a_strides.len(),
            b_strides.len()
        )));
    }
    let total = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| KernelError::Geometry(format!("dims {dims:?} overflow")))?;
    expect_len("output", out.len(), total)?;
    if total == 0 {
        return Ok(());
    }
    check_reach("a", a.len(), dims, a_strides)?;
    check_reach("b", b.len(), dims, b_strides)?;
    let rank = dims.len();
    // A rank-0 op is one row of one element.
    let (row, sa, sb) = match rank {
        0 => (1, 0, 0),
        _ => (dims[rank - 1], a_strides[rank - 1], b_strides[rank - 1]),
    };
    let outer = Outer { dims: &dims[..rank.saturating_sub(1)], a_strides: &a_strides[..rank.saturating_sub(1)], b_strides: &b_strides[..rank.saturating_sub(1)] };
    let rows = Rows { a, b, sa, sb, row };
    match op {
        Binary::Add => strided(&outer, &rows, out, |x, y| x + y),
        Binary::Sub => strided(&outer, &rows, out, |x, y| x - y),
        Binary::Mul => strided(&outer, &rows, out, |x, y| x * y),
        Binary::Div => strided(&outer, &rows, out, |x, y| x / y),
        Binary::Max => strided(&outer, &rows, out, max_nan),
        Binary::Min => strided(&outer, &rows, out, min_nan),
        Binary::PRelu => strided(&outer, &rows, out, |x, s| if x < 0.0 { s * x } else { x }),
    }
    Ok(())
}

/// Checks that the furthest element the layout reads lies inside the operand.
fn check_reach(what: &'static str, len: usize, dims: &[usize], strides: &[usize]) -> Result<(), KernelError> {
    let last = dims.iter().zip(strides).try_fold(0usize, |acc, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x)));
    match last {
        Some(last) if last < len => Ok(()),
        _ => Err(KernelError::Geometry(format!("operand {what} ({len} elements) is too short for dims {dims:?} with strides {strides:?}"))),
    }
}

/// The axes above the innermost one.
struct Outer<'a> {
    dims: &'a [usize],
    a_strides: &'a [usize],
    b_strides: &'a [usize],
}

/// The operands and the innermost axis.
struct Rows<'a> {
    a: &'a [f32],
    b: &'a [f32],
    sa: usize,
    sb: usize,
    row: usize,
}

#[inline(always)]
fn strided(outer: &Outer, rows: &Rows, out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    let mut index = Reused::new(&ODOMETER, outer.dims.len(), 0);
    let (mut ao, mut bo) = (0usize, 0usize);
    for out_row in out.chunks_exact_mut(rows.row) {
        row(&rows.a[ao..], rows.sa, &rows.b[bo..], rows.sb, out_row, f);
        // Odometer over the outer axes, moving both operand offsets along.
        for axis in (0..outer.dims.len()).rev() {
            index[axis] += 1;
            ao += outer.a_strides[axis];
            bo += outer.b_strides[axis];
            if index[axis] < outer.dims[axis] {
                break;
            }
            ao -= outer.a_strides[axis] * outer.dims[axis];
            bo -= outer.b_strides[axis] * outer.dims[axis];
            index[axis] = 0;
        }
    }
}

/// One row; `a` and `b` start at the row's first elements.
#[inline(always)]
fn row(a: &[f32], sa: usize, b: &[f32], sb: usize, out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    let n = out.len();
    match (sa, sb) {
        (1, 1) => {
            for ((o, &x), &y) in out.iter_mut().zip(&a[..n]).zip(&b[..n]) {
                *o = f(x, y);
            }
        }
        (1, 0) => {
            let y = b[0];
            for (o, &x) in out.iter_mut().zip(&a[..n]) {
                *o = f(x, y);
            }
        }
        (0, 1) => {
            let x = a[0];
            for (o, &y) in out.iter_mut().zip(&b[..n]) {
                *o = f(x, y);
            }
        }
        (0, 0) => out.fill(f(a[0], b[0])),
        _ => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = f(a[j * sa], b[j * sb]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
