//! Constant folding, concrete and symbolic.
//!
//! - A node whose operands are all constants, and whose outputs are small and
//!   of known shape, is evaluated with the interpreter's kernels; its outputs
//!   become constants (keeping their names) and the node is detached.
//! - `Shape`/`Size` of a value whose relevant dims are all known become constants.
//! - `Reshape`/`Expand`/`ConstantOfShape` whose shape operand is known before
//!   running (constants and symbolic shape arithmetic, see
//!   [`symbolic`](super::infer::symbolic)) and whose output type is therefore
//!   exact lose that operand: the output type is the target from then on, and
//!   the Shape→Gather→Unsqueeze→Concat chain that computed it becomes dead.
//! - `If` on a constant condition is replaced by its taken branch.
//!
//! Types are re-derived after each sweep, since folding can make them more
//! precise and so enable further folds. Dead producers are left to `dce`.

use super::infer::{self, symbolic::sym_value};
use super::{detach, node_regions, PassError};
use crate::ir::{Dim, Graph, Node, NodeId, Op, TensorType, ValueDef, ValueId};
use d2nn_runtime::Tensor;
use std::sync::Arc;

/// Largest result (in elements, over all outputs of a node) folded into a constant.
pub const MAX_FOLDED_ELEMENTS: usize = 1 << 20;

/// Sweeps cap: every productive sweep removes or simplifies a node, so this
/// only guards against a rewrite that keeps re-enabling itself.
const MAX_SWEEPS: usize = 64;

/// Folds until nothing changes; returns how many nodes were folded or simplified.
pub fn run(graph: &mut Graph) -> Result<usize, PassError> {
    let mut total = 0;
    for _ in 0..MAX_SWEEPS {
        let changed = sweep(graph);
        if changed == 0 {
            break;
        }
        total += changed;
        infer::run(graph)?;
    }
    Ok(total)
}

/// One pass over the graph in execution order. Stops early after inlining an
/// `If`, since that changes which nodes are attached where.
fn sweep(graph: &mut Graph) -> usize {
    let mut changed = 0;
    let mut regions = node_regions(graph);
    for n in graph.walk_nodes() {
        let Some(&region) = regions.get(&n) else { continue };
        if let Op::If = graph.nodes[n].op {
            if let Some(taken) = constant_condition(graph, n) {
                inline_if(graph, n, taken);
                changed += 1;
                regions = node_regions(graph);
                continue;
            }
        }
        if drop_known_shape_operand(graph, n) {
            changed += 1;
        }
        if let Some(outputs) = fold_value(graph, n) {
            for (v, t) in graph.nodes[n].outputs.clone().into_iter().zip(outputs) {
                make_constant(graph, v, t);
            }
            detach(graph, region, n);
            regions.remove(&n);
            changed += 1;
        }
    }
    changed
}

fn constant_condition(graph: &Graph, n: NodeId) -> Option<bool> {
    let cond = graph.input_const(n, 0)?;
    match cond.as_bool() {
        Ok(a) if a.len() == 1 => a.iter().next().copied(),
        _ => None,
    }
}

/// Turns `v` into a constant holding `t`, keeping its name and handle, so
/// every reader (graph outputs included) is unchanged.
fn make_constant(graph: &mut Graph, v: ValueId, t: Tensor) {
    let value = &mut graph.values[v];
    value.ty = TensorType::fixed(t.dtype(), t.shape());
    value.def = ValueDef::Const(Arc::new(t));
}

/// The node's outputs as constants, when it can and should be folded.
fn fold_value(graph: &Graph, n: NodeId) -> Option<Vec<Tensor>> {
    let node = &graph.nodes[n];
    if !node.regions.is_empty() {
        return None;
    }
    let shapes: Vec<Vec<usize>> = node.outputs.iter().map(|&v| graph.values[v].ty.known_shape()).collect::<Option<_>>()?;
    let elements = shapes.iter().try_fold(0usize, |acc, s| acc.checked_add(s.iter().try_fold(1usize, |p, &d| p.checked_mul(d))?))?;
    if elements > MAX_FOLDED_ELEMENTS {
        return None;
    }
    if let Some(known) = known_shape_query(graph, node) {
        return Some(vec![known]);
    }
    if !node.present_inputs().all(|v| graph.const_value(v).is_some()) {
        return None;
    }
    // A kernel error is left for run time: the node may sit in a branch that
    // never runs, and the interpreter reports it with full context if it does.
    let results = crate::interp::eval_node_on_constants(graph, n).ok()?;
    let fits = results.iter().zip(&node.outputs).all(|(t, &v)| {
        let ty = &graph.values[v].ty;
        t.dtype() == ty.dtype && ty.known_shape().as_deref() == Some(t.shape())
    });
    fits.then_some(results)
}

/// `Shape` and `Size` answer from the static type when the dims they read are known.
fn known_shape_query(graph: &Graph, node: &Node) -> Option<Tensor> {
    let input = &graph.values[node.input(0)?].ty;
    match node.op {
        Op::Shape { start, end } => {
            let (s, e) = infer::symbolic::shape_range(input.rank(), start, end);
            let dims: Vec<i64> = input.shape[s..e].iter().map(|d| d.known().map(|d| d as i64)).collect::<Option<_>>()?;
            Some(Tensor::vec_i64(dims))
        }
        Op::Size => Some(Tensor::scalar_i64(i64::try_from(input.volume().known()?).ok()?)),
        _ => None,
    }
}

/// Drops the shape operand of `Reshape`/`Expand`/`ConstantOfShape` when it is
/// known before running and the output type is exact.
fn drop_known_shape_operand(graph: &mut Graph, n: NodeId) -> bool {
    let node = &graph.nodes[n];
    let slot = match node.op {
        Op::Reshape { .. } | Op::Expand => 1,
        Op::ConstantOfShape { .. } => 0,
        _ => return false,
    };
    let Some(shape) = node.input(slot) else { return false };
    let exact = node.outputs.iter().all(|&v| graph.values[v].ty.shape.iter().all(|d| *d != Dim::Unknown));
    if !exact || sym_value(graph, shape).is_none() {
        return false;
    }
    graph.nodes[n].inputs.truncate(slot);
    true
}

/// Replaces an `If` by the nodes of its taken branch, spliced in where it stood.
/// Readers of its outputs read the branch's yields instead; an output that is
/// also a graph output keeps its value (and name) through an `Identity`.
fn inline_if(graph: &mut Graph, n: NodeId, taken: bool) {
    let regions = node_regions(graph);
    let Some(&parent) = regions.get(&n) else { return };
    let branch = graph.nodes[n].regions[if taken { 0 } else { 1 }];
    let moved = std::mem::take(&mut graph.regions[branch].nodes);
    for &m in &moved {
        for r in graph.nodes[m].regions.clone() {
            graph.regions[r].parent = Some(parent);
        }
    }
    let Some(pos) = graph.regions[parent].nodes.iter().position(|&x| x == n) else { return };
    let after = pos + moved.len();
    graph.regions[parent].nodes.splice(pos..=pos, moved);

    let yields = graph.regions[branch].outputs.clone();
    let outputs = graph.nodes[n].outputs.clone();
    let name = graph.nodes[n].name.clone();
    let mut kept = Vec::new();
    for (k, (&out, &y)) in outputs.iter().zip(&yields).enumerate() {
        if graph.outputs().contains(&out) {
            let id = graph.nodes.alloc(Node {
                name: format!("{name}.out{k}"),
                op: Op::Identity,
                inputs: vec![Some(y)],
                outputs: vec![out],
                regions: Vec::new(),
            });
            graph.values[out].def = ValueDef::Node { node: id, index: 0 };
            kept.push(id);
        } else {
            graph.replace_uses(out, y);
        }
    }
    graph.regions[parent].nodes.splice(after..after, kept);
}
