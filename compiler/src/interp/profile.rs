//! Per-node timings of interpreter runs, collected by [`super::run_with_profile`].
//!
//! Each node's time is *exclusive*: an `If` node is charged for its condition
//! and result copies, not for the nodes of the branch it runs (they are
//! charged themselves), so the per-node times add up to the time spent in
//! nodes. Times accumulate over every run given the same `Profile`.

use crate::ir::{Graph, NodeId};
use std::time::Duration;

/// Calls and accumulated exclusive time of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeTiming {
    pub calls: u64,
    pub time: Duration,
}

/// Calls and accumulated exclusive time of all nodes of one op type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpTiming {
    pub op: &'static str,
    /// Nodes of this op type that ran at least once.
    pub nodes: usize,
    pub calls: u64,
    pub time: Duration,
}

/// Per-node timings accumulated over one or more runs of a graph.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// Indexed by `NodeId::index()`; grown on demand.
    nodes: Vec<NodeTiming>,
    /// Completed runs.
    runs: u64,
    /// Sum of all exclusive times recorded so far.
    recorded: Duration,
}

impl Profile {
    pub fn new() -> Self {
        Self::default()
    }

    /// Completed runs recorded into this profile.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Time spent in nodes over all runs (the sum of every node's time).
    pub fn total(&self) -> Duration {
        self.recorded
    }

    pub fn node(&self, n: NodeId) -> NodeTiming {
        self.nodes.get(n.index()).copied().unwrap_or_default()
    }

    /// Every node that ran, slowest first (ties in graph order).
    pub fn nodes_by_time(&self) -> Vec<(NodeId, NodeTiming)> {
        let mut out: Vec<(NodeId, NodeTiming)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, t)| t.calls > 0)
            .map(|(i, &t)| (NodeId::new(i), t))
            .collect();
        out.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(&b.0)));
        out
    }

    /// Totals per op type, slowest first (ties by name).
    pub fn by_op(&self, graph: &Graph) -> Vec<OpTiming> {
        let mut per_op: Vec<OpTiming> = Vec::new();
        for (n, t) in self.nodes_by_time() {
            let op = graph.nodes[n].op.name();
            match per_op.iter_mut().find(|o| o.op == op) {
                Some(o) => {
                    o.nodes += 1;
                    o.calls += t.calls;
                    o.time += t.time;
                }
                None => per_op.push(OpTiming { op, nodes: 1, calls: t.calls, time: t.time }),
            }
        }
        per_op.sort_by(|a, b| b.time.cmp(&a.time).then(a.op.cmp(b.op)));
        per_op
    }

    /// The time recorded so far; pass it to [`Profile::record`] after the node ran.
    pub(crate) fn mark(&self) -> Duration {
        self.recorded
    }

    /// Charges `node` with `elapsed` minus whatever nested nodes recorded
    /// since `mark` was taken.
    pub(crate) fn record(&mut self, node: NodeId, elapsed: Duration, mark: Duration) {
        let nested = self.recorded.saturating_sub(mark);
        let exclusive = elapsed.saturating_sub(nested);
        let i = node.index();
        if self.nodes.len() <= i {
            self.nodes.resize(i + 1, NodeTiming::default());
        }
        self.nodes[i].calls += 1;
        self.nodes[i].time += exclusive;
        self.recorded += exclusive;
    }

    pub(crate) fn finish_run(&mut self) {
        self.runs += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::Profile;
    use crate::interp;
    use crate::ir::Op;
    use d2nn_runtime::npy::read_npy;
    use std::collections::HashMap;
    use std::path::Path;

    #[test]
    fn profile_charges_run_nodes_exclusively_and_leaves_outputs_alone() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cond_if");
        let model = crate::load_and_optimize(&dir.join("model.onnx")).unwrap();
        let g = &model.graph;
        let name = g.values[g.inputs[0]].name.clone();
        let feeds = HashMap::from([(name, read_npy(&dir.join("input_0.npy")).unwrap())]);
        let plain = interp::run(g, &feeds).unwrap();

        let mut p = Profile::new();
        for _ in 0..2 {
            assert_eq!(interp::run_with_profile(g, &feeds, &mut p).unwrap(), plain);
        }
        assert_eq!(p.runs(), 2);
        for &n in &g.regions[g.root].nodes {
            assert_eq!(p.node(n).calls, 2, "root node `{}` runs once per run", g.nodes[n].name);
        }
        let ifs: Vec<_> = g.walk_nodes().into_iter().filter(|&n| matches!(g.nodes[n].op, Op::If)).collect();
        assert!(!ifs.is_empty(), "cond_if keeps its If after optimisation");
        for n in ifs {
            let [then_nodes, else_nodes] = [0, 1].map(|b| &g.regions[g.nodes[n].regions[b]].nodes);
            let calls = |ns: &Vec<_>| ns.iter().map(|&m| p.node(m).calls).sum::<u64>();
            // Exactly one branch ran, the same one both times.
            let ran_all = |ns: &Vec<_>| calls(ns) == 2 * ns.len() as u64;
            assert!(
                ran_all(then_nodes) && calls(else_nodes) == 0 || ran_all(else_nodes) && calls(then_nodes) == 0,
                "one branch of `{}` runs in full, the other not at all",
                g.nodes[n].name
            );
        }
        // Exclusive times add up: per node and per op both sum to the total.
        let per_node: std::time::Duration = p.nodes_by_time().iter().map(|(_, t)| t.time).sum();
        let per_op: std::time::Duration = p.by_op(g).iter().map(|o| o.time).sum();
        assert_eq!(per_node, p.total());
        assert_eq!(per_op, p.total());
        let sorted = p.nodes_by_time();
        assert!(sorted.windows(2).all(|w| w[0].1.time >= w[1].1.time));
    }
}
