//! Inference for convolution, pooling, softmax and the normalisations.
//!
//! Spatial output sizes follow the ONNX window rules (see [`window_output`]);
//! a symbolic input size stays symbolic only where the result is still a
//! multiple of the symbol (stride-1 "same-size" windows, `SAME` padding with a
//! divisible factor, transposed convolutions that scale by the stride).

use super::{broadcast_shapes, InferCtx, InferError};
use crate::ir::{ConvAttrs, ConvTransposeAttrs, Dim, Op, Padding, PoolAttrs, PoolKind, TensorType};
use d2nn_runtime::DType;

pub(super) fn infer(ctx: &InferCtx) -> Result<Vec<TensorType>, InferError> {
    match ctx.op() {
        Op::LayerNorm { axis, .. } => return layer_norm(ctx, *axis),
        Op::Pool { kind, attrs } => {
            let values = pool(ctx, attrs)?;
            return match (ctx.num_outputs(), kind) {
                (1, _) => Ok(vec![values]),
                // MaxPool's `Indices`: one i64 position per pooled value.
                (2, PoolKind::Max { .. }) => Ok(vec![values.clone(), TensorType::new(DType::I64, values.shape)]),
                (n, _) => Err(ctx.err(format!("has {n} outputs, expected Y (and, for MaxPool, optionally Indices)"))),
            };
        }
        _ => {}
    }
    let out = match ctx.op() {
        Op::Conv(attrs) => conv(ctx, attrs)?,
        Op::ConvTranspose(attrs) => conv_transpose(ctx, attrs)?,
        Op::GlobalPool { .. } => global_pool(ctx)?,
        Op::BatchNorm { .. } => per_channel_norm(ctx, 5, 2)?,
        Op::InstanceNorm { .. } => per_channel_norm(ctx, 3, 2)?,
        Op::Lrn { .. } => float_input_of_rank(ctx, 2)?.clone(),
        Op::Softmax { axis, .. } => {
            let x = float_input_of_rank(ctx, 1)?;
            ctx.axis(*axis, x.rank())?;
            x.clone()
        }
        other => return Err(ctx.err(format!("{} is not an op of the conv family", other.name()))),
    };
    Ok(vec![out])
}

/// Input 0, required to be f32 with at least `min_rank` dims.
fn float_input_of_rank<'a>(ctx: &InferCtx<'a>, min_rank: usize) -> Result<&'a TensorType, InferError> {
    ctx.expect_dtype(0, &[DType::F32])?;
    let x = ctx.input(0)?;
    if x.rank() < min_rank {
        return Err(ctx.err(format!("input 0 has rank {}, expected at least {min_rank}", x.rank())));
    }
    Ok(x)
}

/// Checks that input `i` is an f32 vector whose length is `len` where both are known.
fn expect_vector(ctx: &InferCtx, i: usize, what: &str, len: Dim) -> Result<(), InferError> {
    ctx.expect_dtype(i, &[DType::F32])?;
    let t = ctx.input(i)?;
    let ok = match t.shape[..] {
        [d] => !(matches!((d, len), (Dim::Known(a), Dim::Known(b)) if a != b)),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ctx.err(format!("input {i} ({what}) has shape {:?}, expected one value per channel ({len:?})", t.shape)))
    }
}

/// Checks `x` has one more spatial axis per kernel entry than batch and channel.
fn expect_spatial_rank(ctx: &InferCtx, i: usize, t: &TensorType, spatial: usize) -> Result<(), InferError> {
    if t.rank() != spatial + 2 {
        return Err(ctx.err(format!(
            "input {i} has rank {}, expected {} (batch, channels and {spatial} spatial axes from the kernel)",
            t.rank(),
            spatial + 2
        )));
    }
    Ok(())
}

fn conflict(a: Dim, b: Dim) -> bool {
    matches!((a, b), (Dim::Known(x), Dim::Known(y)) if x != y)
}

/// How one spatial axis of a window op is laid out.
struct Window {
    kernel: usize,
    stride: usize,
    dilation: usize,
    ceil_mode: bool,
}

/// The output size of one spatial axis of Conv or a pool.
///
/// Explicit pads: `floor_or_ceil((in + pads - dilated_kernel) / stride) + 1`,
/// where in ceil mode a last window that would start in the end padding is
/// dropped (it must start inside the input or the begin padding). `SAME_*`:
/// `ceil(in / stride)`.
fn window_output(ctx: &InferCtx, axis: usize, input: Dim, w: &Window, padding: &Padding) -> Result<Dim, InferError> {
    let spatial = match padding {
        Padding::Explicit(p) => p.len() / 2,
        _ => 0,
    };
    let reach = w.dilation * (w.kernel - 1) + 1;
    match (input, padding) {
        (Dim::Known(n), Padding::SameUpper | Padding::SameLower) => Ok(Dim::Known(n.div_ceil(w.stride))),
        (_, Padding::SameUpper | Padding::SameLower) => Ok(input.div_exact(Dim::Known(w.stride)).unwrap_or(Dim::Unknown)),
        (Dim::Known(n), Padding::Explicit(pads)) => {
            let (begin, end) = (pads[axis], pads[spatial + axis]);
            let padded = n + begin + end;
            if padded < reach {
                return Err(ctx.err(format!(
                    "spatial axis {axis}: the window spans {reach} but the padded input has only {padded} elements"
                )));
            }
            let span = padded - reach;
            let mut out = if w.ceil_mode { span.div_ceil(w.stride) } else { span / w.stride } + 1;
            if w.ceil_mode && (out - 1) * w.stride >= n + begin {
                out -= 1;
            }
            Ok(Dim::Known(out))
        }
        (_, Padding::Explicit(pads)) => {
            // Only the size-preserving case stays expressible in terms of the symbol.
            let same_size = w.stride == 1 && pads[axis] + pads[spatial + axis] + 1 == reach;
            Ok(if same_size { input } else { Dim::Unknown })
        }
    }
}

fn check_padding_len(ctx: &InferCtx, padding: &Padding, spatial: usize) -> Result<(), InferError> {
    match padding {
        Padding::Explicit(p) if p.len() != 2 * spatial => {
            Err(ctx.err(format!("pads has {} entries, expected {}", p.len(), 2 * spatial)))
        }
        _ => Ok(()),
    }
}

fn check_conv_attrs(ctx: &InferCtx, a: &ConvAttrs) -> Result<usize, InferError> {
    let spatial = a.kernel.len();
    if spatial == 0 || a.strides.len() != spatial || a.dilations.len() != spatial {
        return Err(ctx.err("kernel, strides and dilations must have one entry per spatial axis"));
    }
    if a.kernel.contains(&0) || a.strides.contains(&0) || a.dilations.contains(&0) || a.group == 0 {
        return Err(ctx.err("kernel, strides, dilations and group must be positive"));
    }
    check_padding_len(ctx, &a.padding, spatial)?;
    Ok(spatial)
}

/// Shared Conv / ConvTranspose operand checks; returns (x, w).
fn conv_operands<'a>(ctx: &InferCtx<'a>, a: &ConvAttrs) -> Result<(&'a TensorType, &'a TensorType), InferError> {
    let spatial = check_conv_attrs(ctx, a)?;
    ctx.expect_dtype(0, &[DType::F32])?;
    ctx.expect_dtype(1, &[DType::F32])?;
    let (x, w) = (ctx.input(0)?, ctx.input(1)?);
    expect_spatial_rank(ctx, 0, x, spatial)?;
    expect_spatial_rank(ctx, 1, w, spatial)?;
    for (i, (&d, &k)) in w.shape[2..].iter().zip(&a.kernel).enumerate() {
        if conflict(d, Dim::Known(k)) {
            return Err(ctx.err(format!("weight spatial dim {i} is {d:?} but the kernel size is {k}")));
        }
    }
    Ok((x, w))
}

fn conv(ctx: &InferCtx, a: &ConvAttrs) -> Result<TensorType, InferError> {
    let (x, w) = conv_operands(ctx, a)?;
    let group = Dim::Known(a.group);
    if conflict(x.shape[1], w.shape[1] * group) {
        return Err(ctx.err(format!(
            "input has {:?} channels but the weight expects {:?} per group × {} groups",
            x.shape[1], w.shape[1], a.group
        )));
    }
    if let Dim::Known(m) = w.shape[0] {
        if m % a.group != 0 {
            return Err(ctx.err(format!("{m} output channels cannot be split into {} groups", a.group)));
        }
    }
    if ctx.opt_input(2).is_some() {
        expect_vector(ctx, 2, "bias", w.shape[0])?;
    }
    let mut shape = vec![x.shape[0], w.shape[0]];
    for axis in 0..a.kernel.len() {
        let win = Window { kernel: a.kernel[axis], stride: a.strides[axis], dilation: a.dilations[axis], ceil_mode: false };
        shape.push(window_output(ctx, axis, x.shape[axis + 2], &win, &a.padding)?);
    }
    Ok(TensorType::new(DType::F32, shape))
}

/// The output size of one spatial axis of ConvTranspose:
/// `stride·(in-1) + output_padding + dilated_kernel - pads`, or `in·stride`
/// for `SAME_*`, or the `output_shape` attribute when given.
fn conv_transpose_output(ctx: &InferCtx, axis: usize, input: Dim, a: &ConvTransposeAttrs) -> Result<Dim, InferError> {
    let c = &a.conv;
    let (stride, reach) = (c.strides[axis], c.dilations[axis] * (c.kernel[axis] - 1) + 1);
    if let Some(shape) = &a.output_shape {
        return Ok(Dim::Known(shape[axis]));
    }
    let pads = match &c.padding {
        Padding::SameUpper | Padding::SameLower => return Ok(input * Dim::Known(stride)),
        Padding::Explicit(p) => p[axis] + p[axis + c.kernel.len()],
    };
    let grown = a.output_padding[axis] + reach;
    match input {
        Dim::Known(n) => {
            let full = stride * n.saturating_sub(1) + grown;
            if n == 0 || full < pads {
                return Err(ctx.err(format!(
                    "spatial axis {axis}: the pads ({pads}) remove more than the whole output ({full} elements)"
                )));
            }
            Ok(Dim::Known(full - pads))
        }
        // stride·(in-1) + grown - pads is stride·in exactly when grown - pads == stride.
        _ if grown == stride + pads => Ok(input * Dim::Known(stride)),
        _ => Ok(Dim::Unknown),
    }
}

fn conv_transpose(ctx: &InferCtx, a: &ConvTransposeAttrs) -> Result<TensorType, InferError> {
    let (x, w) = conv_operands(ctx, &a.conv)?;
    let spatial = a.conv.kernel.len();
    if a.output_padding.len() != spatial || a.output_shape.as_ref().is_some_and(|s| s.len() != spatial) {
        return Err(ctx.err("output_padding and output_shape must have one entry per spatial axis"));
    }
    let group = a.conv.group;
    if conflict(x.shape[1], w.shape[0]) {
        return Err(ctx.err(format!("input has {:?} channels but the weight has {:?} input channels", x.shape[1], w.shape[0])));
    }
    if let Dim::Known(c) = w.shape[0] {
        if c % group != 0 {
            return Err(ctx.err(format!("{c} input channels cannot be split into {group} groups")));
        }
    }
    let out_channels = w.shape[1] * Dim::Known(group);
    if ctx.opt_input(2).is_some() {
        expect_vector(ctx, 2, "bias", out_channels)?;
    }
    let mut shape = vec![x.shape[0], out_channels];
    for axis in 0..spatial {
        shape.push(conv_transpose_output(ctx, axis, x.shape[axis + 2], a)?);
    }
    Ok(TensorType::new(DType::F32, shape))
}

fn pool(ctx: &InferCtx, a: &PoolAttrs) -> Result<TensorType, InferError> {
    let spatial = a.kernel.len();
    if spatial == 0 || a.strides.len() != spatial || a.dilations.len() != spatial {
        return Err(ctx.err("kernel, strides and dilations must have one entry per spatial axis"));
    }
    if a.kernel.contains(&0) || a.strides.contains(&0) || a.dilations.contains(&0) {
        return Err(ctx.err("kernel, strides and dilations must be positive"));
    }
    check_padding_len(ctx, &a.padding, spatial)?;
    let x = float_input_of_rank(ctx, 0)?;
    expect_spatial_rank(ctx, 0, x, spatial)?;
    let mut shape = x.shape[..2].to_vec();
    for axis in 0..spatial {
        let win = Window { kernel: a.kernel[axis], stride: a.strides[axis], dilation: a.dilations[axis], ceil_mode: a.ceil_mode };
        shape.push(window_output(ctx, axis, x.shape[axis + 2], &win, &a.padding)?);
    }
    Ok(TensorType::new(DType::F32, shape))
}

fn global_pool(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let x = float_input_of_rank(ctx, 2)?;
    let mut shape = x.shape.clone();
    shape[2..].fill(Dim::Known(1));
    Ok(TensorType::new(DType::F32, shape))
}

/// BatchNorm (X, scale, bias, mean, var) and InstanceNorm (X, scale, bias):
/// every operand after X is one value per channel.
fn per_channel_norm(ctx: &InferCtx, inputs: usize, min_rank: usize) -> Result<TensorType, InferError> {
    let x = float_input_of_rank(ctx, min_rank)?;
    const NAMES: [&str; 5] = ["X", "scale", "bias", "mean", "var"];
    for (i, name) in NAMES.iter().enumerate().take(inputs).skip(1) {
        expect_vector(ctx, i, name, x.shape[1])?;
    }
    Ok(x.clone())
}

/// `Y` like X, then the optional `Mean` and `InvStdDev`: f32 (the stash type)
/// with the normalised dims kept as 1.
fn layer_norm(ctx: &InferCtx, axis: i64) -> Result<Vec<TensorType>, InferError> {
    if !(1..=3).contains(&ctx.num_outputs()) {
        return Err(ctx.err(format!("has {} outputs, expected Y and optionally Mean and InvStdDev", ctx.num_outputs())));
    }
    let x = float_input_of_rank(ctx, 1)?;
    let axis = ctx.axis(axis, x.rank())?;
    let normalized = &x.shape[axis..];
    for (i, name) in [(1, "scale"), (2, "bias")] {
        let Some(t) = ctx.opt_input(i) else { continue };
        ctx.expect_dtype(i, &[DType::F32])?;
        // Scale and bias broadcast onto the normalised dims, never widening them.
        let fits = t.rank() <= normalized.len()
            && broadcast_shapes(normalized, &t.shape).is_ok_and(|b| b.iter().zip(normalized).all(|(b, n)| !conflict(*b, *n)));
        if !fits {
            return Err(ctx.err(format!(
                "input {i} ({name}) has shape {:?}, which does not broadcast to the normalised dims {normalized:?}",
                t.shape
            )));
        }
    }
    let mut stats = x.shape.clone();
    stats[axis..].fill(Dim::Known(1));
    let stats = TensorType::new(DType::F32, stats);
    let mut outs = vec![x.clone(), stats.clone(), stats];
    outs.truncate(ctx.num_outputs());
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::super::infer_node;
    use crate::ir::{ConvAttrs, ConvTransposeAttrs, Dim, Graph, Op, Padding, PoolAttrs, PoolKind, Symbol, TensorType};
    use d2nn_runtime::{DType, Tensor};

    /// The inferred output type of `op` applied to an input of `x_shape` and constant operands.
    fn infer(op: Op, x_shape: Vec<Dim>, consts: Vec<Tensor>) -> Result<Vec<Dim>, String> {
        let mut g = Graph::new("t");
        let n = g.symbol("N");
        assert_eq!(n, Symbol(0));
        let x = g.add_input("x", TensorType::new(DType::F32, x_shape));
        let mut inputs = vec![Some(x)];
        for (i, c) in consts.into_iter().enumerate() {
            inputs.push(Some(g.add_const(&format!("c{i}"), c)));
        }
        let root = g.root;
        let node = g.add_node(root, "n", op, inputs, vec![("y".into(), TensorType::scalar(DType::F32))]);
        infer_node(&g, node).map(|mut t| t.remove(0).shape).map_err(|e| e.reason)
    }

    const N: Dim = Dim::Sym { sym: Symbol(0), factor: 1 };

    fn k(n: usize) -> Dim {
        Dim::Known(n)
    }

    fn weight(shape: &[usize]) -> Tensor {
        Tensor::zeros(DType::F32, shape)
    }

    fn conv(kernel: usize, stride: usize, pads: usize, padding: Option<Padding>) -> ConvAttrs {
        ConvAttrs {
            kernel: vec![kernel; 2],
            strides: vec![stride; 2],
            dilations: vec![1; 2],
            padding: padding.unwrap_or(Padding::Explicit(vec![pads; 4])),
            group: 1,
        }
    }

    #[test]
    fn conv_keeps_the_symbolic_batch_and_same_size_symbolic_spatial_dims() {
        let h = Dim::Sym { sym: Symbol(0), factor: 4 };
        let out = infer(Op::Conv(conv(3, 1, 1, None)), vec![N, k(3), h, k(9)], vec![weight(&[8, 3, 3, 3])]).unwrap();
        assert_eq!(out, vec![N, k(8), h, k(9)]);
        // A stride-2 window over a symbolic size cannot be expressed: unknown.
        let out = infer(Op::Conv(conv(3, 2, 1, None)), vec![N, k(3), h, k(9)], vec![weight(&[8, 3, 3, 3])]).unwrap();
        assert_eq!(out, vec![N, k(8), Dim::Unknown, k(5)]);
        // SAME with a stride dividing the symbol's factor stays symbolic.
        let out = infer(Op::Conv(conv(3, 2, 0, Some(Padding::SameUpper))), vec![N, k(3), h, k(9)], vec![weight(&[8, 3, 3, 3])]).unwrap();
        assert_eq!(out, vec![N, k(8), Dim::Sym { sym: Symbol(0), factor: 2 }, k(5)]);
    }

    #[test]
    fn conv_channel_mismatch_is_reported() {
        let err = infer(Op::Conv(conv(3, 1, 1, None)), vec![N, k(4), k(5), k(5)], vec![weight(&[8, 3, 3, 3])]).unwrap_err();
        assert!(err.contains("channels"), "{err}");
        let err = infer(Op::Conv(conv(3, 1, 1, None)), vec![N, k(3), k(5)], vec![weight(&[8, 3, 3, 3])]).unwrap_err();
        assert!(err.contains("rank 3, expected 4"), "{err}");
    }

    #[test]
    fn pool_ceil_mode_output_size() {
        let attrs = PoolAttrs {
            kernel: vec![3, 3],
            strides: vec![3, 3],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![1; 4]),
            ceil_mode: true,
        };
        let out = infer(Op::Pool { kind: PoolKind::Max { column_major_indices: false }, attrs }, vec![N, k(3), k(2), k(6)], vec![]).unwrap();
        // Height: the second ceil window would start in the end padding.
        // Width: ceil((8-3)/3)+1 = 3, the third window starting at 6 < 6 + 1.
        assert_eq!(out, vec![N, k(3), k(1), k(3)]);
    }

    #[test]
    fn conv_transpose_scales_symbolic_dims_when_the_pads_cancel() {
        let c = ConvAttrs {
            kernel: vec![4],
            strides: vec![2],
            dilations: vec![1],
            padding: Padding::Explicit(vec![1, 1]),
            group: 2,
        };
        let attrs = ConvTransposeAttrs { conv: c.clone(), output_padding: vec![0], output_shape: None };
        let l = Dim::Sym { sym: Symbol(0), factor: 3 };
        // 2·(L-1) + 4 - 2 = 2L; output channels = 3 per group × 2 groups.
        let out = infer(Op::ConvTranspose(attrs), vec![N, k(4), l], vec![weight(&[4, 3, 4])]).unwrap();
        assert_eq!(out, vec![N, k(6), Dim::Sym { sym: Symbol(0), factor: 6 }]);
        let attrs = ConvTransposeAttrs { conv: c, output_padding: vec![1], output_shape: None };
        let out = infer(Op::ConvTranspose(attrs), vec![N, k(4), k(5)], vec![weight(&[4, 3, 4])]).unwrap();
        assert_eq!(out, vec![N, k(6), k(11)]);
    }

    #[test]
    fn layer_norm_scale_must_broadcast_onto_the_normalised_dims() {
        let op = Op::LayerNorm { axis: -2, epsilon: 1e-5 };
        let ok = infer(op.clone(), vec![N, k(4), k(5)], vec![weight(&[5])]).unwrap();
        assert_eq!(ok, vec![N, k(4), k(5)]);
        let err = infer(op, vec![N, k(4), k(5)], vec![weight(&[3, 4, 5])]).unwrap_err();
        assert!(err.contains("does not broadcast"), "{err}");
    }

    #[test]
    fn layer_norm_statistics_keep_the_normalised_dims_as_one() {
        let mut g = Graph::new("t");
        let n = g.symbol("N");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![Dim::sym(n), k(4), k(5)]));
        let scale = g.add_const("scale", weight(&[4, 5]));
        let outs = ["y", "mean", "inv_std_dev"].map(|o| (o.to_string(), TensorType::scalar(DType::F32))).to_vec();
        let root = g.root;
        let node = g.add_node(root, "n", Op::LayerNorm { axis: 1, epsilon: 1e-5 }, vec![Some(x), Some(scale)], outs);
        let types = infer_node(&g, node).unwrap();
        assert_eq!(types.len(), 3);
        assert_eq!(types[0].shape, vec![N, k(4), k(5)]);
        for t in &types[1..] {
            assert_eq!((t.dtype, &t.shape), (DType::F32, &vec![N, k(1), k(1)]));
        }
    }

    #[test]
    fn softmax_axis_out_of_range_is_reported() {
        let err = infer(Op::Softmax { axis: 3, log: false, coerce_2d: false }, vec![N, k(4), k(5)], vec![]).unwrap_err();
        assert!(err.contains("axis 3"), "{err}");
    }
}
