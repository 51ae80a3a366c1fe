//! The text `d2nnc inspect` prints about a model's dynamic structure:
//! controllers, knobs, guarded regions (the schedule as a tree), paths and
//! dense FLOPs. Stable, so goldens can pin it.

use super::{Analysis, AtomKind, BlockKind, Item, Mode};
use crate::ir::{Graph, ValueDef};
use std::fmt::Write;

use crate::flops::thousands as grouped;

/// The dynamic-structure report of `analysis` over `graph`.
pub fn render(graph: &Graph, analysis: &Analysis) -> String {
    let mut out = String::new();
    let w = &mut out;
    if !analysis.is_dynamic() {
        let _ = writeln!(w, "dynamic structure: none (no decision gates any node; every run is dense)");
        return out;
    }
    let _ = writeln!(w, "controllers ({} decisions):", analysis.atoms.len());
    for atom in &analysis.atoms {
        let scope = match atom.scope {
            super::Scope::Sample => "per sample",
            super::Scope::Batch => "whole batch",
        };
        let what = match &atom.kind {
            AtomKind::Test { value } => match graph.values[*value].def {
                ValueDef::Node { node, .. } => format!("{} → `{}`", graph.nodes[node].op.name(), graph.values[*value].name),
                _ => format!("`{}`", graph.values[*value].name),
            },
            AtomKind::Choice { index, choice, choices } => format!("ArgMax `{}` == {choice} (of {choices})", graph.values[*index].name),
        };
        let knobs: Vec<&str> = atom.knobs.iter().map(|&k| analysis.knobs[k].name.as_str()).collect();
        let knobs = if knobs.is_empty() { String::new() } else { format!("; knobs: {}", knobs.join(", ")) };
        let _ = writeln!(w, "  {}: {what}, {scope}{knobs}", atom.name);
    }
    let _ = writeln!(w, "knobs ({}):", analysis.knobs.len());
    for k in &analysis.knobs {
        let _ = writeln!(w, "  {} = {} (model value; --knob {}=VALUE at run time, --fix to bake in)", k.name, k.default, k.name);
    }
    let _ = writeln!(w, "regions (FLOPs per sample at batch 1; `+ fixed` when independent of the batch):");
    let _ = writeln!(w, "  root: {} FLOPs", flops_text(analysis.root_flops_per_sample, analysis.root_flops_fixed));
    tree(graph, analysis, &analysis.body, 1, w);
    match &analysis.paths {
        Some(paths) => {
            let _ = writeln!(w, "paths ({}):", paths.len());
            for (i, p) in paths.iter().enumerate() {
                let blocks: Vec<String> = p.blocks.iter().map(|b| format!("R{b}")).collect();
                let decisions: Vec<String> = p.decisions.iter().map(|(n, v)| format!("{n}={v}")).collect();
                let dense = analysis.dense_flops(1).max(1);
                let _ = writeln!(
                    w,
                    "  P{i}: {} FLOPs ({:.1}% of dense); regions [{}]; decisions [{}]",
                    grouped(p.flops),
                    100.0 * p.flops as f64 / dense as f64,
                    blocks.join(", "),
                    decisions.join(", ")
                );
            }
        }
        None => {
            let _ = writeln!(w, "paths: too many decision combinations to list");
        }
    }
    let _ = writeln!(w, "dense FLOPs (batch 1, every region): {}", grouped(analysis.dense_flops(1)));
    out
}

fn flops_text(per_sample: u64, fixed: u64) -> String {
    if fixed == 0 {
        grouped(per_sample)
    } else {
        format!("{} + {} fixed", grouped(per_sample), grouped(fixed))
    }
}

fn tree(graph: &Graph, analysis: &Analysis, items: &[Item], depth: usize, w: &mut String) {
    for item in items {
        let blocks = match *item {
            Item::Block(b) => vec![b],
            Item::Node(n) => match analysis.branches.get(&n) {
                Some(br) => br.to_vec(),
                None => continue,
            },
        };
        for b in blocks {
            let block = &analysis.blocks[b];
            let indent = "  ".repeat(depth + 1);
            let nodes = analysis.block_nodes(b);
            let names: Vec<&str> = nodes.iter().take(4).map(|&n| graph.nodes[n].name.as_str()).collect();
            let more = if nodes.len() > 4 { format!(", … {} more", nodes.len() - 4) } else { String::new() };
            let kind = match block.kind {
                BlockKind::Guarded => String::new(),
                BlockKind::Branch { node, then } => format!(" {} branch of `{}`", if then { "then" } else { "else" }, graph.nodes[node].name),
            };
            let mode = match &block.mode {
                Mode::Batch => "run or skip for the whole batch".to_string(),
                Mode::Routed => "routed: runs on the compacted rows whose guard holds".to_string(),
                Mode::WholeBatch { reason } => format!("whole batch when any row needs it, because {reason}"),
            };
            let _ = writeln!(
                w,
                "{indent}R{b}{kind}: if {} — {} FLOPs; {mode}; nodes [{}{more}]",
                analysis.guard_text(&block.local),
                flops_text(block.flops_per_sample, block.flops_fixed),
                names.join(", ")
            );
            tree(graph, analysis, &block.items, depth + 1, w);
        }
    }
}
