//! Runs the compiled model on `.npy` inputs and writes `.npy` outputs:
//! `cargo run --release --example run_npy -- --input NAME=FILE.npy … [--output-dir DIR] [--threads N] [--knob NAME=VALUE] [--iters N]`
//! (`--iters` also times N more calls and prints the median).

use std::collections::HashMap;
use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut inputs: HashMap<String, PathBuf> = HashMap::new();
    let mut out_dir = PathBuf::from(".");
    let mut threads = 1;
    let mut iters = 0usize;
    let mut knobs = skip_chain::Knobs::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--input" | "-i" => {
                let spec = value()?;
                let (name, path) = spec.split_once('=').ok_or_else(|| format!("--input wants NAME=FILE.npy, got {spec:?}"))?;
                inputs.insert(name.to_string(), PathBuf::from(path));
            }
            "--output-dir" | "-o" => out_dir = PathBuf::from(value()?),
            "--threads" => threads = value()?.parse()?,
            "--iters" => iters = value()?.parse()?,
            "--knob" => {
                let spec = value()?;
                let (name, v) = spec.split_once('=').ok_or_else(|| format!("--knob wants NAME=VALUE, got {spec:?}"))?;
                set_knob(&mut knobs, name, v.parse()?)?;
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let model = skip_chain::Model::with_threads(threads)?;
    let input_0 = d2nn_runtime::npy::read_npy(inputs.get("input").ok_or("missing --input input=FILE.npy")?)?.as_f32()?.clone();
    let (outputs, trace) = model.run_with(input_0.view(), &knobs)?;
    if iters > 0 {
        // Timing: the same call repeated (warmed up by the run above); median and minimum.
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let start = std::time::Instant::now();
            let _ = model.run_with(input_0.view(), &knobs)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!("time: median {:.4} ms, min {:.4} ms over {iters} calls", times[iters / 2], times[0]);
    }
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join("logits.npy");
    d2nn_runtime::npy::write_npy(&path, &d2nn_runtime::Tensor::F32(outputs.logits))?;
    println!("logits: {}", path.display());
    let dense = skip_chain::DENSE_FLOPS_PER_SAMPLE * trace.batch as u64 + skip_chain::DENSE_FLOPS_FIXED;
    println!("FLOPs executed: {} of {} dense ({:.1}%)", trace.flops_executed, dense, 100.0 * trace.flops_executed as f64 / dense.max(1) as f64);
    for s in 0..trace.batch {
        if let Some(p) = model.path_of(&trace, s) {
            println!("sample {s}: path {p}: {}", skip_chain::PATHS[p]);
        }
    }
    Ok(())
}

#[allow(unused_variables)]
fn set_knob(knobs: &mut skip_chain::Knobs, name: &str, value: f32) -> Result<(), String> {
    match name {
        "/Constant_4_output_0" | "constant_4_output_0" => {
            knobs.constant_4_output_0 = value;
            Ok(())
        }
        "/Constant_2_output_0" | "constant_2_output_0" => {
            knobs.constant_2_output_0 = value;
            Ok(())
        }
        "/Constant_output_0" | "constant_output_0" => {
            knobs.constant_output_0 = value;
            Ok(())
        }
        _ => Err(format!("unknown knob {name:?}")),
    }
}
