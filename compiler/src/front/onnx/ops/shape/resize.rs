//! Converters for `Resize` (opsets 10–19+) and the deprecated `Upsample`
//! (opsets 7–9): both become the IR `Resize` with the coordinate mapping,
//! the nearest rounding, the resized axes and the aspect-ratio policy spelled
//! out.

use super::expect_inputs;
use crate::front::onnx::ctx::ConvertCtx;
use crate::front::onnx::error::{invalid, unsupported, ConvertResult};
use crate::ir::{AspectRatioPolicy, CoordinateTransform, NearestMode, Op, ResizeAttrs, ResizeMode};
use d2nn_runtime::Tensor;

const ROI: usize = 1;
const SCALES: usize = 2;
const SIZES: usize = 3;

fn mode(ctx: &ConvertCtx) -> ConvertResult<ResizeMode> {
    match ctx.attr_string_or("mode", "nearest")?.as_str() {
        "nearest" => Ok(ResizeMode::Nearest),
        "linear" => Ok(ResizeMode::Linear),
        "cubic" => Ok(ResizeMode::Cubic { coeff_a: ctx.attr_float_or("cubic_coeff_a", -0.75)? }),
        other => invalid(format!("attribute `mode` = {other:?} is not a resize mode")),
    }
}

/// Before opset 11 (Resize-10, Upsample) the source coordinate is
/// `x_out / scale` and nearest picks ⌊x⌋ when enlarging, ⌈x⌉ when shrinking
/// (the behaviour of the runtimes that defined those opsets).
fn legacy_attrs(ctx: &ConvertCtx, mode: ResizeMode) -> ConvertResult<ResizeAttrs> {
    let mut nearest_mode = NearestMode::Floor;
    if let Some(scales) = ctx.const_input(SCALES) {
        let scales = scales.to_f32_vec();
        let shrinks = scales.iter().any(|&s| s < 1.0);
        let grows = scales.iter().any(|&s| s > 1.0);
        if shrinks && grows && mode == ResizeMode::Nearest {
            return unsupported(format!(
                "scales {scales:?} both enlarge and shrink: opset-10 nearest rounding differs per axis then, which d2nnc does not represent"
            ));
        }
        if shrinks {
            nearest_mode = NearestMode::Ceil;
        }
    }
    Ok(ResizeAttrs::new(mode, CoordinateTransform::Asymmetric, nearest_mode))
}

pub(super) fn upsample(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let mode = match ctx.attr_string_or("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        other => return invalid(format!("attribute `mode` = {other:?} is not an Upsample mode")),
    };
    if ctx.opset < 9 {
        expect_inputs(ctx, 1..=1)?;
        let scales = ctx.require("scales", ctx.attr_floats("scales"))?;
        let t = Tensor::from_f32(&[scales.len()], scales).map_err(|e| crate::front::onnx::ConvertError::Invalid(e.to_string()))?;
        let v = ctx.add_const("scales", t);
        ctx.set_input(1, Some(v));
    } else {
        if ctx.has_attr("scales") {
            return invalid("attribute `scales` is an input since opset 9");
        }
        expect_inputs(ctx, 2..=2)?;
    }
    if let Some(s) = ctx.const_input(1) {
        if s.to_f32_vec().iter().any(|&s| s < 1.0) {
            return invalid(format!("Upsample scales must be ≥ 1, got {:?}", s.to_f32_vec()));
        }
    }
    let scales = ctx.input(1);
    ctx.inputs = vec![ctx.input(0), None, scales];
    Ok(Op::Resize(legacy_attrs(ctx, mode)?))
}

pub(super) fn resize(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let mode = mode(ctx)?;
    if ctx.opset == 10 {
        if let ResizeMode::Cubic { .. } = mode {
            return invalid("attribute `mode` = \"cubic\" exists only since opset 11");
        }
        for name in ["coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a", "exclude_outside", "extrapolation_value"] {
            if ctx.has_attr(name) {
                return invalid(format!("attribute `{name}` exists only since opset 11"));
            }
        }
        expect_inputs(ctx, 2..=2)?;
        let scales = ctx.input(1);
        ctx.inputs = vec![ctx.input(0), None, scales];
    } else {
        expect_inputs(ctx, if ctx.opset >= 13 { 1..=4 } else { 3..=4 })?;
    }
    for name in ["antialias", "axes", "keep_aspect_ratio_policy"] {
        if ctx.opset < 18 && ctx.has_attr(name) {
            return invalid(format!("attribute `{name}` exists only since opset 18"));
        }
    }
    // Antialiasing widens interpolation filters; nearest has none to widen.
    let antialias = match ctx.attr_int_or("antialias", 0)? {
        0 => false,
        1 => mode != ResizeMode::Nearest,
        v => return invalid(format!("attribute `antialias` = {v} must be 0 or 1")),
    };
    let exclude_outside = match ctx.attr_int_or("exclude_outside", 0)? {
        0 => false,
        1 if mode == ResizeMode::Nearest => {
            // The reference would then output 0 wherever the nearest source
            // lies outside the input, which no runtime does.
            return unsupported("attribute `exclude_outside` = 1 is not supported with mode \"nearest\"");
        }
        1 => true,
        v => return invalid(format!("attribute `exclude_outside` = {v} must be 0 or 1")),
    };
    let keep_aspect_ratio = match ctx.attr_string_or("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => AspectRatioPolicy::Stretch,
        "not_larger" => AspectRatioPolicy::NotLarger,
        "not_smaller" => AspectRatioPolicy::NotSmaller,
        other => return invalid(format!("attribute `keep_aspect_ratio_policy` = {other:?} is not a policy")),
    };
    let mut attrs = if ctx.opset == 10 {
        legacy_attrs(ctx, mode)?
    } else {
        let coordinate_transform = match ctx.attr_string_or("coordinate_transformation_mode", "half_pixel")?.as_str() {
            "half_pixel" => CoordinateTransform::HalfPixel,
            "half_pixel_symmetric" => CoordinateTransform::HalfPixelSymmetric,
            "pytorch_half_pixel" => CoordinateTransform::PytorchHalfPixel,
            "align_corners" => CoordinateTransform::AlignCorners,
            "asymmetric" => CoordinateTransform::Asymmetric,
            "tf_crop_and_resize" => {
                CoordinateTransform::TfCropAndResize { extrapolation_value: ctx.attr_float_or("extrapolation_value", 0.0)? }
            }
            "tf_half_pixel_for_nn" => {
                return unsupported(
                    "attribute `coordinate_transformation_mode` = \"tf_half_pixel_for_nn\" (opsets 11–12 only) is not supported",
                )
            }
            other => return invalid(format!("attribute `coordinate_transformation_mode` = {other:?} is not a Resize mode")),
        };
        let nearest_mode = match ctx.attr_string_or("nearest_mode", "round_prefer_floor")?.as_str() {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            other => return invalid(format!("attribute `nearest_mode` = {other:?} is not a Resize nearest mode")),
        };
        ResizeAttrs { mode, coordinate_transform, nearest_mode, axes: None, keep_aspect_ratio, exclude_outside, antialias }
    };
    if let CoordinateTransform::TfCropAndResize { .. } = attrs.coordinate_transform {
        let empty = ctx.const_input(ROI).is_some_and(|t| t.is_empty());
        if ctx.input(ROI).is_none() || empty {
            return invalid("coordinate_transformation_mode \"tf_crop_and_resize\" needs the `roi` input");
        }
    } else {
        // Only tf_crop_and_resize reads `roi`.
        ctx.set_input(ROI, None);
    }
    // An empty `scales` stands for "not given" (opsets 11–12 require the slot).
    let empty_scales = ctx.const_input(SCALES).is_some_and(|t| t.is_empty());
    if ctx.input(SIZES).is_some() || empty_scales {
        ctx.set_input(SCALES, None);
    }
    if ctx.input(SCALES).is_none() && ctx.input(SIZES).is_none() {
        return invalid("one of the inputs `scales` and `sizes` must be given");
    }
    if ctx.input(SIZES).is_none() {
        // The policy only reinterprets `sizes`.
        attrs.keep_aspect_ratio = AspectRatioPolicy::Stretch;
    }
    if let Some(axes) = ctx.attr_ints("axes")? {
        attrs.axes = resized_axes(ctx, &axes)?;
    }
    while ctx.inputs.last() == Some(&None) {
        ctx.inputs.pop();
    }
    Ok(Op::Resize(attrs))
}

/// Normalises the `axes` attribute; `None` when it lists every axis in order.
fn resized_axes(ctx: &ConvertCtx, axes: &[i64]) -> ConvertResult<Option<Vec<usize>>> {
    let Some(input) = ctx.input_type(0) else { return invalid("input `X` is missing") };
    let rank = input.rank();
    let mut normalized = Vec::with_capacity(axes.len());
    for &a in axes {
        match crate::passes::infer::normalize_axis(a, rank) {
            Some(a) if !normalized.contains(&a) => normalized.push(a),
            _ => return invalid(format!("attribute `axes` = {axes:?} is not a set of distinct axes of a rank-{rank} input")),
        }
    }
    Ok((!normalized.iter().copied().eq(0..rank)).then_some(normalized))
}
