//! Epilogue fusion: a convolution or fully connected layer absorbs the
//! residual `Add` and the activation that follow it, so their work happens
//! in the GEMM's registers instead of in extra passes over memory.
//!
//! A chain starts at a node whose kernel is [`Kernel::Conv`] or
//! [`Kernel::Dense`] (activation only for [`Kernel::Depthwise`]) and absorbs,
//! in this order and each at most once:
//! 1. an f32 `Add` of its result and another tensor of exactly the same
//!    shape (the residual; no broadcasting);
//! 2. an activation the GEMM epilogue computes: `Relu`, `LeakyRelu`,
//!    `Sigmoid`, or `Clip` with constant bounds.
//!
//! Each absorbed node must be the only reader of the chain's value so far,
//! in the same region, and that value must be neither a graph output nor a
//! branch result: the intermediate values then never exist. The fused step
//! runs where the chain's *last* node was, because the residual may be
//! computed after the head (a ResNet shortcut conv); the head's operands
//! are still available there, as values are immutable.

use super::kernels::choose;
use super::Kernel;
use crate::ir::{BinaryOp, Graph, NodeId, Op, RegionId, UnaryOp, ValueId};
use d2nn_runtime::gemm::Activation;
use d2nn_runtime::kernels::elementwise::Unary;
use d2nn_runtime::DType;
use std::collections::HashMap;

/// A head node and what it absorbed.
#[derive(Debug)]
pub struct Chain {
    pub head: NodeId,
    /// The head's kernel with the fused epilogue set.
    pub kernel: Kernel,
    /// The residual operand, when an `Add` was absorbed.
    pub residual: Option<ValueId>,
    /// The absorbed nodes, in execution order.
    pub absorbed: Vec<NodeId>,
    /// The value the fused step writes (the last absorbed node's output).
    pub output: ValueId,
}

/// The chains of one region, by where their step is emitted.
#[derive(Debug, Default)]
pub struct RegionFusion {
    /// Chain by its last absorbed node.
    pub by_last: HashMap<NodeId, Chain>,
    /// Heads whose step moved to their chain's end: skipped where they stand.
    pub deferred: std::collections::HashSet<NodeId>,
    /// Absorbed nodes that are not a chain's last: skipped.
    pub absorbed: std::collections::HashSet<NodeId>,
}

/// Finds the chains of `region`; `uses` is [`Graph::use_counts`];
/// `together(head, n)` says whether `n` may join `head`'s step (in a dynamic
/// program, only nodes of the same guarded block may).
pub fn region_chains(
    graph: &Graph,
    region: RegionId,
    uses: &HashMap<ValueId, usize>,
    together: &dyn Fn(NodeId, NodeId) -> bool,
) -> RegionFusion {
    let nodes = &graph.regions[region].nodes;
    // The reader of each value, when it is a single node of this region.
    let mut reader: HashMap<ValueId, NodeId> = HashMap::new();
    for &n in nodes {
        for v in graph.nodes[n].present_inputs() {
            reader.insert(v, n);
        }
    }
    let mut fusion = RegionFusion::default();
    // A node joins one chain at most (an `Add` of two conv results is the
    // residual of whichever comes first).
    let mut claimed = std::collections::HashSet::new();
    let only_reader = |head: NodeId, v: ValueId, claimed: &std::collections::HashSet<NodeId>| -> Option<NodeId> {
        let n = *reader.get(&v)?;
        let reads = graph.nodes[n].present_inputs().filter(|&x| x == v).count();
        (uses.get(&v).copied() == Some(1) && reads == 1 && !claimed.contains(&n) && together(head, n)).then_some(n)
    };
    for &head in nodes {
        if !matches!(graph.nodes[head].op, Op::Conv(_) | Op::Gemm { .. } | Op::MatMul) || graph.nodes[head].outputs.len() != 1 {
            continue;
        }
        let mut kernel = choose(graph, head);
        let (residual_ok, fused) = match &mut kernel {
            Kernel::Conv(c) => (true, &mut c.fused),
            Kernel::Dense(d) => (true, &mut d.fused),
            Kernel::Depthwise { fused, .. } => (false, fused),
            _ => continue,
        };
        let mut value = graph.nodes[head].outputs[0];
        let (mut residual, mut absorbed) = (None, Vec::new());
        if residual_ok {
            if let Some((add, other)) = only_reader(head, value, &claimed).and_then(|n| residual_add(graph, n, value).map(|r| (n, r))) {
                residual = Some(other);
                fused.residual = true;
                absorbed.push(add);
                value = graph.nodes[add].outputs[0];
            }
        }
        if let Some((act, activation)) = only_reader(head, value, &claimed).and_then(|n| activation(graph, n, value).map(|a| (n, a))) {
            fused.activation = activation;
            absorbed.push(act);
            value = graph.nodes[act].outputs[0];
        }
        let Some(&last) = absorbed.last() else { continue };
        claimed.extend(absorbed.iter().copied());
        fusion.deferred.insert(head);
        fusion.absorbed.extend(absorbed[..absorbed.len() - 1].iter().copied());
        fusion.by_last.insert(last, Chain { head, kernel, residual, absorbed, output: value });
    }
    fusion
}

/// The other operand of `add` when it adds `v` and a same-shaped f32 tensor.
fn residual_add(graph: &Graph, add: NodeId, v: ValueId) -> Option<ValueId> {
    let n = &graph.nodes[add];
    if !matches!(n.op, Op::Binary(BinaryOp::Add)) || n.outputs.len() != 1 {
        return None;
    }
    let other = match (n.input(0)?, n.input(1)?) {
        (a, b) if a == v && b != v => b,
        (a, b) if b == v && a != v => a,
        _ => return None,
    };
    let ty = |x: ValueId| &graph.values[x].ty;
    (ty(other).dtype == DType::F32 && ty(other) == ty(v) && ty(n.outputs[0]) == ty(v)).then_some(other)
}

/// The epilogue form of `node` when it is an activation of `v` alone.
fn activation(graph: &Graph, node: NodeId, v: ValueId) -> Option<Activation> {
    let n = &graph.nodes[node];
    if n.input(0)? != v || n.outputs.len() != 1 || graph.values[n.outputs[0]].ty != graph.values[v].ty {
        return None;
    }
    match &n.op {
        Op::Unary(UnaryOp::Relu) => Some(Activation::Relu),
        Op::Unary(UnaryOp::LeakyRelu { alpha }) => Some(Activation::LeakyRelu { alpha: *alpha }),
        Op::Unary(UnaryOp::Sigmoid) => Some(Activation::Sigmoid),
        // Clip's bounds must be constants; its kernel choice checks that.
        Op::Clip => match choose(graph, node) {
            Kernel::Unary(Unary::Clip { min, max }) if min <= max => Some(Activation::Clip { min, max }),
            _ => None,
        },
        _ => None,
    }
}
