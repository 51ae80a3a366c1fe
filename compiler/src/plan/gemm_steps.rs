//! The executor's GEMM-based steps: convolution (im2col + GEMM per sample
//! and group) and fully connected layers, over the runtime's GEMM core.
//! Shapes are checked here so the GEMM core's own assertions never fire.

use super::{ConvKernel, DenseKernel, PackedWeights};
use d2nn_runtime::gemm::{sgemm, Bias, Epilogue, MatMut, MatRef};

/// `y = conv(x)` for a batch of NCHW samples (the batch is `x.len()` over one sample's size).
pub(super) fn conv(c: &ConvKernel, x: &[f32], y: &mut [f32], col: &mut Vec<f32>) -> Result<(), String> {
    let PackedWeights::A(groups) = &c.weights else {
        return Err("convolution weights must be packed as the left operand".into());
    };
    let (sample_in, sample_out) = (c.c_in * c.h * c.w, c.c_out * c.oh * c.ow);
    if sample_in == 0 || !x.len().is_multiple_of(sample_in) || y.len() != x.len() / sample_in * sample_out || groups.len() != c.group {
        return Err(format!("operand sizes {} and {} do not fit the convolution", x.len(), y.len()));
    }
    let (cg, mg, pix) = (c.c_in / c.group, c.c_out / c.group, c.oh * c.ow);
    let k = cg * c.kh * c.kw;
    for (xn, yn) in x.chunks_exact(sample_in).zip(y.chunks_exact_mut(sample_out)) {
        for (g, w) in groups.iter().enumerate() {
            if w.rows() != mg || w.cols() != k {
                return Err(format!("packed weight of group {g} is {}x{}, expected {mg}x{k}", w.rows(), w.cols()));
            }
            let xg = &xn[g * cg * c.h * c.w..(g + 1) * cg * c.h * c.w];
            let yg = &mut yn[g * mg * pix..(g + 1) * mg * pix];
            let bias = c.bias.as_ref().map_or(Bias::None, |b| Bias::PerRow(&b[g * mg..(g + 1) * mg]));
            let epilogue = Epilogue::NONE.with_bias(bias);
            let out = MatMut::row_major(yg, mg, pix);
            if c.is_pointwise() {
                sgemm(w, MatRef::row_major(xg, k, pix), out, &epilogue);
            } else {
                im2col(c, xg, cg, col);
                sgemm(w, MatRef::row_major(col, k, pix), out, &epilogue);
            }
        }
    }
    Ok(())
}

/// Unfolds one group of one sample into `[cg·kh·kw, oh·ow]` (zeros where the
/// window reaches into the padding).
fn im2col(c: &ConvKernel, x: &[f32], cg: usize, col: &mut Vec<f32>) {
    let pix = c.oh * c.ow;
    col.clear();
    col.resize(cg * c.kh * c.kw * pix, 0.0);
    let ((sh, sw), (dh, dw), (ph, pw)) = (c.stride, c.dilation, c.pad);
    let mut row = 0;
    for ci in 0..cg {
        let plane = &x[ci * c.h * c.w..(ci + 1) * c.h * c.w];
        for ki in 0..c.kh {
            for kj in 0..c.kw {
                let dst = &mut col[row * pix..(row + 1) * pix];
                for oy in 0..c.oh {
                    let iy = (oy * sh + ki * dh) as isize - ph as isize;
                    if iy < 0 || iy >= c.h as isize {
                        continue;
                    }
                    let src = &plane[iy as usize * c.w..(iy as usize + 1) * c.w];
                    let out = &mut dst[oy * c.ow..(oy + 1) * c.ow];
                    for (ox, o) in out.iter_mut().enumerate() {
                        let ix = (ox * sw + kj * dw) as isize - pw as isize;
                        if ix >= 0 && (ix as usize) < c.w {
                            *o = src[ix as usize];
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// `y = x · W + bias` over the rows of `x`.
pub(super) fn dense(d: &DenseKernel, x: &[f32], y: &mut [f32]) -> Result<(), String> {
    let PackedWeights::B(w) = &d.weights else {
        return Err("fully connected weights must be packed as the right operand".into());
    };
    if d.k == 0 || !x.len().is_multiple_of(d.k) || y.len() != x.len() / d.k * d.n || w.rows() != d.k || w.cols() != d.n {
        return Err(format!("operand sizes {} and {} do not fit a [{}, {}] weight", x.len(), y.len(), d.k, d.n));
    }
    let rows = x.len() / d.k;
    let bias = d.bias.as_ref().map_or(Bias::None, |b| Bias::PerCol(b));
    sgemm(MatRef::row_major(x, rows, d.k), &**w, MatMut::row_major(y, rows, d.n), &Epilogue::NONE.with_bias(bias));
    Ok(())
}
