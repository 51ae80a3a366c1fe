//! Comparisons, Where and the logical ops against the definition: each
//! operand indexed by the output index reduced modulo its own
//! (right-aligned) dims.

use super::*;
use crate::kernels::elementwise::BroadcastLayout;
use proptest::prelude::*;

/// Shapes of `k` operands that broadcast together: a common shape with
/// some dims set to 1 per operand and some leading dims dropped.
fn broadcastable(k: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec((0usize..4, prop::collection::vec(any::<bool>(), k)), 0..4).prop_flat_map(move |dims| {
        let rank = dims.len();
        let shapes: Vec<Vec<usize>> = (0..k).map(|o| dims.iter().map(|(d, ones)| if ones[o] { 1 } else { *d }).collect()).collect();
        (Just(shapes), prop::collection::vec(0..=rank, k)).prop_map(|(shapes, drops)| shapes.iter().zip(drops).map(|(s, d)| s[d..].to_vec()).collect())
    })
}

fn out_shape(shapes: &[Vec<usize>]) -> Vec<usize> {
    let rank = shapes.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            }
        }
    }
    out
}

/// Row-major strides of `shape` aligned to `out`, 0 where it is 1.
fn strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let skip = out.len() - shape.len();
    let mut st = vec![0; out.len()];
    let mut step = 1;
    for i in (0..shape.len()).rev() {
        st[skip + i] = if shape[i] == 1 { 0 } else { step };
        step *= shape[i];
    }
    st
}

/// The flat element of `shape` that output element `flat` reads.
fn source(flat: usize, out: &[usize], shape: &[usize]) -> usize {
    let mut index = vec![0; out.len()];
    let mut rest = flat;
    for axis in (0..out.len()).rev() {
        index[axis] = rest % out[axis];
        rest /= out[axis];
    }
    let skip = out.len() - shape.len();
    shape.iter().enumerate().fold(0, |acc, (i, &d)| acc * d + if d == 1 { 0 } else { index[skip + i] })
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            match h % 11 {
                0 => f32::NAN,
                1 => -0.0,
                2 => 0.0,
                _ => (h % 7) as f32 - 3.0,
            }
        })
        .collect()
}

const OPS: [Compare; 5] = [Compare::Greater, Compare::Less, Compare::GreaterOrEqual, Compare::LessOrEqual, Compare::Equal];

const BOOL_OPS: [BoolOp; 3] = [BoolOp::And, BoolOp::Or, BoolOp::Xor];

/// Bool bytes, mostly 0/1 but sometimes another non-zero byte, which must
/// count as true.
fn bool_bytes(n: usize, seed: u64) -> Vec<u8> {
    (0..n as u64)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            match h % 9 {
                0 => 2,
                1 => 255,
                k => u8::from(k % 2 == 0),
            }
        })
        .collect()
}

/// The connective written out on truth values, independently of `BoolOp::apply`.
fn naive(op: BoolOp, x: u8, y: u8) -> u8 {
    let (p, q) = (x != 0, y != 0);
    u8::from(match op {
        BoolOp::And => p && q,
        BoolOp::Or => p || q,
        BoolOp::Xor => p != q,
    })
}

proptest! {
    #[test]
    fn compare_matches_the_definition(shapes in broadcastable(2), op in prop::sample::select(OPS.to_vec()), seed in any::<u64>(), coalesce in any::<bool>()) {
        let out = out_shape(&shapes);
        let (a, b) = (values(shapes[0].iter().product(), seed), values(shapes[1].iter().product(), !seed));
        let total: usize = out.iter().product();
        let layout = if coalesce {
            BroadcastLayout::new(&shapes[0], &shapes[1]).unwrap()
        } else {
            BroadcastLayout { dims: out.clone(), a_strides: strides(&shapes[0], &out), b_strides: strides(&shapes[1], &out) }
        };
        let mut got = vec![7u8; total];
        compare_strided(op, &a, &b, &layout.dims, &layout.a_strides, &layout.b_strides, &mut got).unwrap();
        for (i, &g) in got.iter().enumerate() {
            let (x, y) = (a[source(i, &out, &shapes[0])], b[source(i, &out, &shapes[1])]);
            prop_assert_eq!(g, u8::from(op.apply(x, y)), "element {} of {:?}: {:?} {:?} {:?}", i, out, x, op, y);
        }
        // Integers compare the same way.
        let (ai, bi): (Vec<i64>, Vec<i64>) = (a.iter().map(|&v| v as i64).collect(), b.iter().map(|&v| v as i64).collect());
        compare_strided(op, &ai, &bi, &layout.dims, &layout.a_strides, &layout.b_strides, &mut got).unwrap();
        for (i, &g) in got.iter().enumerate() {
            prop_assert_eq!(g, u8::from(op.apply(ai[source(i, &out, &shapes[0])], bi[source(i, &out, &shapes[1])])));
        }
    }

    #[test]
    fn where_matches_the_definition(shapes in broadcastable(3), seed in any::<u64>()) {
        let out = out_shape(&shapes);
        let cond: Vec<u8> = values(shapes[0].iter().product(), seed).iter().map(|&v| u8::from(v > 0.0)).collect();
        let x: Vec<i32> = (0..shapes[1].iter().product::<usize>() as i32).collect();
        let y: Vec<i32> = (0..shapes[2].iter().product::<usize>() as i32).map(|v| -1 - v).collect();
        let st: Vec<Vec<usize>> = shapes.iter().map(|s| strides(s, &out)).collect();
        let mut got = vec![i32::MIN; out.iter().product()];
        where_strided(&cond, &x, &y, &out, [&st[0], &st[1], &st[2]], &mut got).unwrap();
        for (i, &g) in got.iter().enumerate() {
            let want = if cond[source(i, &out, &shapes[0])] != 0 { x[source(i, &out, &shapes[1])] } else { y[source(i, &out, &shapes[2])] };
            prop_assert_eq!(g, want, "element {} of {:?}", i, out);
        }
    }
}

proptest! {
    #[test]
    fn bool_ops_match_the_definition(shapes in broadcastable(2), op in prop::sample::select(BOOL_OPS.to_vec()), seed in any::<u64>(), coalesce in any::<bool>()) {
        let out = out_shape(&shapes);
        let (a, b) = (bool_bytes(shapes[0].iter().product(), seed), bool_bytes(shapes[1].iter().product(), !seed));
        let total: usize = out.iter().product();
        // Both the merged layout the plan computes and the plain per-axis one.
        let layout = if coalesce {
            BroadcastLayout::new(&shapes[0], &shapes[1]).unwrap()
        } else {
            BroadcastLayout { dims: out.clone(), a_strides: strides(&shapes[0], &out), b_strides: strides(&shapes[1], &out) }
        };
        let mut got = vec![7u8; total];
        bool_strided(op, &a, &b, &layout.dims, &layout.a_strides, &layout.b_strides, &mut got).unwrap();
        for (i, &g) in got.iter().enumerate() {
            let (x, y) = (a[source(i, &out, &shapes[0])], b[source(i, &out, &shapes[1])]);
            prop_assert_eq!(g, naive(op, x, y), "element {} of {:?}: {} {:?} {}", i, out, x, op, y);
        }
    }

    #[test]
    fn not_matches_the_definition(n in 0usize..200, seed in any::<u64>()) {
        let x = bool_bytes(n, seed);
        let mut got = vec![7u8; n];
        not(&x, &mut got).unwrap();
        for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
            prop_assert_eq!(g, u8::from(v == 0), "element {}", i);
        }
    }
}

#[test]
fn bool_op_truth_tables() {
    let (a, b) = ([0u8, 0, 1, 1], [0u8, 1, 0, 1]);
    let mut out = [9u8; 4];
    for (op, want) in [(BoolOp::And, [0, 0, 0, 1]), (BoolOp::Or, [0, 1, 1, 1]), (BoolOp::Xor, [0, 1, 1, 0])] {
        bool_strided(op, &a, &b, &[4], &[1], &[1], &mut out).unwrap();
        assert_eq!(out, want, "{op:?}");
        for (i, &w) in want.iter().enumerate() {
            assert_eq!(u8::from(op.apply(a[i] != 0, b[i] != 0)), w, "{op:?}.apply, element {i}");
        }
    }
    let mut negated = [9u8; 4];
    not(&[0, 1, 2, 255], &mut negated).unwrap();
    assert_eq!(negated, [1, 0, 0, 0]);
}

#[test]
fn bool_ops_broadcast_scalars_rows_and_columns() {
    let mut out = [9u8];
    bool_strided(BoolOp::Xor, &[1], &[0], &[], &[], &[], &mut out).unwrap();
    assert_eq!(out, [1]);
    // [2, 3] And a [3] row: the row's stride 0 along the outer axis.
    let mut grid = [9u8; 6];
    bool_strided(BoolOp::And, &[1, 1, 0, 0, 1, 1], &[1, 0, 1], &[2, 3], &[3, 1], &[0, 1], &mut grid).unwrap();
    assert_eq!(grid, [1, 0, 0, 0, 0, 1]);
    // A [2, 1] column Or a [3] row.
    bool_strided(BoolOp::Or, &[0, 1], &[0, 0, 1], &[2, 3], &[1, 0], &[0, 1], &mut grid).unwrap();
    assert_eq!(grid, [0, 0, 1, 1, 1, 1]);
    // A scalar against a row, either side.
    bool_strided(BoolOp::Xor, &[1], &[0, 1, 0], &[3], &[0], &[1], &mut grid[..3]).unwrap();
    assert_eq!(grid[..3], [1, 0, 1]);
    bool_strided(BoolOp::And, &[0, 3, 1], &[7], &[3], &[1], &[0], &mut grid[..3]).unwrap();
    assert_eq!(grid[..3], [0, 1, 1]);
}

#[test]
fn empty_bool_tensors_and_bad_layouts() {
    // Empty outputs read nothing, whatever the operands hold.
    assert!(bool_strided(BoolOp::And, &[], &[], &[0, 3], &[3, 1], &[3, 1], &mut []).is_ok());
    assert!(bool_strided(BoolOp::Or, &[], &[1, 0, 1], &[0, 3], &[3, 1], &[0, 1], &mut []).is_ok());
    assert!(not(&[], &mut []).is_ok());
    let mut out = [0u8; 4];
    assert!(bool_strided(BoolOp::Or, &[0; 3], &[0; 4], &[4], &[1], &[1], &mut out).is_err());
    assert!(bool_strided(BoolOp::Or, &[0; 4], &[0; 4], &[4], &[1], &[1, 1], &mut out).is_err());
    assert!(bool_strided(BoolOp::Xor, &[0; 4], &[0; 4], &[2, 2], &[2, 1], &[2, 1], &mut out[..3]).is_err());
    assert!(not(&[0; 3], &mut out).is_err());
}

#[test]
fn nan_compares_false_and_signed_zeros_are_equal() {
    let a = [f32::NAN, -0.0, 1.0];
    let b = [f32::NAN, 0.0, f32::NAN];
    let mut out = [9u8; 3];
    for (op, want) in [(Compare::Equal, [0, 1, 0]), (Compare::GreaterOrEqual, [0, 1, 0]), (Compare::Greater, [0, 0, 0]), (Compare::LessOrEqual, [0, 1, 0])] {
        compare_strided(op, &a, &b, &[3], &[1], &[1], &mut out).unwrap();
        assert_eq!(out, want, "{op:?}");
    }
}

#[test]
fn scalars_and_any_nonzero_condition() {
    let mut out = [0u8];
    compare_strided(Compare::Greater, &[2.0f32], &[1.0], &[], &[], &[], &mut out).unwrap();
    assert_eq!(out, [1]);
    let mut picked = [0.0f32; 3];
    where_strided(&[0, 2, 255], &[1.0, 2.0, 3.0], &[-1.0], &[3], [&[1], &[1], &[0]], &mut picked).unwrap();
    assert_eq!(picked, [-1.0, 2.0, 3.0]);
}

#[test]
fn bad_layouts_are_errors() {
    let mut out = [0u8; 4];
    assert!(compare_strided(Compare::Less, &[0.0f32; 3], &[0.0; 4], &[4], &[1], &[1], &mut out).is_err());
    assert!(compare_strided(Compare::Less, &[0.0f32; 4], &[0.0; 4], &[4], &[1], &[1, 1], &mut out).is_err());
    assert!(compare_strided(Compare::Less, &[0.0f32; 4], &[0.0; 4], &[2, 2], &[2, 1], &[2, 1], &mut out[..3]).is_err());
    let mut y = [0i64; 2];
    assert!(where_strided(&[1], &[1i64, 2], &[3, 4], &[2], [&[0], &[1], &[2]], &mut y).is_err());
    assert!(compare_strided(Compare::Less, &[0.0f32; 0], &[0.0; 0], &[0, 3], &[3, 1], &[3, 1], &mut []).is_ok());
}
