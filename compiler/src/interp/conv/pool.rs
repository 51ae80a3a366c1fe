//! MaxPool, AveragePool and the global pools.
//!
//! Each window tap is one of three things: an input element, a padding
//! element (inside the explicit or `SAME` pads), or past the end padding
//! (only in ceil mode, where the last window may overhang). Max takes input
//! elements only; Average divides by the input elements, plus the padding
//! ones when `count_include_pad` is set; overhanging taps never count. This is
//! the ONNX reference (`op_pool_common.py`) rule. MaxPool's optional
//! `Indices` output follows `op_max_pool.py`.

use super::{indices, row_major, strides, tensor, window_axes, AxisWindow, SameRule};
use crate::ir::{PoolAttrs, PoolKind};
use d2nn_runtime::Tensor;
use ndarray::ArrayD;

enum Tap {
    Input(usize),
    Padding,
    Overhang,
}

/// Classifies one tap; `Input` carries the flat offset within a channel plane.
fn tap(axes: &[AxisWindow], plane_strides: &[usize], out: &[usize], k: &[usize]) -> Tap {
    let mut offset = 0;
    let mut padding = false;
    for (axis, win) in axes.iter().enumerate() {
        let p = win.position(out[axis], k[axis]);
        if p >= (win.input + win.pad_end) as i64 {
            return Tap::Overhang;
        }
        if p < 0 || p >= win.input as i64 {
            padding = true;
        } else {
            offset += p as usize * plane_strides[axis];
        }
    }
    if padding {
        Tap::Padding
    } else {
        Tap::Input(offset)
    }
}

/// The pooled values.
pub(super) fn pool(x: &ArrayD<f32>, kind: PoolKind, a: &PoolAttrs) -> Result<Tensor, String> {
    let (values, _) = pool_with_indices(x, kind, a)?;
    Ok(values)
}

/// The flat index of spatial position `position` within a channel plane:
/// row-major, or column-major (first axis fastest) as `storage_order = 1` asks.
fn plane_index(position: &[usize], dims: &[usize], column_major: bool) -> usize {
    if !column_major {
        return position.iter().zip(strides(dims)).map(|(&p, s)| p * s).sum();
    }
    let mut index = 0;
    let mut stride = 1;
    for (&p, &d) in position.iter().zip(dims) {
        index += p * stride;
        stride *= d;
    }
    index
}

/// The pooled values, and for MaxPool the `Indices` output: each maximum's
/// flat position in X (batch and channel planes included), the first one
/// in window order on ties, -1 for a window with no input element.
pub(super) fn pool_with_indices(x: &ArrayD<f32>, kind: PoolKind, a: &PoolAttrs) -> Result<(Tensor, Tensor), String> {
    let spatial = a.kernel.len();
    if x.ndim() != spatial + 2 {
        return Err(format!("input has rank {}, expected {} for a {spatial}-D kernel", x.ndim(), spatial + 2));
    }
    let (batch, channels, in_spatial) = (x.shape()[0], x.shape()[1], &x.shape()[2..]);
    let axes = window_axes(in_spatial, &a.kernel, &a.strides, &a.dilations, &a.padding, a.ceil_mode, SameRule::Pool)?;
    let out_spatial: Vec<usize> = axes.iter().map(|w| w.output).collect();
    let plane_strides = strides(in_spatial);
    let plane: usize = in_spatial.iter().product();
    let xs = row_major(x);
    let taps = indices(&a.kernel);
    let positions = indices(&out_spatial);
    let column_major = matches!(kind, PoolKind::Max { column_major_indices: true });
    let mut out = Vec::with_capacity(batch * channels * positions.len());
    let mut argmax = Vec::with_capacity(out.capacity());
    for nc in 0..batch * channels {
        let base = nc * plane;
        for o in &positions {
            let (mut inputs, mut pads) = (0usize, 0usize);
            let (mut sum, mut max, mut max_at) = (0f64, f32::NAN, None);
            for k in &taps {
                match tap(&axes, &plane_strides, o, k) {
                    Tap::Input(offset) => {
                        let v = xs[base + offset];
                        inputs += 1;
                        sum += f64::from(v);
                        // NaN taps are skipped, as the reference drops them; NaN
                        // `max` means no value yet.
                        if !v.is_nan() && (max.is_nan() || v > max) {
                            max = v;
                            max_at = Some(offset);
                        }
                    }
                    Tap::Padding => pads += 1,
                    Tap::Overhang => {}
                }
            }
            out.push(match kind {
                PoolKind::Max { .. } => max,
                PoolKind::Average { count_include_pad } => {
                    let count = if count_include_pad { inputs + pads } else { inputs };
                    (sum / count as f64) as f32
                }
            });
            argmax.push(match max_at {
                Some(offset) => {
                    // `offset` is row-major within the plane; renumber it as asked.
                    let position: Vec<usize> = plane_strides.iter().zip(in_spatial).map(|(&s, &d)| offset / s % d).collect();
                    i64::try_from(base + plane_index(&position, in_spatial, column_major)).map_err(|e| e.to_string())?
                }
                None => -1,
            });
        }
    }
    let mut shape = vec![batch, channels];
    shape.extend(&out_spatial);
    let argmax = Tensor::from_i64(&shape, argmax).map_err(|e| e.to_string())?;
    Ok((tensor(&shape, out)?, argmax))
}

/// Reduces every spatial axis to size 1. Global max propagates NaN, like the
/// reference's `np.max`.
pub(super) fn global_pool(x: &ArrayD<f32>, kind: PoolKind) -> Result<Tensor, String> {
    if x.ndim() < 2 {
        return Err(format!("input has rank {}, expected at least 2", x.ndim()));
    }
    let (batch, channels) = (x.shape()[0], x.shape()[1]);
    let plane: usize = x.shape()[2..].iter().product();
    let xs = row_major(x);
    let out = (0..batch * channels)
        .map(|nc| {
            let values = &xs[nc * plane..(nc + 1) * plane];
            match kind {
                PoolKind::Max { .. } if values.is_empty() => f32::NAN,
                PoolKind::Max { .. } => values.iter().copied().fold(f32::NEG_INFINITY, |m, v| if v.is_nan() || m.is_nan() { f32::NAN } else { m.max(v) }),
                PoolKind::Average { .. } => (values.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32,
            }
        })
        .collect();
    let mut shape = x.shape().to_vec();
    shape[2..].fill(1);
    tensor(&shape, out)
}
