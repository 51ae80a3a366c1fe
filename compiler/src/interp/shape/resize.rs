//! The Resize kernel, transcribed from the ONNX reference implementation
//! (`op_resize.py`): each output coordinate maps to a source coordinate (in
//! f64), nearest rounds it, linear and cubic blend its neighbours with edge
//! clamping, and axes are resampled one at a time (interpolation is
//! separable). Axes that `scales`/`sizes` do not list keep their length.

use super::{check_volume, pick};
use crate::interp::EvalCtx;
use crate::ir::{AspectRatioPolicy, CoordinateTransform, NearestMode, ResizeAttrs, ResizeMode};
use d2nn_runtime::{map_tensor_same, Tensor};
use ndarray::{ArrayD, Dimension, IxDyn};

/// One axis's resampling: output length and the scale used in coordinate maps.
struct AxisPlan {
    input: usize,
    output: usize,
    scale: f64,
}

impl AxisPlan {
    fn unchanged(input: usize) -> AxisPlan {
        AxisPlan { input, output: input, scale: 1.0 }
    }

    /// The reference skips axes that neither scale nor change length.
    fn is_identity(&self) -> bool {
        self.output == self.input && (self.scale - 1.0).abs() <= 1e-9
    }
}

/// The resized axes, in the order `scales`/`sizes` list them.
fn resized_axes(attrs: &ResizeAttrs, rank: usize) -> Result<Vec<usize>, String> {
    match &attrs.axes {
        None => Ok((0..rank).collect()),
        Some(axes) => {
            for (i, &a) in axes.iter().enumerate() {
                if a >= rank || axes[..i].contains(&a) {
                    return Err(format!("axes {axes:?} are not distinct axes of a rank-{rank} input"));
                }
            }
            Ok(axes.clone())
        }
    }
}

fn plans(ctx: &EvalCtx, attrs: &ResizeAttrs, shape: &[usize]) -> Result<Vec<AxisPlan>, String> {
    let axes = resized_axes(attrs, shape.len())?;
    let mut plans: Vec<AxisPlan> = shape.iter().map(|&d| AxisPlan::unchanged(d)).collect();
    if let Some(sizes) = ctx.opt_input(3) {
        if !sizes.dtype().is_int() || sizes.len() != axes.len() {
            return Err(format!("sizes must be {} integers, got {}{:?}", axes.len(), sizes.dtype(), sizes.shape()));
        }
        let sizes = sizes
            .to_i64_vec()
            .into_iter()
            .map(|s| usize::try_from(s).map_err(|_| format!("size {s} is negative")))
            .collect::<Result<Vec<usize>, String>>()?;
        let ratios: Vec<f64> = axes.iter().zip(&sizes).map(|(&a, &s)| s as f64 / shape[a] as f64).collect();
        let kept = match attrs.keep_aspect_ratio {
            AspectRatioPolicy::Stretch => None,
            AspectRatioPolicy::NotLarger => ratios.iter().copied().reduce(f64::min),
            AspectRatioPolicy::NotSmaller => ratios.iter().copied().reduce(f64::max),
        };
        for (k, &a) in axes.iter().enumerate() {
            let input = shape[a];
            plans[a] = match kept {
                // One scale for all resized axes; the length is rounded half up.
                Some(scale) => AxisPlan { input, output: (scale * input as f64 + 0.5) as usize, scale },
                None => {
                    let output = sizes[k];
                    if input == 0 && output != 0 {
                        return Err("cannot resize an empty axis to a non-empty one".to_string());
                    }
                    AxisPlan { input, output, scale: if input == 0 { 1.0 } else { ratios[k] } }
                }
            };
        }
        return Ok(plans);
    }
    let scales = ctx.opt_input(2).ok_or("one of scales and sizes must be given")?;
    if scales.len() != axes.len() {
        return Err(format!("scales has {} elements for {} resized axes", scales.len(), axes.len()));
    }
    for (&a, s) in axes.iter().zip(scales.to_f32_vec()) {
        let scale = s as f64;
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(format!("scale {s} is not positive"));
        }
        plans[a] = AxisPlan { input: shape[a], output: (shape[a] as f64 * scale).floor() as usize, scale };
    }
    Ok(plans)
}

/// The source coordinate of output coordinate `y`.
fn source_coordinate(transform: CoordinateTransform, y: usize, plan: &AxisPlan) -> f64 {
    let y = y as f64;
    // The reference measures the output length as `scale × input`, not the rounded size.
    let out_len = plan.scale * plan.input as f64;
    match transform {
        CoordinateTransform::HalfPixel => (y + 0.5) / plan.scale - 0.5,
        CoordinateTransform::HalfPixelSymmetric => {
            // Shifts by how much rounding the output length moved its centre.
            let adjustment = plan.output as f64 / out_len;
            let offset = plan.input as f64 / 2.0 * (1.0 - adjustment);
            offset + (y + 0.5) / plan.scale - 0.5
        }
        CoordinateTransform::PytorchHalfPixel if out_len == 1.0 => -0.5,
        CoordinateTransform::PytorchHalfPixel => (y + 0.5) / plan.scale - 0.5,
        CoordinateTransform::AlignCorners if out_len == 1.0 => 0.0,
        CoordinateTransform::AlignCorners => y * (plan.input as f64 - 1.0) / (out_len - 1.0),
        CoordinateTransform::Asymmetric => y / plan.scale,
    }
}

fn clamp_index(i: f64, len: usize) -> usize {
    i.clamp(0.0, len.saturating_sub(1) as f64) as usize
}

fn nearest_index(x: f64, mode: NearestMode, len: usize) -> usize {
    let floor = x.floor();
    let fraction = x - floor;
    let rounded = if fraction == 0.0 {
        floor
    } else {
        match mode {
            NearestMode::RoundPreferFloor if fraction <= 0.5 => floor,
            NearestMode::RoundPreferCeil if fraction < 0.5 => floor,
            NearestMode::Floor => floor,
            _ => floor + 1.0,
        }
    };
    clamp_index(rounded, len)
}

/// Keys' cubic convolution weights of the four taps `⌊x⌋-1 ..= ⌊x⌋+2` at
/// fractional offset `t` (the reference uses `t = 1` and the taps one lower
/// when `x` is an integer, which gives the same single nonzero weight).
fn cubic_weights(t: f64, a: f64) -> [f64; 4] {
    let near = |d: f64| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
    let far = |d: f64| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Source taps `(index, weight)` of each output coordinate along one axis,
/// for linear and cubic interpolation. Taps outside the input read the edge
/// element, or with `exclude_outside` get weight 0 and the rest are
/// renormalised.
fn blend_taps(attrs: &ResizeAttrs, plan: &AxisPlan) -> Vec<Vec<(usize, f64)>> {
    (0..plan.output)
        .map(|y| {
            let x = source_coordinate(attrs.coordinate_transform, y, plan);
            let floor = x.floor();
            let t = x - floor;
            let (first, weights) = match attrs.mode {
                ResizeMode::Cubic { coeff_a } => (floor - 1.0, cubic_weights(t, f64::from(coeff_a)).to_vec()),
                _ => (floor, vec![1.0 - t, t]),
            };
            let mut taps: Vec<(f64, f64)> = weights.into_iter().enumerate().map(|(k, w)| (first + k as f64, w)).collect();
            if attrs.exclude_outside {
                let inside = |i: f64| i >= 0.0 && i < plan.input as f64;
                for tap in &mut taps {
                    if !inside(tap.0) {
                        tap.1 = 0.0;
                    }
                }
                let sum: f64 = taps.iter().map(|t| t.1).sum();
                // Every tap outside: the reference divides by 1 instead of 0.
                let sum = if sum == 0.0 { 1.0 } else { sum };
                for tap in &mut taps {
                    tap.1 /= sum;
                }
            }
            taps.into_iter().map(|(i, w)| (clamp_index(i, plan.input), w)).collect()
        })
        .collect()
}

pub(super) fn resize(ctx: &EvalCtx, attrs: &ResizeAttrs) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let plans = plans(ctx, attrs, x.shape())?;
    let out_shape: Vec<usize> = plans.iter().map(|p| p.output).collect();
    check_volume(&out_shape)?;
    if out_shape.contains(&0) {
        return Ok(Tensor::zeros(x.dtype(), &out_shape));
    }
    match attrs.mode {
        ResizeMode::Nearest => {
            let maps: Vec<Vec<usize>> = plans
                .iter()
                .map(|p| {
                    if p.is_identity() {
                        (0..p.output).collect()
                    } else {
                        (0..p.output)
                            .map(|y| nearest_index(source_coordinate(attrs.coordinate_transform, y, p), attrs.nearest_mode, p.input))
                            .collect()
                    }
                })
                .collect();
            let source = |idx: &[usize]| idx.iter().zip(&maps).map(|(&i, m)| m[i]).collect();
            Ok(map_tensor_same!(x, a => pick(a, &out_shape, source)))
        }
        ResizeMode::Linear | ResizeMode::Cubic { .. } => {
            let mut data: ArrayD<f64> = x.as_f32().map_err(|e| format!("{:?} resize: {e}", attrs.mode))?.mapv(|v| v as f64);
            for (axis, plan) in plans.iter().enumerate() {
                if plan.is_identity() {
                    continue;
                }
                let taps = blend_taps(attrs, plan);
                let mut shape = data.shape().to_vec();
                shape[axis] = plan.output;
                data = ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
                    let mut src = idx.slice().to_vec();
                    taps[idx[axis]]
                        .iter()
                        .map(|&(i, w)| {
                            src[axis] = i;
                            w * data[IxDyn(&src)]
                        })
                        .sum()
                });
            }
            Ok(Tensor::F32(data.mapv(|v| v as f32)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(input: usize, output: usize) -> AxisPlan {
        AxisPlan { input, output, scale: output as f64 / input as f64 }
    }

    #[test]
    fn nearest_modes_round_as_named() {
        assert_eq!(nearest_index(1.5, NearestMode::RoundPreferFloor, 4), 1);
        assert_eq!(nearest_index(1.5, NearestMode::RoundPreferCeil, 4), 2);
        assert_eq!(nearest_index(1.2, NearestMode::Ceil, 4), 2);
        assert_eq!(nearest_index(1.8, NearestMode::Floor, 4), 1);
        assert_eq!(nearest_index(-0.3, NearestMode::Floor, 4), 0);
        assert_eq!(nearest_index(3.7, NearestMode::Ceil, 4), 3);
    }

    #[test]
    fn coordinate_maps_match_the_spec() {
        let p = plan(2, 4);
        assert_eq!(source_coordinate(CoordinateTransform::HalfPixel, 0, &p), -0.25);
        assert_eq!(source_coordinate(CoordinateTransform::Asymmetric, 3, &p), 1.5);
        assert_eq!(source_coordinate(CoordinateTransform::AlignCorners, 3, &p), 1.0);
        assert_eq!(source_coordinate(CoordinateTransform::PytorchHalfPixel, 0, &plan(4, 1)), -0.5);
    }
}
