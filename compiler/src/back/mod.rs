//! Compiled back ends: code generated from a lowered `plan::Program`.
//! `rust` writes Rust source (crates, `dynamic_net!`); `clif` emits machine
//! code with Cranelift (JIT, object files for C).

pub mod clif;
pub mod rust;

use crate::dynamic::{Analysis, Mode};
use crate::plan::Program;

/// One line per guarded region (guard, mode, nodes) and per path
/// (decisions, regions, FLOPs), as both back ends document them.
pub fn describe_regions(p: &Program, a: &Analysis) -> (Vec<String>, Vec<String>) {
    let regions = a
        .blocks
        .iter()
        .enumerate()
        .map(|(k, b)| {
            let nodes: Vec<String> = a.block_nodes(k).iter().map(|&n| p.graph.nodes[n].name.clone()).collect();
            let mode = match &b.mode {
                Mode::Routed => "routed".to_string(),
                Mode::Batch => "whole batch, one decision".to_string(),
                Mode::WholeBatch { reason } => format!("whole batch ({reason})"),
            };
            format!("R{k}: where {} [{mode}]: {}", a.guard_text(&b.guard), summarize(&nodes, 6))
        })
        .collect();
    let paths = a
        .paths
        .as_ref()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let d: Vec<String> = p.decisions.iter().map(|(name, v)| format!("{name}={v}")).collect();
                    let regions: Vec<String> = p.blocks.iter().map(|b| format!("R{b}")).collect();
                    format!("{} -> regions [{}], {} FLOPs per sample", if d.is_empty() { "always".into() } else { d.join(", ") }, regions.join(", "), p.flops)
                })
                .collect()
        })
        .unwrap_or_default();
    (regions, paths)
}

/// The first `max` names, and how many more there are.
pub fn summarize(names: &[String], max: usize) -> String {
    if names.len() <= max {
        return names.join(", ");
    }
    format!("{}, … ({} more)", names[..max].join(", "), names.len() - max)
}
