//! Stable text form of a graph, used by golden tests and `d2nnc inspect --ir`.
//!
//! Format: constants referenced by the graph first (small ones with their
//! values), then each node as `%out: type = Op{attrs}(%in, …)  # node-name`,
//! with `If` branches indented beneath their node.

use super::graph::{Graph, RegionId, ValueDef, ValueId};
use super::types::TypeDisplay;
use d2nn_runtime::Tensor;
use std::collections::BTreeSet;
use std::fmt::Write;

/// Constants with at most this many elements are printed with their values.
const INLINE_CONST_LIMIT: usize = 8;

pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "graph \"{}\"", graph.name);
    for &v in &graph.inputs {
        let _ = writeln!(out, "  input {}", value_decl(graph, v));
    }
    let mut consts = BTreeSet::new();
    for n in graph.walk_nodes() {
        for v in graph.nodes[n].present_inputs() {
            if matches!(graph.values[v].def, ValueDef::Const(_)) {
                consts.insert(v);
            }
        }
    }
    for &v in graph.outputs() {
        if matches!(graph.values[v].def, ValueDef::Const(_)) {
            consts.insert(v);
        }
    }
    for v in consts {
        let t = graph.const_value(v).expect("filtered to constants");
        let _ = writeln!(out, "  const {}{}", value_decl(graph, v), const_suffix(t));
    }
    print_region(graph, graph.root, 1, &mut out);
    for &v in graph.outputs() {
        let _ = writeln!(out, "  output {}", value_ref(graph, v));
    }
    out
}

fn print_region(graph: &Graph, region: RegionId, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    for &n in &graph.regions[region].nodes {
        let node = &graph.nodes[n];
        let outs: Vec<String> = node.outputs.iter().map(|&v| value_decl(graph, v)).collect();
        let ins: Vec<String> = node
            .inputs
            .iter()
            .map(|i| match i {
                Some(v) => value_ref(graph, *v),
                None => "_".to_string(),
            })
            .collect();
        let _ = writeln!(out, "{pad}{} = {}({})  # {}", outs.join(", "), node.op, ins.join(", "), node.name);
        for (i, &r) in node.regions.iter().enumerate() {
            let label = match (node.regions.len(), i) {
                (2, 0) => "then",
                (2, 1) => "else",
                _ => "region",
            };
            let _ = writeln!(out, "{pad}  {label}:");
            print_region(graph, r, depth + 2, out);
            let yields: Vec<String> = graph.regions[r].outputs.iter().map(|&v| value_ref(graph, v)).collect();
            let _ = writeln!(out, "{pad}    yield {}", yields.join(", "));
        }
    }
}

fn value_ref(graph: &Graph, v: ValueId) -> String {
    format!("%{}", graph.values[v].name)
}

fn value_decl(graph: &Graph, v: ValueId) -> String {
    let value = &graph.values[v];
    format!("%{}: {}", value.name, TypeDisplay { ty: &value.ty, symbols: &graph.symbols })
}

fn const_suffix(t: &Tensor) -> String {
    if t.len() > INLINE_CONST_LIMIT {
        return format!(" ({} values)", t.len());
    }
    let items: Vec<String> = match t {
        Tensor::F32(a) => a.iter().map(|v| format!("{v:?}")).collect(),
        Tensor::I64(a) => a.iter().map(|v| v.to_string()).collect(),
        Tensor::I32(a) => a.iter().map(|v| v.to_string()).collect(),
        Tensor::Bool(a) => a.iter().map(|v| v.to_string()).collect(),
    };
    format!(" = [{}]", items.join(", "))
}
