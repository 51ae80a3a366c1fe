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

/// The generated API's contract, exercised on the committed crate: shapes
/// checked, bad buffers and knobs are errors naming them, the zero-allocation
/// form agrees with `run`, and one model serves several threads at once.
#[cfg(test)]
mod tests {
    use d2nn_runtime::ndarray::{Array4, ArrayD, IxDyn};
    use skip_chain::{Error, Inputs, Knobs, Model, OutputsMut, Scratch, Trace};

    fn input(batch: usize) -> Array4<f32> {
        Array4::from_shape_fn((batch, 3, 16, 16), |(n, c, h, w)| ((n * 7 + c * 5 + h * 3 + w) % 13) as f32 / 6.0 - 1.0)
    }

    #[test]
    fn shapes_are_checked_and_named() {
        let model = Model::new().unwrap();
        let wrong = ArrayD::<f32>::zeros(IxDyn(&[2, 3, 15, 16]));
        match model.run(wrong.view()) {
            Err(Error::Input { name, reason }) => assert!(name == "input" && reason.contains("[batch, 3, 16, 16]"), "{reason}"),
            other => panic!("expected an input error, got {other:?}"),
        }
        let rank = ArrayD::<f32>::zeros(IxDyn(&[3, 16, 16]));
        assert!(matches!(model.run(rank.view()), Err(Error::Input { .. })));
    }

    #[test]
    fn bad_buffers_and_knobs_are_errors() {
        let model = Model::new().unwrap();
        let x = input(2);
        let mut scratch = Scratch::default();
        let mut short = vec![0.0f32; 11];
        let err = model.run_into(Inputs { input: x.as_slice().unwrap() }, OutputsMut { logits: &mut short }, &Knobs::default(), &mut scratch, None).unwrap_err();
        assert!(matches!(err, Error::Output { name: "logits", .. }), "{err}");
        let mut out = vec![0.0f32; 12];
        let err = model.run_into(Inputs { input: &x.as_slice().unwrap()[..100] }, OutputsMut { logits: &mut out }, &Knobs::default(), &mut scratch, None).unwrap_err();
        assert!(matches!(err, Error::Input { name: "input", .. }), "{err}");
        let knobs = Knobs { constant_output_0: f32::NAN, ..Knobs::default() };
        assert!(matches!(model.run_with(x.view(), &knobs), Err(Error::Knob { .. })));
    }

    #[test]
    fn run_into_agrees_with_run_and_reuses_its_scratch() {
        let model = Model::new().unwrap();
        let mut scratch = Scratch::default();
        let mut trace = Trace::default();
        for batch in [4, 1, 4, 3] {
            let x = input(batch);
            let (want, want_trace) = model.run_with(x.view(), &Knobs::default()).unwrap();
            let mut out = vec![0.0f32; batch * 6];
            model.run_into(Inputs { input: x.as_slice().unwrap() }, OutputsMut { logits: &mut out }, &Knobs::default(), &mut scratch, Some(&mut trace)).unwrap();
            assert_eq!(want.logits.as_slice().unwrap(), &out[..]);
            assert_eq!(want_trace, trace);
        }
    }

    #[test]
    fn knobs_move_samples_between_paths() {
        let model = Model::new().unwrap();
        let x = input(4);
        let none = Knobs { constant_output_0: 2.0, constant_2_output_0: 2.0, constant_4_output_0: 2.0 };
        let all = Knobs { constant_output_0: -1.0, constant_2_output_0: -1.0, constant_4_output_0: -1.0 };
        let (_, skipped) = model.run_with(x.view(), &none).unwrap();
        let (_, ran) = model.run_with(x.view(), &all).unwrap();
        assert_eq!(skipped.rows, vec![0, 0, 0], "a sigmoid never exceeds 2: every block skipped");
        assert_eq!(ran.rows, vec![4, 4, 4]);
        assert!(skipped.flops_executed < ran.flops_executed);
    }

    #[test]
    fn one_model_serves_several_threads() {
        let model = Model::with_threads(2).unwrap();
        let x = input(3);
        let want = model.run(x.view()).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(|| model.run(x.view()).unwrap())).collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), want);
            }
        });
    }
}
