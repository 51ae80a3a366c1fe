//! Selection of the convolution kernels — direct depthwise, Winograd
//! F(2×2, 3×3) for 3×3 stride-1 convs with enough channels, or GEMM over
//! im2col (or the input itself for 1×1 stride-1 unpadded convs) — and of fully
//! connected layers
//! (`Gemm` and `MatMul` with a constant weight), with weights packed once here.

use super::{f32_input, f32_output, known_volume, shape};
use crate::ir::{ConvAttrs, Graph, NodeId, Padding};
use crate::plan::{ConvKernel, DenseKernel, Fused, Kernel};
use d2nn_runtime::kernels::conv::Conv2d;
use d2nn_runtime::kernels::depthwise::Depthwise;
use d2nn_runtime::layers::{ConvWeights, DenseWeights};
use std::sync::Arc;

/// A 1-D or 2-D f32 convolution with constant weights (and bias), known
/// channel and spatial dims, and explicit or resolvable padding.
pub(super) fn conv(graph: &Graph, node: NodeId, attrs: &ConvAttrs) -> Option<Kernel> {
    let x = f32_input(graph, node, 0)?;
    let out = f32_output(graph, node)?;
    let w = graph.const_value(graph.nodes[node].input(1)?)?.as_f32().ok()?;
    let bias = match graph.nodes[node].input(2) {
        Some(b) => Some(graph.const_value(b)?.as_f32().ok()?.iter().copied().collect::<Vec<f32>>()),
        None => None,
    };
    let xs = shape(graph, x);
    let ys = shape(graph, out);
    let spatial = xs.len().checked_sub(2)?;
    if !(1..=2).contains(&spatial) || attrs.kernel.len() != spatial {
        return None;
    }
    let c_in = xs[1].known()?;
    let c_out = ys[1].known()?;
    // 1-D convs run as 2-D with a height of 1.
    let dims2 = |v: &[usize], fill: usize| if spatial == 1 { [fill, v[0]] } else { [v[0], v[1]] };
    let in_sp: Vec<usize> = xs[2..].iter().map(|d| d.known()).collect::<Option<_>>()?;
    let out_sp: Vec<usize> = ys[2..].iter().map(|d| d.known()).collect::<Option<_>>()?;
    let [h, wd] = dims2(&in_sp, 1);
    let [oh, ow] = dims2(&out_sp, 1);
    let [kh, kw] = dims2(&attrs.kernel, 1);
    let [sh, sw] = dims2(&attrs.strides, 1);
    let [dh, dw] = dims2(&attrs.dilations, 1);
    let begin: Vec<usize> = match &attrs.padding {
        Padding::Explicit(p) if p.len() == 2 * spatial => p[..spatial].to_vec(),
        // SAME pads: total = max(0, (out - 1)·stride + dilated kernel - in); odd goes to the end (upper) or the beginning (lower).
        Padding::SameUpper | Padding::SameLower => (0..spatial)
            .map(|i| {
                let eff = attrs.dilations[i] * (attrs.kernel[i] - 1) + 1;
                let total = ((out_sp[i] - 1) * attrs.strides[i] + eff).saturating_sub(in_sp[i]);
                if matches!(attrs.padding, Padding::SameUpper) { total / 2 } else { total - total / 2 }
            })
            .collect(),
        _ => return None,
    };
    let [ph, pw] = dims2(&begin, 0);
    let group = attrs.group;
    if group == 0 || c_in % group != 0 || c_out % group != 0 || known_volume(shape(graph, graph.nodes[node].input(1)?))? != w.len() {
        return None;
    }
    let (cg, mg) = (c_in / group, c_out / group);
    let k = cg * kh * kw;
    let flat: Vec<f32> = w.iter().copied().collect();
    // One input plane per group: a direct kernel beats per-group im2col + GEMM.
    if group == c_in && group > 1 && flat.len() == c_out * kh * kw {
        let geometry = Depthwise {
            channels: c_in,
            multiplier: mg,
            h,
            w: wd,
            oh,
            ow,
            kh,
            kw,
            stride: (sh, sw),
            dilation: (dh, dw),
            pad: (ph, pw),
        };
        return Some(Kernel::Depthwise { geometry, weights: Arc::new(flat), bias: bias.map(Arc::new), fused: Fused::default() });
    }
    if flat.len() != c_out * k || bias.as_ref().is_some_and(|b| b.len() != c_out) {
        return None;
    }
    let geometry = Conv2d { c_in, h, w: wd, c_out, oh, ow, kh, kw, stride: (sh, sw), dilation: (dh, dw), pad: (ph, pw), group };
    let weights = Arc::new(ConvWeights::pack(&geometry, &flat).ok()?);
    let weight_value = graph.nodes[node].input(1)?;
    Some(Kernel::Conv(ConvKernel { geometry, weights, weight_value, bias: bias.map(Arc::new), fused: Fused::default() }))
}

/// `Y = X·Bᵀ + c` (`Gemm`, transB = 1, constant B) or `Y = X·B + c`
/// (transB = 0, or `MatMul` with a constant 2-D B): X's leading dims are
/// rows, B is packed once, `c` is an optional bias per output column.
pub(super) fn dense(graph: &Graph, node: NodeId, trans_b: bool, alpha: f32, beta: f32, trans_a: bool) -> Option<Kernel> {
    if trans_a || alpha != 1.0 {
        return None;
    }
    let x = f32_input(graph, node, 0)?;
    let out = f32_output(graph, node)?;
    let b = graph.const_value(graph.nodes[node].input(1)?)?.as_f32().ok()?;
    if b.ndim() != 2 {
        return None;
    }
    let (k, n) = if trans_b { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
    let xs = shape(graph, x);
    // A 1-D MatMul operand drops an axis of the result; leave it to the reference kernel.
    if xs.len() < 2 || xs.last()?.known()? != k || shape(graph, out).last()?.known()? != n {
        return None;
    }
    let bias = match graph.nodes[node].input(2) {
        None => None,
        Some(c) => {
            let c = graph.const_value(c)?.as_f32().ok()?;
            // Only a bias per output column (shape [N] or [1, N]) maps onto the epilogue.
            if c.len() != n || (c.ndim() == 2 && c.shape()[0] != 1) || c.ndim() > 2 {
                return None;
            }
            Some(c.iter().map(|v| v * beta).collect::<Vec<f32>>())
        }
    };
    let flat: Vec<f32> = b.iter().copied().collect();
    let weights = Arc::new(DenseWeights::pack(&flat, k, n, trans_b).ok()?);
    let weight_value = graph.nodes[node].input(1)?;
    Some(Kernel::Dense(DenseKernel { k, n, weights, weight_value, transposed: trans_b, bias: bias.map(Arc::new), fused: Fused::default() }))
}
