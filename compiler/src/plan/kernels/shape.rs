//! Selection of the data-movement kernels ([`d2nn_runtime::kernels::copy`]):
//! Transpose, Slice, Concat, Split, Gather with constant indices and
//! constant-mode Pad, for every dtype (they copy elements, never read them).
//!
//! Their operands (perm, starts/ends/axes/steps, split sizes, indices, pads,
//! the fill value) must be constants, resolved here by the interpreter's
//! rules (negative indices, clamping, steps). Each kernel sees the data as
//! `[outer, block…]`: the leading axes the op leaves alone fold into `outer`,
//! which the kernel derives from the slice lengths, so the batch may sit
//! there; every dim of the block must be known. Anything else — a batch axis
//! that moves or is cut, operands computed at run time, geometry that
//! disagrees with the inferred output type — keeps the reference kernel,
//! which also reports the errors of invalid operands.

use super::shape;
use crate::ir::{Dim, Graph, NodeId, ValueId};
use crate::passes::infer::normalize_axis;
use crate::passes::infer::symbolic::slice_bounds;
use crate::plan::Kernel;
use d2nn_runtime::kernels::copy;
use d2nn_runtime::Tensor;

/// The node's only data input `i` and output, when they have one dtype.
fn same_dtype(graph: &Graph, node: NodeId, i: usize) -> Option<(ValueId, ValueId)> {
    let n = &graph.nodes[node];
    let (x, out) = (n.input(i)?, *n.outputs.first()?);
    (graph.values[x].ty.dtype == graph.values[out].ty.dtype).then_some((x, out))
}

/// The constant integer operand `i` (axes, pads, indices…).
fn ints(graph: &Graph, node: NodeId, i: usize) -> Option<Vec<i64>> {
    graph.input_const(node, i).filter(|t| t.dtype().is_int()).map(Tensor::to_i64_vec)
}

/// The known dims of `dims[from..]`: the block under the outer axes.
fn block(dims: &[Dim], from: usize) -> Option<Vec<usize>> {
    dims.get(from..)?.iter().map(|d| d.known()).collect()
}

/// The product of `dims`, unless it overflows.
fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Distinct axes normalised against `rank`.
fn distinct_axes(axes: &[i64], rank: usize) -> Option<Vec<usize>> {
    let mut out: Vec<usize> = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = normalize_axis(a, rank)?;
        if out.contains(&a) {
            return None;
        }
        out.push(a);
    }
    Some(out)
}

/// Size-1 axes are dropped first (moving them moves no data); the axes the
/// permutation then keeps in place at the front are the outer ones.
pub(super) fn transpose(graph: &Graph, node: NodeId, perm: &[usize]) -> Option<Kernel> {
    let (x, out) = same_dtype(graph, node, 0)?;
    let (dims, out_dims) = (shape(graph, x), shape(graph, out));
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if sorted != (0..dims.len()).collect::<Vec<_>>() || out_dims.len() != dims.len() || perm.iter().enumerate().any(|(k, &p)| dims[p] != out_dims[k]) {
        return None;
    }
    let kept: Vec<usize> = (0..dims.len()).filter(|&a| dims[a] != Dim::Known(1)).collect();
    let dims: Vec<Dim> = kept.iter().map(|&a| dims[a]).collect();
    let perm: Vec<usize> = perm.iter().filter_map(|p| kept.iter().position(|a| a == p)).collect();
    let fixed = perm.iter().enumerate().take_while(|&(k, &p)| k == p).count();
    let block_perm: Vec<usize> = perm[fixed..].iter().map(|&p| p - fixed).collect();
    copy::Transpose::new(&block(&dims, fixed)?, &block_perm).ok().map(Kernel::Transpose)
}

/// Slice with constant starts, ends, axes and steps. An axis it keeps whole
/// (from 0, step 1, as long as the input) may hold the batch when it
/// precedes every cut axis.
pub(super) fn slice(graph: &Graph, node: NodeId) -> Option<Kernel> {
    let (x, out) = same_dtype(graph, node, 0)?;
    let (dims, out_dims) = (shape(graph, x), shape(graph, out));
    let (starts, ends) = (ints(graph, node, 1)?, ints(graph, node, 2)?);
    let n = starts.len();
    let axes = match graph.nodes[node].input(3) {
        Some(_) => distinct_axes(&ints(graph, node, 3)?, dims.len())?,
        None => (0..n).collect(),
    };
    let steps = match graph.nodes[node].input(4) {
        Some(_) => ints(graph, node, 4)?,
        None => vec![1; n],
    };
    if ends.len() != n || axes.len() != n || steps.len() != n || out_dims.len() != dims.len() {
        return None;
    }
    // Per axis of the input: first index, step, kept length; whole axes by default.
    let mut windows: Vec<Option<(usize, isize, usize)>> = vec![None; dims.len()];
    for k in 0..n {
        let a = axes[k];
        // From 0 with step 1 to the input's length: whole, even when the length is the batch.
        if starts[k] == 0 && steps[k] == 1 && out_dims[a] == dims[a] {
            continue;
        }
        let (first, len) = slice_bounds(dims[a].known()?, starts[k], ends[k], steps[k])?;
        if out_dims[a] != Dim::Known(len) {
            return None;
        }
        if (first, steps[k], Dim::Known(len)) == (0, 1, dims[a]) {
            continue;
        }
        let first = if len == 0 { 0 } else { usize::try_from(first).ok()? };
        windows[a] = Some((first, isize::try_from(steps[k]).ok()?, len));
    }
    let outer = windows.iter().position(Option::is_some).unwrap_or(dims.len());
    let dims = block(dims, outer)?;
    let (mut start, mut step, mut len) = (Vec::new(), Vec::new(), Vec::new());
    for (w, &d) in windows[outer..].iter().zip(&dims) {
        let (s, st, l) = w.unwrap_or((0, 1, d));
        start.push(s);
        step.push(st);
        len.push(l);
    }
    copy::Slice::new(&dims, &start, &step, &len).ok().map(Kernel::Slice)
}

/// Concat along an axis after which every input's dims are known.
pub(super) fn concat(graph: &Graph, node: NodeId, axis: i64) -> Option<Kernel> {
    let n = &graph.nodes[node];
    let out = *n.outputs.first()?;
    let dtype = graph.values[out].ty.dtype;
    let rank = shape(graph, out).len();
    let axis = normalize_axis(axis, rank)?;
    let rows = (0..n.inputs.len())
        .map(|i| {
            let x = n.input(i).filter(|&x| graph.values[x].ty.dtype == dtype && shape(graph, x).len() == rank)?;
            product(&block(shape(graph, x), axis)?)
        })
        .collect::<Option<Vec<usize>>>()?;
    Some(Kernel::Concat { rows })
}

/// Split with constant sizes (or the equal chunks of the newest opset).
pub(super) fn split(graph: &Graph, node: NodeId, axis: i64) -> Option<Kernel> {
    let (x, _) = same_dtype(graph, node, 0)?;
    let n = &graph.nodes[node];
    let dims = shape(graph, x);
    let axis = normalize_axis(axis, dims.len())?;
    let block = block(dims, axis)?;
    let (d, parts) = (block[0], n.outputs.len());
    let sizes: Vec<usize> = match n.input(1) {
        Some(_) => ints(graph, node, 1)?.into_iter().map(|s| usize::try_from(s).ok()).collect::<Option<_>>()?,
        None => {
            let chunk = d.div_ceil(parts.max(1));
            if parts == 0 || chunk * (parts - 1) > d {
                return None;
            }
            (0..parts).map(|i| if i + 1 < parts { chunk } else { d - chunk * (parts - 1) }).collect()
        }
    };
    if sizes.len() != parts || sizes.iter().try_fold(0usize, |t, &s| t.checked_add(s)) != Some(d) {
        return None;
    }
    let inner = product(&block[1..])?;
    for (&s, &o) in sizes.iter().zip(&n.outputs) {
        let part = &graph.values[o].ty;
        if part.dtype != graph.values[x].ty.dtype || part.shape.get(axis) != Some(&Dim::Known(s)) {
            return None;
        }
    }
    let rows = sizes.iter().map(|&s| s.checked_mul(inner)).collect::<Option<_>>()?;
    Some(Kernel::Split { rows })
}

/// Gather with constant, in-range indices along an axis after which the
/// data's dims are known.
pub(super) fn gather(graph: &Graph, node: NodeId, axis: i64) -> Option<Kernel> {
    let (x, _) = same_dtype(graph, node, 0)?;
    let dims = shape(graph, x);
    let axis = normalize_axis(axis, dims.len())?;
    let block = block(dims, axis)?;
    let indices = ints(graph, node, 1)?;
    copy::Gather::new(block[0], product(&block[1..])?, &indices).ok().map(Kernel::Gather)
}

/// Constant-mode Pad with constant pads, axes and fill; the batch may sit in
/// the leading axes without pads.
pub(super) fn pad(graph: &Graph, node: NodeId) -> Option<Kernel> {
    let (x, out) = same_dtype(graph, node, 0)?;
    let (dims, out_dims) = (shape(graph, x), shape(graph, out));
    let rank = dims.len();
    let axes = match graph.nodes[node].input(3) {
        Some(_) => distinct_axes(&ints(graph, node, 3)?, rank)?,
        None => (0..rank).collect(),
    };
    let pads = ints(graph, node, 1)?;
    if pads.len() != 2 * axes.len() || out_dims.len() != rank {
        return None;
    }
    let (mut begins, mut ends) = (vec![0i64; rank], vec![0i64; rank]);
    for (k, &a) in axes.iter().enumerate() {
        (begins[a], ends[a]) = (pads[k], pads[k + axes.len()]);
    }
    let outer = (0..rank).position(|a| begins[a] != 0 || ends[a] != 0).unwrap_or(rank);
    let block_dims = block(dims, outer)?;
    for a in outer..rank {
        let padded = i64::try_from(block_dims[a - outer]).ok()?.checked_add(begins[a])?.checked_add(ends[a])?;
        if out_dims[a] != Dim::Known(usize::try_from(padded).ok()?) {
            return None;
        }
    }
    // The reference reads the first element of a nonempty fill, zero otherwise.
    let dtype = graph.values[x].ty.dtype;
    let fill = match graph.nodes[node].input(2) {
        None => Tensor::zeros(dtype, &[]),
        Some(_) => match graph.input_const(node, 2)? {
            t if t.is_empty() => Tensor::zeros(dtype, &[]),
            t if t.len() == 1 && t.dtype() == dtype => t.clone(),
            _ => return None,
        },
    };
    let geometry = copy::Pad::new(&block_dims, &begins[outer..], &ends[outer..]).ok()?;
    Some(Kernel::Pad { geometry, fill })
}
