//! Graph passes: small rewrites, each in its own file, each re-verifiable.
//!
//! The standard pipeline ([`optimize`]) is: shape/type inference, constant
//! folding (including the symbolic Shape→Gather→Unsqueeze→Concat→Reshape
//! arithmetic torch exports emit, and `If` on constant conditions),
//! BatchNorm folding into Conv/Gemm, and dead-code elimination.

pub mod bn_fold;
pub mod dce;
pub mod fold;
pub mod infer;
mod pipeline;

use crate::ir::verify::VerifyError;
use crate::ir::{Graph, NodeId, RegionId};
pub use pipeline::optimize;

/// Why a pass could not complete.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Infer(#[from] infer::InferError),
    /// A pass left the graph malformed: a compiler bug, caught in debug builds.
    #[error("the graph no longer verifies after pass `{pass}`: {error}")]
    Verify { pass: &'static str, error: VerifyError },
}

/// Every attached node with the region that holds it.
pub(crate) fn node_regions(graph: &Graph) -> std::collections::HashMap<NodeId, RegionId> {
    fn walk(graph: &Graph, region: RegionId, out: &mut std::collections::HashMap<NodeId, RegionId>) {
        for &n in &graph.regions[region].nodes {
            out.insert(n, region);
            for &r in &graph.nodes[n].regions {
                walk(graph, r, out);
            }
        }
    }
    let mut out = std::collections::HashMap::new();
    walk(graph, graph.root, &mut out);
    out
}

/// Removes `node` from `region`'s node list (its values stay in the arena).
pub(crate) fn detach(graph: &mut Graph, region: RegionId, node: NodeId) {
    graph.regions[region].nodes.retain(|&n| n != node);
}
