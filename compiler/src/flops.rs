//! FLOP counting per node (a multiply-add counts as 2 FLOPs), for `inspect`
//! and, later, for the dense-vs-executed figures of dynamic runs.
//!
//! Data movement (reshape, transpose, concat, gather…) counts as 0. Cheap
//! elementwise ops count one FLOP per output element (per extra operand for
//! n-ary ops); transcendental functions are not weighted more.

use crate::ir::{Dim, Graph, NodeId, Op, PoolKind, Symbol, TensorType};

/// Binds every symbolic dimension to the same value (the batch size).
pub fn bind_all(batch: usize) -> impl Fn(Symbol) -> Option<usize> {
    move |_| Some(batch)
}

fn elems(ty: &TensorType, bind: &dyn Fn(Symbol) -> Option<usize>) -> Option<u64> {
    ty.shape.iter().try_fold(1u64, |acc, d| d.resolve(bind).map(|n| acc.saturating_mul(n as u64)))
}

fn dims(ty: &TensorType, bind: &dyn Fn(Symbol) -> Option<usize>) -> Option<Vec<u64>> {
    ty.shape.iter().map(|d: &Dim| d.resolve(bind).map(|n| n as u64)).collect()
}

/// FLOPs of one node (`None` when a dim it depends on is unknown). An `If`
/// counts only its own test; its branches are counted by their nodes.
pub fn node_flops(graph: &Graph, node: NodeId, bind: &dyn Fn(Symbol) -> Option<usize>) -> Option<u64> {
    let n = &graph.nodes[node];
    let in_ty = |i: usize| n.input(i).map(|v| &graph.values[v].ty);
    let out_ty = |i: usize| &graph.values[n.outputs[i]].ty;
    let out_elems = || elems(out_ty(0), bind);
    Some(match &n.op {
        Op::Conv(_) => {
            let w = dims(in_ty(1)?, bind)?;
            let macs_per_out: u64 = w[1..].iter().product();
            let bias = if n.input(2).is_some() { 1 } else { 0 };
            out_elems()? * (2 * macs_per_out + bias)
        }
        Op::ConvTranspose(_) => {
            let w = dims(in_ty(1)?, bind)?;
            // Every input element scatters into (C_out / group) × kernel outputs.
            let per_in: u64 = w[1..].iter().product();
            elems(in_ty(0)?, bind)? * 2 * per_in + if n.input(2).is_some() { out_elems()? } else { 0 }
        }
        Op::Gemm { trans_a, .. } => {
            let a = dims(in_ty(0)?, bind)?;
            let k = if *trans_a { a[0] } else { a[1] };
            out_elems()? * (2 * k + if n.input(2).is_some() { 1 } else { 0 })
        }
        Op::MatMul => {
            let a = dims(in_ty(0)?, bind)?;
            let k = *a.last()?;
            out_elems()? * 2 * k
        }
        Op::BatchNorm { .. } | Op::InstanceNorm { .. } => 2 * out_elems()?,
        Op::LayerNorm { .. } => 5 * out_elems()?,
        Op::Softmax { .. } => 3 * out_elems()?,
        Op::Lrn { size, .. } => out_elems()? * (*size as u64 + 3),
        Op::Pool { attrs, kind } => {
            let window: u64 = attrs.kernel.iter().map(|&k| k as u64).product();
            out_elems()? * (window + matches!(kind, PoolKind::Average { .. }) as u64)
        }
        Op::GlobalPool { .. } | Op::Reduce { .. } | Op::ArgReduce { .. } | Op::TopK { .. } => elems(in_ty(0)?, bind)?,
        Op::Unary(_) | Op::Binary(_) | Op::Clip | Op::Where | Op::Resize(_) => out_elems()?,
        Op::Variadic(_) => out_elems()? * (n.inputs.len().saturating_sub(1).max(1) as u64),
        Op::If => 0,
        Op::Identity
        | Op::Dropout
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Gather { .. }
        | Op::Shape { .. }
        | Op::Size
        | Op::Expand
        | Op::Tile
        | Op::Cast { .. }
        | Op::Pad { .. }
        | Op::Range
        | Op::ConstantOfShape { .. }
        | Op::OneHot { .. } => 0,
    })
}

/// Total FLOPs of the graph if every node ran (both branches of every `If`):
/// the dense cost. `None` if any node's count is unknown.
pub fn dense_flops(graph: &Graph, bind: &dyn Fn(Symbol) -> Option<usize>) -> Option<u64> {
    graph.walk_nodes().into_iter().try_fold(0u64, |acc, n| node_flops(graph, n, bind).map(|f| acc + f))
}

/// 1234567 → "1,234,567": how FLOP counts are printed.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
