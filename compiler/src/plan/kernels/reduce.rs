//! Selection of the reduction fast kernels: f32 ReduceSum, ReduceMean,
//! ReduceMax and ReduceMin over constant axes that form one contiguous block
//! once size-1 axes are ignored (e.g. the spatial axes of NCHW, the last
//! axes, or every axis), with the trailing dims known. The batch may be in
//! the leading dims, whose count the kernel derives from the length, or in
//! the reduced block, whose length the executor then resolves per call
//! ([`Kernel::ReduceOverBatch`]).
//!
//! Also ArgMax/ArgMin (f32, i64, i32) over an axis of known size with known
//! trailing dims, and OneHot with constant depth and values whose indices'
//! dims from the one-hot axis on are known.

use super::{f32_input, f32_output, known_volume, shape};
use crate::ir::{Dim, Graph, NodeId, ReduceOp};
use crate::passes::infer::normalize_axis;
use crate::plan::Kernel;
use d2nn_runtime::kernels::one_hot::OneHot;
use d2nn_runtime::kernels::reduce::{ArgReduce, ReduceKind};
use d2nn_runtime::{DType, Tensor};

pub(super) fn reduce(graph: &Graph, node: NodeId, op: ReduceOp, noop_with_empty_axes: bool) -> Option<Kernel> {
    let kind = match op {
        ReduceOp::Sum => ReduceKind::Sum,
        ReduceOp::Mean => ReduceKind::Mean,
        ReduceOp::Max => ReduceKind::Max,
        ReduceOp::Min => ReduceKind::Min,
        ReduceOp::Prod | ReduceOp::L2 => return None,
    };
    let x = f32_input(graph, node, 0)?;
    f32_output(graph, node)?;
    let dims = shape(graph, x);
    let axes = match graph.nodes[node].input(1) {
        None => Vec::new(),
        Some(_) => graph.input_const(node, 1)?.to_i64_vec(),
    };
    // No axes: every axis, or none at all (the reference's identity copy).
    if axes.is_empty() && noop_with_empty_axes {
        return None;
    }
    let mut reduced = vec![axes.is_empty(); dims.len()];
    for a in axes {
        let a = normalize_axis(a, dims.len())?;
        if std::mem::replace(&mut reduced[a], true) {
            return None;
        }
    }
    // The reduced block runs from the first to the last reduced axis that
    // is not size 1; an unreduced, non-size-1 axis inside it breaks it.
    let significant = |i: usize| dims[i] != Dim::Known(1);
    let block: Vec<usize> = (0..dims.len()).filter(|&i| reduced[i] && significant(i)).collect();
    let (len, inner) = match (block.first(), block.last()) {
        (Some(&first), Some(&last)) => {
            if (first..=last).any(|i| !reduced[i] && significant(i)) {
                return None;
            }
            let inner = known_volume(&dims[last + 1..])?;
            match crate::ir::types::volume(&dims[first..=last]) {
                Dim::Known(len) => (len, inner),
                // The batch is reduced too: its length is known per call.
                len @ Dim::Sym { .. } => return Some(Kernel::ReduceOverBatch { kind, len, inner }),
                Dim::Unknown => return None,
            }
        }
        // Only size-1 axes (or none) are reduced: each output reduces one element.
        _ => (1, 1),
    };
    Some(Kernel::Reduce { kind, len, inner })
}

/// ArgMax / ArgMin over an axis of known, non-zero size (an empty axis is
/// the reference's error to report) with known trailing dims.
pub(super) fn arg_reduce(graph: &Graph, node: NodeId, max: bool, axis: i64, select_last_index: bool) -> Option<Kernel> {
    let n = &graph.nodes[node];
    let x = n.input(0)?;
    if !matches!(graph.values[x].ty.dtype, DType::F32 | DType::I64 | DType::I32) {
        return None;
    }
    match n.outputs[..] {
        [y] if graph.values[y].ty.dtype == DType::I64 => {}
        _ => return None,
    }
    let dims = shape(graph, x);
    let axis = normalize_axis(axis, dims.len())?;
    let len = dims[axis].known().filter(|&l| l > 0)?;
    let inner = known_volume(&dims[axis + 1..])?;
    Some(Kernel::ArgReduce(ArgReduce { max, select_last_index, len, inner }))
}

/// OneHot whose depth (one element, truncated like the reference reads it)
/// and `[off, on]` values are constants.
pub(super) fn one_hot(graph: &Graph, node: NodeId, axis: i64) -> Option<Kernel> {
    let n = &graph.nodes[node];
    let indices = n.input(0)?;
    if !matches!(graph.values[indices].ty.dtype, DType::F32 | DType::I64 | DType::I32) {
        return None;
    }
    let depth = match graph.input_const(node, 1)?.to_i64_vec()[..] {
        [d] => usize::try_from(d).ok()?,
        _ => return None,
    };
    let values = graph.input_const(node, 2)?;
    let y = match n.outputs[..] {
        [y] if graph.values[y].ty.dtype == values.dtype() => y,
        _ => return None,
    };
    let axis = normalize_axis(axis, shape(graph, indices).len() + 1)?;
    if values.shape() != [2] || shape(graph, y).get(axis) != Some(&Dim::Known(depth)) {
        return None;
    }
    let inner = known_volume(&shape(graph, indices)[axis..])?;
    let off_on: Tensor = values.reshaped(&[2]).ok()?;
    Some(Kernel::OneHot { geometry: OneHot { depth, inner }, off_on })
}
