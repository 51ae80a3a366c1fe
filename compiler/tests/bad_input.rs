//! Bad input of every kind gives an error naming what is wrong, never a panic:
//! corrupt or truncated protobuf, unknown ops, external data escaping the
//! model folder, absurd dimensions, inputs of the wrong shape or type.

use d2nn_runtime::Tensor;
use d2nnc::front::onnx::build::{graph, model_bytes, node, tensor_f32, value_info, DataType, NodeExt};
use d2nnc::front::onnx::{load, load_bytes, LoadError};
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::{NodeProto, StringStringEntryProto, TensorProto};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture_model() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/resnet_tiny/model.onnx")).unwrap()
}

/// The serialised model of `nodes` reading input `x` (f32 of `input_dims`) and writing `y`.
fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, input_dims: &[i64]) -> Vec<u8> {
    let g = graph("bad", nodes, vec![value_info("x", DataType::FLOAT, input_dims)], vec![value_info("y", DataType::FLOAT, &[])], inits);
    model_bytes(g, 8, 13)
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("d2nnc-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn truncated_protobuf_is_a_decode_error() {
    let full = fixture_model();
    for cut in [full.len() / 2, full.len() - 3, 7] {
        let err = load_bytes(&full[..cut], None, "resnet_tiny.onnx").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("resnet_tiny.onnx") && (text.contains("corrupt or truncated") || matches!(err, LoadError::NoGraph)),
            "cut at {cut}: {text}"
        );
    }
}

#[test]
fn garbage_and_empty_files_are_errors() {
    let err = load_bytes(b"\xff\xff\xff\xff this is not protobuf", None, "junk.onnx").unwrap_err();
    assert!(err.to_string().contains("junk.onnx: not a valid ONNX model"), "{err}");
    let err = load_bytes(b"", None, "empty.onnx").unwrap_err();
    assert!(err.to_string().contains("empty.onnx") && err.to_string().contains("empty"), "{err}");
    let err = load(Path::new("/nonexistent/model.onnx")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/model.onnx"), "{err}");
}

#[test]
fn every_unsupported_node_is_listed_in_one_error() {
    let m = model(
        vec![
            node("FancyOp", &["x"], &["a"]).with_name("first"),
            node("Relu", &["a"], &["b"]).with_name("fine"),
            node("Frobnicate", &["b"], &["y"]).with_name("second"),
        ],
        vec![],
        &[1, 4],
    );
    let err = load_bytes(&m, None, "m.onnx").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("2 nodes cannot be compiled"), "{text}");
    assert!(text.contains("node `first` (FancyOp, opset 13): operator not supported"), "{text}");
    assert!(text.contains("node `second` (Frobnicate, opset 13): operator not supported"), "{text}");
}

#[test]
fn custom_domains_are_named() {
    let n = node("Relu", &["x"], &["y"]).with_name("custom").with_domain("com.example");
    let err = load_bytes(&model(vec![n], vec![], &[1]), None, "m.onnx").unwrap_err();
    assert!(err.to_string().contains("node `custom` (com.example::Relu, opset 13): operators of domain `com.example`"), "{err}");
}

#[test]
fn undefined_inputs_are_named() {
    let err = load_bytes(&model(vec![node("Relu", &["ghost"], &["y"]).with_name("n")], vec![], &[1]), None, "m.onnx").unwrap_err();
    assert!(err.to_string().contains("input `ghost` is not defined"), "{err}");
}

fn external_tensor(name: &str, location: &str) -> TensorProto {
    let mut t = tensor_f32(name, &[4], &[]);
    t.data_location = DataLocation::EXTERNAL.into();
    let mut kv = StringStringEntryProto::new();
    kv.key = "location".into();
    kv.value = location.into();
    t.external_data.push(kv);
    t
}

fn load_with_external(tag: &str, location: &str, setup: impl FnOnce(&Path)) -> Result<(), LoadError> {
    let dir = temp_dir(tag);
    let model_dir = dir.join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    setup(&dir);
    let m = model(vec![node("Add", &["x", "w"], &["y"]).with_name("add")], vec![external_tensor("w", location)], &[4]);
    let path = model_dir.join("model.onnx");
    std::fs::write(&path, m).unwrap();
    load(&path).map(|_| ())
}

#[test]
fn external_data_inside_the_folder_loads() {
    let res = load_with_external("ok", "weights.bin", |dir| {
        std::fs::write(dir.join("model/weights.bin"), [0u8; 16]).unwrap();
    });
    res.unwrap();
}

#[test]
fn external_data_escaping_the_folder_is_refused() {
    let secret = |dir: &Path| std::fs::write(dir.join("secret.bin"), [0u8; 16]).unwrap();
    for (tag, loc) in [("dotdot", "../secret.bin"), ("nested", "sub/../../secret.bin"), ("abs", "/etc/passwd")] {
        let err = load_with_external(tag, loc, secret).unwrap_err().to_string();
        assert!(err.starts_with("tensor `w`:") && err.contains("escapes the model's folder"), "{loc}: {err}");
    }
    let err = load_with_external("symlink", "link.bin", |dir| {
        secret(dir);
        std::os::unix::fs::symlink(dir.join("secret.bin"), dir.join("model/link.bin")).unwrap();
    })
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("tensor `w`:") && err.contains("escapes the model's folder"), "{err}");
}

#[test]
fn external_data_that_is_too_short_or_missing_is_an_error() {
    let err = load_with_external("short", "weights.bin", |dir| {
        std::fs::write(dir.join("model/weights.bin"), [0u8; 5]).unwrap();
    })
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("tensor `w`:") && err.contains("beyond the end"), "{err}");
    let err = load_with_external("missing", "nope.bin", |_| {}).unwrap_err().to_string();
    assert!(err.starts_with("tensor `w`:") && err.contains("nope.bin"), "{err}");
}

#[test]
fn absurd_dimensions_are_refused() {
    let t = tensor_f32("huge", &[1 << 40, 1 << 40], &[]);
    let m = model(vec![node("Add", &["x", "huge"], &["y"]).with_name("add")], vec![t], &[1]);
    let err = load_bytes(&m, None, "m.onnx").unwrap_err().to_string();
    assert!(err.contains("tensor `huge`") && err.contains("absurd"), "{err}");

    let m = model(vec![node("Relu", &["x"], &["y"]).with_name("relu")], vec![], &[-3, 4]);
    let err = load_bytes(&m, None, "m.onnx").unwrap_err().to_string();
    assert!(err.contains("graph input `x`") && err.contains("absurd"), "{err}");
}

#[test]
fn initializer_with_wrong_data_length_is_named() {
    let mut t = tensor_f32("w", &[4], &[]);
    t.raw_data = vec![0u8; 10];
    let m = model(vec![node("Add", &["x", "w"], &["y"]).with_name("add")], vec![t], &[4]);
    let err = load_bytes(&m, None, "m.onnx").unwrap_err().to_string();
    assert!(err.contains("tensor `w`") && err.contains("10 bytes"), "{err}");
}

#[test]
fn wrong_input_shape_and_dtype_name_the_input() {
    let m = model(vec![node("Relu", &["x"], &["y"]).with_name("relu")], vec![], &[2, 3]);
    let loaded = load_bytes(&m, None, "m.onnx").unwrap();
    let run = |t: Tensor| d2nnc::interp::run(&loaded.graph, &HashMap::from([("x".to_string(), t)]));
    let err = run(Tensor::zeros(d2nn_runtime::DType::F32, &[3, 2])).unwrap_err().to_string();
    assert_eq!(err, "input `x`: expected f32[2,3], got f32[3, 2]");
    let err = run(Tensor::zeros(d2nn_runtime::DType::I64, &[2, 3])).unwrap_err().to_string();
    assert_eq!(err, "input `x`: expected f32[2,3], got i64[2, 3]");
    let err = d2nnc::interp::run(&loaded.graph, &HashMap::new()).unwrap_err().to_string();
    assert_eq!(err, "input `x` was not provided");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Corrupting bytes of a real model yields a model or an error, never a panic.
        #[test]
        fn corrupted_models_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                        cut in any::<prop::sample::Index>()) {
            let mut data = fixture_model();
            for (at, byte) in flips {
                let i = at.index(data.len());
                data[i] = byte;
            }
            let keep = cut.index(data.len() + 1);
            data.truncate(keep.max(data.len() / 2));
            let _ = load_bytes(&data, None, "fuzzed.onnx");
        }
    }
}

#[test]
fn absurd_shapes_computed_by_the_graph_are_errors_not_allocations() {
    use d2nnc::front::onnx::build::tensor_i64;
    // Expand a [1] input to [2^20, 2^20]: valid ONNX, 2^40 elements.
    let m = model(vec![node("Expand", &["x", "huge"], &["y"]).with_name("expand")], vec![tensor_i64("huge", &[2], &[1 << 20, 1 << 20])], &[1]);
    let result = load_bytes(&m, None, "m.onnx").map_err(|e| e.to_string()).and_then(|loaded| {
        let x = Tensor::from_f32(&[1], vec![1.0]).unwrap();
        d2nnc::interp::run(&loaded.graph, &HashMap::from([("x".to_string(), x)])).map(|_| ()).map_err(|e| e.to_string())
    });
    let err = result.unwrap_err();
    assert!(err.contains("expand") && err.contains("elements"), "{err}");

    // A Tile whose repeats make the output too large, with a runtime-sized input.
    let m = model(vec![node("Tile", &["x", "reps"], &["y"]).with_name("tile")], vec![tensor_i64("reps", &[2], &[1 << 16, 1 << 16])], &[1 << 4, 1 << 4]);
    let loaded = load_bytes(&m, None, "m.onnx").unwrap();
    let x = Tensor::zeros(d2nn_runtime::DType::F32, &[16, 16]);
    let err = d2nnc::interp::run(&loaded.graph, &HashMap::from([("x".to_string(), x)])).unwrap_err().to_string();
    assert!(err.contains("tile") && err.contains("elements"), "{err}");
}
