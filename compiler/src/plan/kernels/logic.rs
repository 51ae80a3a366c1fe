//! Selection of the exact kernels of control logic: broadcasting
//! comparisons (f32, i64 or i32 operands of one dtype, or bool for
//! `Equal`), `Where` (bool condition, any data dtype) and the logical
//! `And`/`Or`/`Xor` (bool operands) — all with the strided layout of the
//! binary ops, so the batch may be in the iteration dims but never in a
//! stride — `Not` of a bool, and `Cast` between f32, i64, i32 and bool.

use super::elementwise::strided_layout;
use super::shape;
use crate::ir::{BinaryOp, Graph, NodeId};
use crate::plan::{CompareKernel, Kernel, LogicKernel, WhereKernel};
use d2nn_runtime::kernels::logic::{BoolOp, Compare};
use d2nn_runtime::DType;

/// The node's only output, when it has this dtype.
fn output_of(graph: &Graph, node: NodeId, dtype: DType) -> Option<crate::ir::ValueId> {
    match graph.nodes[node].outputs[..] {
        [v] if graph.values[v].ty.dtype == dtype => Some(v),
        _ => None,
    }
}

pub(super) fn compare(graph: &Graph, node: NodeId, op: BinaryOp) -> Option<Kernel> {
    let op = match op {
        BinaryOp::Greater => Compare::Greater,
        BinaryOp::Less => Compare::Less,
        BinaryOp::GreaterOrEqual => Compare::GreaterOrEqual,
        BinaryOp::LessOrEqual => Compare::LessOrEqual,
        BinaryOp::Equal => Compare::Equal,
        _ => return None,
    };
    let n = &graph.nodes[node];
    let (a, b, out) = (n.input(0)?, n.input(1)?, output_of(graph, node, DType::Bool)?);
    let dtype = graph.values[a].ty.dtype;
    // The dtypes the reference compares (bool only for equality).
    let supported = matches!(dtype, DType::F32 | DType::I64 | DType::I32) || (dtype == DType::Bool && op == Compare::Equal);
    if !supported || graph.values[b].ty.dtype != dtype {
        return None;
    }
    let (dims, [a_strides, b_strides]) = strided_layout([shape(graph, a), shape(graph, b)], shape(graph, out))?;
    Some(Kernel::Compare(CompareKernel { op, dims, a_strides, b_strides }))
}

/// `And`, `Or` or `Xor` of two bool operands, broadcasting under the same
/// conditions as [`compare`] (batch-independent strides). Anything else
/// (the reference rejects non-bool operands) stays with the reference.
pub(super) fn logic(graph: &Graph, node: NodeId, op: BinaryOp) -> Option<Kernel> {
    let op = match op {
        BinaryOp::And => BoolOp::And,
        BinaryOp::Or => BoolOp::Or,
        BinaryOp::Xor => BoolOp::Xor,
        _ => return None,
    };
    let n = &graph.nodes[node];
    let (a, b, out) = (n.input(0)?, n.input(1)?, output_of(graph, node, DType::Bool)?);
    if graph.values[a].ty.dtype != DType::Bool || graph.values[b].ty.dtype != DType::Bool {
        return None;
    }
    let (dims, [a_strides, b_strides]) = strided_layout([shape(graph, a), shape(graph, b)], shape(graph, out))?;
    Some(Kernel::Logic(LogicKernel { op, dims, a_strides, b_strides }))
}

/// `Not` of a bool operand into a bool output of the same shape: one pass
/// over the bytes, whose count carries the batch.
pub(super) fn not(graph: &Graph, node: NodeId) -> Option<Kernel> {
    let x = graph.nodes[node].input(0)?;
    let out = output_of(graph, node, DType::Bool)?;
    (graph.values[x].ty.dtype == DType::Bool && shape(graph, x) == shape(graph, out)).then_some(Kernel::Not)
}

pub(super) fn where_(graph: &Graph, node: NodeId) -> Option<Kernel> {
    let n = &graph.nodes[node];
    let (c, x, y) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let dtype = graph.values[x].ty.dtype;
    let out = output_of(graph, node, dtype)?;
    if graph.values[c].ty.dtype != DType::Bool || graph.values[y].ty.dtype != dtype {
        return None;
    }
    let (dims, [cond_strides, x_strides, y_strides]) = strided_layout([shape(graph, c), shape(graph, x), shape(graph, y)], shape(graph, out))?;
    Some(Kernel::Where(WhereKernel { dims, cond_strides, x_strides, y_strides }))
}

pub(super) fn cast(graph: &Graph, node: NodeId, to: DType) -> Option<Kernel> {
    let from = graph.values[graph.nodes[node].input(0)?].ty.dtype;
    output_of(graph, node, to)?;
    Some(Kernel::Cast { from, to })
}
