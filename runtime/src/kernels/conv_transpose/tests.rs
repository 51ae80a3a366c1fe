//! ConvTranspose against the definition (every input element scattered
//! through the kernel, summed in f64), within the bound of an f32 sum of
//! each output's terms, on one and two threads.

use super::*;
use proptest::prelude::*;

/// The definition: `y[n, g·M/G + m, i·s + k·d − pad] += x[n, c, i]·w[c, m, k]`,
/// then the bias; also `Σ|terms|` of each output, for the error bound.
fn naive(g: &ConvTranspose2d, w: &[f32], bias: Option<&[f32]>, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let batch = x.len() / (g.c_in * g.h * g.w).max(1);
    let (cg, mg) = (g.in_per_group(), g.out_per_group());
    let mut y = vec![0f64; batch * g.c_out * g.oh * g.ow];
    let mut mag = y.clone();
    for n in 0..batch {
        for c in 0..g.c_in {
            let gi = c / cg;
            for iy in 0..g.h {
                for ix in 0..g.w {
                    let xv = f64::from(x[((n * g.c_in + c) * g.h + iy) * g.w + ix]);
                    for m in 0..mg {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let oy = (iy * g.stride.0 + ky * g.dilation.0) as isize - g.pad.0 as isize;
                                let ox = (ix * g.stride.1 + kx * g.dilation.1) as isize - g.pad.1 as isize;
                                if oy < 0 || ox < 0 || oy as usize >= g.oh || ox as usize >= g.ow {
                                    continue;
                                }
                                let wv = f64::from(w[((c * mg + m) * g.kh + ky) * g.kw + kx]);
                                let at = ((n * g.c_out + gi * mg + m) * g.oh + oy as usize) * g.ow + ox as usize;
                                y[at] += xv * wv;
                                mag[at] += (xv * wv).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    let plane = g.oh * g.ow;
    for (i, (v, a)) in y.iter_mut().zip(mag.iter_mut()).enumerate() {
        let b = bias.map_or(0.0, |b| f64::from(b[i / plane % g.c_out]));
        *v += b;
        *a += b.abs();
    }
    (y, mag)
}

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f64 / (1u64 << 24) as f64 * 4.0 - 2.0) as f32
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    g: ConvTranspose2d,
    batch: usize,
    bias: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=3, 1usize..=3),
        (1usize..=5, 1usize..=6, 1usize..=4, 1usize..=4),
        (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
        (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3, 0usize..=2, 0usize..=2),
        (0usize..=3, any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(|((group, cg, mg), (h, w, kh, kw), (sh, sw, dh, dw), (pt, pl, pb, pr, oph, opw), (batch, bias, one_d, seed))| {
            let (h, kh, sh, dh, pt, pb, oph) = if one_d { (1, 1, 1, 1, 0, 0, 0) } else { (h, kh, sh, dh, pt, pb, oph) };
            // Output padding must be below the stride or the dilation.
            let (oph, opw) = (oph.min(sh.max(dh) - 1), opw.min(sw.max(dw) - 1));
            let full_h = sh * (h - 1) + dh * (kh - 1) + 1 + oph;
            let full_w = sw * (w - 1) + dw * (kw - 1) + 1 + opw;
            let (pt, pb) = (pt.min(full_h.saturating_sub(1)), pb.min(full_h.saturating_sub(1 + pt.min(full_h.saturating_sub(1)))));
            let (pl, pr) = (pl.min(full_w.saturating_sub(1)), pr.min(full_w.saturating_sub(1 + pl.min(full_w.saturating_sub(1)))));
            let g = ConvTranspose2d {
                c_in: group * cg,
                h,
                w,
                c_out: group * mg,
                oh: full_h - pt - pb,
                ow: full_w - pl - pr,
                kh,
                kw,
                stride: (sh, sw),
                dilation: (dh, dw),
                pad: (pt, pl),
                group,
            };
            Case { g, batch, bias, seed }
        })
}

fn check(c: &Case, pool: &ThreadPool) -> Result<(), TestCaseError> {
    let g = &c.g;
    let w = data(g.c_in * g.out_per_group() * g.kh * g.kw, c.seed);
    let x = data(c.batch * g.c_in * g.h * g.w, c.seed ^ 0xABCD);
    let bias = data(g.c_out, c.seed ^ 0x1234);
    let bias = c.bias.then_some(&bias[..]);
    let packed = ConvTransposeWeights::pack(g, &w).unwrap();
    let mut y = vec![f32::NAN; c.batch * g.c_out * g.oh * g.ow];
    conv_transpose2d(g, &packed, bias, &x, &mut y, pool).unwrap();
    let (want, mag) = naive(g, &w, bias, &x);
    let terms = (g.in_per_group() * g.kh * g.kw + 1) as f64;
    let u = f64::from(f32::EPSILON) / 2.0;
    for (i, ((&got, &want), &mag)) in y.iter().zip(&want).zip(&mag).enumerate() {
        let bound = terms * u / (1.0 - terms * u) * mag + 2.0 * u * want.abs() + 1e-30;
        prop_assert!((f64::from(got) - want).abs() <= bound, "element {i}: got {got}, want {want} (bound {bound:e})");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_definition(c in case()) {
        check(&c, &ThreadPool::new(1))?;
        check(&c, &ThreadPool::new(2))?;
    }
}

/// Many channels and pixels: blocks of input rows, parallel col2im, and
/// parallel units.
#[test]
fn large_cases_split_work() {
    let g = ConvTranspose2d { c_in: 64, h: 40, w: 40, c_out: 48, oh: 80, ow: 80, kh: 4, kw: 4, stride: (2, 2), dilation: (1, 1), pad: (1, 1), group: 1 };
    for batch in [1, 5] {
        for threads in [1, 2, 3] {
            check(&Case { g: g.clone(), batch, bias: true, seed: 7 }, &ThreadPool::new(threads)).unwrap();
        }
    }
}

#[test]
fn bad_calls_are_errors() {
    let g = ConvTranspose2d { c_in: 2, h: 2, w: 2, c_out: 2, oh: 3, ow: 3, kh: 2, kw: 2, stride: (1, 1), dilation: (1, 1), pad: (0, 0), group: 1 };
    assert!(ConvTransposeWeights::pack(&g, &[0.0; 15]).is_err());
    let packed = ConvTransposeWeights::pack(&g, &[0.5; 16]).unwrap();
    let pool = ThreadPool::new(1);
    assert!(conv_transpose2d(&g, &packed, None, &[0.0; 7], &mut [0.0; 18], &pool).is_err());
    assert!(conv_transpose2d(&g, &packed, None, &[0.0; 8], &mut [0.0; 17], &pool).is_err());
    assert!(conv_transpose2d(&g, &packed, Some(&[0.0]), &[0.0; 8], &mut [0.0; 18], &pool).is_err());
    let other = ConvTranspose2d { c_out: 4, ..g.clone() };
    let wrong = ConvTransposeWeights::pack(&other, &[0.5; 32]).unwrap();
    assert!(conv_transpose2d(&g, &wrong, None, &[0.0; 8], &mut [0.0; 18], &pool).is_err());
    assert!(ConvTransposeWeights::pack(&ConvTranspose2d { group: 0, ..g.clone() }, &[0.0; 8]).is_err());
    let mut y = [0.0; 18];
    conv_transpose2d(&g, &packed, None, &[1.0; 8], &mut y, &pool).unwrap();
    // Each output sums the taps that reach it: the corners one, the centre four (× 2 channels × 0.5).
    assert_eq!(&y[..9], &[1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
}
