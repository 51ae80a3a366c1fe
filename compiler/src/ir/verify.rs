//! The verifier: every handle in range, every use dominated by its definition,
//! value definitions consistent with their nodes, `If` regions well formed, and
//! every stored type equal to what shape inference derives.

use super::graph::{Graph, NodeId, RegionId, RegionKind, ValueDef, ValueId};
use super::op::Op;
use super::types::TypeDisplay;
use std::collections::HashSet;

/// A structural or typing error, naming the node or value at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VerifyError {
    #[error("node `{node}`: {reason}")]
    Node { node: String, reason: String },
    #[error("value `{value}`: {reason}")]
    Value { value: String, reason: String },
    #[error("region {region}: {reason}")]
    Region { region: usize, reason: String },
}

pub fn verify(graph: &Graph) -> Result<(), VerifyError> {
    let mut v = Verifier { graph, seen_nodes: HashSet::new() };
    let mut scope: Vec<HashSet<ValueId>> = vec![graph.inputs.iter().copied().collect()];
    v.region(graph.root, &mut scope)?;
    Ok(())
}

struct Verifier<'a> {
    graph: &'a Graph,
    seen_nodes: HashSet<NodeId>,
}

impl Verifier<'_> {
    fn node_err(&self, n: NodeId, reason: impl Into<String>) -> VerifyError {
        VerifyError::Node { node: self.graph.nodes[n].name.clone(), reason: reason.into() }
    }

    fn check_use(&self, scope: &[HashSet<ValueId>], v: ValueId, user: &str) -> Result<(), VerifyError> {
        let g = self.graph;
        if !g.values.contains(v) {
            return Err(VerifyError::Value { value: format!("{v:?}"), reason: format!("dangling handle used by {user}") });
        }
        let visible = matches!(g.values[v].def, ValueDef::Const(_)) || scope.iter().any(|s| s.contains(&v));
        if visible {
            Ok(())
        } else {
            Err(VerifyError::Value {
                value: g.values[v].name.clone(),
                reason: format!("used by {user} before it is defined (or outside its scope)"),
            })
        }
    }

    fn region(&mut self, r: RegionId, scope: &mut Vec<HashSet<ValueId>>) -> Result<(), VerifyError> {
        let g = self.graph;
        if !g.regions.contains(r) {
            return Err(VerifyError::Region { region: r.index(), reason: "dangling region handle".into() });
        }
        scope.push(HashSet::new());
        for &n in &g.regions[r].nodes {
            if !g.nodes.contains(n) {
                return Err(VerifyError::Region { region: r.index(), reason: format!("dangling node handle {n:?}") });
            }
            if !self.seen_nodes.insert(n) {
                return Err(self.node_err(n, "appears in more than one region"));
            }
            let node = &g.nodes[n];
            for v in node.present_inputs() {
                self.check_use(scope, v, &format!("node `{}`", node.name))?;
            }
            self.check_regions(n, r, scope)?;
            for (index, &out) in node.outputs.iter().enumerate() {
                if !g.values.contains(out) {
                    return Err(self.node_err(n, format!("output {index} is a dangling handle")));
                }
                match g.values[out].def {
                    ValueDef::Node { node: dn, index: di } if dn == n && di == index => {}
                    _ => {
                        return Err(VerifyError::Value {
                            value: g.values[out].name.clone(),
                            reason: format!("listed as output {index} of `{}` but defined elsewhere", node.name),
                        })
                    }
                }
                scope.last_mut().expect("pushed above").insert(out);
            }
            self.check_types(n)?;
        }
        for &out in &g.regions[r].outputs {
            self.check_use(scope, out, &format!("the yield of region {}", r.index()))?;
        }
        scope.pop();
        Ok(())
    }

    fn check_regions(&mut self, n: NodeId, parent: RegionId, scope: &mut Vec<HashSet<ValueId>>) -> Result<(), VerifyError> {
        let g = self.graph;
        let node = &g.nodes[n];
        let expected = if matches!(node.op, Op::If) { 2 } else { 0 };
        if node.regions.len() != expected {
            return Err(self.node_err(n, format!("has {} regions, expected {expected}", node.regions.len())));
        }
        for (i, &r) in node.regions.iter().enumerate() {
            if !g.regions.contains(r) {
                return Err(self.node_err(n, "dangling region handle"));
            }
            let region = &g.regions[r];
            if region.parent != Some(parent) {
                return Err(self.node_err(n, format!("branch region {} has the wrong parent", r.index())));
            }
            if region.kind != (RegionKind::IfBranch { node: n, then_branch: i == 0 }) {
                return Err(self.node_err(n, format!("branch region {} has kind {:?}", r.index(), region.kind)));
            }
            if region.outputs.len() != node.outputs.len() {
                return Err(self.node_err(
                    n,
                    format!("branch {i} yields {} values for {} outputs", region.outputs.len(), node.outputs.len()),
                ));
            }
            self.region(r, scope)?;
            for (k, (&y, &o)) in region.outputs.iter().zip(&node.outputs).enumerate() {
                if g.values[y].ty.dtype != g.values[o].ty.dtype {
                    return Err(self.node_err(n, format!("branch {i} output {k} has dtype {} but the node's is {}", g.values[y].ty.dtype, g.values[o].ty.dtype)));
                }
            }
        }
        Ok(())
    }

    fn check_types(&self, n: NodeId) -> Result<(), VerifyError> {
        let g = self.graph;
        let inferred = crate::passes::infer::infer_node(g, n).map_err(|e| self.node_err(n, e.to_string()))?;
        let node = &g.nodes[n];
        if inferred.len() != node.outputs.len() {
            return Err(self.node_err(n, format!("inference gives {} outputs, node has {}", inferred.len(), node.outputs.len())));
        }
        for (ty, &out) in inferred.iter().zip(&node.outputs) {
            let stored = &g.values[out].ty;
            if ty != stored {
                return Err(VerifyError::Value {
                    value: g.values[out].name.clone(),
                    reason: format!(
                        "stored type {} but inference gives {}",
                        TypeDisplay { ty: stored, symbols: &g.symbols },
                        TypeDisplay { ty, symbols: &g.symbols }
                    ),
                });
            }
        }
        Ok(())
    }
}
