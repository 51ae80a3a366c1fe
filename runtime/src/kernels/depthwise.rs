//! Direct depthwise convolution (`group = C_in`, `C_out = multiplier × C_in`),
//! the MobileNet layer a GEMM handles badly: each output channel reads one
//! input plane, so the kernel accumulates shifted rows of that plane with one
//! weight each — a contiguous multiply-add per row when the stride is 1.

use super::{blocks, expect_len, KernelError};

/// The geometry of a 2-D depthwise convolution over NCHW data (a 1-D one has
/// `h = oh = kh = 1`).
#[derive(Clone, Debug, PartialEq)]
pub struct Depthwise {
    pub channels: usize,
    /// Output channels per input channel.
    pub multiplier: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    /// Padding before the first row and column.
    pub pad: (usize, usize),
}

/// `y = depthwise_conv(x, weights) + bias` for a batch of samples (the batch
/// is `x.len()` over one sample). `weights` is `[C_out, kh, kw]`, `bias` has
/// one value per output channel.
pub fn depthwise(d: &Depthwise, weights: &[f32], bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    let c_out = d.channels * d.multiplier;
    let (plane_in, plane_out, taps) = (d.h * d.w, d.oh * d.ow, d.kh * d.kw);
    expect_len("weights", weights.len(), c_out * taps)?;
    if let Some(b) = bias {
        expect_len("bias", b.len(), c_out)?;
    }
    let batch = blocks("input", x.len(), d.channels * plane_in)?;
    expect_len("output", y.len(), batch * c_out * plane_out)?;
    let ((sh, sw), (dh, dw), (ph, pw)) = (d.stride, d.dilation, d.pad);
    if sh == 0 || sw == 0 {
        return Err(KernelError::Geometry("strides must be positive".into()));
    }
    for (xn, yn) in x.chunks_exact(d.channels * plane_in.max(1)).zip(y.chunks_exact_mut((c_out * plane_out).max(1))) {
        for co in 0..c_out {
            let plane = &xn[co / d.multiplier * plane_in..][..plane_in];
            let out = &mut yn[co * plane_out..][..plane_out];
            out.fill(bias.map_or(0.0, |b| b[co]));
            let kernel = &weights[co * taps..][..taps];
            for oy in 0..d.oh {
                let row_out = &mut out[oy * d.ow..][..d.ow];
                for ki in 0..d.kh {
                    let iy = (oy * sh + ki * dh) as isize - ph as isize;
                    if iy < 0 || iy >= d.h as isize {
                        continue;
                    }
                    let row_in = &plane[iy as usize * d.w..][..d.w];
                    for kj in 0..d.kw {
                        let wgt = kernel[ki * d.kw + kj];
                        // Output columns whose tap lands inside the row: ix = ox·sw + kj·dw − pw ∈ [0, w).
                        let shift = (kj * dw) as isize - pw as isize;
                        let lo = if shift >= 0 { 0 } else { ((-shift) as usize).div_ceil(sw) };
                        let hi = if (d.w as isize) - shift <= 0 { 0 } else { (((d.w as isize - shift) as usize).div_ceil(sw)).min(d.ow) };
                        if lo >= hi {
                            continue;
                        }
                        let first = (lo * sw) as isize + shift;
                        if sw == 1 {
                            let src = &row_in[first as usize..][..hi - lo];
                            for (o, &v) in row_out[lo..hi].iter_mut().zip(src) {
                                *o += wgt * v;
                            }
                        } else {
                            for (k, o) in row_out[lo..hi].iter_mut().enumerate() {
                                *o += wgt * row_in[first as usize + k * sw];
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(d: &Depthwise, w: &[f32], b: Option<&[f32]>, x: &[f32], batch: usize) -> Vec<f32> {
        let c_out = d.channels * d.multiplier;
        let mut y = vec![0.0f64; batch * c_out * d.oh * d.ow];
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
                        y[((n * c_out + co) * d.oh + oy) * d.ow + ox] = acc;
                    }
                }
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    proptest! {
        #[test]
        fn matches_the_definition(channels in 1usize..5, multiplier in 1usize..3, h in 1usize..9, w in 1usize..11,
                                  kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..3,
                                  dh in 1usize..3, dw in 1usize..3, ph in 0usize..3, pw in 0usize..3,
                                  batch in 1usize..3, with_bias in any::<bool>(), seed in 0u32..1000) {
            let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
            prop_assume!(h + 2 * ph >= eh && w + 2 * pw >= ew);
            let oh = (h + 2 * ph - eh) / sh + 1;
            let ow = (w + 2 * pw - ew) / sw + 1;
            let d = Depthwise { channels, multiplier, h, w, oh, ow, kh, kw, stride: (sh, sw), dilation: (dh, dw), pad: (ph, pw) };
            let gen = |n: usize, k: u32| (0..n).map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ (seed + k)) % 97) as f32 / 48.0 - 1.0).collect::<Vec<f32>>();
            let c_out = channels * multiplier;
            let (wt, b, x) = (gen(c_out * kh * kw, 1), gen(c_out, 2), gen(batch * channels * h * w, 3));
            let bias = with_bias.then_some(b.as_slice());
            let mut y = vec![f32::NAN; batch * c_out * oh * ow];
            depthwise(&d, &wt, bias, &x, &mut y).unwrap();
            let want = naive(&d, &wt, bias, &x, batch);
            for (g, e) in y.iter().zip(&want) {
                prop_assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{} vs {}", g, e);
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let d = Depthwise { channels: 2, multiplier: 1, h: 3, w: 3, oh: 3, ow: 3, kh: 3, kw: 3, stride: (1, 1), dilation: (1, 1), pad: (1, 1) };
        let mut y = vec![0.0; 18];
        assert!(depthwise(&d, &[0.0; 17], None, &[0.0; 18], &mut y).is_err());
        assert!(depthwise(&d, &[0.0; 18], None, &[0.0; 17], &mut y).is_err());
        assert!(depthwise(&d, &[0.0; 18], Some(&[0.0; 3]), &[0.0; 18], &mut y).is_err());
        assert!(depthwise(&d, &[0.0; 18], None, &[0.0; 18], &mut y).is_ok());
    }
}
