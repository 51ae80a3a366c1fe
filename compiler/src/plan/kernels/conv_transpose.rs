//! Selection of the ConvTranspose kernel: f32, 1-D or 2-D, constant weights
//! (packed here once) and bias, known channel and spatial dims, and pads
//! (explicit, `SAME_*`, or derived from `output_shape`) that leave output
//! element 0 inside the full output (a negative offset, from an
//! `output_shape` larger than the full output, stays with the reference).

use super::{f32_input, f32_output, shape};
use crate::ir::{ConvTransposeAttrs, Graph, NodeId, Padding};
use crate::plan::{ConvTransposeKernel, Kernel};
use d2nn_runtime::kernels::conv_transpose::{ConvTranspose2d, ConvTransposeWeights};
use std::sync::Arc;

pub(super) fn conv_transpose(graph: &Graph, node: NodeId, a: &ConvTransposeAttrs) -> Option<Kernel> {
    let x = f32_input(graph, node, 0)?;
    let out = f32_output(graph, node)?;
    let weight_value = graph.nodes[node].input(1)?;
    let w = graph.const_value(weight_value)?.as_f32().ok()?;
    let bias = match graph.nodes[node].input(2) {
        Some(b) => Some(graph.const_value(b)?.as_f32().ok()?.iter().copied().collect::<Vec<f32>>()),
        None => None,
    };
    let c = &a.conv;
    let (xs, ys) = (shape(graph, x), shape(graph, out));
    let spatial = xs.len().checked_sub(2)?;
    let lens = [c.kernel.len(), c.strides.len(), c.dilations.len(), a.output_padding.len()];
    if !(1..=2).contains(&spatial) || lens.iter().any(|&l| l != spatial) || ys.len() != xs.len() {
        return None;
    }
    let (c_in, c_out, group) = (xs[1].known()?, ys[1].known()?, c.group);
    if group == 0 || c_in % group != 0 || c_out % group != 0 {
        return None;
    }
    let mut weight_shape = vec![c_in, c_out / group];
    weight_shape.extend(&c.kernel);
    if w.shape() != weight_shape.as_slice() || bias.as_ref().is_some_and(|b| b.len() != c_out) {
        return None;
    }
    let in_sp: Vec<usize> = xs[2..].iter().map(|d| d.known()).collect::<Option<_>>()?;
    let out_sp: Vec<usize> = ys[2..].iter().map(|d| d.known()).collect::<Option<_>>()?;
    let mut pads = Vec::with_capacity(spatial);
    for axis in 0..spatial {
        let (output, offset) = output_and_offset(a, axis, &in_sp)?;
        if output != out_sp[axis] as i64 || offset < 0 || in_sp[axis] == 0 {
            return None;
        }
        pads.push(offset as usize);
    }
    // 1-D runs as 2-D with a height of 1.
    let dims2 = |v: &[usize], fill: usize| if spatial == 1 { (fill, v[0]) } else { (v[0], v[1]) };
    let ((h, wd), (oh, ow), (kh, kw)) = (dims2(&in_sp, 1), dims2(&out_sp, 1), dims2(&c.kernel, 1));
    let geometry = ConvTranspose2d {
        c_in,
        h,
        w: wd,
        c_out,
        oh,
        ow,
        kh,
        kw,
        stride: dims2(&c.strides, 1),
        dilation: dims2(&c.dilations, 1),
        pad: dims2(&pads, 0),
        group,
    };
    let flat: Vec<f32> = w.iter().copied().collect();
    let weights = ConvTransposeWeights::pack(&geometry, &flat).ok()?;
    Some(Kernel::ConvTranspose(ConvTransposeKernel { geometry, weights: Arc::new(weights), weight_value, bias: bias.map(Arc::new) }))
}

/// Spatial axis `axis`'s output size and where output element 0 sits in the
/// full output (`stride·(in − 1) + output_padding + dilated kernel`), as the
/// reference derives them from the ONNX attributes: explicit pads without
/// `output_shape` give `full − begin − end` and `begin`; otherwise the
/// total padding `full − output` (output `in·stride` for `SAME_*`) is split
/// with the larger half first, except for `SAME_UPPER`.
fn output_and_offset(a: &ConvTransposeAttrs, axis: usize, in_sp: &[usize]) -> Option<(i64, i64)> {
    let c = &a.conv;
    let spatial = in_sp.len();
    let (n, s) = (in_sp[axis] as i64, c.strides[axis] as i64);
    let reach = (c.dilations[axis] * c.kernel[axis].checked_sub(1)? + 1) as i64;
    let full = s * (n - 1).max(0) + a.output_padding[axis] as i64 + reach;
    match (&a.output_shape, &c.padding) {
        (None, Padding::Explicit(pads)) if pads.len() == 2 * spatial => {
            let (begin, end) = (pads[axis] as i64, pads[axis + spatial] as i64);
            Some((full - begin - end, begin))
        }
        (None, Padding::Explicit(_)) => None,
        (requested, padding) => {
            let output = match requested {
                Some(shape) => *shape.get(axis)? as i64,
                None => n * s,
            };
            let total = full - output;
            let half = total.div_euclid(2);
            let begin = if *padding == Padding::SameUpper { half } else { total - half };
            Some((output, begin))
        }
    }
}
