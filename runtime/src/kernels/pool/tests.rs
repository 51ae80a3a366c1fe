//! Pooling kernels against a naive tap-by-tap reference.

use super::*;
use proptest::prelude::*;

/// How one tap of one axis falls.
#[derive(PartialEq)]
enum Tap {
    Input(usize),
    Padding,
    Overhang,
}

fn tap(a: &PoolAxis, o: usize, k: usize) -> Tap {
    let p = (o * a.stride + k * a.dilation) as i64 - a.pad_begin;
    if p >= (a.input + a.pad_end) as i64 {
        Tap::Overhang
    } else if p < 0 || p >= a.input as i64 {
        Tap::Padding
    } else {
        Tap::Input(p as usize)
    }
}

/// Every output from its taps, in (kh, kw) order.
fn naive(p: &Pool2d, planes: usize, x: &[f32]) -> Vec<f32> {
    let mut out = Vec::new();
    for plane in 0..planes {
        for oh in 0..p.h.output {
            for ow in 0..p.w.output {
                let (mut sum, mut inputs, mut pads, mut max) = (0f64, 0usize, 0usize, f32::NAN);
                for kh in 0..p.h.kernel {
                    for kw in 0..p.w.kernel {
                        match (tap(&p.h, oh, kh), tap(&p.w, ow, kw)) {
                            (Tap::Overhang, _) | (_, Tap::Overhang) => {}
                            (Tap::Input(ih), Tap::Input(iw)) => {
                                let v = x[(plane * p.h.input + ih) * p.w.input + iw];
                                sum += f64::from(v);
                                inputs += 1;
                                if !v.is_nan() && (max.is_nan() || v > max) {
                                    max = v;
                                }
                            }
                            _ => pads += 1,
                        }
                    }
                }
                out.push(match p.kind {
                    PoolKind::Max => max,
                    PoolKind::Average { count_include_pad: true } => (sum / (inputs + pads) as f64) as f32,
                    PoolKind::Average { count_include_pad: false } => (sum / inputs as f64) as f32,
                });
            }
        }
    }
    out
}

/// An axis with its output size from the explicit-pads formula (floor or
/// ceil mode), or a `SAME` pool whose kernel is below the stride (negative
/// begin pad).
fn axis() -> impl Strategy<Value = PoolAxis> {
    let explicit = (1usize..10, 1usize..4, 1usize..4, 1usize..3, 0usize..3, 0usize..3, any::<bool>()).prop_filter_map(
        "window larger than the padded input",
        |(input, kernel, stride, dilation, pad_begin, pad_end, ceil)| {
            let reach = dilation * (kernel - 1) + 1;
            let padded = input + pad_begin + pad_end;
            let span = padded.checked_sub(reach)?;
            let mut output = if ceil { span.div_ceil(stride) } else { span / stride } + 1;
            if ceil && (output - 1) * stride >= input + pad_begin {
                output -= 1;
            }
            Some(PoolAxis { input, output, kernel, stride, dilation, pad_begin: pad_begin as i64, pad_end })
        },
    );
    let same_shifted = (5usize..12, 3usize..6).prop_map(|(input, stride)| {
        let output = input.div_ceil(stride);
        let total = (output as i64 - 1) * stride as i64 - input as i64 + 1;
        PoolAxis { input, output, kernel: 1, stride, dilation: 1, pad_begin: total / 2, pad_end: (total - total / 2).max(0) as usize }
    });
    prop_oneof![4 => explicit, 1 => same_shifted]
}

fn kind() -> impl Strategy<Value = PoolKind> {
    prop_oneof![Just(PoolKind::Max), any::<bool>().prop_map(|count_include_pad| PoolKind::Average { count_include_pad })]
}

proptest! {
    #[test]
    fn pool2d_matches_taps(kind in kind(), h in axis(), w in axis(), one_d in any::<bool>(), planes in 0usize..4, seed in any::<u32>()) {
        let p = Pool2d { kind, h: if one_d { PoolAxis::UNIT } else { h }, w };
        let n = planes * p.h.input * p.w.input;
        let x: Vec<f32> = (0..n)
            .map(|i| {
                let v = (i as u32 ^ seed).wrapping_mul(2654435761);
                if v.is_multiple_of(11) { f32::NAN } else { (v % 200) as f32 / 8.0 - 12.0 }
            })
            .collect();
        let mut out = vec![0.0; planes * p.h.output * p.w.output];
        pool2d(&p, &x, &mut out).unwrap();
        let want = naive(&p, planes, &x);
        for (k, (&got, &want)) in out.iter().zip(&want).enumerate() {
            prop_assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{p:?} output {k}: got {got}, want {want}");
        }
    }

    #[test]
    fn global_pools_match_definition(planes in 0usize..4, plane in 0usize..70, max in any::<bool>(), seed in any::<u32>()) {
        let x: Vec<f32> = (0..planes * plane).map(|i| ((i as u32 ^ seed).wrapping_mul(2654435761) % 1000) as f32 / 7.0 - 70.0).collect();
        let mut out = vec![0.0; planes];
        global_pool(if max { GlobalKind::Max } else { GlobalKind::Average }, plane, &x, &mut out).unwrap();
        for (c, &got) in out.iter().enumerate() {
            let values = &x[c * plane..(c + 1) * plane];
            let want = if plane == 0 {
                f32::NAN // max of nothing, and 0 / 0
            } else if max {
                values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                (values.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32
            };
            prop_assert!((got.is_nan() && want.is_nan()) || (got - want).abs() <= 1e-6 * want.abs(), "plane {c}: got {got}, want {want}");
        }
    }
}

#[test]
fn nan_planes_and_bad_lengths() {
    let mut out = [0.0; 2];
    global_pool(GlobalKind::Max, 2, &[1.0, f32::NAN, 3.0, 2.0], &mut out).unwrap();
    assert!(out[0].is_nan());
    assert_eq!(out[1], 3.0);
    assert!(global_pool(GlobalKind::Average, 2, &[1.0; 3], &mut out).is_err());
    let p = Pool2d { kind: PoolKind::Max, h: PoolAxis::UNIT, w: PoolAxis { input: 4, output: 2, kernel: 2, stride: 2, dilation: 1, pad_begin: 0, pad_end: 0 } };
    assert!(pool2d(&p, &[0.0; 7], &mut [0.0; 4]).is_err());
    assert!(pool2d(&p, &[0.0; 8], &mut [0.0; 3]).is_err());
    let zero_stride = Pool2d { w: PoolAxis { stride: 0, ..p.w }, ..p };
    assert!(pool2d(&zero_stride, &[0.0; 4], &mut [0.0; 2]).is_err());
}
