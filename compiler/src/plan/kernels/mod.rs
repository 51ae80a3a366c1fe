//! Kernel selection and the fast steps of the plan executor.
//!
//! [`choose`] picks each node's [`Kernel`] at lowering time; a node gets a
//! fast kernel only when every condition that kernel relies on holds (dtype,
//! constant operands, layout), and the reference kernel otherwise. The
//! executor hands fast kernels their operands as slices: graph inputs and
//! constants in place, arena buffers through one checked split of the arena.

use super::Kernel;
use crate::ir::{Graph, NodeId, Op};

/// The kernel for `node`.
pub(super) fn choose(graph: &Graph, node: NodeId) -> Kernel {
    let n = &graph.nodes[node];
    match n.op {
        // Same bytes, new shape: only the data operand is read.
        Op::Identity | Op::Dropout | Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze
            if n.outputs.len() == 1 =>
        {
            Kernel::Copy
        }
        _ => Kernel::Reference,
    }
}
