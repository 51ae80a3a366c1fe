//! Golden tests of the IR text form for real exports: what the front end and
//! the pass pipeline make of them. Update with `D2NNC_BLESS=1 cargo test`.

mod common;

use common::check;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn fixture(name: &str) -> PathBuf {
    root().join("../tests/fixtures").join(name).join("model.onnx")
}

fn printed(name: &str, optimize: bool) -> String {
    let mut model = d2nnc::front::onnx::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    if optimize {
        d2nnc::passes::optimize(&mut model.graph).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    d2nnc::ir::verify::verify(&model.graph).unwrap_or_else(|e| panic!("{name}: {e}"));
    d2nnc::ir::printer::print(&model.graph)
}

#[test]
fn mlp_with_dynamic_batch_as_loaded() {
    check("ir/mlp_dynamic_batch.loaded", &printed("mlp_dynamic_batch", false));
}

#[test]
fn mlp_with_dynamic_batch_optimized() {
    check("ir/mlp_dynamic_batch.optimized", &printed("mlp_dynamic_batch", true));
}

#[test]
fn if_model_keeps_both_branches() {
    check("ir/cond_if.loaded", &printed("cond_if", false));
}

#[test]
fn channel_shuffle_optimized() {
    check("ir/shufflenet_tiny.optimized", &printed("shufflenet_tiny", true));
}

/// The plan listing (`d2nnc inspect --plan`): kernels with what was fused
/// into them, in-place steps, arena slots.
fn plan_listing(name: &str) -> String {
    let model = d2nnc::load_and_optimize(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let program = d2nnc::plan::lower(&model.graph).unwrap_or_else(|e| panic!("{name}: {e}"));
    d2nnc::plan::print::print(&program)
}

#[test]
fn resnet_plan_fuses_residuals_and_activations() {
    let listing = plan_listing("resnet_tiny");
    assert!(listing.contains("+ residual + relu") && listing.contains("in place"), "{listing}");
    check("plan/resnet_tiny", &listing);
}

#[test]
fn if_plan_keeps_both_blocks() {
    check("plan/cond_if", &plan_listing("cond_if"));
}

#[test]
fn mobilenet_plan_fuses_relu6_into_depthwise_and_pointwise_convs() {
    let listing = plan_listing("mobilenetv2_tiny");
    assert!(listing.contains("depthwise 3x3/1 x1 + bias + clip(0, 6)"), "{listing}");
    check("plan/mobilenetv2_tiny", &listing);
}
