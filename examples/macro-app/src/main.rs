//! Embeds the early-exit classifier of the test fixtures with `dynamic_net!`
//! and classifies the fixture's inputs: prints each sample's prediction, the
//! path it took through the network and the FLOPs dynamic execution saved.
//!
//! ```sh
//! cargo run --release -p macro-app
//! ```

use std::path::Path;

d2nn_macros::dynamic_net! {
    /// The d-gate early-exit classifier (`tests/fixtures/early_exit_where`):
    /// two exits whose sigmoid gates stop confident samples early.
    pub mod early_exit = "../../tests/fixtures/early_exit_where/model.onnx";
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/early_exit_where/input_0.npy");
    let input = d2nn_runtime::npy::read_npy(&path)?;
    let input = input.as_f32()?;
    let model = early_exit::Model::new()?;
    let knobs = early_exit::Knobs::default();
    let (outputs, trace) = model.run_with(input.view(), &knobs)?;
    println!("{} samples, knob threshold = {}", trace.batch, knobs.threshold);
    for (s, row) in outputs.logits.outer_iter().enumerate() {
        let class = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0;
        let path = model.path_of(&trace, s).map_or("?", |p| early_exit::PATHS[p]);
        println!("sample {s}: class {class}  path: {path}");
    }
    let dense = early_exit::DENSE_FLOPS_PER_SAMPLE * trace.batch as u64 + early_exit::DENSE_FLOPS_FIXED;
    println!(
        "FLOPs: {} executed of {} dense: {:.1}% saved",
        trace.flops_executed,
        dense,
        100.0 * (1.0 - trace.flops_executed as f64 / dense as f64)
    );
    Ok(())
}
