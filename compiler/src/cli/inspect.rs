//! `d2nnc inspect`: interface, op counts, parameter count and FLOPs of a model.

use d2nnc::flops::{bind_all, node_flops};
use d2nnc::ir::types::TypeDisplay;
use d2nnc::Error;
use std::collections::BTreeMap;
use std::path::Path;

pub fn inspect(model: &Path, batch: usize, print_ir: bool, print_plan: bool, fixes: &[(String, f32)]) -> Result<(), Error> {
    let loaded = d2nnc::front::onnx::load(model)?;
    let nodes_in_file = loaded.graph.walk_nodes().len();
    let mut optimized = loaded.graph.clone();
    d2nnc::passes::optimize(&mut optimized)?;
    let fixed = d2nnc::dynamic::fix_knobs(&mut optimized, fixes)?;
    let g = &optimized;
    let ty = |v| TypeDisplay { ty: &g.values[v].ty, symbols: &g.symbols }.to_string();
    println!("model: {}", model.display());
    println!("  IR version {}, opset {}, producer {:?}", loaded.ir_version, loaded.opset, loaded.producer);
    println!("inputs:");
    for &v in &g.inputs {
        println!("  {}: {}", g.values[v].name, ty(v));
    }
    println!("outputs:");
    for &v in g.outputs() {
        println!("  {}: {}", g.values[v].name, ty(v));
    }
    if !g.symbols.is_empty() {
        println!("symbolic dims: {} (bound to {batch} for FLOP counts; change with --batch)", g.symbols.join(", "));
    }
    let nodes = g.walk_nodes();
    let mut per_op: BTreeMap<&str, (usize, Option<u64>)> = BTreeMap::new();
    let bind = bind_all(batch);
    let mut total = Some(0u64);
    let mut rows = Vec::new();
    for &n in &nodes {
        let f = node_flops(g, n, &bind);
        let e = per_op.entry(g.nodes[n].op.name()).or_insert((0, Some(0)));
        e.0 += 1;
        e.1 = e.1.zip(f).map(|(a, b)| a + b);
        total = total.zip(f).map(|(a, b)| a + b);
        rows.push((g.nodes[n].name.clone(), g.nodes[n].op.name(), f));
    }
    println!("parameters: {}", group(g.parameter_count() as u64));
    println!(
        "ops after optimisation ({} nodes; {nodes_in_file} as loaded, before constant and BatchNorm folding and DCE):",
        nodes.len()
    );
    println!("  {:<24} {:>6} {:>16}", "op", "count", "FLOPs");
    for (op, (count, f)) in &per_op {
        println!("  {op:<24} {count:>6} {:>16}", f.map_or("?".into(), group));
    }
    println!("FLOPs per node:");
    for (name, op, f) in rows {
        println!("  {name:<40} {op:<20} {:>16}", f.map_or("?".into(), group));
    }
    match total {
        Some(t) => println!("total FLOPs (batch {batch}): {} ({:.3} GFLOP)", group(t), t as f64 / 1e9),
        None => println!("total FLOPs (batch {batch}): unknown (some dims depend on runtime data)"),
    }
    let analysis = d2nnc::dynamic::analyze(g, &fixed);
    print!("{}", d2nnc::dynamic::print::render(g, &analysis));
    if print_plan {
        println!("\n{}", d2nnc::plan::print::print(&d2nnc::plan::lower_dynamic(g, &analysis)?));
    }
    if print_ir {
        println!("\n{}", d2nnc::ir::printer::print(g));
    }
    Ok(())
}

/// 1234567 → "1,234,567".
pub(super) fn group(n: u64) -> String {
    d2nnc::flops::thousands(n)
}
