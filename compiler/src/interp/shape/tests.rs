//! Kernel properties: inverse pairs (split/concat, pad/slice, transpose) and
//! agreement with simpler formulations (repeat for nearest upsampling, tile
//! for expand). Every run also checks the kernel's shape against inference.

use crate::interp;
use crate::ir::{CoordinateTransform, Graph, NearestMode, Op, PadMode, ResizeAttrs, ResizeMode, TensorType};
use crate::passes::infer;
use d2nn_runtime::Tensor;
use proptest::prelude::*;
use std::collections::HashMap;

/// Runs one node on input `x` and constant operands (`None` = omitted).
fn run_op(op: Op, x: &Tensor, operands: Vec<Option<Tensor>>, outputs: usize) -> Result<Vec<Tensor>, String> {
    let mut g = Graph::new("t");
    let xv = g.add_input("x", TensorType::fixed(x.dtype(), x.shape()));
    let mut inputs = vec![Some(xv)];
    for (i, t) in operands.into_iter().enumerate() {
        inputs.push(t.map(|t| g.add_const(&format!("c{i}"), t)));
    }
    let outs = (0..outputs).map(|i| (format!("y{i}"), TensorType::scalar(x.dtype()))).collect();
    let root = g.root;
    let node = g.add_node(root, "n", op, inputs, outs);
    g.regions[root].outputs = g.nodes[node].outputs.clone();
    infer::run(&mut g).map_err(|e| e.to_string())?;
    interp::run(&g, &HashMap::from([("x".to_string(), x.clone())])).map_err(|e| e.to_string())
}

fn ints(v: &[i64]) -> Option<Tensor> {
    Some(Tensor::vec_i64(v.to_vec()))
}

fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f32(shape, (0..n).map(|i| i as f32).collect()).unwrap()
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..4, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn split_then_concat_is_identity(shape in shape_strategy(), axis_seed in 0usize..4, cut_seed in 0usize..4) {
        let x = iota(&shape);
        let axis = axis_seed % shape.len();
        let cut = (cut_seed % (shape[axis] + 1)) as i64;
        let sizes = [cut, shape[axis] as i64 - cut];
        let parts = run_op(Op::Split { axis: axis as i64 }, &x, vec![ints(&sizes)], 2).unwrap();
        let joined = concat(&parts, axis as i64);
        prop_assert_eq!(joined, x);
    }

    #[test]
    fn transpose_then_inverse_is_identity(shape in shape_strategy(), seed in 0usize..24) {
        let x = iota(&shape);
        let mut perm: Vec<usize> = (0..shape.len()).collect();
        // A permutation chosen by the seed (a rotation then a swap).
        perm.rotate_left(seed % shape.len());
        if shape.len() > 1 { perm.swap(0, seed % shape.len()); }
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() { inverse[p] = i; }
        let y = run_op(Op::Transpose { perm: perm.clone() }, &x, vec![], 1).unwrap().remove(0);
        let back = run_op(Op::Transpose { perm: inverse }, &y, vec![], 1).unwrap().remove(0);
        prop_assert_eq!(back, x);
    }

    #[test]
    fn pad_then_crop_is_identity(shape in shape_strategy(), pads_seed in prop::collection::vec(0i64..3, 8), mode in 0usize..4) {
        let x = iota(&shape);
        let r = shape.len();
        let mode = [PadMode::Constant, PadMode::Edge, PadMode::Reflect, PadMode::Wrap][mode];
        // Reflect pads wider than the axis are allowed (numpy mirrors again).
        let pads: Vec<i64> = pads_seed[..2 * r].to_vec();
        let padded = run_op(Op::Pad { mode }, &x, vec![ints(&pads)], 1).unwrap().remove(0);
        let negative: Vec<i64> = pads.iter().map(|p| -p).collect();
        let cropped = run_op(Op::Pad { mode: PadMode::Constant }, &padded, vec![ints(&negative)], 1).unwrap().remove(0);
        prop_assert_eq!(cropped, x.clone());
        let starts: Vec<i64> = pads[..r].to_vec();
        let ends: Vec<i64> = (0..r).map(|i| pads[i] + shape[i] as i64).collect();
        let sliced = run_op(Op::Slice, &padded, vec![ints(&starts), ints(&ends)], 1).unwrap().remove(0);
        prop_assert_eq!(sliced, x);
    }

    #[test]
    fn slice_matches_a_stepped_range(len in 0usize..7, start in -9i64..9, end in -9i64..9, step in prop::sample::select(vec![-3i64, -2, -1, 1, 2, 3])) {
        let x = iota(&[len]);
        let got = run_op(Op::Slice, &x, vec![ints(&[start]), ints(&[end]), None, ints(&[step])], 1).unwrap().remove(0);
        // numpy-style walk with the spec's clamping.
        let n = len as i64;
        let norm = |v: i64| if v < 0 { v + n } else { v };
        let mut want = Vec::new();
        if step > 0 {
            let (mut i, e) = (norm(start).clamp(0, n), norm(end).clamp(0, n));
            while i < e { want.push(i as f32); i += step; }
        } else if n > 0 {
            let (mut i, e) = (norm(start).clamp(0, n - 1), norm(end).clamp(-1, n - 1));
            while i > e { want.push(i as f32); i += step; }
        }
        prop_assert_eq!(got.to_f32_vec(), want);
    }

    #[test]
    fn integer_nearest_upsampling_repeats(shape in shape_strategy(), k in 1usize..4) {
        let x = iota(&shape);
        let scales: Vec<f32> = (0..shape.len()).map(|i| if i == shape.len() - 1 { k as f32 } else { 1.0 }).collect();
        for transform in [CoordinateTransform::Asymmetric, CoordinateTransform::HalfPixel] {
            let attrs = ResizeAttrs::new(ResizeMode::Nearest, transform, NearestMode::Floor);
            let scales = Some(Tensor::from_f32(&[shape.len()], scales.clone()).unwrap());
            let y = run_op(Op::Resize(attrs), &x, vec![None, scales], 1).unwrap().remove(0);
            let last = *shape.last().unwrap();
            let want: Vec<f32> = x.to_f32_vec().chunks(last).flat_map(|row| row.iter().flat_map(|&v| std::iter::repeat_n(v, k))).collect();
            if transform == CoordinateTransform::Asymmetric {
                prop_assert_eq!(y.to_f32_vec(), want);
            } else {
                prop_assert_eq!(y.shape().last().copied(), Some(last * k));
            }
        }
    }

    #[test]
    fn expand_agrees_with_tile(rows in 1usize..4, cols in 1usize..4) {
        let x = iota(&[1, cols]);
        let expanded = run_op(Op::Expand, &x, vec![ints(&[rows as i64, 1])], 1).unwrap().remove(0);
        let tiled = run_op(Op::Tile, &x, vec![ints(&[rows as i64, 1])], 1).unwrap().remove(0);
        prop_assert_eq!(expanded, tiled);
    }
}

fn concat(parts: &[Tensor], axis: i64) -> Tensor {
    let mut g = Graph::new("c");
    let inputs: Vec<_> = parts.iter().enumerate().map(|(i, t)| Some(g.add_const(&format!("p{i}"), t.clone()))).collect();
    let root = g.root;
    let node = g.add_node(root, "cat", Op::Concat { axis }, inputs, vec![("y".into(), TensorType::scalar(parts[0].dtype()))]);
    g.regions[root].outputs = g.nodes[node].outputs.clone();
    infer::run(&mut g).unwrap();
    interp::run(&g, &HashMap::new()).unwrap().remove(0)
}

#[test]
fn linear_resize_matches_the_reference_values() {
    // onnx test_resize_upsample_scales_linear_align_corners, first row.
    let x = Tensor::from_f32(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let attrs = ResizeAttrs::new(ResizeMode::Linear, CoordinateTransform::AlignCorners, NearestMode::Floor);
    let scales = Some(Tensor::from_f32(&[4], vec![1.0, 1.0, 2.0, 2.0]).unwrap());
    let y = run_op(Op::Resize(attrs), &x, vec![None, scales], 1).unwrap().remove(0).to_f32_vec();
    let want = [1.0, 1.333_333_3, 1.666_666_7, 2.0];
    for (g, w) in y[..4].iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{y:?}");
    }
}

/// Runs a Resize whose `scales` or `sizes` is a graph input, as when they are computed.
fn resize_with_runtime_operand(attrs: ResizeAttrs, x: &Tensor, operand: Tensor) -> Result<Tensor, String> {
    let mut g = Graph::new("t");
    let xv = g.add_input("x", TensorType::fixed(x.dtype(), x.shape()));
    let ov = g.add_input("o", TensorType::fixed(operand.dtype(), operand.shape()));
    let inputs = if operand.dtype() == d2nn_runtime::DType::F32 { vec![Some(xv), None, Some(ov)] } else { vec![Some(xv), None, None, Some(ov)] };
    let root = g.root;
    let node = g.add_node(root, "n", Op::Resize(attrs), inputs, vec![("y".into(), TensorType::scalar(x.dtype()))]);
    g.regions[root].outputs = g.nodes[node].outputs.clone();
    infer::run(&mut g).map_err(|e| e.to_string())?;
    let feeds = HashMap::from([("x".to_string(), x.clone()), ("o".to_string(), operand)]);
    interp::run(&g, &feeds).map(|mut v| v.remove(0)).map_err(|e| e.to_string())
}

#[test]
fn resize_axes_pair_runtime_scales_with_the_listed_axes() {
    let attrs = ResizeAttrs { axes: Some(vec![1, 0]), ..ResizeAttrs::new(ResizeMode::Nearest, CoordinateTransform::Asymmetric, NearestMode::Floor) };
    let scales = Tensor::from_f32(&[2], vec![2.0, 1.0]).unwrap();
    let y = resize_with_runtime_operand(attrs.clone(), &iota(&[2, 2]), scales).unwrap();
    assert_eq!(y, Tensor::from_f32(&[2, 4], vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).unwrap());
    let err = resize_with_runtime_operand(attrs, &iota(&[2, 2]), Tensor::from_f32(&[3], vec![1.0; 3]).unwrap()).unwrap_err();
    assert!(err.contains("3 elements for 2 resized axes"), "{err}");
}

#[test]
fn resize_keeps_the_aspect_ratio_as_the_reference_does() {
    let base = ResizeAttrs::new(ResizeMode::Nearest, CoordinateTransform::HalfPixel, NearestMode::RoundPreferFloor);
    let sizes = Tensor::vec_i64(vec![5, 5]);
    let not_larger = ResizeAttrs { keep_aspect_ratio: crate::ir::AspectRatioPolicy::NotLarger, ..base.clone() };
    let y = resize_with_runtime_operand(not_larger, &iota(&[2, 3]), sizes.clone()).unwrap();
    // One scale, min(5/2, 5/3): 2×3 becomes 3×5.
    assert_eq!(y, Tensor::from_f32(&[3, 5], vec![0., 0., 1., 2., 2., 0., 0., 1., 2., 2., 3., 3., 4., 5., 5.]).unwrap());
    let not_smaller = ResizeAttrs { keep_aspect_ratio: crate::ir::AspectRatioPolicy::NotSmaller, ..base };
    let y = resize_with_runtime_operand(not_smaller.clone(), &iota(&[2, 3]), sizes.clone()).unwrap();
    assert_eq!(y.shape(), &[5, 8]);
    assert_eq!(y.to_f32_vec()[..8], [0., 0., 0., 1., 1., 2., 2., 2.]);
    // With constant sizes, inference knows the kept-aspect shape.
    let y = run_op(Op::Resize(not_smaller), &iota(&[2, 3]), vec![None, None, Some(sizes)], 1).unwrap().remove(0);
    assert_eq!(y.shape(), &[5, 8]);
}

#[test]
fn half_pixel_symmetric_centres_a_rounded_output() {
    // The reference: [0, 1, 4, 9, 16] scaled by 0.7 (3 outputs of a nominal 3.5).
    let x = Tensor::from_f32(&[1, 5], vec![0.0, 1.0, 4.0, 9.0, 16.0]).unwrap();
    let scales = Some(Tensor::from_f32(&[2], vec![1.0, 0.7]).unwrap());
    let expect = |transform, want: [f32; 3]| {
        let attrs = ResizeAttrs::new(ResizeMode::Linear, transform, NearestMode::Floor);
        let y = run_op(Op::Resize(attrs), &x, vec![None, scales.clone()], 1).unwrap().remove(0).to_f32_vec();
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{transform:?}: {y:?}");
        }
    };
    expect(CoordinateTransform::HalfPixelSymmetric, [0.571_428_55, 4.0, 12.0]);
    expect(CoordinateTransform::HalfPixel, [0.214_285_73, 2.928_571_5, 9.5]);
}

#[test]
fn cubic_exclude_outside_renormalises_the_inner_taps() {
    // The reference with a = -0.5, exclude_outside = 1, upsampling [0, 1, 2, 3] by 2.
    let attrs = ResizeAttrs { exclude_outside: true, ..ResizeAttrs::new(ResizeMode::Cubic { coeff_a: -0.5 }, CoordinateTransform::HalfPixel, NearestMode::Floor) };
    let scales = Some(Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap());
    let y = run_op(Op::Resize(attrs), &iota(&[1, 4]), vec![None, scales], 1).unwrap().remove(0).to_f32_vec();
    let want = [-0.088_235_29, 0.167_883_21, 0.709_923_7, 1.25, 1.75, 2.290_076_3, 2.832_116_8, 3.088_235_3];
    for (g, w) in y.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{y:?}");
    }
}

#[test]
fn wrap_pad_repeats_the_axis_like_numpy() {
    // np.pad([0, 1, 2], (4, 2), mode="wrap")
    let y = run_op(Op::Pad { mode: PadMode::Wrap }, &iota(&[3]), vec![ints(&[4, 2])], 1).unwrap().remove(0);
    assert_eq!(y.to_f32_vec(), vec![2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]);
    // A negative begin pad crops first; the end then wraps over what is kept.
    let y = run_op(Op::Pad { mode: PadMode::Wrap }, &iota(&[4]), vec![ints(&[-1, 2])], 1).unwrap().remove(0);
    assert_eq!(y.to_f32_vec(), vec![1.0, 2.0, 3.0, 1.0, 2.0]);
    let err = run_op(Op::Pad { mode: PadMode::Wrap }, &iota(&[2]), vec![ints(&[-2, 1])], 1).unwrap_err();
    assert!(err.contains("no element"), "{err}");
}

#[test]
fn gather_reads_negative_indices_from_the_end_and_rejects_out_of_range() {
    let x = iota(&[3, 2]);
    let idx = Some(Tensor::from_i64(&[2, 1], vec![-1, 0]).unwrap());
    let y = run_op(Op::Gather { axis: 0 }, &x, vec![idx], 1).unwrap().remove(0);
    assert_eq!(y, Tensor::from_f32(&[2, 1, 2], vec![4.0, 5.0, 0.0, 1.0]).unwrap());
    let err = run_op(Op::Gather { axis: 0 }, &x, vec![ints(&[3])], 1).unwrap_err();
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn range_counts_like_the_spec() {
    let range = |s: Tensor, l: Tensor, d: Tensor| {
        let mut g = Graph::new("r");
        let inputs = [s, l, d].into_iter().enumerate().map(|(i, t)| Some(g.add_const(&format!("a{i}"), t))).collect();
        let root = g.root;
        let node = g.add_node(root, "range", Op::Range, inputs, vec![("y".into(), TensorType::scalar(d2nn_runtime::DType::F32))]);
        g.regions[root].outputs = g.nodes[node].outputs.clone();
        infer::run(&mut g).unwrap();
        interp::run(&g, &HashMap::new()).unwrap().remove(0)
    };
    let i = Tensor::scalar_i64;
    assert_eq!(range(i(10), i(4), i(-3)), Tensor::vec_i64(vec![10, 7]));
    assert_eq!(range(i(1), i(1), i(2)), Tensor::vec_i64(vec![]));
    let f = Tensor::scalar_f32;
    assert_eq!(range(f(1.0), f(2.0), f(0.25)).to_f32_vec(), vec![1.0, 1.25, 1.5, 1.75]);
}

#[test]
fn absurd_runtime_shapes_are_errors_not_aborts() {
    let huge = Tensor::vec_i64(vec![1 << 40, 1 << 40]);
    let fill = Op::ConstantOfShape { value: Tensor::from_f32(&[1], vec![0.0]).unwrap() };
    let err = run_op(fill, &huge, vec![], 1).unwrap_err();
    assert!(err.contains("more than"), "{err}");
    let err = run_op(Op::Tile, &iota(&[2]), vec![ints(&[i64::MAX])], 1).unwrap_err();
    assert!(err.contains("overflow") || err.contains("more than"), "{err}");
}
