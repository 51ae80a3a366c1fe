//! The executor's GEMM-based steps: convolutions (the runtime's
//! `kernels::conv`) and fully connected layers, with their fused epilogues.
//! Shapes are checked here so the GEMM core's own assertions never fire.

use super::{ConvKernel, DenseKernel, PackedWeights};
use d2nn_runtime::gemm::{sgemm_par, Bias, Epilogue, MatMut, MatRef};
use d2nn_runtime::kernels::conv::{conv2d, ConvEpilogue};
use d2nn_runtime::kernels::winograd::winograd_conv3x3;
use d2nn_runtime::pool::ThreadPool;

/// `y = act(conv(x) + bias + residual)` for a batch of NCHW samples.
pub(super) fn conv(c: &ConvKernel, x: &[f32], residual: Option<&[f32]>, y: &mut [f32], pool: &ThreadPool) -> Result<(), String> {
    let epi = ConvEpilogue { bias: c.bias.as_deref().map(Vec::as_slice), residual, activation: c.fused.activation };
    match &c.weights {
        PackedWeights::A(groups) => conv2d(&c.geometry, groups, epi, x, y, pool),
        PackedWeights::Winograd { transformed, direct } => {
            let g = &c.geometry;
            let samples = x.len() / (g.c_in * g.h * g.w).max(1);
            let tiles = samples * g.oh.div_ceil(2) * g.ow.div_ceil(2);
            match direct {
                Some(direct) if tiles < super::WINOGRAD_MIN_TILES => conv2d(g, direct, epi, x, y, pool),
                _ => winograd_conv3x3(g, transformed, epi, x, y, pool),
            }
        }
        PackedWeights::B(_) => return Err("convolution weights must be packed as the left operand".into()),
    }
    .map_err(|e| e.to_string())
}

/// `y = act(x · W + bias + residual)` over the rows of `x`.
pub(super) fn dense(d: &DenseKernel, x: &[f32], residual: Option<&[f32]>, y: &mut [f32], pool: &ThreadPool) -> Result<(), String> {
    let PackedWeights::B(w) = &d.weights else {
        return Err("fully connected weights must be packed as the right operand".into());
    };
    if d.k == 0 || !x.len().is_multiple_of(d.k) || y.len() != x.len() / d.k * d.n || w.rows() != d.k || w.cols() != d.n {
        return Err(format!("operand sizes {} and {} do not fit a [{}, {}] weight", x.len(), y.len(), d.k, d.n));
    }
    if residual.is_some_and(|r| r.len() != y.len()) {
        return Err(format!("the residual does not have the output's {} elements", y.len()));
    }
    let rows = x.len() / d.k;
    let mut epi = Epilogue::default().with_activation(d.fused.activation);
    if let Some(b) = &d.bias {
        epi = epi.with_bias(Bias::PerCol(b));
    }
    if let Some(r) = residual {
        epi = epi.with_residual(MatRef::row_major(r, rows, d.n));
    }
    sgemm_par(pool, MatRef::row_major(x, rows, d.k), &**w, MatMut::row_major(y, rows, d.n), &epi);
    Ok(())
}
