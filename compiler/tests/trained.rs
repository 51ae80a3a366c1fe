//! The trained networks of `examples/train/` (D2NN, d-gates, adaptive
//! networks; real weights, real digits) as fixtures: on the committed test
//! set every back end — the dynamic interpreter, the plan executor (dynamic
//! and dense), the Cranelift JIT and a generated Rust crate built by cargo —
//! must reproduce ONNX Runtime's stored logits, in both exported forms
//! (`dynamic.onnx`: per-sample `Where`/`Mul` gates on a batch; `if.onnx`:
//! `If` at batch 1), and the calibration tooling must run on them.

use d2nn_runtime::npy::{read_npy, write_npy, Npz};
use d2nn_runtime::Tensor;
use d2nnc::back::clif::JitModel;
use d2nnc::compare::compare;
use ndarray::{ArrayD, Axis};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

fn train_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/train")
}

fn model_names() -> Vec<String> {
    let index: Json = serde_json::from_str(&std::fs::read_to_string(train_dir().join("models/index.json")).unwrap()).unwrap();
    index.as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect()
}

fn test_inputs() -> ArrayD<f32> {
    let mut npz = Npz::open(&train_dir().join("data/test.npz")).unwrap();
    npz.read("x").unwrap().as_f32().unwrap().clone()
}

fn tensor(a: ArrayD<f32>) -> Tensor {
    Tensor::from_f32(a.shape(), a.iter().copied().collect()).unwrap()
}

fn rows(a: &ArrayD<f32>, start: usize, end: usize) -> ArrayD<f32> {
    a.slice_axis(Axis(0), (start..end).into()).to_owned()
}

fn feeds(x: ArrayD<f32>) -> HashMap<String, Tensor> {
    HashMap::from([("input".to_string(), tensor(x))])
}

/// `got` against the reference rows `start..end`, naming where it differs.
fn check(what: &str, got: &Tensor, reference: &ArrayD<f32>, start: usize, end: usize) -> Result<(), String> {
    compare(got, &tensor(rows(reference, start, end)), ATOL, RTOL).map_err(|m| format!("{what}, samples {start}..{end}: {m}"))
}

/// The dynamic form on the whole test set as one batch: plan (dynamic and
/// dense) and JIT on every sample, the interpreter on the first 48.
fn check_dynamic_form(name: &str, x: &ArrayD<f32>) -> Result<(), String> {
    let dir = train_dir().join("models").join(name);
    let model = dir.join("dynamic.onnx");
    let reference = read_npy(&dir.join("ref_dynamic.npy")).unwrap().as_f32().unwrap().clone();
    let n = x.shape()[0];
    let (graph, program, analysis) = d2nnc::back::clif::lower_file(&model, &[]).map_err(|e| format!("lower: {e}"))?;
    if !analysis.is_dynamic() || analysis.knobs.is_empty() {
        return Err("the analysis finds no gated regions or no knobs".into());
    }
    let mut plan = d2nnc::plan::Executor::with_threads(std::sync::Arc::new(d2nnc::plan::lower_dynamic(&graph, &analysis).map_err(|e| e.to_string())?), 2);
    let out = plan.run(&feeds(x.clone())).map_err(|e| format!("plan: {e}"))?;
    check("plan dynamic", &out[0], &reference, 0, n)?;
    let trace = plan.trace().expect("a dynamic trace");
    if trace.flops_executed >= analysis.dense_flops(n) {
        return Err(format!("dynamic execution saved nothing: {} of {} FLOPs", trace.flops_executed, analysis.dense_flops(n)));
    }
    let mut dense = d2nnc::plan::Executor::new(std::sync::Arc::new(d2nnc::plan::lower(&graph).map_err(|e| e.to_string())?));
    check("plan dense", &dense.run(&feeds(x.clone())).map_err(|e| format!("plan dense: {e}"))?[0], &reference, 0, n)?;
    let mut jit = JitModel::compile(&graph, &program, &analysis, 2).map_err(|e| format!("jit: {e}"))?;
    let got = jit.run(&[x.view()]).map_err(|e| format!("jit: {e}"))?;
    check("jit", &tensor(got[0].clone()), &reference, 0, n)?;
    if jit.trace().flops_executed != trace.flops_executed {
        return Err(format!("jit executed {} FLOPs, the plan {}", jit.trace().flops_executed, trace.flops_executed));
    }
    let (out, _) = d2nnc::interp::run_dynamic(&graph, &analysis, &feeds(rows(x, 0, 48)), &HashMap::new()).map_err(|e| format!("interp: {e}"))?;
    check("interp dynamic", &out[0], &reference, 0, 48)
}

/// The `If` form sample by sample: plan and JIT on every sample, the
/// interpreter on every 9th.
fn check_if_form(name: &str, x: &ArrayD<f32>) -> Result<(), String> {
    let dir = train_dir().join("models").join(name);
    let model = dir.join("if.onnx");
    let reference = read_npy(&dir.join("ref_if.npy")).unwrap().as_f32().unwrap().clone();
    let (graph, program, analysis) = d2nnc::back::clif::lower_file(&model, &[]).map_err(|e| format!("lower: {e}"))?;
    if !analysis.is_dynamic() {
        return Err("the analysis finds no branches".into());
    }
    let mut plan = d2nnc::plan::Executor::new(std::sync::Arc::new(d2nnc::plan::lower_dynamic(&graph, &analysis).map_err(|e| e.to_string())?));
    let mut jit = JitModel::compile(&graph, &program, &analysis, 1).map_err(|e| format!("jit: {e}"))?;
    for i in 0..x.shape()[0] {
        let one = rows(x, i, i + 1);
        check("plan", &plan.run(&feeds(one.clone())).map_err(|e| format!("plan: {e}"))?[0], &reference, i, i + 1)?;
        check("jit", &tensor(jit.run(&[one.view()]).map_err(|e| format!("jit: {e}"))?[0].clone()), &reference, i, i + 1)?;
        if i % 9 == 0 {
            let (out, _) = d2nnc::interp::run_dynamic(&graph, &analysis, &feeds(one), &HashMap::new()).map_err(|e| format!("interp: {e}"))?;
            check("interp", &out[0], &reference, i, i + 1)?;
        }
    }
    Ok(())
}

#[test]
fn every_trained_model_matches_onnx_runtime_in_the_plan_jit_and_interpreter() {
    let x = test_inputs();
    let names = model_names();
    assert!(names.len() >= 7, "expected the seven trained models, found {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        if let Err(e) = check_dynamic_form(name, &x) {
            failures.push(format!("{name}/dynamic.onnx: {e}"));
        }
        if let Err(e) = check_if_form(name, &x) {
            failures.push(format!("{name}/if.onnx: {e}"));
        }
    }
    assert!(failures.is_empty(), "trained models that disagree with ONNX Runtime:\n{}", failures.join("\n"));
}

fn cargo(dir: &Path, target: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(env!("CARGO")).args(args).arg("--offline").env("CARGO_TARGET_DIR", target).env_remove("RUSTFLAGS").current_dir(dir).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Each model's dynamic form compiled by `d2nnc compile` into a crate, built
/// by cargo, run by its `run_npy` example on the whole test set.
#[test]
fn every_trained_model_compiles_to_a_rust_crate_matching_onnx_runtime() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trained-crates");
    // The target directory of `rust_backend.rs` (test binaries run one at a
    // time): the runtime is built once for both.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rust-backend/target");
    std::fs::create_dir_all(&root).unwrap();
    let x = test_inputs();
    let input = root.join("test_x.npy");
    write_npy(&input, &tensor(x.clone())).unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap();
    let mut failures = Vec::new();
    for name in model_names() {
        let dir = train_dir().join("models").join(&name);
        let krate = root.join(&name);
        let _ = std::fs::remove_dir_all(&krate);
        let compile = Command::new(env!("CARGO_BIN_EXE_d2nnc"))
            .args(["compile", dir.join("dynamic.onnx").to_str().unwrap(), "-o", krate.to_str().unwrap(), "--name", &format!("trained_{name}"), "--runtime-path"])
            .arg(workspace.join("runtime"))
            .output()
            .unwrap();
        if !compile.status.success() {
            failures.push(format!("{name}: compile: {}", String::from_utf8_lossy(&compile.stderr)));
            continue;
        }
        std::fs::copy(workspace.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
        if let Err(e) = cargo(&krate, &target, &["build", "--release", "--examples"]) {
            failures.push(format!("{name}: {e}"));
            continue;
        }
        let out_dir = krate.join("out");
        let run = Command::new(target.join("release/examples/run_npy")).arg("--input").arg(format!("input={}", input.display())).arg("--output-dir").arg(&out_dir).output().unwrap();
        if !run.status.success() {
            failures.push(format!("{name}: run_npy: {}", String::from_utf8_lossy(&run.stderr)));
            continue;
        }
        let got = read_npy(&out_dir.join("logits.npy")).unwrap();
        let reference = read_npy(&dir.join("ref_dynamic.npy")).unwrap();
        if let Err(m) = compare(&got, &reference, ATOL, RTOL) {
            failures.push(format!("{name}: the crate's logits: {m}"));
        }
    }
    assert!(failures.is_empty(), "generated crates that disagree with ONNX Runtime:\n{}", failures.join("\n"));
}

/// `d2nnc calibrate` on a trained model and the committed validation set:
/// the model's own knobs measure the accuracy its training recorded.
#[test]
fn calibrate_runs_on_the_trained_models() {
    let data = train_dir().join("data/val.npz");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trained-calibrate");
    std::fs::create_dir_all(&out).unwrap();
    for name in ["dgates_resnet", "d2nn_chain"] {
        let model = train_dir().join("models").join(name).join("dynamic.onnx");
        if !model.exists() {
            panic!("{} is missing", model.display());
        }
        let knobs = out.join(format!("{name}.toml"));
        let o = Command::new(env!("CARGO_BIN_EXE_d2nnc"))
            .args(["calibrate", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--max-settings", "40", "--repeats", "1", "-o", knobs.to_str().unwrap()])
            .output()
            .unwrap();
        let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{name}: {t}");
        assert!(t.contains("Pareto frontier") && t.contains("chosen (the cheapest within 1.00 points"), "{name}: {t}");
        let file = std::fs::read_to_string(&knobs).unwrap();
        assert!(file.contains("[knobs]"), "{name}: {file}");
    }
}
