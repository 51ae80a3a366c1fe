//! Guard analysis: the guard of every node, the gated `Mul`s, the knobs,
//! and the compile-time folding of decisions on fixed thresholds.

use d2nn_runtime::trace::TraceSpec;
use super::decision::{decision_scope, Decisions};
use super::guard::Guard;
use super::{Analysis, AtomKind, Knob, Scope};
use crate::ir::{BinaryOp, Dim, Graph, NodeId, Op, RegionId, ValueDef, ValueId};
use std::collections::{HashMap, HashSet};

/// A `--fix`/`--knob` that does not fit the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KnobError {
    #[error("`{name}` is not a knob of this model (knobs: {available})")]
    Unknown { name: String, available: String },
    #[error("knob `{name}`: {value} is not a finite number")]
    NotFinite { name: String, value: f32 },
}

/// Analyses `graph` (optimised). Constants named in `fixed` are thresholds
/// baked in by `--fix`: they are not knobs, and a decision they make
/// constant (a sigmoid never exceeds 1) folds, pruning its region.
pub fn analyze(graph: &Graph, fixed: &[String]) -> Analysis {
    let fixed: HashSet<ValueId> = graph.values.iter().filter(|(_, v)| fixed.contains(&v.name)).map(|(id, _)| id).collect();
    let mut decisions = Decisions::new(graph, fixed.clone());
    let mut prop = Propagation {
        graph,
        decisions: &mut decisions,
        value_guard: HashMap::new(),
        node_guard: HashMap::new(),
        gates: HashMap::new(),
        branch_guards: HashMap::new(),
    };
    for &v in graph.outputs() {
        prop.need(v, &Guard::always());
    }
    prop.region(graph.root, None);
    let Propagation { node_guard, gates, branch_guards, .. } = prop;
    let mut atoms = decisions.atoms;
    let knobs = find_knobs(graph, &mut atoms, &fixed);
    let separability = super::rows::analyze(graph);
    let batch = graph.inputs.iter().find_map(|&v| match graph.values[v].ty.shape.first() {
        Some(Dim::Sym { sym, factor: 1 }) => Some(*sym),
        _ => None,
    });
    let mut analysis = Analysis {
        atoms,
        knobs,
        node_guard,
        gates,
        blocks: Vec::new(),
        body: Vec::new(),
        branches: HashMap::new(),
        root_flops_per_sample: 0,
        root_flops_fixed: 0,
        dense_flops_per_sample: 0,
        dense_flops_fixed: 0,
        paths: None,
        batch,
        trace_spec: TraceSpec::default(),
    };
    super::schedule::build(graph, &mut analysis, &branch_guards, &separability);
    super::paths::count(graph, &mut analysis);
    analysis.trace_spec = super::paths::trace_spec(&analysis);
    analysis
}

/// Replaces the value of each named knob in `graph` with the given one
/// (`--fix NAME=VALUE`); returns the names, to pass to [`analyze`] as fixed.
pub fn fix_knobs(graph: &mut Graph, fixes: &[(String, f32)]) -> Result<Vec<String>, KnobError> {
    let candidates = analyze(graph, &[]).knobs;
    let mut names = Vec::new();
    for (name, value) in fixes {
        if !value.is_finite() {
            return Err(KnobError::NotFinite { name: name.clone(), value: *value });
        }
        let knob = candidates.iter().find(|k| &k.name == name).ok_or_else(|| KnobError::Unknown {
            name: name.clone(),
            available: if candidates.is_empty() { "none".into() } else { candidates.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ") },
        })?;
        let old = graph.const_value(knob.value).expect("a knob is a constant");
        let replaced = d2nn_runtime::Tensor::from_f32(old.shape(), vec![*value; old.len()]).expect("same element count");
        graph.values[knob.value].def = ValueDef::Const(std::sync::Arc::new(replaced));
        names.push(name.clone());
    }
    Ok(names)
}

struct Propagation<'a, 'g> {
    graph: &'g Graph,
    decisions: &'a mut Decisions<'g>,
    value_guard: HashMap<ValueId, Guard>,
    node_guard: HashMap<NodeId, Guard>,
    gates: HashMap<NodeId, usize>,
    /// The guard of each `If` branch region.
    branch_guards: HashMap<RegionId, Guard>,
}

impl Propagation<'_, '_> {
    fn table(&self) -> &Vec<super::Atom> {
        &self.decisions.atoms
    }

    /// Records that `v` is needed where `guard` holds.
    fn need(&mut self, v: ValueId, guard: &Guard) {
        let merged = match self.value_guard.get(&v) {
            Some(g) => g.or(guard, self.table()).widened(),
            None => guard.clone(),
        };
        self.value_guard.insert(v, merged);
    }

    /// Propagates guards through `region` backwards; `yields` is the guard
    /// of a branch region's results.
    fn region(&mut self, region: RegionId, yields: Option<&Guard>) {
        let g = self.graph;
        if let Some(y) = yields {
            for &v in &g.regions[region].outputs {
                self.need(v, y);
            }
        }
        for &n in g.regions[region].nodes.iter().rev() {
            let node = &g.nodes[n];
            let mut guard = Guard::never();
            for o in &node.outputs {
                if let Some(og) = self.value_guard.get(o) {
                    guard = guard.or(og, self.table());
                }
            }
            let guard = guard.widened();
            self.node_guard.insert(n, guard.clone());
            match &node.op {
                Op::Binary(BinaryOp::Mul) if self.gate_operand(n).is_some() => {
                    let gi = self.gate_operand(n).expect("checked");
                    let f = self.decisions.formula(node.inputs[gi].expect("a gate operand")).expect("a decision");
                    let data = node.inputs[1 - gi].expect("Mul has two operands");
                    let reads = guard.and(&f, self.table()).widened();
                    self.need(data, &reads);
                    self.need(node.inputs[gi].expect("gate"), &guard);
                    self.gates.insert(n, gi);
                }
                Op::Where if self.selects_rows(n, 0) => {
                    let (c, a, b) = (node.inputs[0].expect("c"), node.inputs[1].expect("a"), node.inputs[2].expect("b"));
                    let f = self.decisions.formula(c).expect("checked");
                    let not_f = f.not(self.table());
                    let (ga, gb) = (guard.and(&f, self.table()).widened(), guard.and(&not_f, self.table()).widened());
                    self.need(c, &guard);
                    self.need(a, &ga);
                    self.need(b, &gb);
                }
                Op::If => {
                    let cond = node.inputs[0].expect("an If has a condition");
                    self.need(cond, &guard);
                    let f = self.decisions.formula(cond).unwrap_or_else(Guard::always);
                    let then_guard = guard.and(&f, self.table()).widened();
                    let else_guard = guard.and(&f.not(self.table()), self.table()).widened();
                    self.branch_guards.insert(node.regions[0], then_guard.clone());
                    self.branch_guards.insert(node.regions[1], else_guard.clone());
                    self.region(node.regions[0], Some(&then_guard));
                    self.region(node.regions[1], Some(&else_guard));
                }
                _ => {
                    for v in node.present_inputs() {
                        self.need(v, &guard);
                    }
                }
            }
        }
    }

    /// The operand of a `Mul` that is a decision gating the other one: a
    /// decision of per-sample shape whose samples line up with the
    /// output's, or of whole-batch shape; the other operand not a decision.
    fn gate_operand(&mut self, n: NodeId) -> Option<usize> {
        let node = &self.graph.nodes[n];
        let (a, b) = (node.input(0)?, node.input(1)?);
        let (fa, fb) = (self.decisions.formula(a).is_some(), self.decisions.formula(b).is_some());
        let gi = match (fa, fb) {
            (false, true) => 1,
            (true, false) => 0,
            _ => return None,
        };
        self.selects_rows(n, gi).then_some(gi)
    }

    /// Whether operand `i` of `n` is a decision whose samples line up with
    /// the output's axis 0 (or which is one decision for the batch).
    fn selects_rows(&mut self, n: NodeId, i: usize) -> bool {
        let g = self.graph;
        let node = &g.nodes[n];
        let Some(v) = node.input(i) else { return false };
        if self.decisions.formula(v).is_none() {
            return false;
        }
        let out = &g.values[node.outputs[0]].ty;
        match decision_scope(g, v) {
            Some(Scope::Batch) => true,
            Some(Scope::Sample) => g.values[v].ty.rank() == out.rank() && g.values[v].ty.shape.first() == out.shape.first(),
            None => false,
        }
    }
}

/// Thresholds: one-element float constants that a decision's comparison
/// reads directly, unless fixed. Each becomes a knob named after its value.
fn find_knobs(graph: &Graph, atoms: &mut [super::Atom], fixed: &HashSet<ValueId>) -> Vec<Knob> {
    let mut knobs: Vec<Knob> = Vec::new();
    for (a, atom) in atoms.iter_mut().enumerate() {
        let AtomKind::Test { value } = atom.kind else { continue };
        let ValueDef::Node { node: n, .. } = graph.values[value].def else { continue };
        if !matches!(graph.nodes[n].op, Op::Binary(op) if op.is_comparison() && !matches!(op, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor)) {
            continue;
        }
        for v in graph.nodes[n].present_inputs() {
            let Some(t) = graph.const_value(v) else { continue };
            if t.len() != 1 || t.dtype() != d2nn_runtime::DType::F32 || fixed.contains(&v) {
                continue;
            }
            let k = match knobs.iter().position(|k| k.value == v) {
                Some(k) => k,
                None => {
                    knobs.push(Knob { name: graph.values[v].name.clone(), value: v, default: t.to_f32_vec()[0], atoms: Vec::new() });
                    knobs.len() - 1
                }
            };
            knobs[k].atoms.push(a as super::AtomId);
            atom.knobs.push(k);
        }
    }
    knobs
}

/// Compile-time truth of `Greater/Less/GreaterOrEqual/LessOrEqual(x, t)`
/// with `t` a fixed constant and `x` of known range: `Some(false)` when no
/// value of `x` (NaN included) satisfies it. `Some(true)` is never given,
/// since NaN makes every comparison false.
pub(super) fn folds_false(graph: &Graph, n: NodeId, fixed: &HashSet<ValueId>) -> bool {
    let node = &graph.nodes[n];
    let Op::Binary(op) = node.op else { return false };
    let (Some(a), Some(b)) = (node.input(0), node.input(1)) else { return false };
    let constant = |v: ValueId| graph.const_value(v).filter(|t| t.len() == 1 && fixed.contains(&v)).map(|t| t.to_f32_vec()[0]);
    // Normalise to `x OP t`.
    let (x, t, op) = match (constant(a), constant(b)) {
        (None, Some(t)) => (a, t, op),
        (Some(t), None) => (
            b,
            t,
            match op {
                BinaryOp::Greater => BinaryOp::Less,
                BinaryOp::Less => BinaryOp::Greater,
                BinaryOp::GreaterOrEqual => BinaryOp::LessOrEqual,
                BinaryOp::LessOrEqual => BinaryOp::GreaterOrEqual,
                other => other,
            },
        ),
        _ => return false,
    };
    let Some((lo, hi)) = range(graph, x) else { return false };
    match op {
        BinaryOp::Greater => t >= hi,
        BinaryOp::GreaterOrEqual => t > hi,
        BinaryOp::Less => t <= lo,
        BinaryOp::LessOrEqual => t < lo,
        _ => false,
    }
}

/// Bounds every non-NaN element of `v` provably lies in.
fn range(graph: &Graph, v: ValueId) -> Option<(f32, f32)> {
    let ValueDef::Node { node: n, .. } = graph.values[v].def else { return None };
    let node = &graph.nodes[n];
    match &node.op {
        Op::Unary(crate::ir::UnaryOp::Sigmoid) | Op::Softmax { log: false, .. } => Some((0.0, 1.0)),
        Op::Reduce { op: crate::ir::ReduceOp::Max | crate::ir::ReduceOp::Min | crate::ir::ReduceOp::Mean, .. }
        | Op::Identity
        | Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Slice
        | Op::Gather { .. }
        | Op::Expand
        | Op::GlobalPool { kind: crate::ir::PoolKind::Max { .. } } => range(graph, node.input(0)?),
        Op::TopK { .. } if node.outputs[0] == v => range(graph, node.input(0)?),
        _ => None,
    }
}
