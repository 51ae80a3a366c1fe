//! Converters for convolution, pooling, softmax and the normalisations.
//!
//! ONNX spreads the window geometry (`kernel_shape`, `strides`, `dilations`,
//! `pads`, `auto_pad`) over several attributes with opset-dependent defaults;
//! they are validated once here so inference and the kernels can trust them.

use crate::front::onnx::ctx::ConvertCtx;
use crate::front::onnx::error::{invalid, unsupported, ConvertResult};
use crate::front::onnx::registry::{OpDef, Registry, MAX_OPSET};
use crate::ir::{ConvAttrs, ConvTransposeAttrs, Dim, Op, Padding, PoolAttrs, PoolKind};

#[cfg(test)]
mod tests;

/// Every op here except LayerNormalization keeps its semantics from opset 1
/// on (later versions added attributes with neutral defaults, or types); the
/// few opset-1 attributes that were later removed (`consumed_inputs`) are
/// reported as unsupported by the attribute check.
const SINCE_OPSET_1: i64 = 1;

pub(super) fn register(reg: &mut Registry) {
    let window = &["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"];
    reg.insert(OpDef {
        op_type: "Conv",
        opsets: SINCE_OPSET_1..=MAX_OPSET,
        inputs: 2..=3,
        outputs: 1..=1,
        attrs: window,
        convert: convert_conv,
    });
    reg.insert(OpDef {
        op_type: "ConvTranspose",
        opsets: SINCE_OPSET_1..=MAX_OPSET,
        inputs: 2..=3,
        outputs: 1..=1,
        attrs: &["auto_pad", "dilations", "group", "kernel_shape", "output_padding", "output_shape", "pads", "strides"],
        convert: convert_conv_transpose,
    });
    reg.insert(OpDef {
        op_type: "MaxPool",
        opsets: SINCE_OPSET_1..=MAX_OPSET,
        inputs: 1..=1,
        // `Y`, then the optional `Indices`.
        outputs: 1..=2,
        attrs: &["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"],
        convert: convert_max_pool,
    });
    reg.insert(OpDef {
        op_type: "AveragePool",
        opsets: SINCE_OPSET_1..=MAX_OPSET,
        inputs: 1..=1,
        outputs: 1..=1,
        attrs: &["auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides"],
        convert: convert_average_pool,
    });
    for (op_type, convert) in [
        ("GlobalAveragePool", convert_global_average_pool as fn(&mut ConvertCtx) -> ConvertResult<Op>),
        ("GlobalMaxPool", convert_global_max_pool),
    ] {
        reg.insert(OpDef { op_type, opsets: SINCE_OPSET_1..=MAX_OPSET, inputs: 1..=1, outputs: 1..=1, attrs: &[], convert });
    }
    reg.insert(OpDef {
        op_type: "BatchNormalization",
        opsets: SINCE_OPSET_1..=MAX_OPSET,
        inputs: 5..=5,
        // Running/saved statistics outputs (up to 4 before opset 14) are
        // rejected by the converter with a reason.
        outputs: 1..=5,
        attrs: &["epsilon", "is_test", "momentum", "spatial", "training_mode"],
        convert: convert_batch_norm,
    });
    reg.insert(OpDef {
        op_type: "LRN",
        opsets: SINCE_OPSET_1..=MAX_OPSET,
        inputs: 1..=1,
        outputs: 1..=1,
        attrs: &["alpha", "beta", "bias", "size"],
        convert: convert_lrn,
    });
    for (op_type, convert) in [
        ("Softmax", convert_softmax as fn(&mut ConvertCtx) -> ConvertResult<Op>),
        ("LogSoftmax", convert_log_softmax),
    ] {
        reg.insert(OpDef { op_type, opsets: SINCE_OPSET_1..=MAX_OPSET, inputs: 1..=1, outputs: 1..=1, attrs: &["axis"], convert });
    }
    reg.insert(OpDef {
        op_type: "LayerNormalization",
        opsets: 17..=MAX_OPSET,
        inputs: 2..=3,
        // `Y`, then the optional `Mean` and `InvStdDev` statistics.
        outputs: 1..=3,
        attrs: &["axis", "epsilon", "stash_type"],
        convert: convert_layer_norm,
    });
    reg.insert(OpDef {
        op_type: "InstanceNormalization",
        opsets: SINCE_OPSET_1..=MAX_OPSET,
        inputs: 3..=3,
        outputs: 1..=1,
        attrs: &["epsilon"],
        convert: convert_instance_norm,
    });
}

// ── window geometry ──

/// Largest accepted kernel size, stride, dilation or pad. Far beyond any real
/// model, and small enough that the window arithmetic on dims up to 2^34
/// cannot overflow.
const MAX_WINDOW_ATTR: i64 = 1 << 24;

/// A list attribute of one non-negative (or positive) entry per spatial axis,
/// or `default` repeated when absent.
fn per_axis(ctx: &ConvertCtx, name: &str, spatial: usize, default: usize, min: i64) -> ConvertResult<Vec<usize>> {
    let Some(values) = ctx.attr_ints(name)? else { return Ok(vec![default; spatial]) };
    if values.len() != spatial {
        return invalid(format!("attribute `{name}` has {} entries, expected {spatial} (one per spatial axis)", values.len()));
    }
    values
        .iter()
        .map(|&v| {
            if v < min {
                invalid(format!("attribute `{name}` = {values:?} must hold values ≥ {min}"))
            } else if v > MAX_WINDOW_ATTR {
                unsupported(format!("attribute `{name}` = {values:?} is not supported: values above {MAX_WINDOW_ATTR} are absurd"))
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

/// Reads `auto_pad` and `pads` into a [`Padding`].
fn padding(ctx: &ConvertCtx, spatial: usize) -> ConvertResult<Padding> {
    let auto_pad = ctx.attr_string_or("auto_pad", "NOTSET")?;
    match auto_pad.as_str() {
        // Some exporters write an empty string for the default.
        "NOTSET" | "" => {}
        "VALID" => return Ok(Padding::Explicit(vec![0; 2 * spatial])),
        "SAME_UPPER" => return Ok(Padding::SameUpper),
        "SAME_LOWER" => return Ok(Padding::SameLower),
        other => return invalid(format!("attribute `auto_pad` = {other:?} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")),
    }
    let Some(pads) = ctx.attr_ints("pads")? else { return Ok(Padding::Explicit(vec![0; 2 * spatial])) };
    if pads.len() != 2 * spatial {
        return invalid(format!("attribute `pads` has {} entries, expected {} (begin and end per spatial axis)", pads.len(), 2 * spatial));
    }
    if pads.iter().any(|&p| p < 0) {
        return unsupported(format!("attribute `pads` = {pads:?} is not supported: negative pads (cropping) are not implemented"));
    }
    if pads.iter().any(|&p| p > MAX_WINDOW_ATTR) {
        return unsupported(format!("attribute `pads` = {pads:?} is not supported: values above {MAX_WINDOW_ATTR} are absurd"));
    }
    Ok(Padding::Explicit(pads.iter().map(|&p| p as usize).collect()))
}

/// The number of spatial axes and the kernel size: from `kernel_shape`, or
/// else from the weight's static shape `[M, C/group, k1, k2, …]`.
fn conv_kernel(ctx: &ConvertCtx) -> ConvertResult<Vec<usize>> {
    let weight_dims: Option<Vec<Dim>> = ctx.input_type(1).map(|t| t.shape.iter().skip(2).copied().collect());
    if let Some(kernel) = ctx.attr_ints("kernel_shape")? {
        let kernel = kernel_sizes(&kernel)?;
        if let Some(dims) = &weight_dims {
            // A rank mismatch is inference's to report, with the weight's full type.
            let agrees = dims.len() != kernel.len() || dims.iter().zip(&kernel).all(|(d, &k)| d.known().is_none_or(|n| n == k));
            if !agrees {
                return invalid(format!("attribute `kernel_shape` = {kernel:?} does not match the weight's spatial dims {dims:?}"));
            }
        }
        return Ok(kernel);
    }
    match weight_dims.map(|dims| dims.iter().map(|d| d.known()).collect::<Option<Vec<usize>>>()) {
        Some(Some(kernel)) if !kernel.is_empty() => {
            if kernel.contains(&0) {
                return invalid(format!("the weight's spatial dims {kernel:?} include an empty axis"));
            }
            Ok(kernel)
        }
        _ => unsupported("`kernel_shape` is absent and the weight's spatial dims are not static; give `kernel_shape` or a constant weight"),
    }
}

/// Validates a `kernel_shape` attribute.
fn kernel_sizes(kernel: &[i64]) -> ConvertResult<Vec<usize>> {
    if kernel.is_empty() || kernel.iter().any(|&k| k < 1) {
        return invalid(format!("attribute `kernel_shape` = {kernel:?} must hold positive sizes"));
    }
    if kernel.iter().any(|&k| k > MAX_WINDOW_ATTR) {
        return unsupported(format!("attribute `kernel_shape` = {kernel:?} is not supported: sizes above {MAX_WINDOW_ATTR} are absurd"));
    }
    Ok(kernel.iter().map(|&k| k as usize).collect())
}

fn conv_attrs(ctx: &ConvertCtx) -> ConvertResult<ConvAttrs> {
    let kernel = conv_kernel(ctx)?;
    let spatial = kernel.len();
    let group = ctx.attr_int_or("group", 1)?;
    if group < 1 {
        return invalid(format!("attribute `group` = {group} must be positive"));
    }
    if group > MAX_WINDOW_ATTR {
        return unsupported(format!("attribute `group` = {group} is not supported: more than {MAX_WINDOW_ATTR} groups is absurd"));
    }
    Ok(ConvAttrs {
        strides: per_axis(ctx, "strides", spatial, 1, 1)?,
        dilations: per_axis(ctx, "dilations", spatial, 1, 1)?,
        padding: padding(ctx, spatial)?,
        group: group as usize,
        kernel,
    })
}

fn convert_conv(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    Ok(Op::Conv(conv_attrs(ctx)?))
}

fn convert_conv_transpose(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let conv = conv_attrs(ctx)?;
    let spatial = conv.kernel.len();
    let output_padding = per_axis(ctx, "output_padding", spatial, 0, 0)?;
    for (axis, &p) in output_padding.iter().enumerate() {
        // Larger values would add output rows that no input position can reach.
        if p >= conv.strides[axis].max(conv.dilations[axis]) {
            return invalid(format!(
                "attribute `output_padding` = {output_padding:?} must be smaller than the stride or dilation on every axis"
            ));
        }
    }
    let output_shape = match ctx.attr_ints("output_shape")? {
        None => None,
        Some(shape) => {
            // Some exporters give the full `[N, C, spatial…]` shape; only the spatial part matters.
            let spatial_part = match shape.len() {
                n if n == spatial => &shape[..],
                n if n == spatial + 2 => &shape[2..],
                n => return invalid(format!("attribute `output_shape` has {n} entries, expected {spatial} (one per spatial axis)")),
            };
            if spatial_part.iter().any(|&d| d < 0) {
                return invalid(format!("attribute `output_shape` = {shape:?} has a negative size"));
            }
            if spatial_part.iter().any(|&d| d as u64 > crate::front::onnx::tensor::MAX_ELEMENTS) {
                return unsupported(format!("attribute `output_shape` = {shape:?} is not supported: absurd size"));
            }
            Some(spatial_part.iter().map(|&d| d as usize).collect())
        }
    };
    Ok(Op::ConvTranspose(ConvTransposeAttrs { conv, output_padding, output_shape }))
}

fn pool_attrs(ctx: &ConvertCtx) -> ConvertResult<PoolAttrs> {
    let kernel = kernel_sizes(&ctx.require("kernel_shape", ctx.attr_ints("kernel_shape"))?)?;
    let spatial = kernel.len();
    let ceil_mode = ctx.attr_int_or("ceil_mode", 0)?;
    if !(0..=1).contains(&ceil_mode) {
        return invalid(format!("attribute `ceil_mode` = {ceil_mode} must be 0 or 1"));
    }
    Ok(PoolAttrs {
        kernel,
        strides: per_axis(ctx, "strides", spatial, 1, 1)?,
        dilations: per_axis(ctx, "dilations", spatial, 1, 1)?,
        padding: padding(ctx, spatial)?,
        ceil_mode: ceil_mode == 1,
    })
}

fn convert_max_pool(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    // `storage_order` only changes how the `Indices` output is numbered.
    let storage_order = ctx.attr_int_or("storage_order", 0)?;
    if !(0..=1).contains(&storage_order) {
        return invalid(format!("attribute `storage_order` = {storage_order} must be 0 or 1"));
    }
    Ok(Op::Pool { kind: PoolKind::Max { column_major_indices: storage_order == 1 }, attrs: pool_attrs(ctx)? })
}

fn convert_average_pool(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let count_include_pad = ctx.attr_int_or("count_include_pad", 0)?;
    if !(0..=1).contains(&count_include_pad) {
        return invalid(format!("attribute `count_include_pad` = {count_include_pad} must be 0 or 1"));
    }
    let attrs = pool_attrs(ctx)?;
    Ok(Op::Pool { kind: PoolKind::Average { count_include_pad: count_include_pad == 1 }, attrs })
}

fn convert_global_average_pool(_ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    Ok(Op::GlobalPool { kind: PoolKind::Average { count_include_pad: false } })
}

fn convert_global_max_pool(_ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    Ok(Op::GlobalPool { kind: PoolKind::Max { column_major_indices: false } })
}

// ── normalisation ──

fn epsilon(ctx: &ConvertCtx, default: f32) -> ConvertResult<f32> {
    let epsilon = ctx.attr_float_or("epsilon", default)?;
    if !(epsilon >= 0.0 && epsilon.is_finite()) {
        return invalid(format!("attribute `epsilon` = {epsilon} must be a finite non-negative number"));
    }
    Ok(epsilon)
}

fn convert_batch_norm(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    // `momentum` only updates running statistics during training: ignored.
    if ctx.opset < 7 {
        // Before opset 7 the default (is_test = 0) is training mode.
        let is_test = ctx.attr_int_or("is_test", 0)?;
        if is_test == 0 {
            return unsupported(
                "attribute `is_test` = 0 (the default before opset 7) is not supported: only inference-mode batch normalisation (is_test = 1) is compiled",
            );
        }
    } else if ctx.has_attr("is_test") {
        return invalid(format!("attribute `is_test` was removed in opset 7 (this model uses opset {})", ctx.opset));
    }
    if ctx.opset <= 8 {
        let spatial = ctx.attr_int_or("spatial", 1)?;
        if spatial != 1 {
            return unsupported(format!(
                "attribute `spatial` = {spatial} is not supported: per-activation statistics (spatial=0) are not implemented"
            ));
        }
    } else if ctx.has_attr("spatial") {
        return invalid(format!("attribute `spatial` was removed in opset 9 (this model uses opset {})", ctx.opset));
    }
    let training_mode = ctx.attr_int_or("training_mode", 0)?;
    if training_mode != 0 {
        return unsupported(format!(
            "attribute `training_mode` = {training_mode} is not supported: only inference-mode batch normalisation is compiled"
        ));
    }
    if ctx.num_outputs > 1 {
        return unsupported(
            "the running/saved mean and variance outputs are not supported: they only exist for training; only `Y` can be used",
        );
    }
    Ok(Op::BatchNorm { epsilon: epsilon(ctx, 1e-5)? })
}

fn convert_instance_norm(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    Ok(Op::InstanceNorm { epsilon: epsilon(ctx, 1e-5)? })
}

fn convert_layer_norm(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let stash_type = ctx.attr_int_or("stash_type", 1)?;
    if stash_type != 1 {
        return unsupported(format!(
            "attribute `stash_type` = {stash_type} is not supported: statistics are always computed in f32 (stash_type=1)"
        ));
    }
    Ok(Op::LayerNorm { axis: ctx.attr_int_or("axis", -1)?, epsilon: epsilon(ctx, 1e-5)? })
}

fn convert_lrn(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    let size = ctx.require("size", ctx.attr_int("size"))?;
    if size < 1 {
        return invalid(format!("attribute `size` = {size} must be positive"));
    }
    Ok(Op::Lrn {
        size: size as usize,
        alpha: ctx.attr_float_or("alpha", 1e-4)?,
        beta: ctx.attr_float_or("beta", 0.75)?,
        bias: ctx.attr_float_or("bias", 1.0)?,
    })
}

// ── softmax ──

fn softmax(ctx: &ConvertCtx, log: bool) -> ConvertResult<Op> {
    if ctx.opset >= 13 {
        return Ok(Op::Softmax { axis: ctx.attr_int_or("axis", -1)?, log, coerce_2d: false });
    }
    // Before opset 13 the input is viewed as 2-D `[d0·…·d(axis-1), d(axis)·…]`
    // and normalised along the second dim. That equals the single-axis form
    // exactly when `axis` is the last axis, the common case worth keeping canonical.
    let axis = ctx.attr_int_or("axis", 1)?;
    let rank = ctx.input_type(0).map(|t| t.rank());
    let is_last = rank.and_then(|r| crate::passes::infer::normalize_axis(axis, r).map(|a| a + 1 == r)).unwrap_or(false);
    Ok(Op::Softmax { axis, log, coerce_2d: !is_last })
}

fn convert_softmax(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    softmax(ctx, false)
}

fn convert_log_softmax(ctx: &mut ConvertCtx) -> ConvertResult<Op> {
    softmax(ctx, true)
}
