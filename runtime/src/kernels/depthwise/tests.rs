//! The depthwise kernel against the naive definition, on every instruction
//! set this CPU has, with one and two threads and strips small enough to
//! cross strip boundaries.

use super::*;
use proptest::prelude::*;
use std::sync::OnceLock;

fn isas() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.is_available()).collect()
}

fn pool(threads: usize) -> &'static ThreadPool {
    static ONE: OnceLock<ThreadPool> = OnceLock::new();
    static TWO: OnceLock<ThreadPool> = OnceLock::new();
    match threads {
        1 => ONE.get_or_init(|| ThreadPool::new(1)),
        _ => TWO.get_or_init(|| ThreadPool::new(2)),
    }
}

/// The definition, accumulated in f64; taps outside the input are skipped.
fn naive(d: &Depthwise, w: &[f32], b: Option<&[f32]>, act: Activation, x: &[f32], batch: usize) -> Vec<f32> {
    let c_out = d.channels * d.multiplier;
    let mut y = vec![0.0f32; batch * c_out * d.oh * d.ow];
    for n in 0..batch {
        for co in 0..c_out {
            let ci = co / d.multiplier;
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let mut acc = b.map_or(0.0, |b| b[co] as f64);
                    for ki in 0..d.kh {
                        for kj in 0..d.kw {
                            let iy = (oy * d.stride.0 + ki * d.dilation.0) as isize - d.pad.0 as isize;
                            let ix = (ox * d.stride.1 + kj * d.dilation.1) as isize - d.pad.1 as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < d.h && (ix as usize) < d.w {
                                let xv = x[((n * d.channels + ci) * d.h + iy as usize) * d.w + ix as usize];
                                acc += w[(co * d.kh + ki) * d.kw + kj] as f64 * xv as f64;
                            }
                        }
                    }
                    y[((n * c_out + co) * d.oh + oy) * d.ow + ox] = act.apply(acc as f32);
                }
            }
        }
    }
    y
}

/// Deterministic values in [-1, 1].
fn values(n: usize, seed: u32, salt: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ seed.wrapping_add(salt)) % 97) as f32 / 48.0 - 1.0).collect()
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        Just(Activation::Clip { min: 0.0, max: 0.5 }),
        Just(Activation::LeakyRelu { alpha: 0.1 }),
        Just(Activation::Sigmoid),
    ]
}

/// Checks every ISA, thread count and strip budget against the definition.
fn check(d: &Depthwise, batch: usize, with_bias: bool, act: Activation, seed: u32) -> Result<(), TestCaseError> {
    let c_out = d.channels * d.multiplier;
    let (wt, b, x) = (values(c_out * d.kh * d.kw, seed, 1), values(c_out, seed, 2), values(batch * d.channels * d.h * d.w, seed, 3));
    let bias = with_bias.then_some(b.as_slice());
    let want = naive(d, &wt, bias, act, &x, batch);
    let call = Call { d, weights: &wt, bias, activation: act, x: &x };
    let threads: &[usize] = if cfg!(miri) { &[1] } else { &[1, 2] };
    for isa in isas() {
        for &t in threads {
            // The smallest budget gives one output row per strip.
            for budget in [1, 64, plane::STRIP_FLOATS] {
                let mut y = vec![f32::NAN; want.len()];
                convolve(isa, budget, &call, &mut y, pool(t)).unwrap();
                for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                    prop_assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{:?}, {} threads, budget {}: y[{}] = {} instead of {}", isa, t, budget, i, g, e);
                }
            }
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    let mut c = ProptestConfig { cases: if cfg!(miri) { 3 } else { 256 }, ..ProptestConfig::default() };
    if cfg!(miri) {
        // No file system under Miri's isolation.
        c.failure_persistence = None;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn matches_the_definition(channels in 1usize..4, multiplier in 1usize..3, h in 1usize..9, w in 1usize..40,
                              kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
                              dh in 1usize..3, dw in 1usize..3, ph in 0usize..3, pw in 0usize..3,
                              batch in 1usize..3, with_bias in any::<bool>(), act in activation(), seed in 0u32..1000) {
        let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
        prop_assume!(h + 2 * ph >= eh && w + 2 * pw >= ew);
        let oh = (h + 2 * ph - eh) / sh + 1;
        let ow = (w + 2 * pw - ew) / sw + 1;
        let d = Depthwise { channels, multiplier, h, w, oh, ow, kh, kw, stride: (sh, sw), dilation: (dh, dw), pad: (ph, pw) };
        check(&d, batch, with_bias, act, seed)?;
    }

    /// Output sizes the padding alone does not explain (taps past the input
    /// read zeros), and asymmetric padding.
    #[test]
    fn any_output_size(h in 1usize..6, w in 1usize..20, oh in 1usize..8, ow in 1usize..24, kh in 1usize..4, kw in 1usize..4,
                       sh in 1usize..3, sw in 1usize..3, ph in 0usize..4, pw in 0usize..4, seed in 0u32..1000) {
        let d = Depthwise { channels: 2, multiplier: 1, h, w, oh, ow, kh, kw, stride: (sh, sw), dilation: (1, 1), pad: (ph, pw) };
        check(&d, 1, true, Activation::Identity, seed)?;
    }
}

/// MobileNetV2's layer kinds (3×3, pad 1, stride 1 and 2) with ReLU6, at
/// sizes that fill whole vectors and leave ragged ones, and a 5 × 5 kernel;
/// between them they take every row mapping on every instruction set.
#[test]
#[cfg_attr(miri, ignore = "too slow under Miri")]
fn mobilenet_shapes() {
    for (hw, stride) in [(112, 1), (112, 2), (56, 1), (32, 1), (32, 2), (28, 1), (14, 1), (14, 2), (7, 1), (23, 2)] {
        let o = (hw + 2 - 3) / stride + 1;
        let d = Depthwise { channels: 5, multiplier: 1, h: hw, w: hw, oh: o, ow: o, kh: 3, kw: 3, stride: (stride, stride), dilation: (1, 1), pad: (1, 1) };
        check(&d, 1, true, Activation::Clip { min: 0.0, max: 6.0 }, 7).unwrap();
    }
    for (hw, stride) in [(40, 1), (40, 2), (9, 1)] {
        let o = (hw + 4 - 5) / stride + 1;
        let d = Depthwise { channels: 3, multiplier: 1, h: hw, w: hw, oh: o, ow: o, kh: 5, kw: 5, stride: (stride, stride), dilation: (1, 1), pad: (2, 2) };
        check(&d, 1, true, Activation::Relu, 9).unwrap();
    }
}

/// A 1-D convolution with a long row (several groups of vectors per row).
#[test]
#[cfg_attr(miri, ignore = "too slow under Miri")]
fn one_dimensional() {
    for (stride, dilation) in [(1, 1), (2, 1), (3, 2)] {
        let (w, kw, pad) = (300, 5, 2);
        let ow = (w + 2 * pad - (kw - 1) * dilation - 1) / stride + 1;
        let d = Depthwise { channels: 3, multiplier: 2, h: 1, w, oh: 1, ow, kh: 1, kw, stride: (1, stride), dilation: (1, dilation), pad: (0, pad) };
        check(&d, 2, true, Activation::Relu, 3).unwrap();
    }
}

#[test]
fn an_empty_kernel_gives_the_activated_bias() {
    let d = Depthwise { channels: 2, multiplier: 1, h: 2, w: 2, oh: 1, ow: 2, kh: 0, kw: 3, stride: (1, 1), dilation: (1, 1), pad: (0, 0) };
    let mut y = vec![f32::NAN; 4];
    depthwise(&d, &[], Some(&[-1.0, 2.0]), Activation::Relu, &[0.5; 8], &mut y, pool(1)).unwrap();
    assert_eq!(y, [0.0, 0.0, 2.0, 2.0]);
}

#[test]
fn bad_calls_are_errors() {
    let d = Depthwise { channels: 2, multiplier: 1, h: 3, w: 3, oh: 3, ow: 3, kh: 3, kw: 3, stride: (1, 1), dilation: (1, 1), pad: (1, 1) };
    let act = Activation::Identity;
    let mut y = vec![0.0; 18];
    let p = pool(1);
    assert!(depthwise(&d, &[0.0; 17], None, act, &[0.0; 18], &mut y, p).is_err());
    assert!(depthwise(&d, &[0.0; 18], None, act, &[0.0; 17], &mut y, p).is_err());
    assert!(depthwise(&d, &[0.0; 18], Some(&[0.0; 3]), act, &[0.0; 18], &mut y, p).is_err());
    assert!(depthwise(&d, &[0.0; 18], None, act, &[0.0; 18], &mut y[..17], p).is_err());
    assert!(depthwise(&d, &[0.0; 18], None, act, &[0.0; 18], &mut y, p).is_ok());
    let zero_stride = Depthwise { stride: (0, 1), ..d.clone() };
    assert!(depthwise(&zero_stride, &[0.0; 18], None, act, &[0.0; 18], &mut y, p).is_err());
    let huge = Depthwise { channels: usize::MAX / 2, ..d.clone() };
    assert!(depthwise(&huge, &[0.0; 18], None, act, &[0.0; 18], &mut y, p).is_err());
    let wide_dilation = Depthwise { dilation: (1, usize::MAX / 2), ..d };
    assert!(depthwise(&wide_dilation, &[0.0; 18], None, act, &[0.0; 18], &mut y, p).is_err());
}
