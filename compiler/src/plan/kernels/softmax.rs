//! Selection of the Softmax / LogSoftmax fast kernel: f32, with the
//! normalised axis and every axis after it known, so the batch can only be in
//! the outer count the kernel derives from the length.

use super::{f32_input, f32_output, known_volume, shape};
use crate::ir::{Graph, NodeId};
use crate::passes::infer::normalize_axis;
use crate::plan::Kernel;

pub(super) fn softmax(graph: &Graph, node: NodeId, axis: i64, log: bool, coerce_2d: bool) -> Option<Kernel> {
    let x = f32_input(graph, node, 0)?;
    f32_output(graph, node)?;
    let dims = shape(graph, x);
    let axis = normalize_axis(axis, dims.len())?;
    let (len, inner) = if coerce_2d {
        // The opset < 13 form: `axis` and everything after it as one row.
        (known_volume(&dims[axis..])?, 1)
    } else {
        (dims[axis].known()?, known_volume(&dims[axis + 1..])?)
    };
    Some(Kernel::Softmax { log, len, inner })
}
