//! Selection of the BatchNormalization fast kernel (a batch norm that was not
//! folded into a convolution): f32, constant per-channel statistics, known
//! channel and spatial dims; and of LayerNormalization: f32, Y as the only
//! output, known normalised dims, constant scale and (optional) bias that
//! broadcast onto them.

use super::{f32_input, f32_output, known_volume, shape};
use crate::ir::{Graph, NodeId};
use crate::passes::infer::normalize_axis;
use crate::plan::Kernel;
use d2nn_runtime::kernels::norm::{BatchNorm, LayerNorm};
use d2nn_runtime::Tensor;
use std::sync::Arc;

pub(super) fn batch_norm(graph: &Graph, node: NodeId, epsilon: f32) -> Option<Kernel> {
    let x = f32_input(graph, node, 0)?;
    f32_output(graph, node)?;
    let dims = shape(graph, x);
    if dims.len() < 2 {
        return None;
    }
    let channels = dims[1].known()?;
    let plane = known_volume(&dims[2..])?;
    let per_channel = |i: usize| -> Option<Vec<f32>> {
        match graph.input_const(node, i)? {
            Tensor::F32(a) if a.shape() == [channels] => Some(a.iter().copied().collect()),
            _ => None,
        }
    };
    let (scale, bias, mean, var) = (per_channel(1)?, per_channel(2)?, per_channel(3)?, per_channel(4)?);
    let bn = BatchNorm::new(&scale, &bias, &mean, &var, epsilon).ok()?;
    Some(Kernel::BatchNorm { bn, plane })
}

pub(super) fn layer_norm(graph: &Graph, node: NodeId, axis: i64, epsilon: f32) -> Option<Kernel> {
    let x = f32_input(graph, node, 0)?;
    // Mean and InvStdDev outputs stay with the reference.
    f32_output(graph, node)?;
    let dims = shape(graph, x);
    let axis = normalize_axis(axis, dims.len())?;
    let normalized: Vec<usize> = dims[axis..].iter().map(|d| d.known()).collect::<Option<_>>()?;
    let row = known_volume(&dims[axis..])?;
    // Broadcast onto the normalised dims as the reference does, flattened.
    let onto = |i: usize| -> Option<Arc<Vec<f32>>> {
        let t = graph.input_const(node, i)?.as_f32().ok()?;
        let b = t.broadcast(ndarray::IxDyn(&normalized))?;
        Some(Arc::new(b.iter().copied().collect()))
    };
    let scale = onto(1)?;
    let bias = match graph.nodes[node].input(2) {
        Some(_) => Some(onto(2)?),
        None => None,
    };
    Some(Kernel::LayerNorm { geometry: LayerNorm { row, epsilon }, scale, bias })
}
