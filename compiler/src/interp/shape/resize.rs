//! The Resize kernel, transcribed from the ONNX reference implementation
//! (`op_resize.py`): each output coordinate maps to a source coordinate (in
//! f64), nearest rounds it, linear and cubic blend its neighbours with edge
//! clamping (over a filter stretched when antialiasing), and axes are
//! resampled one at a time (interpolation is separable). Axes that
//! `scales`/`sizes` do not list keep their length.

use super::check_volume;
use crate::interp::EvalCtx;
use crate::ir::{AspectRatioPolicy, CoordinateTransform, NearestMode, ResizeAttrs, ResizeMode};
use d2nn_runtime::Tensor;
use ndarray::{ArrayD, Dimension, IxDyn};

/// One axis's resampling: output length, the scale used in coordinate maps,
/// and (for tf_crop_and_resize) the sampled region as fractions of the axis.
struct AxisPlan {
    input: usize,
    output: usize,
    scale: f64,
    roi: (f64, f64),
}

impl AxisPlan {
    fn new(input: usize, output: usize, scale: f64) -> AxisPlan {
        AxisPlan { input, output, scale, roi: (0.0, 1.0) }
    }

    /// The reference skips axes that neither scale, change length nor crop.
    fn is_identity(&self) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
        self.output == self.input && close(self.scale, 1.0) && self.roi.0 == 0.0 && close(self.roi.1, 1.0)
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
    let mut plans: Vec<AxisPlan> = shape.iter().map(|&d| AxisPlan::new(d, d, 1.0)).collect();
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
                Some(scale) => AxisPlan::new(input, (scale * input as f64 + 0.5) as usize, scale),
                None => {
                    let output = sizes[k];
                    if input == 0 && output != 0 {
                        return Err("cannot resize an empty axis to a non-empty one".to_string());
                    }
                    AxisPlan::new(input, output, if input == 0 { 1.0 } else { ratios[k] })
                }
            };
        }
    } else {
        let scales = ctx.opt_input(2).ok_or("one of scales and sizes must be given")?;
        if scales.len() != axes.len() {
            return Err(format!("scales has {} elements for {} resized axes", scales.len(), axes.len()));
        }
        for (&a, s) in axes.iter().zip(scales.to_f32_vec()) {
            let scale = s as f64;
            if !(scale > 0.0 && scale.is_finite()) {
                return Err(format!("scale {s} is not positive"));
            }
            plans[a] = AxisPlan::new(shape[a], (shape[a] as f64 * scale).floor() as usize, scale);
        }
    }
    if let CoordinateTransform::TfCropAndResize { .. } = attrs.coordinate_transform {
        let roi = ctx.input(1).map_err(|_| "tf_crop_and_resize needs the roi input".to_string())?;
        let roi = roi.to_f32_vec();
        if roi.len() != 2 * axes.len() {
            return Err(format!("roi has {} elements, expected starts and ends for {} resized axes", roi.len(), axes.len()));
        }
        for (k, &a) in axes.iter().enumerate() {
            plans[a].roi = (f64::from(roi[k]), f64::from(roi[axes.len() + k]));
        }
    }
    Ok(plans)
}

/// The source coordinate of output coordinate `y`.
fn source_coordinate(transform: CoordinateTransform, y: usize, plan: &AxisPlan) -> f64 {
    let y = y as f64;
    // The reference measures the output length as `scale × input`, not the rounded size.
    let out_len = plan.scale * plan.input as f64;
    let last = plan.input as f64 - 1.0;
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
        CoordinateTransform::AlignCorners => y * last / (out_len - 1.0),
        CoordinateTransform::Asymmetric => y / plan.scale,
        CoordinateTransform::TfCropAndResize { .. } => {
            let (start, end) = plan.roi;
            let within = if out_len == 1.0 { (end - start) * last / 2.0 } else { y * (end - start) * last / (out_len - 1.0) };
            within + start * last
        }
    }
}

/// tf_crop_and_resize's value for a source coordinate outside the input.
fn extrapolated(transform: CoordinateTransform, x: f64, plan: &AxisPlan) -> Option<f64> {
    match transform {
        CoordinateTransform::TfCropAndResize { extrapolation_value } if x < 0.0 || x > plan.input as f64 - 1.0 => {
            Some(f64::from(extrapolation_value))
        }
        _ => None,
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

/// Keys' cubic convolution kernel with parameter `a`.
fn keys(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// The weights of consecutive taps at offsets `first - ratio, first + 1 -
/// ratio, …` from the source coordinate. Without antialiasing: linear's two
/// and cubic's four taps around it. With it, the filter is stretched by
/// `1 / min(scale, 1)` (more taps when shrinking) and renormalised.
fn blend_weights(attrs: &ResizeAttrs, ratio: f64, scale: f64) -> Vec<f64> {
    let stretch = if attrs.antialias { scale.min(1.0) } else { 1.0 };
    let (first, kernel): (i64, Box<dyn Fn(f64) -> f64>) = match attrs.mode {
        ResizeMode::Cubic { coeff_a } => {
            let a = f64::from(coeff_a);
            ((-2.0 / stretch).floor() as i64 + 1, Box::new(move |x| keys(x, a)))
        }
        _ => ((-1.0 / stretch).floor() as i64 + 1, Box::new(|x: f64| (1.0 - x.abs()).clamp(0.0, 1.0))),
    };
    let weights: Vec<f64> = (first..2 - first).map(|i| kernel(stretch * (i as f64 - ratio))).collect();
    if !attrs.antialias {
        return weights;
    }
    let sum: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / sum).collect()
}

/// How one output coordinate is computed along an axis.
enum Blend {
    /// `(index, weight)` pairs of source elements.
    Taps(Vec<(usize, f64)>),
    /// tf_crop_and_resize's value for a source outside the input.
    Outside(f64),
}

/// The blend of each output coordinate along one axis, for linear and
/// cubic interpolation, tap for tap as the reference picks them: the
/// (even) tap count centred on the source coordinate, an integer coordinate
/// counting as ratio 1 of the element before. Taps outside the input read the
/// edge element, or with `exclude_outside` get weight 0 and the rest are
/// renormalised.
fn blends(attrs: &ResizeAttrs, plan: &AxisPlan) -> Vec<Blend> {
    (0..plan.output)
        .map(|y| {
            let x = source_coordinate(attrs.coordinate_transform, y, plan);
            if let Some(v) = extrapolated(attrs.coordinate_transform, x, plan) {
                return Blend::Outside(v);
            }
            let floor = x.floor();
            let on_element = x == floor;
            let ratio = if on_element { 1.0 } else { x - floor };
            let weights = blend_weights(attrs, ratio, plan.scale);
            let half = (weights.len() / 2) as f64;
            let first = floor - half + if on_element { 0.0 } else { 1.0 };
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
            Blend::Taps(taps.into_iter().map(|(i, w)| (clamp_index(i, plan.input), w)).collect())
        })
        .collect()
}

/// Nearest resize: each output element copies one source element, or takes
/// `fill` where tf_crop_and_resize's source lies outside on some axis.
fn nearest<T: Clone>(a: &ArrayD<T>, shape: &[usize], maps: &[Vec<Option<usize>>], fill: T) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(shape), |idx| {
        let source: Option<Vec<usize>> = idx.slice().iter().zip(maps).map(|(&i, m)| m[i]).collect();
        match source {
            Some(source) => a[IxDyn(&source)].clone(),
            None => fill.clone(),
        }
    })
}

pub(super) fn resize(ctx: &EvalCtx, attrs: &ResizeAttrs) -> Result<Tensor, String> {
    let x = ctx.input(0)?;
    let plans = plans(ctx, attrs, x.shape())?;
    let out_shape: Vec<usize> = plans.iter().map(|p| p.output).collect();
    check_volume(&out_shape)?;
    if out_shape.contains(&0) {
        return Ok(Tensor::zeros(x.dtype(), &out_shape));
    }
    let transform = attrs.coordinate_transform;
    match attrs.mode {
        ResizeMode::Nearest => {
            let maps: Vec<Vec<Option<usize>>> = plans
                .iter()
                .map(|p| {
                    (0..p.output)
                        .map(|y| {
                            if p.is_identity() {
                                return Some(y);
                            }
                            let x = source_coordinate(transform, y, p);
                            extrapolated(transform, x, p).is_none().then(|| nearest_index(x, attrs.nearest_mode, p.input))
                        })
                        .collect()
                })
                .collect();
            let fill_value = match transform {
                CoordinateTransform::TfCropAndResize { extrapolation_value } => extrapolation_value,
                _ => 0.0,
            };
            let fill = Tensor::scalar_f32(fill_value).cast(x.dtype());
            Ok(match (x, &fill) {
                (Tensor::F32(a), Tensor::F32(f)) => Tensor::F32(nearest(a, &out_shape, &maps, first(f)?)),
                (Tensor::I64(a), Tensor::I64(f)) => Tensor::I64(nearest(a, &out_shape, &maps, first(f)?)),
                (Tensor::I32(a), Tensor::I32(f)) => Tensor::I32(nearest(a, &out_shape, &maps, first(f)?)),
                (Tensor::Bool(a), Tensor::Bool(f)) => Tensor::Bool(nearest(a, &out_shape, &maps, first(f)?)),
                _ => return Err(format!("cannot fill {} data with a {} value", x.dtype(), fill.dtype())),
            })
        }
        ResizeMode::Linear | ResizeMode::Cubic { .. } => {
            let mut data: ArrayD<f64> = x.as_f32().map_err(|e| format!("{:?} resize: {e}", attrs.mode))?.mapv(|v| v as f64);
            for (axis, plan) in plans.iter().enumerate() {
                if plan.is_identity() {
                    continue;
                }
                let blends = blends(attrs, plan);
                let mut shape = data.shape().to_vec();
                shape[axis] = plan.output;
                data = ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
                    let mut src = idx.slice().to_vec();
                    match &blends[idx[axis]] {
                        Blend::Outside(v) => *v,
                        Blend::Taps(taps) => taps
                            .iter()
                            .map(|&(i, w)| {
                                src[axis] = i;
                                w * data[IxDyn(&src)]
                            })
                            .sum(),
                    }
                });
            }
            Ok(Tensor::F32(data.mapv(|v| v as f32)))
        }
    }
}

fn first<T: Clone>(a: &ArrayD<T>) -> Result<T, String> {
    a.iter().next().cloned().ok_or_else(|| "empty fill value".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(input: usize, output: usize) -> AxisPlan {
        AxisPlan::new(input, output, output as f64 / input as f64)
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
        // tf_crop_and_resize samples roi [0.25, 0.75] of 5 elements at 3 points: 1, 2, 3.
        let crop = CoordinateTransform::TfCropAndResize { extrapolation_value: 0.0 };
        let p = AxisPlan { roi: (0.25, 0.75), ..AxisPlan::new(5, 3, 0.6) };
        assert_eq!((0..3).map(|y| source_coordinate(crop, y, &p)).collect::<Vec<_>>(), vec![1.0, 2.0, 3.0]);
        assert_eq!(extrapolated(crop, 4.5, &p), Some(0.0));
    }

    #[test]
    fn unstretched_filters_are_the_plain_linear_and_cubic_weights() {
        let attrs = ResizeAttrs::new(ResizeMode::Linear, CoordinateTransform::HalfPixel, NearestMode::Floor);
        assert_eq!(blend_weights(&attrs, 0.25, 0.5), vec![0.75, 0.25]);
        let cubic = ResizeAttrs::new(ResizeMode::Cubic { coeff_a: -0.75 }, CoordinateTransform::HalfPixel, NearestMode::Floor);
        let w = blend_weights(&cubic, 0.5, 2.0);
        assert_eq!(w.len(), 4);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Antialiasing a halving stretches linear over four taps: weights ∝ 1 - |i - r| / 2.
        let aa = ResizeAttrs { antialias: true, ..attrs };
        let w = blend_weights(&aa, 0.5, 0.5);
        assert_eq!(w, vec![0.125, 0.375, 0.375, 0.125]);
        // Upsampling leaves the filter alone.
        assert_eq!(blend_weights(&aa, 0.25, 2.0), vec![0.75, 0.25]);
    }
}
