//! Links the crate `d2nnc compile` generated for the skip-chain D2NN
//! (`skip_chain/`, committed so its code can be read: `skip_chain/src/lib.rs`
//! shows each gated block as a routing region) and classifies the fixture's
//! inputs: prints each sample's prediction, its path (which blocks it
//! skipped) and the FLOPs saved, with the model's thresholds and a stricter one.
//!
//! ```sh
//! cargo run --release -p compiled-app
//! ```

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/skip_chain/input_0.npy");
    let input = d2nn_runtime::npy::read_npy(&path)?;
    let input = input.as_f32()?;
    let model = skip_chain::Model::new()?;
    let dense = skip_chain::DENSE_FLOPS_PER_SAMPLE * input.shape()[0] as u64 + skip_chain::DENSE_FLOPS_FIXED;
    println!("regions:");
    for r in skip_chain::REGIONS {
        println!("  {r}");
    }
    let (outputs, trace) = model.run_with(input.view(), &skip_chain::Knobs::default())?;
    for (s, row) in outputs.logits.outer_iter().enumerate() {
        let class = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0;
        let regions: Vec<String> = trace.sample_regions[s].iter().map(|r| format!("R{r}")).collect();
        println!("sample {s}: class {class}  ran regions [{}]", regions.join(", "));
    }
    println!("FLOPs: {} executed of {} dense: {:.1}% saved", trace.flops_executed, dense, 100.0 * (1.0 - trace.flops_executed as f64 / dense as f64));
    Ok(())
}
