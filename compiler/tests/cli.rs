//! The `d2nnc` binary end to end: `run` writes outputs that match ONNX
//! Runtime (and, with `--report`, what dynamic execution skipped), knobs move
//! the decisions, `inspect` reports the model, `bench` times dynamic and dense
//! execution, and mistakes give a readable error and a non-zero exit status.

use d2nn_runtime::npy::{read_npy, write_npy};
use d2nn_runtime::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn d2nnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_d2nnc")).args(args).output().expect("spawn d2nnc")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("d2nnc-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn run_writes_outputs_matching_the_reference() {
    for backend in ["interp", "plan"] {
        let out = temp_dir(&format!("run-{backend}"));
        let dir = fixture("resnet_tiny");
        let input = format!("input={}", dir.join("input_0.npy").display());
        let model = dir.join("model.onnx");
        let o = d2nnc(&["run", model.to_str().unwrap(), "--input", &input, "--output-dir", out.to_str().unwrap(), "--backend", backend]);
        assert!(o.status.success(), "{backend}: {}", text(&o));
        let got = read_npy(&out.join("logits.npy")).unwrap();
        let want = read_npy(&dir.join("output_0.npy")).unwrap();
        d2nnc::compare::compare(&got, &want, 1e-4, 1e-3).unwrap_or_else(|m| panic!("{backend}: {m}"));
    }
}

#[test]
fn inspect_reports_interface_params_and_flops() {
    let o = d2nnc(&["inspect", fixture("resnet_tiny").join("model.onnx").to_str().unwrap(), "--batch", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for needle in ["inputs:", "input: f32[", "outputs:", "logits: f32[", "parameters:", "Conv", "total FLOPs (batch 2):"] {
        assert!(t.contains(needle), "missing `{needle}` in:\n{t}");
    }
}

#[test]
fn inspect_plan_lists_the_fused_steps() {
    let o = d2nnc(&["inspect", fixture("resnet_tiny").join("model.onnx").to_str().unwrap(), "--plan"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for needle in ["program `", "arena", "+ bias + residual + relu", "@ slot", "output logits"] {
        assert!(t.contains(needle), "missing `{needle}` in:\n{t}");
    }
}

#[test]
fn run_on_two_threads_writes_the_same_outputs() {
    let model = fixture("resnet_tiny").join("model.onnx");
    let input = format!("input={}", fixture("resnet_tiny").join("input_0.npy").display());
    let mut outputs = Vec::new();
    for threads in ["1", "2"] {
        let out = temp_dir(&format!("threads{threads}"));
        let o = d2nnc(&["run", model.to_str().unwrap(), "--input", &input, "-o", out.to_str().unwrap(), "--threads", threads]);
        assert!(o.status.success(), "{}", text(&o));
        outputs.push(read_npy(&out.join("logits.npy")).unwrap());
    }
    d2nnc::compare::compare(&outputs[1], &outputs[0], 1e-5, 1e-4).unwrap();
}

#[test]
fn wrong_input_shape_is_a_readable_error() {
    let out = temp_dir("shape");
    let bad = out.join("bad.npy");
    write_npy(&bad, &Tensor::zeros(d2nn_runtime::DType::F32, &[1, 3, 7, 7])).unwrap();
    let input = format!("input={}", bad.display());
    let o = d2nnc(&["run", fixture("resnet_tiny").join("model.onnx").to_str().unwrap(), "--input", &input, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("error: input `input`: expected f32[") && t.contains("got f32[1, 3, 7, 7]"), "{t}");
}

#[test]
fn usage_mistakes_are_readable_errors() {
    let model = fixture("resnet_tiny").join("model.onnx");
    let o = d2nnc(&["run", model.to_str().unwrap(), "--input", "no-equals-sign"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("must look like NAME=FILE.npy"), "{}", text(&o));

    let o = d2nnc(&["run", model.to_str().unwrap(), "--input", "input=/nonexistent.npy"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent.npy"), "{}", text(&o));

    let o = d2nnc(&["inspect", "/nonexistent/model.onnx"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("error: cannot read /nonexistent/model.onnx"), "{}", text(&o));
}

/// `bench` on a fixture with its stored input, plus `extra` arguments.
fn bench(name: &str, extra: &[&str]) -> Output {
    let dir = fixture(name);
    let model = dir.join("model.onnx");
    let input = format!("input={}", dir.join("input_0.npy").display());
    let mut args = vec!["bench", model.to_str().unwrap(), "--input", &input];
    args.extend_from_slice(extra);
    d2nnc(&args)
}

/// The JSON object on the last line of stdout.
fn last_json(o: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{}", text(o)))
}

#[test]
fn bench_json_is_the_last_line_with_positive_figures() {
    let o = bench("mlp_dynamic_batch", &["--json", "--iters", "3", "--threads", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("latency per call (ms): min") && t.contains("threads: 2 requested, 2 used"), "{t}");
    let j = last_json(&o);
    for key in ["min_ms", "median_ms", "p90_ms", "gflops", "batch", "threads", "flops"] {
        assert!(j[key].as_f64().is_some_and(|v| v > 0.0), "`{key}` is not a positive number in {j}");
    }
    assert_eq!(j["backend"], "jit", "the JIT is the default backend");
    assert_eq!(j["threads_used"], 2);
    assert_eq!(j["iters"], 3);
    assert_eq!(j["batch"], 3, "the stored input has 3 samples");
    assert!(j["model"].as_str().is_some_and(|m| m.ends_with("model.onnx")), "{j}");
    let (min, median, p90) = (j["min_ms"].as_f64().unwrap(), j["median_ms"].as_f64().unwrap(), j["p90_ms"].as_f64().unwrap());
    assert!(min <= median && median <= p90, "{j}");
}

#[test]
fn bench_interp_says_it_ignores_threads() {
    let o = bench("mlp_dynamic_batch", &["--json", "--iters", "1", "--backend", "interp", "--threads", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("interp ignores --threads"), "{}", text(&o));
    assert_eq!(last_json(&o)["threads_used"], 1);
}

#[test]
fn bench_batch_tiles_a_dynamic_batch_and_scales_the_flops() {
    let at = |batch: &str| {
        let o = bench("mlp_dynamic_batch", &["--json", "--iters", "1", "--warmup", "0", "--batch", batch]);
        assert!(o.status.success(), "{}", text(&o));
        last_json(&o)
    };
    let (one, seven) = (at("1"), at("7"));
    assert_eq!(seven["batch"], 7);
    assert_eq!(seven["inputs"]["input"], serde_json::json!([7, 4, 8]));
    // Every FLOP of this MLP is per sample.
    assert_eq!(seven["flops"].as_u64().unwrap(), 7 * one["flops"].as_u64().unwrap());
}

#[test]
fn bench_batch_on_a_fixed_batch_model_names_the_input() {
    let o = bench("squeezenet_fire", &["--batch", "7", "--iters", "1"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("error: --batch 7: input `input` has a fixed batch dimension (f32[1,3,32,32])"), "{t}");
    assert!(t.contains("only runs at batch 1"), "{t}");
    // Its own batch is fine.
    let o = bench("squeezenet_fire", &["--batch", "1", "--iters", "1", "--warmup", "0", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(last_json(&o)["batch"], 1);
}

#[test]
fn bench_profile_reports_ops_and_nodes() {
    let o = bench("resnet_tiny", &["--backend", "plan", "--iters", "2", "--warmup", "0", "--profile", "--top", "3", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("profile: 2 separate runs") && t.contains("slowest 3 nodes:"), "{t}");
    let p = &last_json(&o)["profile"];
    assert_eq!(p["runs"], 2);
    let ops = p["ops"].as_array().unwrap();
    assert!(ops.iter().any(|o| o["op"] == "Conv"), "{p}");
    let share: f64 = ops.iter().map(|o| o["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "op shares add up to 1: {share}");
    let ms: Vec<f64> = ops.iter().map(|o| o["ms_per_run"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "ops sorted by time: {ms:?}");
    assert_eq!(p["top_nodes"].as_array().unwrap().len(), 3);
}

#[test]
fn bench_usage_mistakes_are_readable_errors() {
    let model = fixture("mlp_dynamic_batch").join("model.onnx");
    let model = model.to_str().unwrap();
    for (args, needle) in [
        (vec!["bench", model, "--input", "no-equals-sign"], "must look like NAME=FILE.npy"),
        (vec!["bench", model, "--input", "x=a.npy", "--iters", "0"], "invalid value '0' for '--iters <K>'"),
        (vec!["bench", model, "--input", "x=a.npy", "--batch", "0"], "invalid value '0' for '--batch <N>'"),
        (vec!["bench", model, "--input", "x=a.npy", "--max-seconds", "nan"], "must be a positive number of seconds"),
        (vec!["bench", model], "error: input `input` was not provided"),
    ] {
        let o = d2nnc(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
}

/// `run` on a fixture's stored input with `extra` arguments, outputs to a fresh folder.
fn run_fixture(name: &str, tag: &str, extra: &[&str]) -> (Output, PathBuf) {
    let out = temp_dir(tag);
    let dir = fixture(name);
    let model = dir.join("model.onnx");
    let input = format!("input={}", dir.join("input_0.npy").display());
    let mut args = vec!["run", model.to_str().unwrap(), "--input", &input, "--output-dir", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    (d2nnc(&args), out)
}

#[test]
fn run_report_records_flops_regions_and_paths() {
    for backend in ["interp", "plan"] {
        let report_path = std::env::temp_dir().join(format!("d2nnc-cli-report-{backend}-{}.json", std::process::id()));
        let report_arg = report_path.to_str().unwrap().to_string();
        let (o, out) = run_fixture("early_exit_where", &format!("report-{backend}"), &["--backend", backend, "--report", &report_arg]);
        assert!(o.status.success(), "{backend}: {}", text(&o));
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
        std::fs::remove_file(&report_path).unwrap();
        let (dense, executed) = (j["flops_dense"].as_f64().unwrap(), j["flops_executed"].as_f64().unwrap());
        assert!(executed > 0.0 && executed < dense, "{backend}: the stored batch takes early exits: {j}");
        assert_eq!(j["mode"], "dynamic");
        assert_eq!(j["batch"], 8);
        let regions = j["regions"].as_array().unwrap();
        // A region runs on at least the rows that need it (exactly those when routed).
        assert!(regions.iter().all(|r| r["rows"].as_u64().unwrap() <= r["rows_run"].as_u64().unwrap()), "{j}");
        assert!(regions.iter().any(|r| r["rows"].as_u64().unwrap() > 0), "{j}");
        let samples = j["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 8);
        let paths = j["paths"].as_array().unwrap();
        assert!(samples.iter().all(|s| paths.iter().any(|p| p["id"] == s["path"])), "every sample's path is listed: {j}");
        // The outputs equal the reference (dynamic execution does not change results).
        let got = read_npy(&out.join("logits.npy")).unwrap();
        let want = read_npy(&fixture("early_exit_where").join("output_0.npy")).unwrap();
        d2nnc::compare::compare(&got, &want, 1e-4, 1e-3).unwrap_or_else(|m| panic!("{backend}: {m}"));
    }
}

#[test]
fn knobs_move_the_exits_and_dense_runs_everything() {
    let report = |tag: &str, extra: &[&str]| {
        let path = std::env::temp_dir().join(format!("d2nnc-cli-{tag}-{}.json", std::process::id()));
        let mut args = extra.to_vec();
        let p = path.to_str().unwrap().to_string();
        args.extend_from_slice(&["--report", &p]);
        let (o, _) = run_fixture("early_exit_where", tag, &args);
        assert!(o.status.success(), "{tag}: {}", text(&o));
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        j
    };
    let ratio = |j: &serde_json::Value| j["flops_executed"].as_f64().unwrap() / j["flops_dense"].as_f64().unwrap();
    // No probability exceeds 2: every sample runs to the end (only the exit heads are skipped).
    let never = report("knob-never", &["--knob", "threshold=2"]);
    // Every probability exceeds -1: every sample leaves at the first exit.
    let always = report("knob-always", &["--knob", "threshold=-1"]);
    let dense = report("dense", &["--dense"]);
    assert!(ratio(&always) < ratio(&never) && ratio(&never) < 1.0, "{} {}", ratio(&always), ratio(&never));
    assert_eq!(dense["mode"], "dense");
    assert_eq!(ratio(&dense), 1.0);
    assert_eq!(always["knobs"]["threshold"], -1.0);
}

#[test]
fn knob_mistakes_name_the_knob() {
    let (o, _) = run_fixture("early_exit_where", "knob-unknown", &["--knob", "treshold=0.3"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("treshold") && t.contains("threshold"), "names the unknown knob and the model's knobs: {t}");
    let (o, _) = run_fixture("early_exit_where", "knob-nan", &["--knob", "threshold=NaN"]);
    assert!(!o.status.success(), "{}", text(&o));
    let (o, _) = run_fixture("early_exit_where", "knob-syntax", &["--knob", "threshold"]);
    assert!(!o.status.success(), "{}", text(&o));
}

#[test]
fn inspect_fix_prunes_a_region_that_can_never_run() {
    let model = fixture("early_exit_where").join("model.onnx");
    let o = d2nnc(&["inspect", model.to_str().unwrap(), "--fix", "threshold=1.0"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("if never") && t.contains("knobs (0)"), "{t}");
}

#[test]
fn bench_times_dynamic_and_dense_in_one_run() {
    let o = bench("early_exit_where", &["--json", "--iters", "2", "--warmup", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("dynamic / dense time"), "{}", text(&o));
    let j = last_json(&o);
    assert_eq!(j["mode"], "dynamic");
    for key in ["flops_dense", "flops_executed", "flops_ratio", "dense_median_ms", "time_ratio"] {
        assert!(j[key].as_f64().is_some_and(|v| v > 0.0), "`{key}` is not a positive number in {j}");
    }
    assert!(j["flops_ratio"].as_f64().unwrap() < 1.0, "{j}");
    let dense = last_json(&bench("early_exit_where", &["--json", "--iters", "1", "--warmup", "0", "--dense"]));
    assert_eq!(dense["mode"], "dense");
}
