//! 2-D NCHW pooling (MaxPool, AveragePool; 1-D pools are the `h = 1` case)
//! and the global pools.
//!
//! The window geometry is given per axis as resolved numbers ([`PoolAxis`]):
//! output size, kernel, stride, dilation, begin pad (negative when a `SAME`
//! pool shifts windows into the input) and end pad. A tap at input position
//! `p = o·stride + k·dilation - pad_begin` is an input element when
//! `0 ≤ p < input`, padding when it is otherwise below `input + pad_end`,
//! and overhang (ceil mode's last window) beyond that; a tap that overhangs
//! on either axis does not exist. Max takes input elements only (NaN elements
//! are skipped; a window without any input element gives NaN). Average sums
//! input elements in f64 and divides by their count, or by the count of
//! input and padding taps with `count_include_pad`. This is the reference
//! interpreter's rule, tap order included, so results agree bit for bit.
//!
//! The number of planes (batch × channels) is derived from the slice
//! lengths, so one geometry serves every batch size.

use super::scratch::Reused;
use std::cell::RefCell;
use super::{blocks, expect_len, reduce, KernelError};

/// What a pooling window computes.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average { count_include_pad: bool },
}

/// The resolved window layout of one spatial axis.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolAxis {
    pub input: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: i64,
    pub pad_end: usize,
}

impl PoolAxis {
    /// The trivial axis of a 1-D pool seen as 2-D.
    pub const UNIT: PoolAxis = PoolAxis { input: 1, output: 1, kernel: 1, stride: 1, dilation: 1, pad_begin: 0, pad_end: 0 };
}

/// A 2-D pooling layer over `[planes, h.input, w.input]`.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub h: PoolAxis,
    pub w: PoolAxis,
}

/// The taps of one output position along one axis.
#[derive(Clone, Copy, Debug)]
struct Span {
    /// Input position of the first input tap.
    start: usize,
    /// Number of input taps (consecutive in `k`, `dilation` apart).
    inputs: usize,
    /// Number of input and padding taps (every tap that is not overhang).
    taps: usize,
}

impl Span {
    const EMPTY: Span = Span { start: 0, inputs: 0, taps: 0 };
}

thread_local! {
    static H_SPANS: RefCell<Vec<Span>> = const { RefCell::new(Vec::new()) };
    static W_SPANS: RefCell<Vec<Span>> = const { RefCell::new(Vec::new()) };
}

/// The span of every output position of axis `a` (`out` has `a.output` slots).
fn spans(a: &PoolAxis, out: &mut [Span]) -> Result<(), KernelError> {
    if a.kernel == 0 || a.stride == 0 || a.dilation == 0 {
        return Err(KernelError::Geometry(format!("kernel, stride and dilation must be positive: {a:?}")));
    }
    let geometry = |what: &str| KernelError::Geometry(format!("{what} overflows: {a:?}"));
    let input = i64::try_from(a.input).map_err(|_| geometry("input"))?;
    let limit = input.checked_add(i64::try_from(a.pad_end).map_err(|_| geometry("pad_end"))?).ok_or_else(|| geometry("input + pad_end"))?;
    for (o, slot) in out.iter_mut().enumerate() {
            let mut span = Span::EMPTY;
            for k in 0..a.kernel {
                let p = o
                    .checked_mul(a.stride)
                    .and_then(|x| x.checked_add(k.checked_mul(a.dilation)?))
                    .and_then(|x| i64::try_from(x).ok())
                    .and_then(|x| x.checked_sub(a.pad_begin))
                    .ok_or_else(|| geometry("a window position"))?;
                if p >= limit {
                    continue;
                }
                span.taps += 1;
                if (0..input).contains(&p) {
                    if span.inputs == 0 {
                        span.start = p as usize;
                    }
                    span.inputs += 1;
                }
            }
            *slot = span;
    }
    Ok(())
}

/// Pools `x` (`[planes, h.input, w.input]`, row-major) into `out`
/// (`[planes, h.output, w.output]`).
pub fn pool2d(p: &Pool2d, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    let in_plane = p.h.input.checked_mul(p.w.input).ok_or_else(|| KernelError::Geometry(format!("{p:?} overflows")))?;
    let out_plane = p.h.output.checked_mul(p.w.output).ok_or_else(|| KernelError::Geometry(format!("{p:?} overflows")))?;
    let planes = if in_plane > 0 { blocks("input", x.len(), in_plane)? } else { blocks("output", out.len(), out_plane)? };
    expect_len("input", x.len(), planes * in_plane)?;
    expect_len("output", out.len(), planes * out_plane)?;
    if out.is_empty() {
        return Ok(());
    }
    let mut hs = Reused::new(&H_SPANS, p.h.output, Span::EMPTY);
    let mut ws = Reused::new(&W_SPANS, p.w.output, Span::EMPTY);
    spans(&p.h, &mut hs)?;
    spans(&p.w, &mut ws)?;
    let (width, dh, dw) = (p.w.input, p.h.dilation, p.w.dilation);
    let count_include_pad = match p.kind {
        PoolKind::Max => {
            max_pool(x, out, (in_plane, out_plane), width, (&hs, &ws), (dh, dw));
            return Ok(());
        }
        PoolKind::Average { count_include_pad } => count_include_pad,
    };
    for (plane, dst) in out.chunks_exact_mut(out_plane).enumerate() {
        let src = &x[plane * in_plane..(plane + 1) * in_plane];
        for (hspan, dst_row) in hs.iter().zip(dst.chunks_exact_mut(p.w.output)) {
            for (wspan, o) in ws.iter().zip(dst_row.iter_mut()) {
                let taps = (0..hspan.inputs).flat_map(|i| {
                    let row = (hspan.start + i * dh) * width + wspan.start;
                    (0..wspan.inputs).map(move |j| row + j * dw)
                });
                // A fold from +0 (not `sum`, which starts at -0) keeps the reference's sign of an all-padding window.
                let sum = taps.fold(0f64, |s, at| s + f64::from(src[at]));
                let count = if count_include_pad { hspan.taps * wspan.taps } else { hspan.inputs * wspan.inputs };
                *o = (sum / count as f64) as f32;
            }
        }
    }
    Ok(())
}

thread_local! {
    static COLUMN_MAX: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Max pooling, separably: for each output row, the maximum over the
/// window's input rows is taken column by column (a vectorisable pass over
/// whole rows), then each output takes the maximum of its window's columns
/// of that row — `kh·w + ow·kw` operations per output row instead of
/// `ow·kh·kw`. NaN taps are skipped (`f32::max`); an all-padding window
/// gives NaN, as the reference does. The order of comparisons differs from
/// the reference's, which can only change the sign of a zero maximum.
fn max_pool(x: &[f32], out: &mut [f32], (in_plane, out_plane): (usize, usize), width: usize, (hs, ws): (&[Span], &[Span]), (dh, dw): (usize, usize)) {
    let mut column_max = Reused::new(&COLUMN_MAX, width, f32::NAN);
    for (plane, dst) in out.chunks_exact_mut(out_plane).enumerate() {
        let src = &x[plane * in_plane..(plane + 1) * in_plane];
        for (hspan, dst_row) in hs.iter().zip(dst.chunks_exact_mut(ws.len())) {
            column_max.fill(f32::NAN);
            for i in 0..hspan.inputs {
                let row = &src[(hspan.start + i * dh) * width..][..width];
                for (m, &v) in column_max.iter_mut().zip(row) {
                    *m = m.max(v);
                }
            }
            for (wspan, o) in ws.iter().zip(dst_row.iter_mut()) {
                *o = (0..wspan.inputs).fold(f32::NAN, |m, j| m.max(column_max[wspan.start + j * dw]));
            }
        }
    }
}

/// Which global pool.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalKind {
    Max,
    Average,
}

/// Reduces each `plane`-element block of `x` to one element of `out`:
/// the mean (f64 accumulation), or the NaN-propagating maximum (NaN for an
/// empty plane).
pub fn global_pool(kind: GlobalKind, plane: usize, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    expect_len("input", x.len(), out.len().checked_mul(plane).ok_or_else(|| KernelError::Geometry("plane overflows".into()))?)?;
    match kind {
        GlobalKind::Average => reduce::reduce(reduce::ReduceKind::Mean, plane, 1, x, out),
        GlobalKind::Max if plane == 0 => {
            out.fill(f32::NAN);
            Ok(())
        }
        GlobalKind::Max => reduce::reduce(reduce::ReduceKind::Max, plane, 1, x, out),
    }
}

#[cfg(test)]
mod tests;
