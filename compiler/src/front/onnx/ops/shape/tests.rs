//! Older opsets' forms of the shape ops load into the newest semantics and
//! compute what the old spec says.

use crate::front::onnx::build::{graph, model_bytes, node, tensor_bool, tensor_f32, tensor_i64, value_info, Attr, DataType, NodeExt};
use crate::front::onnx::load_bytes;
use crate::interp;
use d2nn_runtime::Tensor;
use onnx_protobuf::{NodeProto, TensorProto};
use std::collections::HashMap;

/// Loads a one-input model at `opset` and runs it on `x`.
fn run(opset: i64, x: Tensor, nodes: Vec<NodeProto>, inits: Vec<TensorProto>, outputs: &[&str]) -> Result<Vec<Tensor>, String> {
    let dims: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    let outs = outputs.iter().map(|o| value_info(o, DataType::FLOAT, &[])).collect();
    let bytes = model_bytes(graph("legacy", nodes, vec![value_info("x", DataType::FLOAT, &dims)], outs, inits), 7, opset);
    let model = load_bytes(&bytes, None, "legacy.onnx").map_err(|e| e.to_string())?;
    interp::run(&model.graph, &HashMap::from([("x".to_string(), x)])).map_err(|e| e.to_string())
}

fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f32(shape, (0..n).map(|i| i as f32).collect()).unwrap()
}

fn floats(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape, v.to_vec()).unwrap()
}

#[test]
fn slice_attributes_before_opset_10() {
    let attrs = vec![("starts", Attr::Ints(vec![1, -1])), ("ends", Attr::Ints(vec![i64::MAX, 1000])), ("axes", Attr::Ints(vec![1, 0]))];
    let out = run(9, iota(&[2, 3]), vec![node("Slice", &["x"], &["y"]).with_attrs(attrs)], vec![], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 2], &[4.0, 5.0]));
}

#[test]
fn split_attribute_before_opset_13_and_num_outputs_since_18() {
    let n = node("Split", &["x"], &["a", "b"]).with_attrs(vec![("axis", Attr::Int(1)), ("split", Attr::Ints(vec![1, 3]))]);
    let out = run(11, iota(&[2, 4]), vec![n], vec![], &["a", "b"]).unwrap();
    assert_eq!(out[0], floats(&[2, 1], &[0.0, 4.0]));
    assert_eq!(out[1].shape(), &[2, 3]);
    // 7 into 3: chunks of 3, 3 and 1; the unused last output still counts.
    let n = node("Split", &["x"], &["a", "b", "c"]).with_attr("num_outputs", Attr::Int(3));
    let out = run(18, iota(&[7]), vec![n], vec![], &["b"]).unwrap();
    assert_eq!(out[0], floats(&[3], &[3.0, 4.0, 5.0]));
}

#[test]
fn pad_attributes_before_opset_11() {
    let attrs = vec![("mode", Attr::Str("constant".into())), ("pads", Attr::Ints(vec![0, 1, 0, 0])), ("value", Attr::Float(2.5))];
    let out = run(10, iota(&[1, 2]), vec![node("Pad", &["x"], &["y"]).with_attrs(attrs)], vec![], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 3], &[2.5, 0.0, 1.0]));
    let attrs = vec![("mode", Attr::Str("reflect".into())), ("pads", Attr::Ints(vec![0, 2, 0, 1]))];
    let out = run(10, iota(&[1, 3]), vec![node("Pad", &["x"], &["y"]).with_attrs(attrs)], vec![], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 6], &[2.0, 1.0, 0.0, 1.0, 2.0, 1.0]));
    let attrs = vec![("mode", Attr::Str("wrap".into())), ("pads", Attr::Ints(vec![0, 2, 0, 1]))];
    let err = run(10, iota(&[1, 3]), vec![node("Pad", &["x"], &["y"]).with_attrs(attrs)], vec![], &["y"]).unwrap_err();
    assert!(err.contains("\"wrap\" exists only since opset 19"), "{err}");
    let n = node("Pad", &["x", "p"], &["y"]).with_attr("mode", Attr::Str("wrap".into()));
    let out = run(19, iota(&[1, 3]), vec![n], vec![tensor_i64("p", &[4], &[0, 2, 0, 1])], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 6], &[1.0, 2.0, 0.0, 1.0, 2.0, 0.0]));
}

#[test]
fn squeeze_and_unsqueeze_axes_attributes_before_opset_13() {
    let nodes = vec![
        node("Unsqueeze", &["x"], &["u"]).with_attr("axes", Attr::Ints(vec![0, -1])),
        node("Squeeze", &["u"], &["y"]).with_attr("axes", Attr::Ints(vec![0])),
    ];
    let out = run(11, iota(&[2, 3]), nodes, vec![], &["u", "y"]).unwrap();
    assert_eq!(out[0].shape(), &[1, 2, 3, 1]);
    assert_eq!(out[1].shape(), &[2, 3, 1]);
}

#[test]
fn dropout_is_identity_unless_training() {
    let n = node("Dropout", &["x"], &["y"]).with_attr("ratio", Attr::Float(0.3));
    assert_eq!(run(10, iota(&[4]), vec![n], vec![], &["y"]).unwrap()[0], iota(&[4]));
    let n = node("Dropout", &["x", "r", "t"], &["y"]);
    let inits = vec![tensor_f32("r", &[1], &[0.5]), tensor_bool("t", &[], &[false])];
    assert_eq!(run(13, iota(&[4]), vec![n], inits, &["y"]).unwrap()[0], iota(&[4]));
    let n = node("Dropout", &["x", "r", "t"], &["y"]);
    let inits = vec![tensor_f32("r", &[1], &[0.5]), tensor_bool("t", &[], &[true])];
    let err = run(13, iota(&[4]), vec![n], inits, &["y"]).unwrap_err();
    assert!(err.contains("training_mode"), "{err}");
}

#[test]
fn inference_dropout_mask_keeps_everything() {
    let n = node("Dropout", &["x"], &["y", "mask"]);
    let out = run(13, iota(&[2, 2]), vec![n], vec![], &["y", "mask"]).unwrap();
    assert_eq!(out[0], iota(&[2, 2]));
    assert_eq!(out[1], Tensor::from_bool(&[2, 2], vec![true; 4]).unwrap());
    // Training mode draws a random mask, which stays unsupported.
    let n = node("Dropout", &["x", "r", "t"], &["y", "mask"]);
    let inits = vec![tensor_f32("r", &[1], &[0.5]), tensor_bool("t", &[], &[true])];
    let err = run(13, iota(&[4]), vec![n], inits, &["y", "mask"]).unwrap_err();
    assert!(err.contains("training_mode"), "{err}");
}

#[test]
fn transpose_defaults_to_reversing_the_axes() {
    let out = run(13, iota(&[2, 3]), vec![node("Transpose", &["x"], &["y"])], vec![], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[3, 2], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
}

#[test]
fn upsample_is_asymmetric_floor_nearest() {
    let n = node("Upsample", &["x"], &["y"]).with_attr("scales", Attr::Floats(vec![1.0, 2.0]));
    let out = run(7, iota(&[1, 2]), vec![n], vec![], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 4], &[0.0, 0.0, 1.0, 1.0]));
    // Non-integer scale: output index i reads ⌊i / 1.5⌋.
    let n = node("Upsample", &["x", "s"], &["y"]).with_attr("mode", Attr::Str("nearest".into()));
    let out = run(9, iota(&[1, 2]), vec![n], vec![tensor_f32("s", &[2], &[1.0, 1.5])], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 3], &[0.0, 0.0, 1.0]));
    let n = node("Upsample", &["x", "s"], &["y"]).with_attr("mode", Attr::Str("linear".into()));
    let out = run(9, floats(&[1, 2], &[0.0, 4.0]), vec![n], vec![tensor_f32("s", &[2], &[1.0, 2.0])], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 4], &[0.0, 2.0, 4.0, 4.0]));
}

#[test]
fn resize_reads_cubic_and_axes() {
    // The reference's cubic upsampling of [0, 1, 2, 3] by 2 (half_pixel, a = -0.75).
    let n = node("Resize", &["x", "", "s"], &["y"]).with_attr("mode", Attr::Str("cubic".into()));
    let out = run(19, iota(&[1, 4]), vec![n], vec![tensor_f32("s", &[2], &[1.0, 2.0])], &["y"]).unwrap();
    let want = [-0.105_468_75, 0.191_406_25, 0.667_968_75, 1.296_875, 1.703_125, 2.332_031_3, 2.808_593_8, 3.105_468_8];
    for (g, w) in out[0].to_f32_vec().iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{out:?}");
    }
    // `axes` = [-1]: one scale, for the last axis only.
    let n = node("Resize", &["x", "", "s"], &["y"]).with_attr("axes", Attr::Ints(vec![-1]));
    let out = run(19, iota(&[1, 2]), vec![n], vec![tensor_f32("s", &[1], &[2.0])], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 4], &[0.0, 0.0, 1.0, 1.0]));
    let n = node("Resize", &["x", "", "s"], &["y"]).with_attr("axes", Attr::Ints(vec![1, 1]));
    let err = run(19, iota(&[1, 2]), vec![n], vec![tensor_f32("s", &[2], &[2.0, 2.0])], &["y"]).unwrap_err();
    assert!(err.contains("distinct axes"), "{err}");
}

#[test]
fn resize_10_uses_asymmetric_coordinates() {
    let n = node("Resize", &["x", "s"], &["y"]).with_attr("mode", Attr::Str("nearest".into()));
    let out = run(10, iota(&[1, 4]), vec![n], vec![tensor_f32("s", &[2], &[1.0, 0.5])], &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 2], &[0.0, 2.0]));
    let n = node("Resize", &["x", "s"], &["y"]).with_attr("coordinate_transformation_mode", Attr::Str("half_pixel".into()));
    let err = run(10, iota(&[1, 4]), vec![n], vec![tensor_f32("s", &[2], &[1.0, 0.5])], &["y"]).unwrap_err();
    assert!(err.contains("only since opset 11"), "{err}");
}

#[test]
fn resize_rejects_what_it_does_not_implement_with_reasons() {
    let cases = [
        (12, vec![("coordinate_transformation_mode", Attr::Str("tf_half_pixel_for_nn".into()))], "tf_half_pixel_for_nn"),
        (19, vec![("exclude_outside", Attr::Int(1))], "exclude_outside"),
    ];
    for (opset, attrs, word) in cases {
        let n = node("Resize", &["x", "", "s"], &["y"]).with_attrs(attrs);
        let err = run(opset, iota(&[1, 4]), vec![n], vec![tensor_f32("s", &[2], &[1.0, 2.0])], &["y"]).unwrap_err();
        assert!(err.contains(word) && err.contains("not supported"), "{err}");
    }
    let n = node("Resize", &["x", "", "s"], &["y"]).with_attr("coordinate_transformation_mode", Attr::Str("tf_crop_and_resize".into()));
    let err = run(19, iota(&[1, 4]), vec![n], vec![tensor_f32("s", &[2], &[1.0, 2.0])], &["y"]).unwrap_err();
    assert!(err.contains("needs the `roi` input"), "{err}");
}

#[test]
fn resize_crops_the_roi_and_fills_outside_it() {
    // roi [0, 0.5] then [1, 1.5] of a 4-wide row, 3 samples each: at 0, 0.75, 1.5 and at 3, 3.75, 4.5 (the last two outside).
    let attrs = || vec![("coordinate_transformation_mode", Attr::Str("tf_crop_and_resize".into())), ("mode", Attr::Str("linear".into())), ("extrapolation_value", Attr::Float(-1.0))];
    let n = node("Resize", &["x", "roi", "", "sizes"], &["y"]).with_attrs(attrs());
    let inits = vec![tensor_f32("roi", &[4], &[0.0, 0.0, 1.0, 0.5]), tensor_i64("sizes", &[2], &[1, 3])];
    let out = run(19, iota(&[1, 4]), vec![n], inits, &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 3], &[0.0, 0.75, 1.5]));
    let n = node("Resize", &["x", "roi", "", "sizes"], &["y"]).with_attrs(attrs());
    let inits = vec![tensor_f32("roi", &[4], &[0.0, 1.0, 1.0, 1.5]), tensor_i64("sizes", &[2], &[1, 3])];
    let out = run(19, iota(&[1, 4]), vec![n], inits, &["y"]).unwrap();
    assert_eq!(out[0], floats(&[1, 3], &[3.0, -1.0, -1.0]));
}
