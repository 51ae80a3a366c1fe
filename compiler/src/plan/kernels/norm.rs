//! Selection of the BatchNormalization fast kernel (a batch norm that was not
//! folded into a convolution): f32, constant per-channel statistics, known
//! channel and spatial dims.

use super::{f32_input, f32_output, known_volume, shape};
use crate::ir::{Graph, NodeId};
use crate::plan::Kernel;
use d2nn_runtime::kernels::norm::BatchNorm;
use d2nn_runtime::Tensor;

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
