//! Shape and type inference: the output types of a node from its input types,
//! constant operands and symbolically known shape operands.
//!
//! The front end calls [`infer_node`] as it builds each node, the verifier
//! calls it to check stored types, and [`run`] re-derives every type after a
//! rewrite. Each op family has its own file.

mod control;
mod conv;
mod elementwise;
mod reduce;
mod shape;
pub mod symbolic;

use crate::ir::{Dim, Family, Graph, NodeId, Op, TensorType, ValueId};
use d2nn_runtime::{DType, Tensor};
pub use symbolic::SymInt;

/// A node whose output types cannot be derived; names the node and its op.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("node `{node}` ({op}): {reason}")]
pub struct InferError {
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// What an inference rule may look at: the node, its operands' types, and
/// their constant or symbolic values.
pub struct InferCtx<'a> {
    pub graph: &'a Graph,
    pub node: NodeId,
}

impl<'a> InferCtx<'a> {
    pub fn op(&self) -> &'a Op {
        &self.graph.nodes[self.node].op
    }

    pub fn err(&self, reason: impl Into<String>) -> InferError {
        let node = &self.graph.nodes[self.node];
        InferError { node: node.name.clone(), op: node.op.name().to_string(), reason: reason.into() }
    }

    pub fn num_inputs(&self) -> usize {
        self.graph.nodes[self.node].inputs.len()
    }

    pub fn num_outputs(&self) -> usize {
        self.graph.nodes[self.node].outputs.len()
    }

    pub fn input_value(&self, i: usize) -> Option<ValueId> {
        self.graph.nodes[self.node].input(i)
    }

    /// The type of a required input.
    pub fn input(&self, i: usize) -> Result<&'a TensorType, InferError> {
        self.opt_input(i).ok_or_else(|| self.err(format!("required input {i} is missing")))
    }

    /// The type of an optional input.
    pub fn opt_input(&self, i: usize) -> Option<&'a TensorType> {
        self.input_value(i).map(|v| &self.graph.values[v].ty)
    }

    /// The constant held by input `i`, if any.
    pub fn const_input(&self, i: usize) -> Option<&'a Tensor> {
        self.input_value(i).and_then(|v| self.graph.const_value(v))
    }

    /// The elements of input `i` as symbolic integers, when they can be known
    /// before running (constants and shape arithmetic).
    pub fn sym_input(&self, i: usize) -> Option<Vec<SymInt>> {
        self.input_value(i).and_then(|v| symbolic::sym_value(self.graph, v))
    }

    /// Input `i` read as constant integers (e.g. axes), if known.
    pub fn const_ints(&self, i: usize) -> Option<Vec<i64>> {
        self.const_input(i).map(Tensor::to_i64_vec)
    }

    /// Requires input `i` to have dtype `dt`.
    pub fn expect_dtype(&self, i: usize, allowed: &[DType]) -> Result<DType, InferError> {
        let t = self.input(i)?;
        if allowed.contains(&t.dtype) {
            Ok(t.dtype)
        } else {
            let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
            Err(self.err(format!("input {i} has dtype {}, expected {}", t.dtype, names.join(" or "))))
        }
    }

    /// Normalises a possibly negative axis against `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize, InferError> {
        normalize_axis(axis, rank).ok_or_else(|| self.err(format!("axis {axis} is out of range for rank {rank}")))
    }
}

/// Normalises a possibly negative axis against `rank` (`None` if out of range).
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// The output types of `node`.
pub fn infer_node(graph: &Graph, node: NodeId) -> Result<Vec<TensorType>, InferError> {
    let ctx = InferCtx { graph, node };
    match ctx.op().family() {
        Family::Conv => conv::infer(&ctx),
        Family::Elementwise => elementwise::infer(&ctx),
        Family::Shape => shape::infer(&ctx),
        Family::Reduce => reduce::infer(&ctx),
        Family::Control => control::infer(&ctx),
    }
}

/// Re-derives the type of every node output in the graph, in execution order.
pub fn run(graph: &mut Graph) -> Result<(), InferError> {
    for n in graph.walk_nodes() {
        let types = infer_node(graph, n)?;
        let outs = graph.nodes[n].outputs.clone();
        for (v, ty) in outs.into_iter().zip(types) {
            graph.values[v].ty = ty;
        }
    }
    Ok(())
}

/// Multidirectional (numpy) broadcasting of two shapes.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, String> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { Dim::Known(1) };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { Dim::Known(1) };
        let d = match (da, db) {
            (Dim::Known(1), d) | (d, Dim::Known(1)) => d,
            (x, y) if x == y => x,
            (Dim::Unknown, d) | (d, Dim::Unknown) => {
                // One side is only known at run time; keep the certain one.
                if d.is_known() || matches!(d, Dim::Sym { .. }) { d } else { Dim::Unknown }
            }
            (x, y) => return Err(format!("shapes cannot broadcast: dim {x:?} vs {y:?}")),
        };
        out.push(d);
    }
    Ok(out)
}
