//! Constant folding, concrete and symbolic.
//!
//! - A node whose operands are all constants, and whose outputs are small and
//!   of known shape, is evaluated with the interpreter's kernels; its outputs
//!   become constants (keeping their names) and the node is detached.
//! - Integer results that symbolic shape arithmetic knows exactly become
//!   constants: `Shape`/`Size` of values whose dims are known, and anything
//!   computed from them, even when other dims of the input are symbolic.
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
use d2nn_runtime::{DType, Tensor};
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
    if let Some(known) = known_integer_value(graph, node) {
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

/// An integer or bool result that symbolic evaluation knows exactly: `Shape`
/// and `Size` of values whose dims are known, and any arithmetic on them
/// (`Gather(Shape(x), 1)` of a `[N, 24, 8, 8]` tensor is 24 for every `N`).
fn known_integer_value(graph: &Graph, node: &Node) -> Option<Tensor> {
    let [out] = node.outputs[..] else { return None };
    let ty = &graph.values[out].ty;
    if !(ty.dtype.is_int() || ty.dtype == DType::Bool) {
        return None;
    }
    let shape = ty.known_shape()?;
    let ints: Vec<i64> = sym_value(graph, out)?.into_iter().map(|s| s.int()).collect::<Option<_>>()?;
    match ty.dtype {
        DType::I64 => Tensor::from_i64(&shape, ints).ok(),
        DType::I32 => Tensor::from_i32(&shape, ints.into_iter().map(i32::try_from).collect::<Result<_, _>>().ok()?).ok(),
        DType::Bool => Tensor::from_bool(&shape, ints.into_iter().map(|v| v != 0).collect()).ok(),
        DType::F32 => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{RegionKind, UnaryOp};

    fn add(g: &mut Graph, region: crate::ir::RegionId, name: &str, op: Op, inputs: Vec<ValueId>) -> ValueId {
        let n = g.add_node(region, name, op, inputs.into_iter().map(Some).collect(), vec![(name.into(), TensorType::scalar(DType::F32))]);
        let types = infer::infer_node(g, n).expect("infers");
        let out = g.nodes[n].outputs[0];
        g.values[out].ty = types[0].clone();
        out
    }

    /// An `If` in `region` whose branches apply `then_op` / `else_op` to `x`.
    fn if_node(g: &mut Graph, region: crate::ir::RegionId, name: &str, cond: ValueId, x: ValueId, ops: [Op; 2]) -> (NodeId, ValueId) {
        let owner = g.nodes.alloc(Node { name: String::new(), op: Op::If, inputs: vec![], outputs: vec![], regions: vec![] });
        let mut branches = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            let r = g.add_region(RegionKind::IfBranch { node: owner, then_branch: i == 0 }, region);
            let y = add(g, r, &format!("{name}.b{i}"), op, vec![x]);
            g.regions[r].outputs = vec![y];
            branches.push(r);
        }
        let n = g.add_node(region, name, Op::If, vec![Some(cond)], vec![(name.into(), TensorType::scalar(DType::F32))]);
        g.nodes[n].regions = branches.clone();
        for (i, r) in branches.into_iter().enumerate() {
            g.regions[r].kind = RegionKind::IfBranch { node: n, then_branch: i == 0 };
        }
        let out = g.nodes[n].outputs[0];
        g.values[out].ty = infer::infer_node(g, n).expect("infers")[0].clone();
        (n, out)
    }

    #[test]
    fn inlining_moves_nested_regions_to_the_new_parent() {
        let mut g = Graph::new("nested");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[2]));
        let flag = g.add_input("flag", TensorType::scalar(DType::Bool));
        let yes = g.add_const("yes", Tensor::from_bool(&[], vec![true]).expect("scalar"));
        let root = g.root;
        // Build the outer If by hand: its then branch holds an inner If on `flag`.
        let owner = g.nodes.alloc(Node { name: String::new(), op: Op::If, inputs: vec![], outputs: vec![], regions: vec![] });
        let then_r = g.add_region(RegionKind::IfBranch { node: owner, then_branch: true }, root);
        let else_r = g.add_region(RegionKind::IfBranch { node: owner, then_branch: false }, root);
        let (inner, inner_out) = if_node(&mut g, then_r, "inner", flag, x, [Op::Unary(UnaryOp::Relu), Op::Unary(UnaryOp::Abs)]);
        g.regions[then_r].outputs = vec![inner_out];
        let other = add(&mut g, else_r, "else_neg", Op::Unary(UnaryOp::Neg), vec![x]);
        g.regions[else_r].outputs = vec![other];
        let outer = g.add_node(root, "outer", Op::If, vec![Some(yes)], vec![("outer".into(), TensorType::scalar(DType::F32))]);
        g.nodes[outer].regions = vec![then_r, else_r];
        g.regions[then_r].kind = RegionKind::IfBranch { node: outer, then_branch: true };
        g.regions[else_r].kind = RegionKind::IfBranch { node: outer, then_branch: false };
        let outer_out = g.nodes[outer].outputs[0];
        g.values[outer_out].ty = infer::infer_node(&g, outer).expect("infers")[0].clone();
        let y = add(&mut g, root, "y", Op::Unary(UnaryOp::Exp), vec![outer_out]);
        g.regions[root].outputs = vec![y];
        crate::ir::verify::verify(&g).expect("test graph verifies");

        assert_eq!(run(&mut g).expect("folds"), 1);
        crate::ir::verify::verify(&g).expect("verifies after inlining");
        assert_eq!(g.regions[root].nodes, vec![inner, g.regions[root].nodes[1]]);
        for &r in &g.nodes[inner].regions {
            assert_eq!(g.regions[r].parent, Some(root));
        }
        assert_eq!(g.nodes[g.regions[root].nodes[1]].input(0), Some(inner_out));
    }

    #[test]
    fn a_kernel_error_on_constants_is_left_for_run_time() {
        let mut g = Graph::new("undefined");
        let empty = g.add_const("empty", Tensor::from_i64(&[0], vec![]).expect("empty"));
        let root = g.root;
        let op = Op::Reduce { op: crate::ir::ReduceOp::Mean, keepdims: false, noop_with_empty_axes: false };
        let n = g.add_node(root, "mean", op, vec![Some(empty)], vec![("mean".into(), TensorType::scalar(DType::I64))]);
        g.regions[root].outputs = g.nodes[n].outputs.clone();
        assert_eq!(run(&mut g).expect("runs"), 0);
        assert_eq!(g.regions[root].nodes, vec![n]);
    }
}
