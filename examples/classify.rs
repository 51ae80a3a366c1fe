//! Library walk-through: load an ONNX classifier, lower it to a plan and run
//! it with the plan executor on a `.npy` batch (checking it against the
//! reference interpreter), and print each sample's top class and the model's
//! FLOPs.
//!
//! ```sh
//! cargo run -p d2nnc --example classify -- tests/fixtures/resnet_tiny/model.onnx tests/fixtures/resnet_tiny/input_0.npy
//! ```

use d2nn_runtime::npy::read_npy;
use d2nnc::flops::{bind_all, dense_flops};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(PathBuf::from);
    let (Some(model_path), Some(input_path)) = (args.next(), args.next()) else {
        return Err("usage: classify MODEL.onnx INPUT.npy".into());
    };
    let model = d2nnc::load_and_optimize(&model_path)?;
    let graph = &model.graph;
    let input_name = graph.values[graph.inputs[0]].name.clone();
    let input = read_npy(&input_path)?;
    let batch = input.shape().first().copied().unwrap_or(1);

    let feeds = HashMap::from([(input_name, input)]);
    // Lower once; an executor keeps its scratch arena and threads between calls.
    let program = Arc::new(d2nnc::plan::lower(graph)?);
    let mut executor = d2nnc::plan::Executor::with_threads(program, 2);
    let outputs = executor.run(&feeds)?;
    let reference = d2nnc::interp::run(graph, &feeds)?;
    d2nnc::compare::compare(&outputs[0], &reference[0], 1e-4, 1e-3)?;
    let logits = outputs[0].as_f32()?;
    for (i, row) in logits.outer_iter().enumerate() {
        let (class, score) = row
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (c, &v)| if v > best.1 { (c, v) } else { best });
        println!("sample {i}: class {class} (logit {score:.4})");
    }
    match dense_flops(graph, &bind_all(batch)) {
        Some(f) => println!("FLOPs for this batch of {batch}: {f}"),
        None => println!("FLOPs unknown: some dims depend on runtime data"),
    }
    Ok(())
}
