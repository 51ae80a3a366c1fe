//! BatchNormalization (inference), InstanceNormalization,
//! LayerNormalization, LRN, Softmax and LogSoftmax.

use super::{f32_input, row_major, tensor, EvalCtx};
use crate::interp::util;
use d2nn_runtime::Tensor;
use ndarray::{ArrayD, IxDyn};

/// Operand `i` as one value per channel.
fn per_channel(ctx: &EvalCtx, i: usize, what: &str, channels: usize) -> Result<Vec<f64>, String> {
    let t = f32_input(ctx, i)?;
    if t.shape() != [channels] {
        return Err(format!("input {i} ({what}) has shape {:?}, expected [{channels}]", t.shape()));
    }
    Ok(t.iter().map(|&v| f64::from(v)).collect())
}

/// Batch, channel and spatial-plane sizes of an `[N, C, …]` input.
fn nc_plane(x: &ArrayD<f32>) -> Result<(usize, usize, usize), String> {
    if x.ndim() < 2 {
        return Err(format!("input has rank {}, expected at least 2 (batch and channels)", x.ndim()));
    }
    Ok((x.shape()[0], x.shape()[1], x.shape()[2..].iter().product()))
}

/// `y = scale·(x - mean) / sqrt(var + epsilon) + bias`, per channel, with the stored statistics.
pub(super) fn batch_norm(ctx: &EvalCtx, epsilon: f32) -> Result<Tensor, String> {
    let x = f32_input(ctx, 0)?;
    let (_, channels, plane) = nc_plane(x)?;
    let [scale, bias, mean, var] =
        [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")].map(|(i, what)| per_channel(ctx, i, what, channels));
    let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
    let out = x
        .iter()
        .enumerate()
        .map(|(idx, &v)| {
            let c = (idx / plane.max(1)) % channels;
            (scale[c] * (f64::from(v) - mean[c]) / (var[c] + f64::from(epsilon)).sqrt() + bias[c]) as f32
        })
        .collect();
    tensor(x.shape(), out)
}

/// Mean and population variance of `values`.
fn moments(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// Normalises each `[n, c]` plane by its own mean and variance, then applies
/// the per-channel scale and bias.
pub(super) fn instance_norm(ctx: &EvalCtx, epsilon: f32) -> Result<Tensor, String> {
    let x = f32_input(ctx, 0)?;
    let (batch, channels, plane) = nc_plane(x)?;
    let scale = per_channel(ctx, 1, "scale", channels)?;
    let bias = per_channel(ctx, 2, "bias", channels)?;
    let xs = row_major(x);
    let mut out = Vec::with_capacity(xs.len());
    for nc in 0..batch * channels {
        let c = nc % channels;
        let values = &xs[nc * plane..(nc + 1) * plane];
        let (mean, var) = moments(values);
        let inv_std = 1.0 / (var + f64::from(epsilon)).sqrt();
        out.extend(values.iter().map(|&v| (scale[c] * (f64::from(v) - mean) * inv_std + bias[c]) as f32));
    }
    tensor(x.shape(), out)
}

/// Operand `i` broadcast onto the normalised dims, flattened (`None` if absent).
fn broadcast_onto(ctx: &EvalCtx, i: usize, what: &str, dims: &[usize]) -> Result<Option<Vec<f64>>, String> {
    let Some(t) = ctx.opt_input(i) else { return Ok(None) };
    let t = t.as_f32().map_err(|e| format!("input {i} ({what}): {e}"))?;
    let b = t
        .broadcast(IxDyn(dims))
        .ok_or_else(|| format!("input {i} ({what}) has shape {:?}, which does not broadcast to {dims:?}", t.shape()))?;
    Ok(Some(b.iter().map(|&v| f64::from(v)).collect()))
}

/// Standardises over the dims from `axis` on, then `· scale + bias`. Also
/// returns, as the node's output count asks, each row's mean and
/// `1 / sqrt(var + epsilon)` (shaped like X with the normalised dims as 1).
pub(super) fn layer_norm(ctx: &EvalCtx, axis: i64, epsilon: f32) -> Result<Vec<Tensor>, String> {
    let x = f32_input(ctx, 0)?;
    let axis = util::axis(axis, x.ndim())?;
    let normalized = &x.shape()[axis..];
    let row: usize = normalized.iter().product();
    let scale = broadcast_onto(ctx, 1, "scale", normalized)?.ok_or("required input 1 (scale) is missing")?;
    let bias = broadcast_onto(ctx, 2, "bias", normalized)?;
    let xs = row_major(x);
    let mut out = Vec::with_capacity(xs.len());
    let (mut means, mut inv_std_devs) = (Vec::new(), Vec::new());
    // An empty row still has a (NaN) mean, as numpy gives; `chunks` would skip it.
    let rows: usize = x.shape()[..axis].iter().product();
    for r in 0..rows {
        let values = &xs[r * row..(r + 1) * row];
        let (mean, var) = moments(values);
        let inv_std = 1.0 / (var + f64::from(epsilon)).sqrt();
        out.extend(values.iter().enumerate().map(|(j, &v)| {
            let shifted = bias.as_ref().map_or(0.0, |b| b[j]);
            ((f64::from(v) - mean) * inv_std * scale[j] + shifted) as f32
        }));
        means.push(mean as f32);
        inv_std_devs.push(inv_std as f32);
    }
    let mut stats_shape = x.shape().to_vec();
    stats_shape[axis..].fill(1);
    let mut outs = vec![tensor(x.shape(), out)?, tensor(&stats_shape, means)?, tensor(&stats_shape, inv_std_devs)?];
    let wanted = ctx.num_outputs();
    if !(1..=3).contains(&wanted) {
        return Err(format!("has {wanted} outputs, expected Y and optionally Mean and InvStdDev"));
    }
    outs.truncate(wanted);
    Ok(outs)
}

/// `y = x / (bias + alpha/size · Σ x²)^beta`, the sum running over the
/// channels `c - floor((size-1)/2) ..= c + ceil((size-1)/2)` that exist.
pub(super) fn lrn(x: &ArrayD<f32>, size: usize, alpha: f32, beta: f32, bias: f32) -> Result<Tensor, String> {
    let (batch, channels, plane) = nc_plane(x)?;
    if size == 0 {
        return Err("size must be positive".into());
    }
    let (below, above) = ((size - 1) / 2, (size - 1).div_ceil(2));
    let xs = row_major(x);
    let mut out = Vec::with_capacity(xs.len());
    for n in 0..batch {
        for c in 0..channels {
            let window = c.saturating_sub(below)..(c + above + 1).min(channels);
            for p in 0..plane {
                let square_sum: f64 = window.clone().map(|k| f64::from(xs[(n * channels + k) * plane + p]).powi(2)).sum();
                let v = f64::from(xs[(n * channels + c) * plane + p]);
                let denominator = (f64::from(bias) + f64::from(alpha) / size as f64 * square_sum).powf(f64::from(beta));
                out.push((v / denominator) as f32);
            }
        }
    }
    tensor(x.shape(), out)
}

/// Softmax (or its log) along `axis`; with `coerce_2d`, jointly over `axis`
/// and every later axis. Subtracting the maximum keeps `exp` finite.
pub(super) fn softmax(x: &ArrayD<f32>, axis: i64, log: bool, coerce_2d: bool) -> Result<Tensor, String> {
    let axis = util::axis(axis, x.ndim())?;
    let shape = x.shape();
    let (len, inner) = if coerce_2d {
        (shape[axis..].iter().product::<usize>(), 1)
    } else {
        (shape[axis], shape[axis + 1..].iter().product())
    };
    let outer: usize = shape[..axis].iter().product();
    let xs = row_major(x);
    let mut out = vec![0f32; xs.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let max = (0..len).map(|j| xs[at(j)]).fold(f32::NEG_INFINITY, f32::max);
            // A NaN element is ignored by `max` but still makes its row NaN through the sum.
            let sum: f64 = (0..len).map(|j| (f64::from(xs[at(j)]) - f64::from(max)).exp()).sum();
            for j in 0..len {
                let shifted = f64::from(xs[at(j)]) - f64::from(max);
                out[at(j)] = if log { shifted - sum.ln() } else { shifted.exp() / sum } as f32;
            }
        }
    }
    tensor(shape, out)
}
