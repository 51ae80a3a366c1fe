//! The Resize kernel, transcribed from the ONNX reference implementation:
//! each output coordinate maps to a source coordinate (in f64), nearest
//! rounds it, linear blends the two neighbours with edge clamping, and axes
//! are resampled one at a time (interpolation is separable).

use super::{check_volume, pick};
use crate::interp::EvalCtx;
use crate::ir::{CoordinateTransform, NearestMode, ResizeAttrs, ResizeMode};
use d2nn_runtime::{map_tensor_same, Tensor};
use ndarray::{ArrayD, Dimension, IxDyn};

/// One axis's resampling: output length and the scale used in coordinate maps.
struct AxisPlan {
    input: usize,
    output: usize,
    scale: f64,
}

impl AxisPlan {
    /// The reference skips axes that neither scale nor change length.
    fn is_identity(&self) -> bool {
        self.output == self.input && (self.scale - 1.0).abs() <= 1e-9
    }
}

fn plans(ctx: &EvalCtx, shape: &[usize]) -> Result<Vec<AxisPlan>, String> {
    let rank = shape.len();
    if let Some(sizes) = ctx.opt_input(3) {
        if !sizes.dtype().is_int() || sizes.len() != rank {
            return Err(format!("sizes must be {rank} integers, got {}{:?}", sizes.dtype(), sizes.shape()));
        }
        return sizes
            .to_i64_vec()
            .into_iter()
            .zip(shape)
            .map(|(out, &input)| {
                let output = usize::try_from(out).map_err(|_| format!("size {out} is negative"))?;
                if input == 0 && output != 0 {
                    return Err("cannot resize an empty axis to a non-empty one".to_string());
                }
                let scale = if input == 0 { 1.0 } else { output as f64 / input as f64 };
                Ok(AxisPlan { input, output, scale })
            })
            .collect();
    }
    let scales = ctx.opt_input(2).ok_or("one of scales and sizes must be given")?;
    if scales.len() != rank {
        return Err(format!("scales has {} elements for a rank-{rank} input", scales.len()));
    }
    scales
        .to_f32_vec()
        .into_iter()
        .zip(shape)
        .map(|(s, &input)| {
            let scale = s as f64;
            if !(scale > 0.0 && scale.is_finite()) {
                return Err(format!("scale {s} is not positive"));
            }
            Ok(AxisPlan { input, output: (input as f64 * scale).floor() as usize, scale })
        })
        .collect()
}

/// The source coordinate of output coordinate `y`.
fn source_coordinate(transform: CoordinateTransform, y: usize, plan: &AxisPlan) -> f64 {
    let y = y as f64;
    // The reference measures the output length as `scale × input`, not the rounded size.
    let out_len = plan.scale * plan.input as f64;
    match transform {
        CoordinateTransform::HalfPixel => (y + 0.5) / plan.scale - 0.5,
        CoordinateTransform::PytorchHalfPixel if out_len == 1.0 => 0.0,
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

/// Source taps `(index, weight)` of each output coordinate along one axis.
fn linear_taps(attrs: &ResizeAttrs, plan: &AxisPlan) -> Vec<[(usize, f64); 2]> {
    (0..plan.output)
        .map(|y| {
            let x = source_coordinate(attrs.coordinate_transform, y, plan);
            let floor = x.floor();
            let r = x - floor;
            [(clamp_index(floor, plan.input), 1.0 - r), (clamp_index(floor + 1.0, plan.input), r)]
        })
        .collect()
}

pub(super) fn resize(ctx: &EvalCtx, attrs: &ResizeAttrs) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let plans = plans(ctx, x.shape())?;
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
        ResizeMode::Linear => {
            let mut data: ArrayD<f64> = x.as_f32().map_err(|e| format!("linear resize: {e}"))?.mapv(|v| v as f64);
            for (axis, plan) in plans.iter().enumerate() {
                if plan.is_identity() {
                    continue;
                }
                let taps = linear_taps(attrs, plan);
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
        assert_eq!(source_coordinate(CoordinateTransform::PytorchHalfPixel, 0, &plan(4, 1)), 0.0);
    }
}
