//! Kernels for convolution, pooling, softmax and the normalisations.
//!
//! Every kernel works on row-major `f32` buffers with explicit index
//! arithmetic, for any number of spatial axes, and accumulates sums in `f64`
//! so the oracle is at least as accurate as anything checked against it. The
//! window geometry is derived here again from the attributes, independently of
//! inference, so the interpreter's shape check cross-examines both.

mod convolution;
mod norm;
mod pool;

use super::EvalCtx;
use crate::ir::{Op, Padding};
use d2nn_runtime::Tensor;
use ndarray::ArrayD;

pub(super) fn eval(ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
    match ctx.op() {
        Op::LayerNorm { axis, epsilon } => return norm::layer_norm(ctx, *axis, *epsilon),
        Op::Pool { kind, attrs } if ctx.num_outputs() == 2 => {
            let (values, indices) = pool::pool_with_indices(f32_input(ctx, 0)?, *kind, attrs)?;
            return Ok(vec![values, indices]);
        }
        _ => {}
    }
    let out = match ctx.op() {
        Op::Conv(attrs) => convolution::conv(ctx, attrs)?,
        Op::ConvTranspose(attrs) => convolution::conv_transpose(ctx, attrs)?,
        Op::Pool { kind, attrs } => pool::pool(f32_input(ctx, 0)?, *kind, attrs)?,
        Op::GlobalPool { kind } => pool::global_pool(f32_input(ctx, 0)?, *kind)?,
        Op::BatchNorm { epsilon } => norm::batch_norm(ctx, *epsilon)?,
        Op::InstanceNorm { epsilon } => norm::instance_norm(ctx, *epsilon)?,
        Op::Lrn { size, alpha, beta, bias } => norm::lrn(f32_input(ctx, 0)?, *size, *alpha, *beta, *bias)?,
        Op::Softmax { axis, log, coerce_2d } => norm::softmax(f32_input(ctx, 0)?, *axis, *log, *coerce_2d)?,
        other => return Err(format!("{} is not an op of the conv family", other.name())),
    };
    Ok(vec![out])
}

/// Input `i` as an f32 array.
fn f32_input<'a>(ctx: &EvalCtx<'a>, i: usize) -> Result<&'a ArrayD<f32>, String> {
    ctx.input(i)?.as_f32().map_err(|e| format!("input {i}: {e}"))
}

/// The elements of `a` in row-major order.
fn row_major(a: &ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

fn tensor(shape: &[usize], data: Vec<f32>) -> Result<Tensor, String> {
    Tensor::from_f32(shape, data).map_err(|e| e.to_string())
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Advances `index` to the next multi-index of `shape` in row-major order;
/// false once every index has been visited.
fn next_index(index: &mut [usize], shape: &[usize]) -> bool {
    for axis in (0..shape.len()).rev() {
        index[axis] += 1;
        if index[axis] < shape[axis] {
            return true;
        }
        index[axis] = 0;
    }
    false
}

/// Every multi-index of `shape` in row-major order (none if a dim is 0).
fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    if shape.contains(&0) {
        return Vec::new();
    }
    let mut index = vec![0; shape.len()];
    let mut all = vec![index.clone()];
    while next_index(&mut index, shape) {
        all.push(index.clone());
    }
    all
}

/// The layout of one spatial axis of a Conv or pooling window.
#[derive(Clone, Debug, PartialEq)]
struct AxisWindow {
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    /// Negative only for pooling with `SAME_*` and a kernel smaller than the
    /// stride, where the windows shift into the input (see [`SameRule::Pool`]).
    pad_begin: i64,
    pad_end: usize,
}

impl AxisWindow {
    /// Where kernel tap `k` of output `o` falls, in input coordinates (may be negative).
    fn position(&self, o: usize, k: usize) -> i64 {
        (o * self.stride + k * self.dilation) as i64 - self.pad_begin
    }
}

/// How `SAME_*` padding is sized; the output is `ceil(in / stride)` either way.
#[derive(Clone, Copy, Debug, PartialEq)]
enum SameRule {
    /// Conv: just enough for the dilated kernel, never negative (ONNX reference
    /// and ONNX Runtime agree).
    Conv,
    /// Pooling: `(out-1)·stride + kernel - in` with the undilated kernel, as
    /// both the ONNX reference and ONNX Runtime compute it. Taps a dilated
    /// window puts past the end padding are ignored, like ceil-mode overhang.
    /// When the kernel is smaller than the stride this is negative and, as in
    /// ONNX Runtime, shifts the windows into the input (halves truncated toward 0).
    Pool,
}

/// Resolves pads and output sizes of every spatial axis.
///
/// `SAME_*`: output `ceil(in / stride)`, the total padding per [`SameRule`],
/// the odd element at the end (upper) or beginning (lower). Explicit:
/// `(in + pads - dilated_kernel) / stride + 1`, rounded up in ceil mode unless
/// that last window would start past the begin padding and the input, i.e.
/// entirely in the end padding.
fn window_axes(
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    padding: &Padding,
    ceil_mode: bool,
    same_rule: SameRule,
) -> Result<Vec<AxisWindow>, String> {
    let spatial = kernel.len();
    if input.len() != spatial || strides.len() != spatial || dilations.len() != spatial {
        return Err(format!("the input has {} spatial axes but the kernel has {spatial}", input.len()));
    }
    if kernel.contains(&0) || strides.contains(&0) || dilations.contains(&0) {
        return Err("kernel, strides and dilations must be positive".into());
    }
    (0..spatial)
        .map(|axis| {
            let (n, k, s, d) = (input[axis], kernel[axis], strides[axis], dilations[axis]);
            let reach = d * (k - 1) + 1;
            let (output, pad_begin, pad_end) = match padding {
                Padding::SameUpper | Padding::SameLower => {
                    let output = n.div_ceil(s);
                    let covered = output.saturating_sub(1) as i64 * s as i64 - n as i64;
                    let total = match same_rule {
                        SameRule::Conv => (covered + reach as i64).max(0),
                        SameRule::Pool => covered + k as i64,
                    };
                    let begin = if *padding == Padding::SameUpper { total / 2 } else { (total + 1) / 2 };
                    (output, begin, (total - begin).max(0) as usize)
                }
                Padding::Explicit(pads) => {
                    let (begin, end) = match (pads.get(axis), pads.get(spatial + axis)) {
                        (Some(&b), Some(&e)) if pads.len() == 2 * spatial => (b, e),
                        _ => return Err(format!("pads has {} entries, expected {}", pads.len(), 2 * spatial)),
                    };
                    let padded = n + begin + end;
                    if padded < reach {
                        return Err(format!("spatial axis {axis}: the window spans {reach} but the padded input has {padded}"));
                    }
                    let span = padded - reach;
                    let mut output = if ceil_mode { span.div_ceil(s) } else { span / s } + 1;
                    if ceil_mode && (output - 1) * s >= n + begin {
                        output -= 1;
                    }
                    (output, begin as i64, end)
                }
            };
            Ok(AxisWindow { input: n, output, kernel: k, stride: s, dilation: d, pad_begin, pad_end })
        })
        .collect()
}

#[cfg(test)]
mod tests;
