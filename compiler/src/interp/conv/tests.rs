//! Tests of the conv-family kernels: window geometry edge cases, pooling
//! divisors, legacy softmax, and Conv/ConvTranspose adjointness.

use super::{norm, pool, window_axes, SameRule};
use crate::ir::{ConvAttrs, ConvTransposeAttrs, Graph, Op, Padding, PoolAttrs, PoolKind, TensorType};
use crate::passes::infer::infer_node;
use d2nn_runtime::Tensor;
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use std::collections::HashMap;

fn array(shape: &[usize], data: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-5 + 1e-5 * w.abs(), "{got:?} vs {want:?}");
    }
}

fn pool_1d(kernel: usize, stride: usize, pads: [usize; 2], ceil_mode: bool) -> PoolAttrs {
    PoolAttrs { kernel: vec![kernel], strides: vec![stride], dilations: vec![1], padding: Padding::Explicit(pads.to_vec()), ceil_mode }
}

#[test]
fn ceil_mode_drops_a_last_window_that_starts_in_the_end_padding() {
    // in 2, kernel 3, stride 3, pads 1+1: ceil((4-3)/3)+1 = 2 windows, but the second starts at 3 ≥ 2 + 1.
    let axes = window_axes(&[2], &[3], &[3], &[1], &Padding::Explicit(vec![1, 1]), true, SameRule::Pool).unwrap();
    assert_eq!(axes[0].output, 1);
    // in 4, kernel 3, stride 2, no pads: the ceil window starting at 2 is kept.
    let axes = window_axes(&[4], &[3], &[2], &[1], &Padding::Explicit(vec![0, 0]), true, SameRule::Pool).unwrap();
    assert_eq!(axes[0].output, 2);
}

#[test]
fn same_padding_puts_the_odd_pad_at_the_end_or_beginning() {
    for (padding, begin, end) in [(Padding::SameUpper, 0, 1), (Padding::SameLower, 1, 0)] {
        // in 5, kernel 2, stride 1: output 5 needs one pad.
        let axes = window_axes(&[5], &[2], &[1], &[1], &padding, false, SameRule::Conv).unwrap();
        assert_eq!((axes[0].output, axes[0].pad_begin, axes[0].pad_end), (5, begin, end));
    }
    // Dilation widens the window the padding must cover: reach 5 → 4 pads.
    let axes = window_axes(&[6], &[3], &[2], &[2], &Padding::SameUpper, false, SameRule::Conv).unwrap();
    assert_eq!((axes[0].output, axes[0].pad_begin, axes[0].pad_end), (3, 1, 2));
}

#[test]
fn pooling_same_pads_ignore_dilation_and_may_shift_windows_inward() {
    // Undilated kernel 3, stride 1 → 2 pads, though the dilated window spans 5.
    let axes = window_axes(&[6], &[3], &[1], &[2], &Padding::SameUpper, false, SameRule::Pool).unwrap();
    assert_eq!((axes[0].output, axes[0].pad_begin, axes[0].pad_end), (6, 1, 1));
    // Kernel 1 < stride 3 over 3 elements: total -2, the single window reads the middle element.
    let x = array(&[1, 1, 3], vec![1.0, 2.0, 3.0]);
    let attrs = PoolAttrs { padding: Padding::SameUpper, ..pool_1d(1, 3, [0, 0], false) };
    assert_close(&values(&pool::pool(&x, PoolKind::Max { column_major_indices: false }, &attrs).unwrap()), &[2.0]);
}

#[test]
fn window_larger_than_padded_input_is_an_error() {
    let err = window_axes(&[2], &[3], &[1], &[2], &Padding::Explicit(vec![0, 0]), false, SameRule::Conv).unwrap_err();
    assert!(err.contains("window spans 5"), "{err}");
}

#[test]
fn average_pool_divisor_counts_pads_but_never_the_ceil_overhang() {
    let x = array(&[1, 1, 3], vec![1.0, 2.0, 3.0]);
    let include = PoolKind::Average { count_include_pad: true };
    let exclude = PoolKind::Average { count_include_pad: false };
    let padded = pool_1d(3, 1, [1, 1], false);
    assert_close(&values(&pool::pool(&x, include, &padded).unwrap()), &[1.0, 2.0, 5.0 / 3.0]);
    assert_close(&values(&pool::pool(&x, exclude, &padded).unwrap()), &[1.5, 2.0, 2.5]);
    // Ceil mode: the second window [2, 3] overhangs by one; the overhang is not a pad.
    let ceil = pool_1d(2, 2, [0, 0], true);
    assert_close(&values(&pool::pool(&x, include, &ceil).unwrap()), &[1.5, 3.0]);
    // With a pad at the end the same overhang position is a pad and counts.
    let ceil_padded = pool_1d(2, 2, [0, 1], true);
    assert_close(&values(&pool::pool(&x, include, &ceil_padded).unwrap()), &[1.5, 1.5]);
}

#[test]
fn max_pool_skips_nan_and_honours_dilation() {
    let x = array(&[1, 1, 5], vec![1.0, f32::NAN, 7.0, -2.0, 4.0]);
    let attrs = PoolAttrs { dilations: vec![2], ..pool_1d(2, 1, [0, 0], false) };
    // Windows {0,2}, {1,3}, {2,4}.
    assert_close(&values(&pool::pool(&x, PoolKind::Max { column_major_indices: false }, &attrs).unwrap()), &[7.0, -2.0, 7.0]);
}

#[test]
fn max_pool_indices_count_planes_and_follow_the_storage_order() {
    let plane = [1.0, 5.0, 2.0, 7.0, 0.0, 3.0];
    let x = array(&[2, 1, 2, 3], plane.iter().chain(&plane).copied().collect());
    let attrs = PoolAttrs { kernel: vec![2, 2], strides: vec![1, 1], dilations: vec![1, 1], padding: Padding::Explicit(vec![0; 4]), ceil_mode: false };
    let row = pool::pool_with_indices(&x, PoolKind::Max { column_major_indices: false }, &attrs).unwrap();
    assert_eq!(values(&row.0), vec![7.0, 5.0, 7.0, 5.0]);
    // 7 sits at (1, 0) and 5 at (0, 1); the second batch's plane starts at 6.
    assert_eq!(row.1.to_i64_vec(), vec![3, 1, 9, 7]);
    let column = pool::pool_with_indices(&x, PoolKind::Max { column_major_indices: true }, &attrs).unwrap();
    assert_eq!(column.1.to_i64_vec(), vec![1, 2, 7, 8]);
}

#[test]
fn max_pool_indices_name_the_first_of_tied_maxima() {
    let x = array(&[1, 1, 4], vec![2.0, 2.0, f32::NAN, 1.0]);
    let attrs = pool_1d(2, 2, [0, 0], false);
    let (y, indices) = pool::pool_with_indices(&x, PoolKind::Max { column_major_indices: false }, &attrs).unwrap();
    assert_eq!(values(&y), vec![2.0, 1.0]);
    assert_eq!(indices.to_i64_vec(), vec![0, 3]);
    // Through the interpreter, with the inferred i64 type.
    let outs = run_outputs(Op::Pool { kind: PoolKind::Max { column_major_indices: false }, attrs }, Tensor::F32(x), vec![], 2).unwrap();
    assert_eq!(outs[1], Tensor::from_i64(&[1, 1, 2], vec![0, 3]).unwrap());
}

#[test]
fn global_pools_keep_spatial_axes_as_ones() {
    let x = array(&[1, 2, 2, 2], vec![1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0]);
    let avg = pool::global_pool(&x, PoolKind::Average { count_include_pad: false }).unwrap();
    assert_eq!(avg.shape(), &[1, 2, 1, 1]);
    assert_close(&values(&avg), &[2.5, -2.5]);
    assert_close(&values(&pool::global_pool(&x, PoolKind::Max { column_major_indices: false }).unwrap()), &[4.0, -1.0]);
}

#[test]
fn legacy_softmax_normalises_the_trailing_block_jointly() {
    let data: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = array(&[2, 3, 4], data.clone());
    let coerced = values(&norm::softmax(&x, 1, false, true).unwrap());
    let flat = values(&norm::softmax(&array(&[2, 12], data), 1, false, false).unwrap());
    assert_close(&coerced, &flat);
    let log = values(&norm::softmax(&x, 1, true, true).unwrap());
    assert_close(&log, &coerced.iter().map(|v| v.ln()).collect::<Vec<_>>());
    // The opset-13 form differs: each column of 3 sums to one.
    let single = values(&norm::softmax(&x, 1, false, false).unwrap());
    assert_close(&[single[0] + single[4] + single[8]], &[1.0]);
}

#[test]
fn softmax_of_large_values_stays_finite() {
    let x = array(&[1, 3], vec![1000.0, 1001.0, 1002.0]);
    let y = values(&norm::softmax(&x, -1, false, false).unwrap());
    assert!(y.iter().all(|v| v.is_finite()));
    assert_close(&[y.iter().sum()], &[1.0]);
}

#[test]
fn lrn_sums_squares_over_the_channel_window() {
    // size 2: window c-0 ..= c+1.
    let x = array(&[1, 3, 1, 1], vec![1.0, 2.0, 3.0]);
    let y = values(&norm::lrn(&x, 2, 2.0, 1.0, 1.0).unwrap());
    assert_close(&y, &[1.0 / (1.0 + 5.0), 2.0 / (1.0 + 13.0), 3.0 / (1.0 + 9.0)]);
}

/// Runs one node on a graph whose first input is `x` and other inputs constants.
fn run(op: Op, x: Tensor, consts: Vec<Tensor>) -> Result<Tensor, String> {
    run_outputs(op, x, consts, 1).map(|mut v| v.remove(0))
}

/// Like [`run`] for a node with `outputs` outputs, all of them graph outputs.
fn run_outputs(op: Op, x: Tensor, consts: Vec<Tensor>, outputs: usize) -> Result<Vec<Tensor>, String> {
    let mut g = Graph::new("t");
    let xv = g.add_input("x", TensorType::fixed(x.dtype(), x.shape()));
    let mut inputs = vec![Some(xv)];
    for (i, c) in consts.into_iter().enumerate() {
        inputs.push(Some(g.add_const(&format!("c{i}"), c)));
    }
    let root = g.root;
    let outs = (0..outputs).map(|i| (format!("y{i}"), TensorType::scalar(x.dtype()))).collect();
    let node = g.add_node(root, "n", op, inputs, outs);
    let types = infer_node(&g, node).map_err(|e| e.to_string())?;
    let values = g.nodes[node].outputs.clone();
    for (&v, ty) in values.iter().zip(types) {
        g.values[v].ty = ty;
    }
    g.regions[root].outputs = values;
    let feeds = HashMap::from([("x".to_string(), x)]);
    crate::interp::run(&g, &feeds).map_err(|e| e.to_string())
}

#[test]
fn layer_norm_returns_the_row_statistics_it_used() {
    let x = Tensor::from_f32(&[2, 1, 2], vec![1.0, 3.0, -2.0, -2.0]).unwrap();
    let scale = Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap();
    let outs = run_outputs(Op::LayerNorm { axis: -2, epsilon: 0.0 }, x.clone(), vec![scale.clone()], 3).unwrap();
    assert_eq!(outs[1].shape(), &[2, 1, 1]);
    assert_eq!(values(&outs[1]), vec![2.0, -2.0]);
    // Row 0 has variance 1; row 1 is constant, so with epsilon 0 its deviation is 0.
    assert_eq!(values(&outs[2]), vec![1.0, f32::INFINITY]);
    assert_close(&values(&outs[0])[..2], &[-1.0, 2.0]);
    // Fewer outputs: only the ones asked for.
    let outs = run_outputs(Op::LayerNorm { axis: -1, epsilon: 1e-5 }, x, vec![scale], 2).unwrap();
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[1].shape(), &[2, 1, 1]);
}

fn conv_attrs(kernel: Vec<usize>, strides: Vec<usize>, dilations: Vec<usize>, pads: Vec<usize>, group: usize) -> ConvAttrs {
    ConvAttrs { kernel, strides, dilations, padding: Padding::Explicit(pads), group }
}

#[test]
fn depthwise_conv_with_bias() {
    // Two channels, each with its own 1x2 kernel.
    let x = Tensor::from_f32(&[1, 2, 1, 3], vec![1.0, 2.0, 3.0, 10.0, 20.0, 30.0]).unwrap();
    let w = Tensor::from_f32(&[2, 1, 1, 2], vec![1.0, -1.0, 0.5, 0.5]).unwrap();
    let b = Tensor::from_f32(&[2], vec![100.0, 0.0]).unwrap();
    let y = run(Op::Conv(conv_attrs(vec![1, 2], vec![1, 1], vec![1, 1], vec![0; 4], 2)), x, vec![w, b]).unwrap();
    assert_eq!(y.shape(), &[1, 2, 1, 2]);
    assert_close(&values(&y), &[99.0, 99.0, 15.0, 25.0]);
}

#[test]
fn conv_transpose_output_shape_beyond_the_full_output_is_zero_filled() {
    let x = Tensor::from_f32(&[1, 1, 2], vec![1.0, 2.0]).unwrap();
    let w = Tensor::from_f32(&[1, 1, 2], vec![1.0, 1.0]).unwrap();
    let conv = conv_attrs(vec![2], vec![1], vec![1], vec![0, 0], 1);
    // Full output [1, 3, 2]; asking for 4 adds a zero at the end (total pad -1 → begin 0).
    let attrs = ConvTransposeAttrs { conv: conv.clone(), output_padding: vec![0], output_shape: Some(vec![4]) };
    assert_close(&values(&run(Op::ConvTranspose(attrs), x.clone(), vec![w.clone()]).unwrap()), &[1.0, 3.0, 2.0, 0.0]);
    // Asking for 2 with SAME_UPPER crops at the end; SAME_LOWER at the beginning.
    for (padding, want) in [(Padding::SameUpper, [1.0, 3.0]), (Padding::SameLower, [3.0, 2.0])] {
        let attrs = ConvTransposeAttrs { conv: ConvAttrs { padding, ..conv.clone() }, output_padding: vec![0], output_shape: None };
        assert_close(&values(&run(Op::ConvTranspose(attrs), x.clone(), vec![w.clone()]).unwrap()), &want);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// ConvTranspose is the adjoint of Conv with the same weight:
    /// ⟨conv(x), y⟩ = ⟨x, conv_transpose(y)⟩, when `output_padding` restores
    /// the input size. This ties strides, pads, dilations and groups of both kernels.
    #[test]
    fn conv_transpose_is_the_adjoint_of_conv(
        spatial in 1usize..=2,
        group in 1usize..=2,
        per_group_in in 1usize..=2,
        per_group_out in 1usize..=2,
        size in prop::collection::vec(3usize..=7, 2),
        kernel in prop::collection::vec(1usize..=3, 2),
        stride in prop::collection::vec(1usize..=3, 2),
        dilation in prop::collection::vec(1usize..=2, 2),
        pads in prop::collection::vec(0usize..=2, 4),
        seed in 0u32..1000,
    ) {
        let (size, kernel, stride, dilation) = (&size[..spatial], &kernel[..spatial], &stride[..spatial], &dilation[..spatial]);
        let pads: Vec<usize> = pads[..spatial].iter().chain(&pads[2..2 + spatial]).copied().collect();
        let reach: Vec<usize> = (0..spatial).map(|a| dilation[a] * (kernel[a] - 1) + 1).collect();
        prop_assume!((0..spatial).all(|a| size[a] + pads[a] + pads[spatial + a] >= reach[a]));
        let (c, m) = (per_group_in * group, per_group_out * group);
        let noise = |n: usize, salt: u32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 + 1.0) * 0.731 + (seed + salt) as f32 * 0.113).sin()).collect()
        };
        let x_shape: Vec<usize> = [1, c].iter().chain(size).copied().collect();
        let w_shape: Vec<usize> = [m, per_group_in].iter().chain(kernel).copied().collect();
        let x = Tensor::from_f32(&x_shape, noise(x_shape.iter().product(), 1)).unwrap();
        let w = Tensor::from_f32(&w_shape, noise(w_shape.iter().product(), 2)).unwrap();
        let attrs = conv_attrs(kernel.to_vec(), stride.to_vec(), dilation.to_vec(), pads.clone(), group);
        let y = run(Op::Conv(attrs.clone()), x.clone(), vec![w.clone()]).unwrap();
        let probe = Tensor::from_f32(y.shape(), noise(y.len(), 3)).unwrap();
        let output_padding: Vec<usize> =
            (0..spatial).map(|a| (size[a] + pads[a] + pads[spatial + a] - reach[a]) % stride[a]).collect();
        let t_attrs = ConvTransposeAttrs { conv: attrs, output_padding, output_shape: None };
        let back = run(Op::ConvTranspose(t_attrs), probe.clone(), vec![w]).unwrap();
        prop_assert_eq!(back.shape(), x.shape());
        let (lhs, rhs) = (dot(&values(&y), &values(&probe)), dot(&values(&x), &values(&back)));
        prop_assert!((lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
    }
}

fn padding_strategy() -> impl Strategy<Value = Option<Padding>> {
    prop_oneof![Just(None), Just(Some(Padding::SameUpper)), Just(Some(Padding::SameLower))]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Whatever the window attributes, inference and the kernel agree: either
    /// inference rejects the node, or the kernel runs and its result has the
    /// inferred shape (the interpreter checks that after every node).
    #[test]
    fn pool_and_conv_geometry_agree_with_inference(
        size in prop::collection::vec(1usize..=6, 2),
        kernel in prop::collection::vec(1usize..=4, 2),
        stride in prop::collection::vec(1usize..=3, 2),
        dilation in prop::collection::vec(1usize..=3, 2),
        pads in prop::collection::vec(0usize..=3, 4),
        same in padding_strategy(),
        ceil_mode in any::<bool>(),
        average in any::<bool>(),
    ) {
        let padding = same.unwrap_or(Padding::Explicit(pads));
        let x = Tensor::from_f32(&[1, 2, size[0], size[1]], (0..2 * size[0] * size[1]).map(|i| i as f32).collect()).unwrap();
        let kind = if average { PoolKind::Average { count_include_pad: ceil_mode } } else { PoolKind::Max { column_major_indices: false } };
        let attrs = PoolAttrs { kernel: kernel.clone(), strides: stride.clone(), dilations: dilation.clone(), padding: padding.clone(), ceil_mode };
        if let Err(e) = run(Op::Pool { kind, attrs }, x.clone(), vec![]) {
            prop_assert!(e.contains("window spans"), "{}", e);
        }
        let w = Tensor::from_f32(&[3, 2, kernel[0], kernel[1]], vec![0.5; 6 * kernel[0] * kernel[1]]).unwrap();
        let conv = ConvAttrs { kernel, strides: stride, dilations: dilation, padding, group: 1 };
        if let Err(e) = run(Op::Conv(conv), x, vec![w]) {
            prop_assert!(e.contains("window spans"), "{}", e);
        }
    }
}
