//! Recognising decisions: values the analysis can prove hold only 0/1 (or
//! false/true) per sample, written as guard formulas over atoms.
//!
//! Atoms are the decisions controllers make: a comparison (`Greater(sigmoid(q),
//! t)`, any bool value of per-sample shape) or one choice of an `ArgMax`
//! (`Equal(ArgMax(q), k)`, column `k` of `OneHot(ArgMax(q))`). Everything
//! built from them by `Not`/`And`/`Or`/`Xor`, `Cast`, reshapes, `1 - d` and
//! products of decisions is a formula over those atoms.

use super::guard::{AtomId, AtomTable, Guard, MAX_TERMS};
use super::{Atom, AtomKind, Scope};
use crate::ir::{BinaryOp, Dim, Graph, Op, UnaryOp, ValueDef, ValueId};
use std::collections::{HashMap, HashSet};

/// The atoms found so far and the formula of every value examined.
pub(super) struct Decisions<'g> {
    graph: &'g Graph,
    pub atoms: Vec<Atom>,
    formulas: HashMap<ValueId, Option<Guard>>,
    /// `OneHot(ArgMax)` matrices (through casts): value → (index value, depth).
    one_hot: HashMap<ValueId, Option<(ValueId, usize)>>,
    /// Thresholds baked in by `--fix`: comparisons against them may fold.
    fixed: HashSet<ValueId>,
}

impl AtomTable for Vec<Atom> {
    fn exclusive(&self, a: AtomId, b: AtomId) -> bool {
        match (&self[a as usize].kind, &self[b as usize].kind) {
            (AtomKind::Choice { index: i, choice: x, .. }, AtomKind::Choice { index: j, choice: y, .. }) => i == j && x != y,
            _ => false,
        }
    }

    fn siblings(&self, a: AtomId) -> Option<Vec<AtomId>> {
        let AtomKind::Choice { index, choices, .. } = self[a as usize].kind else { return None };
        let group: Vec<AtomId> = (0..self.len() as AtomId)
            .filter(|&b| b != a && matches!(self[b as usize].kind, AtomKind::Choice { index: j, .. } if j == index))
            .collect();
        (group.len() + 1 == choices).then_some(group)
    }
}

/// How a value's shape relates to samples: one decision per sample
/// (`[N, 1, …]`), one for the whole batch (every dim 1), or neither.
pub(super) fn decision_scope(graph: &Graph, v: ValueId) -> Option<Scope> {
    let shape = &graph.values[v].ty.shape;
    if shape.iter().all(|d| *d == Dim::Known(1)) {
        return Some(Scope::Batch);
    }
    let (first, rest) = shape.split_first()?;
    if !rest.iter().all(|d| *d == Dim::Known(1)) {
        return None;
    }
    match first {
        Dim::Sym { factor: 1, .. } | Dim::Known(_) => Some(Scope::Sample),
        _ => None,
    }
}

impl<'g> Decisions<'g> {
    pub fn new(graph: &'g Graph, fixed: HashSet<ValueId>) -> Self {
        Decisions { graph, atoms: Vec::new(), formulas: HashMap::new(), one_hot: HashMap::new(), fixed }
    }

    fn table(&self) -> &Vec<Atom> {
        &self.atoms
    }

    fn atom(&mut self, kind: AtomKind, scope: Scope) -> Guard {
        let id = match self.atoms.iter().position(|a| a.kind == kind) {
            Some(i) => i,
            None => {
                let name = self.atom_name(&kind);
                self.atoms.push(Atom { kind, scope, name, knobs: Vec::new() });
                self.atoms.len() - 1
            }
        };
        Guard::literal(id as AtomId, true)
    }

    fn atom_name(&self, kind: &AtomKind) -> String {
        let g = self.graph;
        let producer = |v: ValueId| match g.values[v].def {
            ValueDef::Node { node: n, .. } => g.nodes[n].name.clone(),
            _ => g.values[v].name.clone(),
        };
        match kind {
            AtomKind::Test { value } => producer(*value),
            AtomKind::Choice { index, choice, .. } => format!("{}=={choice}", producer(*index)),
        }
    }

    /// The formula of `v` if it is a decision of per-sample or whole-batch
    /// shape, `None` otherwise.
    pub fn formula(&mut self, v: ValueId) -> Option<Guard> {
        if let Some(f) = self.formulas.get(&v) {
            return f.clone();
        }
        // Cycles cannot occur (the graph is a DAG); mark before recursing anyway.
        self.formulas.insert(v, None);
        let f = decision_scope(self.graph, v).and_then(|scope| self.derive(v, scope)).filter(|f| f.terms().len() <= MAX_TERMS);
        self.formulas.insert(v, f.clone());
        f
    }

    fn derive(&mut self, v: ValueId, scope: Scope) -> Option<Guard> {
        let g = self.graph;
        let value = &g.values[v];
        let bool_typed = value.ty.dtype == d2nn_runtime::DType::Bool;
        if let ValueDef::Const(t) = &value.def {
            let all = t.to_f32_vec();
            return match () {
                _ if !all.is_empty() && all.iter().all(|&x| x == 1.0) => Some(Guard::always()),
                _ if !all.is_empty() && all.iter().all(|&x| x == 0.0) => Some(Guard::never()),
                _ => None,
            };
        }
        let ValueDef::Node { node: n, .. } = value.def else {
            return bool_typed.then(|| self.atom(AtomKind::Test { value: v }, scope));
        };
        let node = &g.nodes[n];
        let input = |i: usize| node.input(i);
        let derived = match &node.op {
            Op::Unary(UnaryOp::Not) => self.formula(input(0)?).map(|f| f.not(self.table())),
            Op::Cast { .. } | Op::Identity | Op::Dropout | Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze | Op::Expand => {
                match self.formula(input(0)?) {
                    Some(f) => Some(f),
                    None => self.choice_column(input(0)?, None, scope),
                }
            }
            Op::Binary(BinaryOp::And) | Op::Binary(BinaryOp::Mul) => {
                let (a, b) = (self.formula(input(0)?), self.formula(input(1)?));
                a.zip(b).map(|(a, b)| a.and(&b, self.table()))
            }
            Op::Binary(BinaryOp::Or) => {
                let (a, b) = (self.formula(input(0)?), self.formula(input(1)?));
                a.zip(b).map(|(a, b)| a.or(&b, self.table()))
            }
            Op::Binary(BinaryOp::Xor) => {
                let (a, b) = (self.formula(input(0)?), self.formula(input(1)?));
                a.zip(b).map(|(a, b)| {
                    let t = self.table();
                    a.and(&b.not(t), t).or(&a.not(t).and(&b, t), t)
                })
            }
            // `1 - d` is the complement of a decision.
            Op::Binary(BinaryOp::Sub) if g.input_const(n, 0).is_some_and(|t| t.len() == 1 && t.to_f32_vec()[0] == 1.0) => {
                self.formula(input(1)?).map(|f| f.not(self.table()))
            }
            Op::Binary(BinaryOp::Greater | BinaryOp::Less | BinaryOp::GreaterOrEqual | BinaryOp::LessOrEqual)
                if super::analyze::folds_false(g, n, &self.fixed) =>
            {
                Some(Guard::never())
            }
            Op::Binary(BinaryOp::Equal) => self.choice_equal(input(0)?, input(1)?, scope).or_else(|| self.choice_equal(input(1)?, input(0)?, scope)),
            Op::Slice | Op::Gather { .. } => self.choice_column(input(0)?, Some(n), scope),
            _ => None,
        };
        derived.or_else(|| bool_typed.then(|| self.atom(AtomKind::Test { value: v }, scope)))
    }

    /// `Equal(index, k)` where `index` is an `ArgMax` (through reshapes and
    /// casts) and `k` a one-element constant: the choice `k`.
    fn choice_equal(&mut self, index: ValueId, k: ValueId, scope: Scope) -> Option<Guard> {
        let k = self.graph.const_value(k).filter(|t| t.len() == 1)?.to_f32_vec()[0];
        let (index, choices) = self.arg_max(index)?;
        (k >= 0.0 && k.fract() == 0.0 && (k as usize) < choices)
            .then(|| self.atom(AtomKind::Choice { index, choice: k as usize, choices }, scope))
    }

    /// The `ArgMax` output `v` reads (through reshapes and casts), with the
    /// number of choices.
    fn arg_max(&self, mut v: ValueId) -> Option<(ValueId, usize)> {
        let g = self.graph;
        loop {
            let ValueDef::Node { node: n, .. } = g.values[v].def else { return None };
            let node = &g.nodes[n];
            match &node.op {
                Op::ArgReduce { max: true, axis, .. } => {
                    let axis = *axis;
                    let x = &g.values[node.input(0)?].ty.shape;
                    let axis = crate::interp::util::axis(axis, x.len()).ok()?;
                    // An argmax along the samples is not a per-sample choice.
                    if axis == 0 {
                        return None;
                    }
                    return x[axis].known().map(|k| (v, k));
                }
                Op::Cast { .. } | Op::Identity | Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze => v = node.input(0)?,
                _ => return None,
            }
        }
    }

    /// Whether `v` is `OneHot(ArgMax(q))` with values `[0, 1]` (through
    /// casts): the index value and the depth.
    fn one_hot_matrix(&mut self, v: ValueId) -> Option<(ValueId, usize)> {
        if let Some(r) = self.one_hot.get(&v) {
            return *r;
        }
        let g = self.graph;
        let r = (|| {
            let ValueDef::Node { node: n, .. } = g.values[v].def else { return None };
            let node = &g.nodes[n];
            match &node.op {
                Op::Cast { .. } | Op::Identity => self.one_hot_matrix(node.input(0)?),
                Op::OneHot { axis } => {
                    let out_rank = g.values[v].ty.rank();
                    let axis = crate::interp::util::axis(*axis, out_rank).ok()?;
                    let values = g.input_const(n, 2)?.to_f32_vec();
                    let depth = g.input_const(n, 1)?.to_f32_vec();
                    if axis != out_rank - 1 || out_rank != 2 || values != [0.0, 1.0] || depth.len() != 1 || depth[0] < 1.0 {
                        return None;
                    }
                    let (index, choices) = self.arg_max(node.input(0)?)?;
                    (choices == depth[0] as usize).then_some((index, choices))
                }
                _ => None,
            }
        })();
        self.one_hot.insert(v, r);
        r
    }

    /// Column `k` of a one-hot matrix, selected by the `Slice`/`Gather`
    /// node `picker` (or `v` itself when it already has one column).
    fn choice_column(&mut self, v: ValueId, picker: Option<crate::ir::NodeId>, scope: Scope) -> Option<Guard> {
        let g = self.graph;
        let Some(picker) = picker else {
            // A reshape of a [N, 1] column already picked is handled by `formula`.
            return None;
        };
        let (index, choices) = self.one_hot_matrix(v)?;
        let node = &g.nodes[picker];
        let column = match &node.op {
            Op::Slice => {
                let starts = g.input_const(picker, 1)?.to_i64_vec();
                let ends = g.input_const(picker, 2)?.to_i64_vec();
                let axes = match node.input(3) {
                    Some(_) => g.input_const(picker, 3)?.to_i64_vec(),
                    None => (0..starts.len() as i64).collect(),
                };
                if node.input(4).is_some() && g.input_const(picker, 4)?.to_i64_vec().iter().any(|&s| s != 1) {
                    return None;
                }
                let pos = axes.iter().position(|&a| a == 1 || a == -1)?;
                let n = choices as i64;
                let s = if starts[pos] < 0 { starts[pos] + n } else { starts[pos] };
                let e = if ends[pos] < 0 { ends[pos] + n } else { ends[pos].min(n) };
                (e - s == 1 && s >= 0).then_some(s as usize)?
            }
            Op::Gather { axis } if (*axis == 1 || *axis == -1) => {
                let k = g.input_const(picker, 1)?.to_f32_vec();
                match k[..] {
                    [k] if k >= 0.0 && (k as usize) < choices => k as usize,
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(self.atom(AtomKind::Choice { index, choice: column, choices }, scope))
    }
}
