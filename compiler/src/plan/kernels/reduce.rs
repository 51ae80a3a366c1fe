//! Selection of the reduction fast kernel: f32 ReduceSum, ReduceMean,
//! ReduceMax and ReduceMin over constant axes that form one contiguous block
//! once size-1 axes are ignored (e.g. the spatial axes of NCHW, or the last
//! axes), with the reduced and trailing dims known; the batch may only be
//! in the leading dims, whose count the kernel derives from the length.

use super::{f32_input, f32_output, known_volume, shape};
use crate::ir::{Dim, Graph, NodeId, ReduceOp};
use crate::passes::infer::normalize_axis;
use crate::plan::Kernel;
use d2nn_runtime::kernels::reduce::ReduceKind;

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
            (known_volume(&dims[first..=last])?, known_volume(&dims[last + 1..])?)
        }
        // Only size-1 axes (or none) are reduced: each output reduces one element.
        _ => (1, 1),
    };
    Some(Kernel::Reduce { kind, len, inner })
}
