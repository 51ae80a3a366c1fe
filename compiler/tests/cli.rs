//! The `d2nnc` binary end to end: `run` writes outputs that match ONNX
//! Runtime, `inspect` reports the model, and mistakes give a readable error
//! and a non-zero exit status.

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
    let out = temp_dir("run");
    let dir = fixture("resnet_tiny");
    let input = format!("input={}", dir.join("input_0.npy").display());
    let o = d2nnc(&["run", dir.join("model.onnx").to_str().unwrap(), "--input", &input, "--output-dir", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let got = read_npy(&out.join("logits.npy")).unwrap();
    let want = read_npy(&dir.join("output_0.npy")).unwrap();
    d2nnc::compare::compare(&got, &want, 1e-4, 1e-3).unwrap();
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
