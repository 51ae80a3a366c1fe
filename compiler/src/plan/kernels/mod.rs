//! Kernel selection and the fast steps of the plan executor.
//!
//! [`choose`] picks each node's [`Kernel`] at lowering time; a node gets a
//! fast kernel only when every condition that kernel relies on holds (dtype,
//! constant operands, layout), and the reference kernel otherwise. The
//! executor hands fast kernels their operands as slices: graph inputs and
//! constants in place, arena buffers through one checked split of the arena.
//!
//! Every fast kernel but data movement and control logic (comparisons,
//! `Where`, `And`/`Or`/`Xor`/`Not` on bools, `Cast`, `OneHot`,
//! arg-reductions) is f32-only, and each needs its geometry known at
//! lowering time except for the batch: the batch may only scale the
//! outermost count a kernel derives from its slice lengths (planes of a
//! pool, rows of a softmax or reduction, blocks of a transpose), or, for
//! binary ops, iteration dims that the executor resolves per call while the
//! strides stay batch-independent. Per-family rules are in [`elementwise`],
//! [`logic`] (comparisons, Where, the logical ops, Cast), [`pool`],
//! [`softmax`], [`reduce`] (also ArgMax/ArgMin and OneHot), [`norm`] (batch
//! and layer norm),
//! [`dense`] (convolutions and fully connected layers), [`conv_transpose`]
//! and [`shape`] (Transpose, Slice, Concat, Split, Gather and Pad, for every
//! dtype).

mod conv_transpose;
mod dense;
mod elementwise;
mod logic;
mod norm;
mod pool;
mod reduce;
mod shape;
mod softmax;

use super::Kernel;
use crate::ir::{BinaryOp, Dim, Graph, NodeId, Op, PadMode, UnaryOp, ValueId};
use d2nn_runtime::DType;

/// The kernel for `node`.
pub(super) fn choose(graph: &Graph, node: NodeId) -> Kernel {
    let n = &graph.nodes[node];
    let fast = match &n.op {
        // Same bytes, new shape: only the data operand is read.
        Op::Identity | Op::Dropout | Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze
            if n.outputs.len() == 1 =>
        {
            return Kernel::Copy
        }
        Op::Unary(UnaryOp::Not) => logic::not(graph, node),
        Op::Unary(op) => elementwise::unary(graph, node, *op),
        Op::Clip => elementwise::clip(graph, node),
        Op::Binary(op @ (BinaryOp::And | BinaryOp::Or | BinaryOp::Xor)) => logic::logic(graph, node, *op),
        Op::Binary(op) if op.is_comparison() => logic::compare(graph, node, *op),
        Op::Binary(op) => elementwise::binary(graph, node, *op),
        Op::Where => logic::where_(graph, node),
        Op::Cast { to } => logic::cast(graph, node, *to),
        Op::Variadic(op) => elementwise::variadic(graph, node, *op),
        Op::Pool { kind, attrs } => pool::pool(graph, node, *kind, attrs),
        Op::GlobalPool { kind } => pool::global_pool(graph, node, *kind),
        Op::Softmax { axis, log, coerce_2d } => softmax::softmax(graph, node, *axis, *log, *coerce_2d),
        Op::Reduce { op, noop_with_empty_axes, .. } => reduce::reduce(graph, node, *op, *noop_with_empty_axes),
        Op::ArgReduce { max, axis, select_last_index, .. } => reduce::arg_reduce(graph, node, *max, *axis, *select_last_index),
        Op::OneHot { axis } => reduce::one_hot(graph, node, *axis),
        Op::BatchNorm { epsilon } => norm::batch_norm(graph, node, *epsilon),
        Op::LayerNorm { axis, epsilon } => norm::layer_norm(graph, node, *axis, *epsilon),
        Op::ConvTranspose(attrs) => conv_transpose::conv_transpose(graph, node, attrs),
        Op::Conv(attrs) => dense::conv(graph, node, attrs),
        Op::Gemm { alpha, beta, trans_a, trans_b } => dense::dense(graph, node, *trans_b, *alpha, *beta, *trans_a),
        Op::MatMul => dense::dense(graph, node, false, 1.0, 1.0, false),
        Op::Transpose { perm } => shape::transpose(graph, node, perm),
        Op::Slice => shape::slice(graph, node),
        Op::Concat { axis } => shape::concat(graph, node, *axis),
        Op::Split { axis } => shape::split(graph, node, *axis),
        Op::Gather { axis } => shape::gather(graph, node, *axis),
        Op::Pad { mode: PadMode::Constant } => shape::pad(graph, node),
        _ => None,
    };
    fast.unwrap_or(Kernel::Reference)
}

/// Input `i` of `node` when it is present and f32.
fn f32_input(graph: &Graph, node: NodeId, i: usize) -> Option<ValueId> {
    graph.nodes[node].input(i).filter(|&v| graph.values[v].ty.dtype == DType::F32)
}

/// The node's only output when it is f32.
fn f32_output(graph: &Graph, node: NodeId) -> Option<ValueId> {
    match graph.nodes[node].outputs[..] {
        [v] if graph.values[v].ty.dtype == DType::F32 => Some(v),
        _ => None,
    }
}

fn shape(graph: &Graph, v: ValueId) -> &[Dim] {
    &graph.values[v].ty.shape
}

/// The product of `dims` when every one is known.
fn known_volume(dims: &[Dim]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, d| n.checked_mul(d.known()?))
}
