//! Selection of the pooling fast kernels: MaxPool without `Indices` and
//! AveragePool over 1-D or 2-D NCHW inputs with known spatial dims, and the
//! global pools. The window geometry is resolved here, at lowering time, by
//! the same rules as the reference interpreter (ONNX reference and ONNX
//! Runtime), and checked against the node's inferred output shape.

use super::{f32_input, f32_output, known_volume, shape};
use crate::ir::{Dim, Graph, NodeId, Padding, PoolAttrs, PoolKind};
use crate::plan::Kernel;
use d2nn_runtime::kernels::pool::{self as rt, GlobalKind, Pool2d, PoolAxis};

pub(super) fn pool(graph: &Graph, node: NodeId, kind: PoolKind, attrs: &PoolAttrs) -> Option<Kernel> {
    // A second output is MaxPool's `Indices`, which only the reference computes.
    let (x, out) = (f32_input(graph, node, 0)?, f32_output(graph, node)?);
    let (x_shape, out_shape) = (shape(graph, x), shape(graph, out));
    let spatial = attrs.kernel.len();
    if !(1..=2).contains(&spatial) || x_shape.len() != spatial + 2 || out_shape.len() != spatial + 2 {
        return None;
    }
    let axes = (0..spatial)
        .map(|i| {
            let input = x_shape[2 + i].known()?;
            let a = axis(attrs, i, input)?;
            // Inference derived the output independently; they must agree.
            (out_shape[2 + i] == Dim::Known(a.output)).then_some(a)
        })
        .collect::<Option<Vec<_>>>()?;
    let (h, w) = match axes[..] {
        [w] => (PoolAxis::UNIT, w),
        [h, w] => (h, w),
        _ => return None,
    };
    let kind = match kind {
        PoolKind::Max { .. } => rt::PoolKind::Max,
        PoolKind::Average { count_include_pad } => rt::PoolKind::Average { count_include_pad },
    };
    Some(Kernel::Pool(Pool2d { kind, h, w }))
}

/// One spatial axis: `SAME_*` gives `ceil(input / stride)` outputs and a total
/// pad of `(output - 1)·stride + kernel - input` (the undilated kernel; negative
/// when the kernel is below the stride, shifting windows into the input,
/// halves truncated toward 0), the odd element at the end (upper) or start
/// (lower). Explicit pads give `(input + pads - reach) / stride + 1` outputs,
/// rounded up in ceil mode unless that last window would start past the
/// input and the begin pad.
fn axis(attrs: &PoolAttrs, i: usize, input: usize) -> Option<PoolAxis> {
    let spatial = attrs.kernel.len();
    let (kernel, stride, dilation) = (attrs.kernel[i], *attrs.strides.get(i)?, *attrs.dilations.get(i)?);
    if kernel == 0 || stride == 0 || dilation == 0 || attrs.strides.len() != spatial || attrs.dilations.len() != spatial {
        return None;
    }
    let (output, pad_begin, pad_end) = match &attrs.padding {
        Padding::SameUpper | Padding::SameLower => {
            let output = input.div_ceil(stride);
            let total = i64::try_from(output.saturating_sub(1).checked_mul(stride)? + kernel).ok()? - i64::try_from(input).ok()?;
            let begin = if attrs.padding == Padding::SameUpper { total / 2 } else { (total + 1) / 2 };
            (output, begin, usize::try_from((total - begin).max(0)).ok()?)
        }
        Padding::Explicit(pads) => {
            if pads.len() != 2 * spatial {
                return None;
            }
            let (begin, end) = (pads[i], pads[spatial + i]);
            let reach = dilation.checked_mul(kernel - 1)? + 1;
            let span = input.checked_add(begin)?.checked_add(end)?.checked_sub(reach)?;
            let mut output = if attrs.ceil_mode { span.div_ceil(stride) } else { span / stride } + 1;
            if attrs.ceil_mode && (output - 1) * stride >= input + begin {
                output -= 1;
            }
            (output, i64::try_from(begin).ok()?, end)
        }
    };
    Some(PoolAxis { input, output, kernel, stride, dilation, pad_begin, pad_end })
}

pub(super) fn global_pool(graph: &Graph, node: NodeId, kind: PoolKind) -> Option<Kernel> {
    let x = f32_input(graph, node, 0)?;
    f32_output(graph, node)?;
    let x_shape = shape(graph, x);
    if x_shape.len() < 2 {
        return None;
    }
    let plane = known_volume(&x_shape[2..])?;
    let kind = match kind {
        PoolKind::Max { .. } => GlobalKind::Max,
        PoolKind::Average { .. } => GlobalKind::Average,
    };
    Some(Kernel::GlobalPool { kind, plane })
}
