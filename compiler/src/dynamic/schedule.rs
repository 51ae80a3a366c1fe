//! The schedule: the root region's nodes grouped by guard into a tree of
//! blocks, each block contiguous in execution order, and each block's mode,
//! data flow (what it compacts, what it scatters) and FLOPs.
//!
//! Grouping is recursive. Within a block whose guard is `P`, nodes guarded
//! by exactly `P` stay direct; the others go to child blocks, one per
//! maximal guard (a guard no other guard at this level is implied by), each
//! taking the nodes whose guards imply it. The units (direct nodes and
//! child blocks) are then ordered topologically, ties broken by the
//! original order. When grouping would make a cycle (a child block both
//! feeding and fed by a direct node), that level falls back to one block per
//! node, which is always orderable.

use super::rows::{RowKind, Separability};
use super::{Analysis, Block, BlockId, BlockKind, Guard, Item, Mode, Scope};
use crate::ir::{Dim, Graph, NodeId, RegionId, Symbol, ValueDef, ValueId};
use std::collections::{BTreeSet, HashMap, HashSet};

pub(super) fn build(graph: &Graph, analysis: &mut Analysis, branch_guards: &HashMap<RegionId, Guard>, sep: &Separability) {
    let mut s = Scheduler { graph, analysis, position: HashMap::new() };
    let root_nodes = graph.regions[graph.root].nodes.clone();
    for (i, &n) in root_nodes.iter().enumerate() {
        s.position.insert(n, i);
    }
    let body = s.group(&root_nodes, &Guard::always(), None);
    s.analysis.body = body;
    // Branch blocks of every If, nested ones included.
    let body = s.analysis.body.clone();
    s.branch_blocks(&body, None, branch_guards);
    for b in 0..s.analysis.blocks.len() {
        if s.analysis.blocks[b].kind == BlockKind::Guarded {
            s.data_flow(b, sep);
        }
    }
    s.flops();
}

struct Scheduler<'a, 'g> {
    graph: &'g Graph,
    analysis: &'a mut Analysis,
    /// Original position of each root-region node.
    position: HashMap<NodeId, usize>,
}

/// A unit of one level of the schedule: a direct node, or a child block's nodes.
struct Unit {
    nodes: Vec<NodeId>,
    guard: Option<Guard>,
}

impl Scheduler<'_, '_> {
    fn guard_of(&self, n: NodeId) -> Guard {
        self.analysis.node_guard.get(&n).cloned().unwrap_or_else(Guard::always)
    }

    fn group(&mut self, nodes: &[NodeId], parent: &Guard, parent_block: Option<BlockId>) -> Vec<Item> {
        let mut guards: Vec<Guard> = Vec::new();
        for &n in nodes {
            let g = self.guard_of(n);
            if g != *parent && !guards.contains(&g) {
                guards.push(g);
            }
        }
        let maximal: Vec<Guard> =
            guards.iter().filter(|g| !guards.iter().any(|h| h != *g && g.implies(h) && !h.implies(g))).cloned().collect();
        let mut units: Vec<Unit> = Vec::new();
        let mut unit_of_guard: HashMap<usize, usize> = HashMap::new();
        for &n in nodes {
            let g = self.guard_of(n);
            if g == *parent {
                units.push(Unit { nodes: vec![n], guard: None });
                continue;
            }
            let m = maximal.iter().position(|m| g.implies(m)).unwrap_or(0);
            match unit_of_guard.get(&m) {
                Some(&u) => units[u].nodes.push(n),
                None => {
                    unit_of_guard.insert(m, units.len());
                    units.push(Unit { nodes: vec![n], guard: Some(maximal.get(m).cloned().unwrap_or_else(|| g.clone())) });
                }
            }
        }
        let order = match self.order(&units) {
            Some(order) => order,
            None => {
                // Fallback: one unit per node, each with its own guard.
                units = nodes.iter().map(|&n| {
                    let g = self.guard_of(n);
                    Unit { nodes: vec![n], guard: (g != *parent).then_some(g) }
                }).collect();
                self.order(&units).expect("the node graph is acyclic")
            }
        };
        let mut items = Vec::new();
        for u in order {
            let unit = &units[u];
            match &unit.guard {
                None => items.push(Item::Node(unit.nodes[0])),
                Some(g) => {
                    let id = self.analysis.blocks.len();
                    let local = g.within(parent, &self.analysis.atoms);
                    self.analysis.blocks.push(Block {
                        kind: BlockKind::Guarded,
                        parent: parent_block,
                        guard: g.clone(),
                        local,
                        mode: Mode::Batch,
                        items: Vec::new(),
                        gathers: Vec::new(),
                        outputs: Vec::new(),
                        flops_per_sample: 0,
                        flops_fixed: 0,
                    });
                    let inner = self.group(&unit.nodes, g, Some(id));
                    self.analysis.blocks[id].items = inner;
                    items.push(Item::Block(id));
                }
            }
        }
        items
    }

    /// A topological order of `units` (ties by original position), or
    /// `None` when their dependencies form a cycle.
    fn order(&self, units: &[Unit]) -> Option<Vec<usize>> {
        let mut unit_of: HashMap<NodeId, usize> = HashMap::new();
        for (u, unit) in units.iter().enumerate() {
            for &n in &unit.nodes {
                unit_of.insert(n, u);
            }
        }
        let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); units.len()];
        for (u, unit) in units.iter().enumerate() {
            let mut read: Vec<ValueId> = unit.nodes.iter().flat_map(|&n| reads(self.graph, n)).collect();
            // A block's guard is evaluated before it runs: its atoms come first.
            for &n in &unit.nodes {
                read.extend(self.guard_of(n).atoms().iter().map(|&a| self.analysis.atoms[a as usize].value()));
            }
            for v in read {
                if let ValueDef::Node { node: p, .. } = self.graph.values[v].def {
                    if let Some(&w) = unit_of.get(&p) {
                        if w != u {
                            deps[u].insert(w);
                        }
                    }
                }
            }
        }
        let first = |u: usize| units[u].nodes.iter().map(|n| self.position.get(n).copied().unwrap_or(usize::MAX)).min().unwrap_or(usize::MAX);
        let mut done = vec![false; units.len()];
        let mut order = Vec::with_capacity(units.len());
        while order.len() < units.len() {
            let next = (0..units.len()).filter(|&u| !done[u] && deps[u].iter().all(|&d| done[d])).min_by_key(|&u| first(u))?;
            done[next] = true;
            order.push(next);
        }
        Some(order)
    }

    /// Creates the branch blocks of every `If` among `items` (recursively).
    fn branch_blocks(&mut self, items: &[Item], parent: Option<BlockId>, branch_guards: &HashMap<RegionId, Guard>) {
        for item in items {
            match *item {
                Item::Block(b) => {
                    let inner = self.analysis.blocks[b].items.clone();
                    self.branch_blocks(&inner, Some(b), branch_guards);
                }
                Item::Node(n) => {
                    let node = &self.graph.nodes[n];
                    if !matches!(node.op, crate::ir::Op::If) {
                        continue;
                    }
                    let mut ids = [0; 2];
                    for (k, &r) in node.regions.iter().enumerate().take(2) {
                        let guard = branch_guards.get(&r).cloned().unwrap_or_else(Guard::always);
                        let parent_guard = parent.map_or_else(|| self.guard_of(n), |p| self.analysis.blocks[p].guard.clone());
                        let local = guard.within(&parent_guard, &self.analysis.atoms);
                        let items: Vec<Item> = self.graph.regions[r].nodes.iter().map(|&m| Item::Node(m)).collect();
                        let id = self.analysis.blocks.len();
                        self.analysis.blocks.push(Block {
                            kind: BlockKind::Branch { node: n, then: k == 0 },
                            parent,
                            guard,
                            local,
                            mode: Mode::Batch,
                            items: items.clone(),
                            gathers: Vec::new(),
                            outputs: Vec::new(),
                            flops_per_sample: 0,
                            flops_fixed: 0,
                        });
                        ids[k] = id;
                        self.branch_blocks(&items, Some(id), branch_guards);
                    }
                    self.analysis.branches.insert(n, ids);
                }
            }
        }
    }

    /// Root-region nodes of a guarded block's subtree.
    fn subtree_nodes(&self, b: BlockId) -> Vec<NodeId> {
        fn walk(a: &Analysis, items: &[Item], out: &mut Vec<NodeId>) {
            for item in items {
                match *item {
                    Item::Node(n) => out.push(n),
                    Item::Block(b) => walk(a, &a.blocks[b].items, out),
                }
            }
        }
        let mut out = Vec::new();
        walk(self.analysis, &self.analysis.blocks[b].items, &mut out);
        out
    }

    /// Guarded descendants of `b` (its whole subtree).
    fn descendants(&self, b: BlockId) -> Vec<BlockId> {
        let mut out = Vec::new();
        let mut stack = vec![b];
        while let Some(x) = stack.pop() {
            for item in &self.analysis.blocks[x].items {
                if let Item::Block(c) = *item {
                    out.push(c);
                    stack.push(c);
                }
            }
        }
        out
    }

    /// A guarded block's gathers, outputs and mode.
    fn data_flow(&mut self, b: BlockId, sep: &Separability) {
        let g = self.graph;
        let inside = self.subtree_nodes(b);
        let inside_set: HashSet<NodeId> = inside.iter().copied().collect();
        let mut defined: HashSet<ValueId> = HashSet::new();
        for &n in &inside {
            defines(g, n, &mut defined);
        }
        let mut read: BTreeSet<ValueId> = inside.iter().flat_map(|&n| reads(g, n)).collect();
        for c in self.descendants(b) {
            read.extend(self.analysis.blocks[c].local.atoms().iter().map(|&a| self.analysis.atoms[a as usize].value()));
        }
        let gathers: Vec<ValueId> =
            read.iter().copied().filter(|v| !defined.contains(v) && sep.kind(*v) == RowKind::Rows && !matches!(g.values[*v].def, ValueDef::Const(_))).collect();
        // Read after the block: by root nodes outside it, by guards evaluated
        // outside it, or as graph outputs.
        let mut after: HashSet<ValueId> = g.outputs().iter().copied().collect();
        for &n in &g.regions[g.root].nodes {
            if !inside_set.contains(&n) {
                after.extend(reads(g, n));
            }
        }
        let own_descendants: HashSet<BlockId> = self.descendants(b).into_iter().collect();
        for (c, block) in self.analysis.blocks.iter().enumerate() {
            if c != b && !own_descendants.contains(&c) {
                after.extend(block.local.atoms().iter().map(|&a| self.analysis.atoms[a as usize].value()));
            }
        }
        let mut outputs: Vec<ValueId> =
            inside.iter().flat_map(|&n| g.nodes[n].outputs.iter().copied()).filter(|v| after.contains(v)).collect();
        outputs.sort_unstable();
        let mode = self.mode(b, &inside, &gathers, sep);
        let block = &mut self.analysis.blocks[b];
        block.gathers = gathers;
        block.outputs = outputs;
        block.mode = mode;
    }

    fn mode(&self, b: BlockId, inside: &[NodeId], gathers: &[ValueId], sep: &Separability) -> Mode {
        let g = self.graph;
        let block = &self.analysis.blocks[b];
        let per_sample = block.local.atoms().iter().any(|&a| self.analysis.atoms[a as usize].scope == Scope::Sample);
        if !per_sample {
            return Mode::Batch;
        }
        let whole = |reason: String| Mode::WholeBatch { reason };
        let Some(batch) = self.analysis.batch else {
            return whole("the batch size is fixed in the model, so rows cannot be compacted".into());
        };
        let on_batch = |v: ValueId| g.values[v].ty.shape.first() == Some(&Dim::Sym { sym: batch, factor: 1 });
        for &a in &block.local.atoms() {
            let atom = &self.analysis.atoms[a as usize];
            if atom.scope == Scope::Sample && !on_batch(atom.value()) {
                return whole(format!("decision `{}` is not indexed by the batch `{}`", atom.name, symbol_name(g, batch)));
            }
        }
        for &n in inside {
            if let Some(reason) = sep.mixing.get(&n) {
                let node = &g.nodes[n];
                return whole(format!("node `{}` ({}) mixes samples: {reason}", node.name, node.op.name()));
            }
            for &o in &g.nodes[n].outputs {
                if sep.kind(o) == RowKind::Rows && !on_batch(o) {
                    return whole(format!("value `{}` does not have the batch as axis 0", g.values[o].name));
                }
            }
        }
        if let Some(&v) = gathers.iter().find(|&&v| !on_batch(v)) {
            return whole(format!("value `{}` does not have the batch as axis 0", g.values[v].name));
        }
        Mode::Routed
    }

    /// Per-block FLOPs (own nodes), the root's and the dense total.
    fn flops(&mut self) {
        let g = self.graph;
        let cost = |n: NodeId| -> (u64, u64) {
            let at = |b: usize| crate::flops::node_flops(g, n, &crate::flops::bind_all(b)).unwrap_or(0);
            let (one, two) = (at(1), at(2));
            let per = two.saturating_sub(one);
            (per, one.saturating_sub(per))
        };
        let sum = |items: &[Item]| items.iter().fold((0u64, 0u64), |acc, item| match *item {
            Item::Node(n) => {
                let (p, f) = cost(n);
                (acc.0 + p, acc.1 + f)
            }
            Item::Block(_) => acc,
        });
        for b in 0..self.analysis.blocks.len() {
            let (p, f) = sum(&self.analysis.blocks[b].items);
            self.analysis.blocks[b].flops_per_sample = p;
            self.analysis.blocks[b].flops_fixed = f;
        }
        let (p, f) = sum(&self.analysis.body);
        self.analysis.root_flops_per_sample = p;
        self.analysis.root_flops_fixed = f;
        let (mut dp, mut df) = (0, 0);
        for n in g.walk_nodes() {
            let (p, f) = cost(n);
            dp += p;
            df += f;
        }
        self.analysis.dense_flops_per_sample = dp;
        self.analysis.dense_flops_fixed = df;
    }
}

fn symbol_name(g: &Graph, s: Symbol) -> &str {
    g.symbols.get(s.0 as usize).map_or("?", String::as_str)
}

/// Values `n` reads, counting those its `If` branches read from outside.
pub(super) fn reads(g: &Graph, n: NodeId) -> Vec<ValueId> {
    let node = &g.nodes[n];
    let mut out: Vec<ValueId> = node.present_inputs().collect();
    if !node.regions.is_empty() {
        let mut inner_defined = HashSet::new();
        let mut inner_read = Vec::new();
        for &r in &node.regions {
            region_reads(g, r, &mut inner_defined, &mut inner_read);
        }
        out.extend(inner_read.into_iter().filter(|v| !inner_defined.contains(v)));
    }
    out
}

fn region_reads(g: &Graph, r: RegionId, defined: &mut HashSet<ValueId>, read: &mut Vec<ValueId>) {
    for &n in &g.regions[r].nodes {
        read.extend(g.nodes[n].present_inputs());
        defined.extend(g.nodes[n].outputs.iter().copied());
        for &sub in &g.nodes[n].regions {
            region_reads(g, sub, defined, read);
        }
    }
    read.extend(g.regions[r].outputs.iter().copied());
}

/// Values `n` defines, those inside its `If` branches included.
fn defines(g: &Graph, n: NodeId, out: &mut HashSet<ValueId>) {
    out.extend(g.nodes[n].outputs.iter().copied());
    for &r in &g.nodes[n].regions {
        for &m in &g.regions[r].nodes {
            defines(g, m, out);
        }
    }
}
