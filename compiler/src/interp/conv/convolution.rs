//! Conv and ConvTranspose, grouped, dilated and strided, for any number of
//! spatial axes, written as direct sums over the kernel.

use super::{f32_input, indices, row_major, strides, tensor, window_axes, EvalCtx, SameRule};
use crate::ir::{ConvAttrs, ConvTransposeAttrs, Padding};
use d2nn_runtime::Tensor;

/// Batch, channel and spatial dims of an activation or weight.
fn split_dims<'a>(what: &str, shape: &'a [usize], spatial: usize) -> Result<(usize, usize, &'a [usize]), String> {
    if shape.len() != spatial + 2 {
        return Err(format!("{what} has rank {}, expected {} for a {spatial}-D kernel", shape.len(), spatial + 2));
    }
    Ok((shape[0], shape[1], &shape[2..]))
}

/// The bias as one value per output channel (zeros when absent).
fn bias(ctx: &EvalCtx, channels: usize) -> Result<Vec<f32>, String> {
    match ctx.opt_input(2) {
        None => Ok(vec![0.0; channels]),
        Some(b) => {
            let b = b.as_f32().map_err(|e| format!("input 2 (bias): {e}"))?;
            if b.shape() != [channels] {
                return Err(format!("bias has shape {:?}, expected [{channels}]", b.shape()));
            }
            Ok(row_major(b))
        }
    }
}

/// `y[n, m, o] = b[m] + Σ_{c, k} x[n, g·C/G + c, o·s + k·d - pad_begin] · w[m, c, k]`,
/// where `g` is output channel `m`'s group and taps outside the input read 0.
pub(super) fn conv(ctx: &EvalCtx, a: &ConvAttrs) -> Result<Tensor, String> {
    let (x, w) = (f32_input(ctx, 0)?, f32_input(ctx, 1)?);
    let spatial = a.kernel.len();
    let (batch, in_channels, in_spatial) = split_dims("input", x.shape(), spatial)?;
    let (out_channels, group_in_channels, kernel) = split_dims("weight", w.shape(), spatial)?;
    if kernel != a.kernel.as_slice() {
        return Err(format!("weight spatial dims {kernel:?} differ from kernel_shape {:?}", a.kernel));
    }
    let group = a.group;
    if group == 0 || group_in_channels.checked_mul(group) != Some(in_channels) || out_channels % group != 0 {
        return Err(format!(
            "{in_channels} input channels and {out_channels} output channels do not fit {group} groups of {group_in_channels} input channels"
        ));
    }
    let axes = window_axes(in_spatial, &a.kernel, &a.strides, &a.dilations, &a.padding, false, SameRule::Conv)?;
    let out_spatial: Vec<usize> = axes.iter().map(|w| w.output).collect();
    let bias = bias(ctx, out_channels)?;
    let (xs, ws) = (row_major(x), row_major(w));
    let (x_strides, w_strides) = (strides(x.shape()), strides(w.shape()));
    let out_per_group = out_channels / group;
    let taps = indices(kernel);
    let positions = indices(&out_spatial);
    let mut out = Vec::with_capacity(batch * out_channels * positions.len());
    for n in 0..batch {
        for m in 0..out_channels {
            let first_channel = (m / out_per_group) * group_in_channels;
            for o in &positions {
                let mut acc = f64::from(bias[m]);
                for tap in &taps {
                    // Flat offset of the tapped input pixel within one channel plane, if inside.
                    let mut x_offset = 0;
                    let inside = axes.iter().enumerate().all(|(axis, win)| {
                        let p = win.position(o[axis], tap[axis]);
                        x_offset += p.max(0) as usize * x_strides[axis + 2];
                        (0..win.input as i64).contains(&p)
                    });
                    if !inside {
                        continue;
                    }
                    let w_offset: usize = tap.iter().zip(&w_strides[2..]).map(|(k, s)| k * s).sum();
                    for c in 0..group_in_channels {
                        let xv = xs[n * x_strides[0] + (first_channel + c) * x_strides[1] + x_offset];
                        let wv = ws[m * w_strides[0] + c * w_strides[1] + w_offset];
                        acc += f64::from(xv) * f64::from(wv);
                    }
                }
                out.push(acc as f32);
            }
        }
    }
    let mut shape = vec![batch, out_channels];
    shape.extend(&out_spatial);
    tensor(&shape, out)
}

/// One spatial axis of a transposed convolution: the output size and where
/// output element 0 sits in the un-padded ("full") output, whose length is
/// `stride·(in-1) + output_padding + dilated_kernel`. The offset is negative
/// when `output_shape` asks for more than the full output.
#[derive(Debug, PartialEq)]
pub(super) struct TransposeAxis {
    pub output: usize,
    pub offset: i64,
}

/// Output sizes and offsets per spatial axis, following the ONNX spec: with
/// `output_shape` (or `SAME_*`, whose output is `in·stride`) the total padding
/// `full - output` is split with the larger half at the beginning, except for
/// `SAME_UPPER`, which puts it at the end (halves rounded toward -∞).
pub(super) fn transpose_axes(in_spatial: &[usize], a: &ConvTransposeAttrs) -> Result<Vec<TransposeAxis>, String> {
    let c = &a.conv;
    let spatial = c.kernel.len();
    if in_spatial.len() != spatial
        || c.strides.len() != spatial
        || c.dilations.len() != spatial
        || a.output_padding.len() != spatial
        || a.output_shape.as_ref().is_some_and(|s| s.len() != spatial)
    {
        return Err(format!("the input has {} spatial axes but the attributes describe {spatial}", in_spatial.len()));
    }
    if c.kernel.contains(&0) || c.strides.contains(&0) || c.dilations.contains(&0) {
        return Err("kernel, strides and dilations must be positive".into());
    }
    (0..spatial)
        .map(|axis| {
            let (n, s) = (in_spatial[axis] as i64, c.strides[axis] as i64);
            let reach = (c.dilations[axis] * (c.kernel[axis] - 1) + 1) as i64;
            let full = s * (n - 1).max(0) + a.output_padding[axis] as i64 + reach;
            let (output, offset) = match (&a.output_shape, &c.padding) {
                (None, Padding::Explicit(pads)) => {
                    let (begin, end) = match (pads.get(axis), pads.get(axis + spatial)) {
                        (Some(&b), Some(&e)) if pads.len() == 2 * spatial => (b as i64, e as i64),
                        _ => return Err(format!("pads has {} entries, expected {}", pads.len(), 2 * spatial)),
                    };
                    (full - begin - end, begin)
                }
                (requested, padding) => {
                    let output = requested.as_ref().map_or(n * s, |shape| shape[axis] as i64);
                    let total = full - output;
                    let half = total.div_euclid(2);
                    let begin = if *padding == Padding::SameUpper { half } else { total - half };
                    (output, begin)
                }
            };
            if output < 0 || n == 0 {
                return Err(format!("spatial axis {axis}: the pads leave no output ({full} - pads)"));
            }
            Ok(TransposeAxis { output: output as usize, offset })
        })
        .collect()
}

/// Scatters every input element through the kernel:
/// `y[n, g·M/G + m, i·s + k·d - offset] += x[n, c, i] · w[c, m, k]` for input
/// channel `c` of group `g`, then adds the bias everywhere.
pub(super) fn conv_transpose(ctx: &EvalCtx, a: &ConvTransposeAttrs) -> Result<Tensor, String> {
    let (x, w) = (f32_input(ctx, 0)?, f32_input(ctx, 1)?);
    let spatial = a.conv.kernel.len();
    let (batch, in_channels, in_spatial) = split_dims("input", x.shape(), spatial)?;
    let (weight_in_channels, group_out_channels, kernel) = split_dims("weight", w.shape(), spatial)?;
    if kernel != a.conv.kernel.as_slice() {
        return Err(format!("weight spatial dims {kernel:?} differ from kernel_shape {:?}", a.conv.kernel));
    }
    let group = a.conv.group;
    if group == 0 || weight_in_channels != in_channels || in_channels % group != 0 {
        return Err(format!("{in_channels} input channels do not fit a weight for {weight_in_channels} channels in {group} groups"));
    }
    let axes = transpose_axes(in_spatial, a)?;
    let out_spatial: Vec<usize> = axes.iter().map(|t| t.output).collect();
    let out_channels = group_out_channels * group;
    let bias = bias(ctx, out_channels)?;
    let mut shape = vec![batch, out_channels];
    shape.extend(&out_spatial);
    let y_strides = strides(&shape);
    let mut acc = vec![0f64; shape.iter().product()];
    let (xs, ws) = (row_major(x), row_major(w));
    let (x_strides, w_strides) = (strides(x.shape()), strides(w.shape()));
    let in_per_group = in_channels / group;
    let taps = indices(kernel);
    for n in 0..batch {
        for c in 0..in_channels {
            let first_out = (c / in_per_group) * group_out_channels;
            for i in indices(in_spatial) {
                let x_offset: usize = i.iter().zip(&x_strides[2..]).map(|(p, s)| p * s).sum();
                let xv = f64::from(xs[n * x_strides[0] + c * x_strides[1] + x_offset]);
                for tap in &taps {
                    let mut y_offset = 0;
                    let inside = (0..spatial).all(|axis| {
                        let full_pos = (i[axis] * a.conv.strides[axis] + tap[axis] * a.conv.dilations[axis]) as i64;
                        let p = full_pos - axes[axis].offset;
                        y_offset += p.max(0) as usize * y_strides[axis + 2];
                        (0..axes[axis].output as i64).contains(&p)
                    });
                    if !inside {
                        continue;
                    }
                    let w_offset: usize = tap.iter().zip(&w_strides[2..]).map(|(k, s)| k * s).sum();
                    for m in 0..group_out_channels {
                        let wv = f64::from(ws[c * w_strides[0] + m * w_strides[1] + w_offset]);
                        acc[n * y_strides[0] + (first_out + m) * y_strides[1] + y_offset] += xv * wv;
                    }
                }
            }
        }
    }
    let plane: usize = out_spatial.iter().product();
    let out = acc.iter().enumerate().map(|(idx, &v)| (v + f64::from(bias[(idx / plane.max(1)) % out_channels])) as f32).collect();
    tensor(&shape, out)
}
