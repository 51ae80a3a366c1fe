//! Golden tests of what the guard analysis finds in the dynamic fixtures —
//! controllers, knobs, regions with their guards, modes and FLOPs, and every
//! path — as `d2nnc inspect` prints it. Update with `D2NNC_BLESS=1 cargo test`.

mod common;

use common::check;
use std::path::Path;

/// The analysis of fixture `name` after the pass pipeline, with `fixes` baked in.
fn rendered(name: &str, fixes: &[(&str, f32)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name).join("model.onnx");
    let mut model = d2nnc::front::onnx::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    d2nnc::passes::optimize(&mut model.graph).unwrap_or_else(|e| panic!("{name}: {e}"));
    let fixes: Vec<(String, f32)> = fixes.iter().map(|&(k, v)| (k.to_string(), v)).collect();
    let fixed = d2nnc::dynamic::fix_knobs(&mut model.graph, &fixes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let analysis = d2nnc::dynamic::analyze(&model.graph, &fixed);
    d2nnc::dynamic::print::render(&model.graph, &analysis)
}

#[test]
fn early_exit_where_nests_its_exits() {
    check("dynamic/early_exit_where", &rendered("early_exit_where", &[]));
}

#[test]
fn a_fixed_threshold_no_probability_exceeds_prunes_the_exits() {
    check("dynamic/early_exit_where.fix_threshold_1", &rendered("early_exit_where", &[("threshold", 1.0)]));
}

#[test]
fn early_exit_cond_branches_on_if() {
    check("dynamic/early_exit_cond", &rendered("early_exit_cond", &[]));
}

#[test]
fn highlow_capacity_routes_one_hot_gates() {
    check("dynamic/highlow_capacity", &rendered("highlow_capacity", &[]));
}

#[test]
fn skip_chain_guards_each_residual_block() {
    check("dynamic/skip_chain", &rendered("skip_chain", &[]));
}

#[test]
fn network_selection_runs_the_expensive_net_on_demand() {
    check("dynamic/network_selection", &rendered("network_selection", &[]));
}
