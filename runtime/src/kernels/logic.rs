//! Comparisons, `Where` and the logical ops (`And`, `Or`, `Xor`, `Not`) for
//! any element type, with numpy broadcasting expressed as explicit strides
//! (as in [`super::elementwise`]): the output is iterated in row-major order
//! over `dims`, and operand element `index` is at `Σ index[i]·strides[i]`,
//! with stride 0 on the axes the operand is broadcast along.
//!
//! Bool is one byte, 0 or 1: comparisons and the logical ops write 0/1, and
//! `Where` and the logical ops take any non-zero input byte as true (so a
//! caller's bytes that are not strictly 0/1 still give 0/1 results).
//! Comparisons use `PartialOrd`, exactly as the reference interpreter: every
//! comparison with a NaN is false, and `-0.0 == 0.0`.

use super::scratch::Reused;
use super::{expect_len, KernelError};
use std::cell::RefCell;

thread_local! {
    /// The digits of the odometer over the outer axes.
    static ODOMETER: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// A comparison of two elements (ONNX `Greater`, `Less`, `GreaterOrEqual`,
/// `LessOrEqual`, `Equal`).
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compare {
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
    Equal,
}

impl Compare {
    /// The comparison of one pair.
    #[inline(always)]
    pub fn apply<T: PartialOrd>(self, x: T, y: T) -> bool {
        match self {
            Compare::Greater => x > y,
            Compare::Less => x < y,
            Compare::GreaterOrEqual => x >= y,
            Compare::LessOrEqual => x <= y,
            Compare::Equal => x == y,
        }
    }
}

/// `out[index] = op(a[index·a_strides], b[index·b_strides]) as u8` over
/// every index of `dims` in row-major order; `out` holds `Π dims` elements.
pub fn compare_strided<T: Copy + PartialOrd>(
    op: Compare,
    a: &[T],
    b: &[T],
    dims: &[usize],
    a_strides: &[usize],
    b_strides: &[usize],
    out: &mut [u8],
) -> Result<(), KernelError> {
    if check_layout(dims, [("a", a.len(), a_strides), ("b", b.len(), b_strides)], out.len())? == 0 {
        return Ok(());
    }
    match op {
        Compare::Greater => compare_rows(a, b, dims, [a_strides, b_strides], out, |x, y| x > y),
        Compare::Less => compare_rows(a, b, dims, [a_strides, b_strides], out, |x, y| x < y),
        Compare::GreaterOrEqual => compare_rows(a, b, dims, [a_strides, b_strides], out, |x, y| x >= y),
        Compare::LessOrEqual => compare_rows(a, b, dims, [a_strides, b_strides], out, |x, y| x <= y),
        Compare::Equal => compare_rows(a, b, dims, [a_strides, b_strides], out, |x, y| x == y),
    }
    Ok(())
}

#[inline(always)]
fn compare_rows<T: Copy>(a: &[T], b: &[T], dims: &[usize], strides: [&[usize]; 2], out: &mut [u8], f: impl Fn(T, T) -> bool + Copy) {
    let (sa, sb) = inner_strides(dims, strides);
    for_each_row(dims, strides, out, |[ao, bo], row| {
        let n = row.len();
        match (sa, sb) {
            (1, 1) => {
                for ((o, &x), &y) in row.iter_mut().zip(&a[ao..ao + n]).zip(&b[bo..bo + n]) {
                    *o = u8::from(f(x, y));
                }
            }
            (1, 0) => {
                let y = b[bo];
                for (o, &x) in row.iter_mut().zip(&a[ao..ao + n]) {
                    *o = u8::from(f(x, y));
                }
            }
            (0, 1) => {
                let x = a[ao];
                for (o, &y) in row.iter_mut().zip(&b[bo..bo + n]) {
                    *o = u8::from(f(x, y));
                }
            }
            (0, 0) => row.fill(u8::from(f(a[ao], b[bo]))),
            _ => {
                for (j, o) in row.iter_mut().enumerate() {
                    *o = u8::from(f(a[ao + j * sa], b[bo + j * sb]));
                }
            }
        }
    });
}

/// A logical connective of two bools (ONNX `And`, `Or`, `Xor`).
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

impl BoolOp {
    /// The connective of one pair.
    #[inline(always)]
    pub fn apply(self, x: bool, y: bool) -> bool {
        match self {
            BoolOp::And => x & y,
            BoolOp::Or => x | y,
            BoolOp::Xor => x ^ y,
        }
    }
}

/// `out[index] = op(a[index·a_strides] != 0, b[index·b_strides] != 0) as u8`
/// over every index of `dims` in row-major order; `out` holds `Π dims`
/// bytes. The layout rules and checks are those of [`compare_strided`].
pub fn bool_strided(op: BoolOp, a: &[u8], b: &[u8], dims: &[usize], a_strides: &[usize], b_strides: &[usize], out: &mut [u8]) -> Result<(), KernelError> {
    if check_layout(dims, [("a", a.len(), a_strides), ("b", b.len(), b_strides)], out.len())? == 0 {
        return Ok(());
    }
    // One monomorphised loop per connective, each branch-free on bytes (`&`,
    // `|`, `^` rather than short-circuiting operators) so the contiguous rows
    // vectorise; comparing with 0 first makes any non-zero byte true.
    match op {
        BoolOp::And => compare_rows(a, b, dims, [a_strides, b_strides], out, |x, y| (x != 0) & (y != 0)),
        BoolOp::Or => compare_rows(a, b, dims, [a_strides, b_strides], out, |x, y| (x | y) != 0),
        BoolOp::Xor => compare_rows(a, b, dims, [a_strides, b_strides], out, |x, y| (x != 0) ^ (y != 0)),
    }
    Ok(())
}

/// `out[i] = (x[i] == 0) as u8`: logical not of bool bytes (any non-zero
/// byte is true). `out` holds as many elements as `x`; the batch, if any,
/// is in the length, as there is no geometry.
pub fn not(x: &[u8], out: &mut [u8]) -> Result<(), KernelError> {
    expect_len("output", out.len(), x.len())?;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = u8::from(v == 0);
    }
    Ok(())
}

/// `out[index] = cond[index·strides[0]] != 0 ? x[index·strides[1]] :
/// y[index·strides[2]]` over every index of `dims` in row-major order;
/// `out` holds `Π dims` elements.
pub fn where_strided<T: Copy>(cond: &[u8], x: &[T], y: &[T], dims: &[usize], strides: [&[usize]; 3], out: &mut [T]) -> Result<(), KernelError> {
    let operands = [("condition", cond.len(), strides[0]), ("x", x.len(), strides[1]), ("y", y.len(), strides[2])];
    if check_layout(dims, operands, out.len())? == 0 {
        return Ok(());
    }
    let (sc, sx, sy) = match dims.len() {
        0 => (0, 0, 0),
        r => (strides[0][r - 1], strides[1][r - 1], strides[2][r - 1]),
    };
    for_each_row(dims, strides, out, |[co, xo, yo], row| {
        let n = row.len();
        if (sc, sx, sy) == (1, 1, 1) {
            for (((o, &c), &p), &q) in row.iter_mut().zip(&cond[co..co + n]).zip(&x[xo..xo + n]).zip(&y[yo..yo + n]) {
                *o = if c != 0 { p } else { q };
            }
        } else {
            for (j, o) in row.iter_mut().enumerate() {
                *o = if cond[co + j * sc] != 0 { x[xo + j * sx] } else { y[yo + j * sy] };
            }
        }
    });
    Ok(())
}

/// The operands' strides along the innermost axis (0 for a rank-0 op).
fn inner_strides(dims: &[usize], [a, b]: [&[usize]; 2]) -> (usize, usize) {
    match dims.len() {
        0 => (0, 0),
        r => (a[r - 1], b[r - 1]),
    }
}

/// Checks every operand's strides against `dims` and its length, and the
/// output's length; returns the element count.
fn check_layout<const K: usize>(dims: &[usize], operands: [(&'static str, usize, &[usize]); K], out_len: usize) -> Result<usize, KernelError> {
    if let Some((what, _, s)) = operands.iter().find(|(_, _, s)| s.len() != dims.len()) {
        return Err(KernelError::Geometry(format!("{} dims but {} strides for operand {what}", dims.len(), s.len())));
    }
    let total = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| KernelError::Geometry(format!("dims {dims:?} overflow")))?;
    expect_len("output", out_len, total)?;
    if total == 0 {
        return Ok(0);
    }
    for (what, len, strides) in operands {
        // The furthest element the layout reads must lie inside the operand.
        let last = dims.iter().zip(strides).try_fold(0usize, |acc, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x)));
        match last {
            Some(last) if last < len => {}
            _ => return Err(KernelError::Geometry(format!("operand {what} ({len} elements) is too short for dims {dims:?} with strides {strides:?}"))),
        }
    }
    Ok(total)
}

/// Calls `row(bases, out_row)` for every row of the innermost axis of
/// `dims` (one one-element row for rank 0), with each operand's offset of
/// the row's first element. The layout must have been checked and hold at
/// least one element.
#[inline(always)]
fn for_each_row<const K: usize, O>(dims: &[usize], strides: [&[usize]; K], out: &mut [O], mut row: impl FnMut([usize; K], &mut [O])) {
    let rank = dims.len();
    let inner = if rank == 0 { 1 } else { dims[rank - 1] };
    let outer = &dims[..rank.saturating_sub(1)];
    let mut index = Reused::new(&ODOMETER, outer.len(), 0);
    let mut base = [0usize; K];
    for out_row in out.chunks_exact_mut(inner) {
        row(base, out_row);
        // Odometer over the outer axes, moving every operand's offset along.
        for axis in (0..outer.len()).rev() {
            index[axis] += 1;
            for (b, s) in base.iter_mut().zip(&strides) {
                *b += s[axis];
            }
            if index[axis] < outer[axis] {
                break;
            }
            for (b, s) in base.iter_mut().zip(&strides) {
                *b -= s[axis] * outer[axis];
            }
            index[axis] = 0;
        }
    }
}

#[cfg(test)]
mod tests;
