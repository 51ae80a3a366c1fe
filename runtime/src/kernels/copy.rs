//! Data-movement kernels — Transpose, Slice, Pad (constant fill), Concat,
//! Split and Gather — for any element type (`T: Copy`: f32, i64, i32, bytes).
//!
//! Transpose, Slice and Pad are one strided copy ([`Strided`]): a box of
//! elements walked in the destination's order, each axis with a source and a
//! destination stride (negative in the source for negative slice steps).
//! Construction drops size-1 axes, merges neighbours that stay adjacent in
//! both layouts, and checks once that every offset the walk reaches lies
//! inside one block, so a copy cannot leave its slices. The walk then takes
//! the fastest of three inner loops: contiguous runs (`copy_from_slice`) when
//! the innermost axis is contiguous on both sides; a cache-blocked 2-D tile
//! transpose when the source's contiguous axis is another one (the inner swap
//! of a transpose); element by element otherwise (slice steps).
//!
//! Each geometry describes one outer block; the number of blocks (the batch
//! and any other leading axes the op leaves alone) is derived from the slice
//! lengths, so one geometry serves every batch size. Concat and Split see
//! their operands as `[outer, row]`, Gather as `[outer, axis, inner]`.

use super::{blocks, expect_len, KernelError};

/// A copy of a box of elements between two strided layouts, once per outer
/// block: element `i` of the box (a multi-index over `dims`) goes from
/// `src_start + Σ i·src` to `dst_start + Σ i·dst` within its block.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Strided {
    /// The box, outermost first, without size-1 axes; `[0]` when it is empty.
    dims: Vec<usize>,
    src: Vec<isize>,
    dst: Vec<isize>,
    src_start: usize,
    dst_start: usize,
    /// Elements per outer block of the source and of the destination.
    src_block: usize,
    dst_block: usize,
}

fn overflow() -> KernelError {
    KernelError::Geometry("sizes overflow".into())
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Result<Vec<isize>, KernelError> {
    let mut st = vec![0isize; dims.len()];
    let mut step = 1isize;
    for (s, &d) in st.iter_mut().zip(dims).rev() {
        *s = step;
        step = step.checked_mul(isize::try_from(d).map_err(|_| overflow())?).ok_or_else(overflow)?;
    }
    Ok(st)
}

/// The element count of `dims`.
fn volume(dims: &[usize]) -> Result<usize, KernelError> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| isize::try_from(n).is_ok()).ok_or_else(overflow)
}

fn to_isize(n: usize) -> Result<isize, KernelError> {
    isize::try_from(n).map_err(|_| overflow())
}

impl Strided {
    fn new(dims: &[usize], src: &[isize], dst: &[isize], starts: (usize, usize), blocks: (usize, usize)) -> Result<Strided, KernelError> {
        if src.len() != dims.len() || dst.len() != dims.len() {
            return Err(KernelError::Geometry(format!("{} dims with {} source and {} destination strides", dims.len(), src.len(), dst.len())));
        }
        if dims.contains(&0) {
            return Ok(Strided { dims: vec![0], src: vec![0], dst: vec![0], src_start: 0, dst_start: 0, src_block: blocks.0, dst_block: blocks.1 });
        }
        let mut walk = Strided { dims: Vec::new(), src: Vec::new(), dst: Vec::new(), src_start: starts.0, dst_start: starts.1, src_block: blocks.0, dst_block: blocks.1 };
        for k in (0..dims.len()).filter(|&k| dims[k] != 1) {
            walk.push(dims[k], src[k], dst[k]);
        }
        // The reachable offsets span [start + Σ min(0, (d-1)·s), start + Σ max(0, (d-1)·s)].
        let reach = |start: usize, strides: &[isize], block: usize, what: &str| -> Result<(), KernelError> {
            let (mut lo, mut hi) = (start as i128, start as i128);
            for (&d, &s) in walk.dims.iter().zip(strides) {
                let span = (d as i128 - 1) * s as i128;
                if span < 0 { lo += span } else { hi += span }
            }
            if lo < 0 || hi >= block as i128 {
                return Err(KernelError::Geometry(format!("the {what} offsets {lo}..={hi} leave a block of {block} elements")));
            }
            Ok(())
        };
        reach(walk.src_start, &walk.src, walk.src_block, "source")?;
        reach(walk.dst_start, &walk.dst, walk.dst_block, "destination")?;
        Ok(walk)
    }

    /// Appends an inner axis, merging it into the previous one when both
    /// layouts step over the pair uniformly.
    fn push(&mut self, d: usize, s: isize, t: isize) {
        let n = d as isize;
        match (self.dims.last_mut(), self.src.last_mut(), self.dst.last_mut()) {
            (Some(last), Some(ps), Some(pt)) if s.checked_mul(n) == Some(*ps) && t.checked_mul(n) == Some(*pt) => {
                *last *= d;
                (*ps, *pt) = (s, t);
            }
            _ => {
                self.dims.push(d);
                self.src.push(s);
                self.dst.push(t);
            }
        }
    }

    /// Runs the copy on every outer block of `x` and `out`.
    fn run<T: Copy>(&self, x: &[T], out: &mut [T]) -> Result<(), KernelError> {
        let outer = outer_count(x.len(), self.src_block, out.len(), self.dst_block)?;
        if outer == 0 || self.dims.contains(&0) {
            return Ok(());
        }
        // The outer blocks are one more axis (merged with the box when contiguous).
        let mut walk = Strided { dims: Vec::with_capacity(self.dims.len() + 1), src: Vec::new(), dst: Vec::new(), ..*self };
        if outer > 1 {
            walk.push(outer, self.src_block as isize, self.dst_block as isize);
        }
        for k in 0..self.dims.len() {
            walk.push(self.dims[k], self.src[k], self.dst[k]);
        }
        walk.copy(x, out);
        Ok(())
    }

    /// The copy itself; `new` and `run` checked every offset it reaches.
    fn copy<T: Copy>(&self, x: &[T], out: &mut [T]) {
        let (s0, d0) = (self.src_start as isize, self.dst_start as isize);
        let Some(last) = self.dims.len().checked_sub(1) else {
            out[d0 as usize] = x[s0 as usize];
            return;
        };
        let (outer, n) = (&self.dims[..last], self.dims[last]);
        let (sl, dl) = (self.src[last], self.dst[last]);
        if sl == 1 && dl == 1 {
            for_each_base(outer, &self.src[..last], &self.dst[..last], s0, d0, |s, d| {
                out[d as usize..d as usize + n].copy_from_slice(&x[s as usize..s as usize + n]);
            });
            return;
        }
        // The inner swap of a transpose: the source is contiguous along another axis.
        if let Some(q) = (dl == 1).then(|| self.src[..last].iter().position(|&s| s == 1)).flatten() {
            let without_q = |v: &[isize]| -> Vec<isize> { v[..last].iter().enumerate().filter(|&(k, _)| k != q).map(|(_, &s)| s).collect() };
            let dims: Vec<usize> = outer.iter().enumerate().filter(|&(k, _)| k != q).map(|(_, &d)| d).collect();
            let (nq, dq) = (self.dims[q], self.dst[q]);
            for_each_base(&dims, &without_q(&self.src), &without_q(&self.dst), s0, d0, |s, d| {
                tile_transpose(x, out, s, d, (nq, dq), (n, sl));
            });
            return;
        }
        for_each_base(outer, &self.src[..last], &self.dst[..last], s0, d0, |s, d| {
            if dl == 1 {
                for (j, o) in out[d as usize..d as usize + n].iter_mut().enumerate() {
                    *o = x[(s + j as isize * sl) as usize];
                }
            } else {
                for j in 0..n as isize {
                    out[(d + j * dl) as usize] = x[(s + j * sl) as usize];
                }
            }
        });
    }
}

/// How many outer blocks the slices hold, checking that they agree.
fn outer_count(src_len: usize, src_block: usize, dst_len: usize, dst_block: usize) -> Result<usize, KernelError> {
    let outer = if src_block > 0 {
        blocks("input", src_len, src_block)?
    } else if dst_block > 0 {
        blocks("output", dst_len, dst_block)?
    } else {
        0
    };
    expect_len("input", src_len, outer * src_block)?;
    expect_len("output", dst_len, outer * dst_block)?;
    Ok(outer)
}

/// Calls `f` with the source and destination offsets of every multi-index
/// over `dims` (an odometer, last axis fastest); once when `dims` is empty,
/// never when a dim is 0.
fn for_each_base(dims: &[usize], src: &[isize], dst: &[isize], s0: isize, d0: isize, mut f: impl FnMut(isize, isize)) {
    if dims.contains(&0) {
        return;
    }
    let mut index = vec![0usize; dims.len()];
    let (mut s, mut d) = (s0, d0);
    loop {
        f(s, d);
        let mut k = dims.len();
        loop {
            let Some(axis) = k.checked_sub(1) else { return };
            k = axis;
            index[k] += 1;
            s += src[k];
            d += dst[k];
            if index[k] < dims[k] {
                break;
            }
            index[k] = 0;
            s -= src[k] * dims[k] as isize;
            d -= dst[k] * dims[k] as isize;
        }
    }
}

/// Square tiles small enough that a tile of the source and one of the
/// destination stay in L1 together.
const fn tile_edge<T>() -> usize {
    let bytes = std::mem::size_of::<T>();
    let edge = 128 / if bytes == 0 { 1 } else { bytes };
    if edge < 8 { 8 } else if edge > 64 { 64 } else { edge }
}

/// `out[d + i·dq + j] = x[s + i + j·sl]` for `i < nq`, `j < nl`: rows of
/// the destination gather columns of the source, a tile at a time so the
/// strided reads hit lines that the tile's other rows reuse.
fn tile_transpose<T: Copy>(x: &[T], out: &mut [T], s: isize, d: isize, (nq, dq): (usize, isize), (nl, sl): (usize, isize)) {
    let edge = tile_edge::<T>();
    for q0 in (0..nq).step_by(edge) {
        for l0 in (0..nl).step_by(edge) {
            let l1 = (l0 + edge).min(nl);
            for q in q0..(q0 + edge).min(nq) {
                let row = (d + q as isize * dq) as usize;
                let col = s + q as isize;
                for (j, o) in out[row + l0..row + l1].iter_mut().enumerate() {
                    *o = x[(col + (l0 + j) as isize * sl) as usize];
                }
            }
        }
    }
}

/// A permutation of the axes of one block; see [`transpose`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transpose {
    walk: Strided,
    args: CopyArgs,
}

/// The arguments a data-movement kernel was built from (its `new`'s), so a
/// code generator can emit the same constructor call.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CopyArgs {
    Transpose { dims: Vec<usize>, perm: Vec<usize> },
    Slice { dims: Vec<usize>, start: Vec<usize>, step: Vec<isize>, len: Vec<usize> },
    Pad { dims: Vec<usize>, begins: Vec<i64>, ends: Vec<i64> },
}

impl Transpose {
    /// Output axis `k` of a block of `dims` (row-major) is input axis `perm[k]`.
    pub fn new(dims: &[usize], perm: &[usize]) -> Result<Transpose, KernelError> {
        let mut seen = vec![false; dims.len()];
        if perm.len() != dims.len() || !perm.iter().all(|&p| p < dims.len() && !std::mem::replace(&mut seen[p], true)) {
            return Err(KernelError::Geometry(format!("perm {perm:?} does not permute {} axes", dims.len())));
        }
        let block = volume(dims)?;
        let in_strides = strides(dims)?;
        let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let src: Vec<isize> = perm.iter().map(|&p| in_strides[p]).collect();
        let args = CopyArgs::Transpose { dims: dims.to_vec(), perm: perm.to_vec() };
        Ok(Transpose { walk: Strided::new(&out_dims, &src, &strides(&out_dims)?, (0, 0), (block, block))?, args })
    }

    pub fn args(&self) -> &CopyArgs {
        &self.args
    }
}

/// Transposes every block of `x` into `out` (both `outer` blocks, `outer`
/// derived from `x.len()`).
pub fn transpose<T: Copy>(t: &Transpose, x: &[T], out: &mut [T]) -> Result<(), KernelError> {
    t.walk.run(x, out)
}

/// A strided window of one block; see [`slice`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    walk: Strided,
    args: CopyArgs,
}

impl Slice {
    /// Keeps `len[a]` elements of each axis `a` of a block of `dims`: those
    /// at `start[a] + i·step[a]` (a negative step walks backwards).
    pub fn new(dims: &[usize], start: &[usize], step: &[isize], len: &[usize]) -> Result<Slice, KernelError> {
        if start.len() != dims.len() || step.len() != dims.len() || len.len() != dims.len() {
            return Err(KernelError::Geometry(format!("a slice of {} axes needs a start, step and length for each", dims.len())));
        }
        let in_strides = strides(dims)?;
        let mut first = 0isize;
        let mut src = Vec::with_capacity(dims.len());
        for a in 0..dims.len() {
            // An empty axis reads nothing: its start need not be inside it.
            if len[a] > 0 {
                first = to_isize(start[a])?.checked_mul(in_strides[a]).and_then(|o| o.checked_add(first)).ok_or_else(overflow)?;
            }
            src.push(step[a].checked_mul(in_strides[a]).ok_or_else(overflow)?);
        }
        let first = usize::try_from(first).map_err(|_| overflow())?;
        let walk = Strided::new(len, &src, &strides(len)?, (first, 0), (volume(dims)?, volume(len)?))?;
        let args = CopyArgs::Slice { dims: dims.to_vec(), start: start.to_vec(), step: step.to_vec(), len: len.to_vec() };
        Ok(Slice { walk, args })
    }

    pub fn args(&self) -> &CopyArgs {
        &self.args
    }
}

/// Copies the window out of every block of `x` into `out` (`outer` derived
/// from `x.len()`).
pub fn slice<T: Copy>(s: &Slice, x: &[T], out: &mut [T]) -> Result<(), KernelError> {
    s.walk.run(x, out)
}

/// Constant padding of one block; see [`pad`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pad {
    /// The kept input box into its place in the output.
    walk: Strided,
    args: CopyArgs,
}

impl Pad {
    /// Adds `begins[a]` elements before and `ends[a]` after each axis `a` of
    /// a block of `dims`; a negative pad removes elements from that side.
    pub fn new(dims: &[usize], begins: &[i64], ends: &[i64]) -> Result<Pad, KernelError> {
        if begins.len() != dims.len() || ends.len() != dims.len() {
            return Err(KernelError::Geometry(format!("pads of {} and {} axes for {} axes", begins.len(), ends.len(), dims.len())));
        }
        let (mut out_dims, mut kept, mut src_first, mut dst_first) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for a in 0..dims.len() {
            let (d, b, e) = (i64::try_from(dims[a]).map_err(|_| overflow())?, begins[a], ends[a]);
            let out = d.checked_add(b).and_then(|o| o.checked_add(e)).ok_or_else(overflow)?;
            let out = usize::try_from(out).map_err(|_| KernelError::Geometry(format!("pads {b}, {e} remove more than axis {a}'s {d} elements")))?;
            // Negative pads crop the input: it keeps lo..hi.
            let (lo, hi) = ((-b).max(0), d.saturating_sub((-e).max(0)));
            out_dims.push(out);
            kept.push(usize::try_from((hi - lo).max(0)).map_err(|_| overflow())?);
            src_first.push(lo as usize);
            dst_first.push(b.max(0) as usize);
        }
        let (in_strides, out_strides) = (strides(dims)?, strides(&out_dims)?);
        let offset = |first: &[usize], st: &[isize]| -> Result<usize, KernelError> {
            if kept.contains(&0) {
                return Ok(0);
            }
            first.iter().zip(st).try_fold(0usize, |o, (&f, &s)| f.checked_mul(s as usize).and_then(|v| v.checked_add(o))).ok_or_else(overflow)
        };
        let starts = (offset(&src_first, &in_strides)?, offset(&dst_first, &out_strides)?);
        let args = CopyArgs::Pad { dims: dims.to_vec(), begins: begins.to_vec(), ends: ends.to_vec() };
        Ok(Pad { walk: Strided::new(&kept, &in_strides, &out_strides, starts, (volume(dims)?, volume(&out_dims)?))?, args })
    }

    pub fn args(&self) -> &CopyArgs {
        &self.args
    }
}

/// Pads every block of `x` with `fill` into `out` (`outer` derived from the
/// lengths).
pub fn pad<T: Copy>(p: &Pad, fill: T, x: &[T], out: &mut [T]) -> Result<(), KernelError> {
    outer_count(x.len(), p.walk.src_block, out.len(), p.walk.dst_block)?;
    out.fill(fill);
    p.walk.run(x, out)
}

/// The sum of the row lengths, checked for overflow.
fn row_total(rows: &[usize]) -> Result<usize, KernelError> {
    rows.iter().try_fold(0usize, |n, &r| n.checked_add(r)).ok_or_else(overflow)
}

/// Joins `inputs` along one axis: each is `[outer, rows[i]]` and `out` is
/// `[outer, Σ rows]`, `outer` derived from `out.len()`.
pub fn concat<T: Copy>(rows: &[usize], inputs: &[&[T]], out: &mut [T]) -> Result<(), KernelError> {
    expect_len("inputs", inputs.len(), rows.len())?;
    let total = row_total(rows)?;
    let outer = if total == 0 { 0 } else { blocks("output", out.len(), total)? };
    for (x, &row) in inputs.iter().zip(rows) {
        expect_len("an input", x.len(), outer * row)?;
    }
    if outer == 0 {
        return expect_len("output", out.len(), 0);
    }
    for (o, dst) in out.chunks_exact_mut(total).enumerate() {
        let mut at = 0;
        for (x, &row) in inputs.iter().zip(rows) {
            dst[at..at + row].copy_from_slice(&x[o * row..(o + 1) * row]);
            at += row;
        }
    }
    Ok(())
}

/// Piece `piece` of a split along one axis: `x` is `[outer, Σ rows]` and
/// `out` is `[outer, rows[piece]]`, `outer` derived from `x.len()`.
pub fn split<T: Copy>(rows: &[usize], piece: usize, x: &[T], out: &mut [T]) -> Result<(), KernelError> {
    let Some(&row) = rows.get(piece) else {
        return Err(KernelError::Geometry(format!("piece {piece} of a split into {}", rows.len())));
    };
    let (total, at) = (row_total(rows)?, row_total(&rows[..piece])?);
    let outer = if total == 0 { 0 } else { blocks("input", x.len(), total)? };
    expect_len("input", x.len(), outer * total)?;
    expect_len("output", out.len(), outer * row)?;
    if row == 0 {
        return Ok(());
    }
    for (src, dst) in x.chunks_exact(total).zip(out.chunks_exact_mut(row)) {
        dst.copy_from_slice(&src[at..at + row]);
    }
    Ok(())
}

/// Constant indices into the middle axis of `[outer, axis, inner]`; see [`gather`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gather {
    axis: usize,
    inner: usize,
    indices: Vec<usize>,
}

impl Gather {
    /// Indices into an axis of `axis` elements, each followed by `inner`
    /// elements; negative indices count from the end.
    pub fn new(axis: usize, inner: usize, indices: &[i64]) -> Result<Gather, KernelError> {
        volume(&[axis, inner, indices.len().max(1)])?;
        let len = axis as i64;
        let indices = indices
            .iter()
            .map(|&i| {
                let j = if i < 0 { i + len } else { i };
                usize::try_from(j).ok().filter(|&j| j < axis).ok_or_else(|| KernelError::Geometry(format!("index {i} is out of range for an axis of {axis}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Gather { axis, inner, indices })
    }

    /// The axis length, the inner block and the (non-negative) indices.
    pub fn parts(&self) -> (usize, usize, &[usize]) {
        (self.axis, self.inner, &self.indices)
    }
}

/// `out[o, k, :] = x[o, indices[k], :]` over `outer` blocks derived from the
/// lengths.
pub fn gather<T: Copy>(g: &Gather, x: &[T], out: &mut [T]) -> Result<(), KernelError> {
    let (src_block, dst_block) = (g.axis * g.inner, g.indices.len() * g.inner);
    outer_count(x.len(), src_block, out.len(), dst_block)?;
    if dst_block == 0 {
        return Ok(());
    }
    // Every index is below `axis`, so a destination block implies a nonempty source block.
    for (src, dst) in x.chunks_exact(src_block).zip(out.chunks_exact_mut(dst_block)) {
        if g.inner == 1 {
            for (o, &i) in dst.iter_mut().zip(&g.indices) {
                *o = src[i];
            }
        } else {
            for (run, &i) in dst.chunks_exact_mut(g.inner).zip(&g.indices) {
                run.copy_from_slice(&src[i * g.inner..(i + 1) * g.inner]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
