//! The Rust back end end to end: every fixture (dense and dynamic) is
//! compiled into a crate, the crate is built by a real `cargo build`
//! (one shared target directory), its `run_npy` example runs on the
//! fixture's inputs, and the outputs must match ONNX Runtime's stored ones
//! to the fixture's tolerances — and the FLOPs it reports must equal the
//! plan executor's trace of the same run. Snapshot tests (insta) pin the
//! generated code of small models, where the branches are visible. A model
//! built in memory covers the logical ops (`And`/`Or`/`Xor`/`Not`), which no
//! fixture uses, against the interpreter.

use d2nn_runtime::npy::read_npy;
use d2nnc::back::rust::krate::{file_stem, write_crate, RuntimeDep};
use d2nnc::back::rust::{compile_file, format_module, Options, WeightsPath};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// Every generated crate's example is `run_npy` in the one shared target
/// directory, so tests that build and run one take turns.
static SHARED_TARGET: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("workspace root")
}

fn fixtures_dir() -> PathBuf {
    workspace().join("tests/fixtures")
}

fn load_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read json")).expect("parse json")
}

fn options(source: &str) -> Options {
    Options { source: source.into(), weights: WeightsPath::Relative("../weights.bin".into()), comments: true, track: Vec::new(), fixed: Vec::new() }
}

/// Generates the crate of fixture `name` under `root` and returns its directory.
fn generate(root: &Path, name: &str) -> Result<PathBuf, String> {
    let model = fixtures_dir().join(name).join("model.onnx");
    let generated = compile_file(&model, &[], &options("model.onnx")).map_err(|e| format!("compile: {e}"))?;
    let lib_rs = format_module(&generated.tokens).map_err(|e| format!("format: {e}"))?;
    let dir = root.join(name);
    let crate_name = format!("fixture_{name}");
    write_crate(&dir, &crate_name, &generated, &lib_rs, &RuntimeDep::Path(workspace().join("runtime")), "model.onnx", true).map_err(|e| e.to_string())?;
    // Pin the runtime's dependencies to this workspace's versions: builds offline.
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn cargo(dir: &Path, target: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .arg("--offline")
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS")
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        return Err(format!("cargo {} failed:\n{stderr}", args.join(" ")));
    }
    Ok(stderr)
}

/// The FLOPs the plan executor reports for the same run (the reference for `run_npy`'s count).
fn plan_flops(model: &Path, feeds: &HashMap<String, d2nn_runtime::Tensor>) -> u64 {
    let mut graph = d2nnc::load_and_optimize(model).expect("load").graph;
    let fixed = d2nnc::dynamic::fix_knobs(&mut graph, &[]).expect("no fixes");
    let analysis = d2nnc::dynamic::analyze(&graph, &fixed);
    if !analysis.is_dynamic() {
        let batch = feeds.values().next().and_then(|t| t.shape().first().copied()).unwrap_or(1);
        return analysis.dense_flops(batch);
    }
    let program = d2nnc::plan::lower_dynamic(&graph, &analysis).expect("lower");
    let mut ex = d2nnc::plan::Executor::new(std::sync::Arc::new(program));
    ex.run(feeds).expect("plan run");
    ex.trace().expect("dynamic trace").flops_executed
}

fn check_fixture(root: &Path, target: &Path, name: &str) -> Result<(), String> {
    let fixture = fixtures_dir().join(name);
    let manifest = load_json(&fixture.join("fixture.json"));
    let (atol, rtol) = (manifest["atol"].as_f64().unwrap_or(1e-4), manifest["rtol"].as_f64().unwrap_or(1e-3));
    let dir = generate(root, name)?;
    let warnings = cargo(&dir, target, &["build", "--release", "--examples"])?;
    if warnings.contains("warning:") {
        return Err(format!("the generated crate builds with warnings:\n{warnings}"));
    }
    let exe = target.join("release/examples/run_npy");
    let mut cases = vec![(manifest["inputs"].clone(), manifest["outputs"].clone())];
    if let Some(alts) = manifest.get("alt_cases").and_then(Json::as_array) {
        cases.extend(alts.iter().map(|a| (a["inputs"].clone(), a["outputs"].clone())));
    }
    for (k, (inputs, outputs)) in cases.iter().enumerate() {
        let out_dir = dir.join(format!("out{k}"));
        let mut cmd = Command::new(&exe);
        let mut feeds = HashMap::new();
        for input in inputs.as_array().expect("inputs") {
            let (iname, file) = (input["name"].as_str().expect("name"), input["file"].as_str().expect("file"));
            cmd.arg("--input").arg(format!("{iname}={}", fixture.join(file).display()));
            feeds.insert(iname.to_string(), read_npy(&fixture.join(file)).expect("read input"));
        }
        let run = cmd.arg("--output-dir").arg(&out_dir).output().map_err(|e| format!("run_npy: {e}"))?;
        let stdout = String::from_utf8_lossy(&run.stdout).to_string();
        if !run.status.success() {
            return Err(format!("run_npy failed: {}", String::from_utf8_lossy(&run.stderr)));
        }
        for output in outputs.as_array().expect("outputs") {
            let (oname, file) = (output["name"].as_str().expect("name"), output["file"].as_str().expect("file"));
            let got = read_npy(&out_dir.join(format!("{}.npy", file_stem(oname)))).map_err(|e| format!("output {oname}: {e}"))?;
            let want = read_npy(&fixture.join(file)).expect("read reference");
            d2nnc::compare::compare(&got, &want, atol, rtol).map_err(|m| format!("case {k}, output {oname}: {m}"))?;
        }
        let flops: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("FLOPs executed: "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("run_npy printed no FLOPs line:\n{stdout}"))?;
        let expected = plan_flops(&fixture.join("model.onnx"), &feeds);
        if flops != expected {
            return Err(format!("case {k}: run_npy executed {flops} FLOPs, the plan executor {expected}"));
        }
    }
    Ok(())
}

#[test]
fn every_fixture_compiles_builds_and_matches_onnx_runtime() {
    let _turn = SHARED_TARGET.lock().unwrap_or_else(PoisonError::into_inner);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rust-backend");
    let target = root.join("target");
    std::fs::create_dir_all(&root).expect("scratch dir");
    let index = load_json(&fixtures_dir().join("index.json"));
    let names: Vec<&str> = index.as_array().expect("index").iter().map(|v| v.as_str().expect("name")).collect();
    let failures: Vec<String> = names.iter().filter_map(|n| check_fixture(&root, &target, n).err().map(|e| format!("{n}: {e}"))).collect();
    assert!(failures.is_empty(), "generated crates that fail:\n{}", failures.join("\n\n"));
}

/// A D2NN-style model in which two controllers' decisions combine through
/// `Not`, `And`, `Or` and `Xor` into the condition of a `Where`, plus a bool
/// constant row broadcast against the decision column (the back end takes
/// no bool graph inputs): the generated crate calls the
/// runtime's logical kernels and its outputs equal the interpreter's.
#[test]
fn logical_ops_compile_to_runtime_kernels() {
    use d2nnc::front::onnx::build::{graph, model_bytes, node, tensor_bool, tensor_f32, value_info_dims, DataType, Dim, NodeExt};
    let _turn = SHARED_TARGET.lock().unwrap_or_else(PoisonError::into_inner);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rust-backend");
    let target = root.join("target");
    let dir = root.join("logic_gates");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    // The controllers read one input column each (weights 1 and 0), so their
    // logits are exact and no decision depends on the GEMM's summation order.
    let ops: &[(&str, &[&str])] = &[
        ("Gemm", &["x", "w_deep", "b"]),
        ("Gemm", &["x", "w_shallow", "b"]),
        ("Greater", &["gemm_0", "zero"]),
        ("Less", &["gemm_1", "zero"]),
        ("Not", &["less_3"]),
        ("And", &["greater_2", "not_4"]),
        ("Or", &["and_5", "less_3"]),
        ("Xor", &["or_6", "greater_2"]),
        ("Relu", &["x"]),
        ("Neg", &["x"]),
        ("Where", &["xor_7", "relu_8", "neg_9"]),
        ("Xor", &["mask", "xor_7"]),
    ];
    let nodes = ops
        .iter()
        .enumerate()
        .map(|(i, (op, ins))| {
            let out = format!("{}_{i}", op.to_lowercase());
            node(op, ins, &[&out]).with_name(&out)
        })
        .collect();
    let inits = vec![
        tensor_f32("w_deep", &[4, 1], &[1.0, 0.0, 0.0, 0.0]),
        tensor_f32("w_shallow", &[4, 1], &[0.0, 1.0, 0.0, 0.0]),
        tensor_f32("b", &[1], &[0.0]),
        tensor_f32("zero", &[], &[0.0]),
        tensor_bool("mask", &[1, 4], &[true, false, false, true]),
    ];
    let n = || Dim::param("N");
    let inputs = vec![value_info_dims("x", DataType::FLOAT, &[n(), Dim::Fixed(4)])];
    let outputs = vec![value_info_dims("where_10", DataType::FLOAT, &[n(), Dim::Fixed(4)]), value_info_dims("xor_11", DataType::BOOL, &[n(), Dim::Fixed(4)])];
    let model = dir.join("model.onnx");
    std::fs::write(&model, model_bytes(graph("logic_gates", nodes, inputs, outputs, inits), 8, 13)).expect("write model");

    let generated = compile_file(&model, &[], &options("model.onnx")).unwrap_or_else(|e| panic!("compile: {e}"));
    let lib_rs = format_module(&generated.tokens).expect("format");
    for call in ["logic::bool_strided(logic::BoolOp::And", "logic::bool_strided(logic::BoolOp::Or", "logic::bool_strided(logic::BoolOp::Xor", "logic::not("] {
        assert!(lib_rs.contains(call), "the generated code does not call `{call}`");
    }
    let krate = dir.join("crate");
    write_crate(&krate, "logic_gates", &generated, &lib_rs, &RuntimeDep::Path(workspace().join("runtime")), "model.onnx", true).expect("write crate");
    std::fs::copy(workspace().join("Cargo.lock"), krate.join("Cargo.lock")).expect("copy Cargo.lock");
    let warnings = cargo(&krate, &target, &["build", "--release", "--examples"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!warnings.contains("warning:"), "the generated crate builds with warnings:\n{warnings}");

    // Every (deep, shallow) pair of decisions, ties at zero included.
    let rows: [[f32; 4]; 8] = [
        [1.0, 1.0, -2.0, 3.0],
        [1.0, -1.0, 0.5, -0.5],
        [-1.0, 1.0, 4.0, -4.0],
        [-1.0, -1.0, -0.25, 0.25],
        [0.0, 0.0, 1.5, 2.5],
        [2.0, 0.0, -1.0, 0.0],
        [0.0, -3.0, 7.0, -7.0],
        [-0.0, 5.0, 0.0, -0.0],
    ];
    let x = d2nn_runtime::Tensor::from_f32(&[8, 4], rows.concat()).unwrap();
    let feeds = HashMap::from([("x".to_string(), x)]);
    let mut cmd = Command::new(target.join("release/examples/run_npy"));
    for (name, t) in &feeds {
        let file = dir.join(format!("{name}.npy"));
        d2nn_runtime::npy::write_npy(&file, t).expect("write input");
        cmd.arg("--input").arg(format!("{name}={}", file.display()));
    }
    let out_dir = dir.join("out");
    let run = cmd.arg("--output-dir").arg(&out_dir).output().expect("run_npy");
    assert!(run.status.success(), "run_npy failed: {}", String::from_utf8_lossy(&run.stderr));
    let graph = d2nnc::load_and_optimize(&model).expect("load").graph;
    let want = d2nnc::interp::run(&graph, &feeds).expect("interpreter");
    for (name, want) in ["where_10", "xor_11"].iter().zip(&want) {
        let got = read_npy(&out_dir.join(format!("{}.npy", file_stem(name)))).unwrap_or_else(|e| panic!("output {name}: {e}"));
        d2nnc::compare::compare(&got, want, 0.0, 0.0).unwrap_or_else(|m| panic!("output {name}: {m}"));
    }
}

/// The generated code of small models, where a reader sees the branches.
#[test]
fn generated_code_snapshots() {
    for name in ["early_exit_where", "skip_chain", "cond_if", "mlp_dynamic_batch"] {
        let model = fixtures_dir().join(name).join("model.onnx");
        let generated = compile_file(&model, &[], &options("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let code = format_module(&generated.tokens).expect("format");
        insta::assert_snapshot!(format!("generated_{name}"), code);
    }
}

#[test]
fn unsupported_input_is_an_error_naming_the_model_element() {
    let dir = tempdir();
    let bad = dir.join("missing.onnx");
    let err = compile_file(&bad, &[], &options("missing.onnx")).err().expect("a missing file fails");
    assert!(err.to_string().contains("missing.onnx"), "{err}");
    let model = fixtures_dir().join("early_exit_where/model.onnx");
    let err = compile_file(&model, &[("no_such_knob".into(), 0.5)], &options("model.onnx")).err().expect("an unknown knob fails");
    assert!(err.to_string().contains("no_such_knob"), "{err}");
}

fn tempdir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rust-backend-errors");
    std::fs::create_dir_all(&d).expect("tmp");
    d
}

/// `examples/compiled-app/skip_chain` is committed so readers can open the
/// generated code; it must be what `d2nnc compile` writes today.
#[test]
fn the_committed_example_crate_is_up_to_date() {
    let model = fixtures_dir().join("skip_chain/model.onnx");
    let generated = compile_file(&model, &[], &options("model.onnx")).expect("compile");
    let lib_rs = format_module(&generated.tokens).expect("format");
    let dir = workspace().join("examples/compiled-app/skip_chain");
    let committed = std::fs::read_to_string(dir.join("src/lib.rs")).expect("committed lib.rs");
    assert!(committed == lib_rs, "examples/compiled-app/skip_chain is stale: regenerate it with\n  cargo run -p d2nnc -- compile tests/fixtures/skip_chain/model.onnx -o examples/compiled-app/skip_chain --member --runtime-path runtime");
    assert_eq!(std::fs::read(dir.join("weights.bin")).expect("committed weights"), generated.weights, "examples/compiled-app/skip_chain/weights.bin is stale");
}
