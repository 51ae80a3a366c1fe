//! Elementwise kernels against naive references written from the definitions.

use super::*;
use proptest::prelude::*;

/// Values that exercise signs, zeros, large magnitudes and NaN.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -8.0f32..8.0,
        1 => -100.0f32..100.0,
        1 => prop::sample::select(vec![0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-30, -1e-30, 0.5, -0.5, 2.5]),
    ]
}

fn unary_op() -> impl Strategy<Value = Unary> {
    let param = -2.0f32..2.0;
    prop_oneof![
        Just(Unary::Relu),
        param.clone().prop_map(|alpha| Unary::LeakyRelu { alpha }),
        Just(Unary::Sigmoid),
        (param.clone(), param.clone()).prop_map(|(alpha, beta)| Unary::HardSigmoid { alpha, beta }),
        Just(Unary::HardSwish),
        Just(Unary::Tanh),
        (param.clone(), param.clone()).prop_map(|(min, max)| Unary::Clip { min, max }),
        Just(Unary::Clip { min: f32::NEG_INFINITY, max: 6.0 }),
        param.clone().prop_map(|alpha| Unary::Elu { alpha }),
        (param.clone(), param).prop_map(|(alpha, gamma)| Unary::Selu { alpha, gamma }),
        Just(Unary::Softplus),
        Just(Unary::Exp),
        Just(Unary::Log),
        Just(Unary::Sqrt),
        Just(Unary::Reciprocal),
        Just(Unary::Neg),
        Just(Unary::Abs),
        Just(Unary::Floor),
        Just(Unary::Ceil),
        Just(Unary::Round),
        Just(Unary::Sign),
    ]
}

/// The op from its textbook definition, in f64.
fn reference(op: Unary, x: f32) -> f64 {
    let v = f64::from(x);
    let clamp01 = |t: f64| t.clamp(0.0, 1.0);
    match op {
        Unary::Relu => if v < 0.0 { 0.0 } else { v },
        Unary::LeakyRelu { alpha } => if v < 0.0 { f64::from(alpha * x) } else { v },
        Unary::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Unary::HardSigmoid { alpha, beta } => clamp01(f64::from(alpha) * v + f64::from(beta)),
        Unary::HardSwish => v * clamp01(v / 6.0 + 0.5),
        Unary::Tanh => v.tanh(),
        Unary::Clip { min, max } => {
            let (min, max) = (f64::from(min), f64::from(max));
            if v.is_nan() { v } else if v > max || min > max { max } else if v < min { min } else { v }
        }
        Unary::Elu { alpha } => if v > 0.0 { v } else { f64::from(alpha) * (v.exp() - 1.0) },
        Unary::Selu { alpha, gamma } => f64::from(gamma) * if v > 0.0 { v } else { f64::from(alpha) * (v.exp() - 1.0) },
        Unary::Softplus => if v > 30.0 { v } else { (1.0 + v.exp()).ln() },
        Unary::Exp => v.exp(),
        Unary::Log => v.ln(),
        Unary::Sqrt => v.sqrt(),
        Unary::Reciprocal => 1.0 / v,
        Unary::Neg => -v,
        Unary::Abs => v.abs(),
        Unary::Floor => v.floor(),
        Unary::Ceil => v.ceil(),
        Unary::Round => {
            let r = v.round();
            if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - v.signum() } else { r }
        }
        Unary::Sign => if v.is_nan() || v == 0.0 { v } else { v.signum() },
    }
}

/// Close within 1e-6 relative (or 1e-7 absolute where the naive reference
/// itself cancels, e.g. `eˣ - 1` near 0); NaN matches NaN; infinities exactly.
fn close(got: f32, want: f64) -> bool {
    let got = f64::from(got);
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    if got.is_infinite() || want.is_infinite() || want.abs() > f64::from(f32::MAX) {
        return got == want || (got.is_infinite() && (want as f32).is_infinite() && got.signum() == want.signum());
    }
    (got - want).abs() <= 1e-6 * want.abs() + 1e-7
}

proptest! {
    #[test]
    fn in_place_equals_separate(op in unary_op(), xs in prop::collection::vec(value(), 0..40)) {
        let mut separate = vec![0.0f32; xs.len()];
        unary(op, &xs, &mut separate).unwrap();
        let mut data = xs.clone();
        unary_in_place(op, &mut data);
        prop_assert_eq!(data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), separate.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn unary_matches_definition(op in unary_op(), xs in prop::collection::vec(value(), 0..70)) {
        let mut out = vec![0.0; xs.len()];
        unary(op, &xs, &mut out).unwrap();
        for (&x, &y) in xs.iter().zip(&out) {
            prop_assert!(close(y, reference(op, x)), "{op:?}({x}) = {y}, want {}", reference(op, x));
        }
    }

    /// Random broadcastable shape pairs: the output index, reduced modulo
    /// each operand's own dims, picks the operands (numpy's definition).
    #[test]
    fn binary_matches_index_definition((sa, sb) in broadcastable(), op in binary_op(), seed in any::<u32>()) {
        let count = |s: &[usize]| s.iter().product::<usize>();
        let fill = |n: usize, k: u32| -> Vec<f32> {
            (0..n).map(|i| {
                let h = (i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(k));
                if h % 17 == 0 { f32::NAN } else { (h % 2001) as f32 / 100.0 - 10.0 }
            }).collect()
        };
        let (a, b) = (fill(count(&sa), 1), fill(count(&sb), 7));
        let layout = BroadcastLayout::new(&sa, &sb).unwrap();
        let rank = sa.len().max(sb.len());
        let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
        let (pa, pb) = (pad(&sa), pad(&sb));
        let out_shape: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| if x == 1 { y } else { x }).collect();
        let mut out = vec![0.0; count(&out_shape)];
        binary(op, &a, &b, &layout, &mut out).unwrap();
        for (flat, &got) in out.iter().enumerate() {
            // Decompose the flat index, then re-linearise in each operand.
            let (mut rest, mut ia, mut ib, mut step_a, mut step_b) = (flat, 0, 0, 1, 1);
            for axis in (0..rank).rev() {
                let i = rest % out_shape[axis];
                rest /= out_shape[axis];
                ia += (i % pa[axis]) * step_a;
                ib += (i % pb[axis]) * step_b;
                step_a *= pa[axis];
                step_b *= pb[axis];
            }
            let (x, y) = (a[ia], b[ib]);
            let want = match op {
                Binary::Add => x + y,
                Binary::Sub => x - y,
                Binary::Mul => x * y,
                Binary::Div => x / y,
                Binary::Max => if x.is_nan() || y.is_nan() { f32::NAN } else if x >= y { x } else { y },
                Binary::Min => if x.is_nan() || y.is_nan() { f32::NAN } else if x <= y { x } else { y },
                Binary::PRelu => if x < 0.0 { y * x } else { x },
            };
            prop_assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()) || got == want,
                "{op:?} at {flat}: got {got}, want {want} ({sa:?} ∘ {sb:?}, layout {layout:?})");
        }
    }
}

fn binary_op() -> impl Strategy<Value = Binary> {
    prop::sample::select(vec![Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Max, Binary::Min, Binary::PRelu])
}

/// Two shapes that broadcast: a common shape with dims set to 1 on either
/// side and a random number of leading dims dropped; odd sizes and 1s.
fn broadcastable() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec((prop::sample::select(vec![0usize, 1, 2, 3, 5, 7, 16]), any::<bool>(), any::<bool>()), 0..5).prop_flat_map(|dims| {
        let a: Vec<usize> = dims.iter().map(|&(d, one_a, _)| if one_a { 1 } else { d }).collect();
        let b: Vec<usize> = dims.iter().map(|&(d, _, one_b)| if one_b { 1 } else { d }).collect();
        let rank = dims.len();
        (Just(a), Just(b), 0..=rank, 0..=rank).prop_map(|(a, b, da, db)| (a[da..].to_vec(), b[db..].to_vec()))
    })
}

#[test]
fn common_patterns_coalesce_to_one_fast_row_kind() {
    // Same shape: one contiguous axis.
    let same = BroadcastLayout::new(&[2, 3, 4, 5], &[2, 3, 4, 5]).unwrap();
    assert_eq!((same.dims, same.a_strides, same.b_strides), (vec![120], vec![1], vec![1]));
    // Scalar operand: one axis, b broadcast.
    let scalar = BroadcastLayout::new(&[2, 3, 4], &[]).unwrap();
    assert_eq!((scalar.dims, scalar.a_strides, scalar.b_strides), (vec![24], vec![1], vec![0]));
    // Per-channel over NCHW: rows are whole planes with a constant b.
    let channel = BroadcastLayout::new(&[2, 3, 4, 5], &[1, 3, 1, 1]).unwrap();
    assert_eq!((channel.dims, channel.a_strides, channel.b_strides), (vec![2, 3, 20], vec![60, 20, 1], vec![0, 1, 0]));
    // Row vector over the last dim.
    let row = BroadcastLayout::new(&[6, 1, 7], &[7]).unwrap();
    assert_eq!((row.dims, row.a_strides, row.b_strides), (vec![6, 7], vec![7, 1], vec![0, 1]));
    assert!(BroadcastLayout::new(&[2, 3], &[4]).is_none());
}

#[test]
fn bad_calls_are_errors_not_panics() {
    let layout = BroadcastLayout::new(&[4], &[4]).unwrap();
    let mut out = [0.0; 4];
    assert!(matches!(binary(Binary::Add, &[1.0; 3], &[1.0; 4], &layout, &mut out), Err(KernelError::Geometry(_))));
    assert!(matches!(binary(Binary::Add, &[1.0; 4], &[1.0; 4], &layout, &mut out[..3]), Err(KernelError::Length { .. })));
    let bad = BroadcastLayout { dims: vec![4], a_strides: vec![1], b_strides: vec![] };
    assert!(binary(Binary::Add, &[1.0; 4], &[1.0; 4], &bad, &mut out).is_err());
    assert!(unary(Unary::Relu, &[1.0; 3], &mut out).is_err());
}

#[test]
fn rank_zero_and_empty() {
    let layout = BroadcastLayout::new(&[], &[]).unwrap();
    let mut out = [0.0];
    binary(Binary::Mul, &[3.0], &[4.0], &layout, &mut out).unwrap();
    assert_eq!(out, [12.0]);
    let empty = BroadcastLayout::new(&[0, 3], &[3]).unwrap();
    binary(Binary::Add, &[], &[1.0, 2.0, 3.0], &empty, &mut []).unwrap();
}
