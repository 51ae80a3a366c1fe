//! Dead-code elimination: detaches nodes none of whose outputs is read, in
//! every region, until nothing more dies. Graph outputs and branch yields
//! count as reads, so they are never removed.

use super::{detach, node_regions};
use crate::ir::Graph;

/// Removes dead nodes; returns how many were removed.
pub fn run(graph: &mut Graph) -> usize {
    let mut removed = 0;
    loop {
        // Counts are recomputed each round: removing an `If` also drops the
        // reads made inside its branches, which decrementing would miss.
        let mut uses = graph.use_counts();
        let regions = node_regions(graph);
        let mut round = 0;
        // Reverse execution order visits consumers before producers, so a dead
        // chain goes in one round.
        for n in graph.walk_nodes().into_iter().rev() {
            let node = &graph.nodes[n];
            if node.outputs.iter().any(|v| uses.get(v).copied().unwrap_or(0) > 0) {
                continue;
            }
            for v in node.present_inputs() {
                if let Some(c) = uses.get_mut(&v) {
                    *c = c.saturating_sub(1);
                }
            }
            for &r in &node.regions {
                for v in &graph.regions[r].outputs {
                    if let Some(c) = uses.get_mut(v) {
                        *c = c.saturating_sub(1);
                    }
                }
            }
            if let Some(&region) = regions.get(&n) {
                detach(graph, region, n);
                round += 1;
            }
        }
        if round == 0 {
            return removed;
        }
        removed += round;
    }
}
