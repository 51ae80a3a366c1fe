//! The JSON report `d2nnc run --report FILE.json` writes: what ran, per
//! region and per sample, and the FLOPs executed against the dense graph.
//! Field names are stable and documented in the README.

use super::Backend;
use d2nnc::dynamic::{Analysis, Mode, Trace};
use d2nnc::ir::Graph;
use serde_json::{json, Value};
use std::path::Path;

pub fn report(model: &Path, backend: Backend, graph: &Graph, analysis: &Analysis, trace: Option<&Trace>, batch: usize, knobs: &[(String, f32)]) -> Value {
    let dense = analysis.dense_flops(batch);
    let executed = trace.map_or(dense, |t| t.flops_executed);
    let knob_values: serde_json::Map<String, Value> = analysis
        .knobs
        .iter()
        .map(|k| {
            let v = knobs.iter().rev().find(|(n, _)| *n == k.name).map_or(k.default, |(_, v)| *v);
            (k.name.clone(), json!(v))
        })
        .collect();
    let regions: Vec<Value> = analysis
        .blocks
        .iter()
        .enumerate()
        .map(|(b, block)| {
            let nodes: Vec<&str> = analysis.block_nodes(b).iter().map(|&n| graph.nodes[n].name.as_str()).collect();
            let (mode, reason) = match &block.mode {
                Mode::Batch => ("batch", None),
                Mode::Routed => ("routed", None),
                Mode::WholeBatch { reason } => ("whole_batch", Some(reason.clone())),
            };
            json!({
                "id": b,
                "parent": block.parent,
                "guard": analysis.guard_text(&block.local),
                "mode": mode,
                "whole_batch_reason": reason,
                "nodes": nodes,
                "flops_per_sample": block.flops_per_sample,
                "rows": trace.map_or(batch, |t| t.rows[b]),
                "rows_run": trace.map_or(batch, |t| t.rows_run[b]),
            })
        })
        .collect();
    let paths: Option<Vec<Value>> = analysis.paths.as_ref().map(|paths| {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let decisions: serde_json::Map<String, Value> = p.decisions.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
                let count = trace.map_or(0, |t| (0..t.batch).filter(|&s| t.path_of(&analysis.trace_spec, s) == Some(i)).count());
                json!({ "id": i, "regions": p.blocks, "flops": p.flops, "decisions": decisions, "samples": count })
            })
            .collect()
    });
    let samples: Vec<Value> = match trace {
        Some(t) => (0..t.batch)
            .map(|s| {
                let mut regions = t.sample_regions[s].clone();
                regions.sort_unstable();
                json!({ "index": s, "path": t.path_of(&analysis.trace_spec, s), "regions": regions })
            })
            .collect(),
        None => Vec::new(),
    };
    json!({
        "model": model.display().to_string(),
        "backend": backend.name(),
        "mode": if trace.is_some() { "dynamic" } else { "dense" },
        "batch": batch,
        "flops_dense": dense,
        "flops_executed": executed,
        "flops_ratio": executed as f64 / dense.max(1) as f64,
        "knobs": knob_values,
        "regions": regions,
        "paths": paths,
        "samples": samples,
    })
}
