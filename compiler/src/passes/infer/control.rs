//! Inference for control flow: an `If`'s outputs are its branches' yields,
//! with dims that differ between the branches left unknown.

use super::{InferCtx, InferError};
use crate::ir::{Dim, TensorType};
use d2nn_runtime::DType;

pub(super) fn infer(ctx: &InferCtx) -> Result<Vec<TensorType>, InferError> {
    let g = ctx.graph;
    let node = &g.nodes[ctx.node];
    let cond = ctx.input(0)?;
    if cond.dtype != DType::Bool {
        return Err(ctx.err(format!("condition has dtype {}, expected bool", cond.dtype)));
    }
    if let Some(n) = cond.volume().known() {
        if n != 1 {
            return Err(ctx.err(format!("condition must hold one element, it has {n}")));
        }
    }
    let [then_r, else_r] = node.regions[..] else {
        return Err(ctx.err(format!("expected two branch regions, found {}", node.regions.len())));
    };
    let (then_y, else_y) = (&g.regions[then_r].outputs, &g.regions[else_r].outputs);
    if then_y.len() != else_y.len() {
        return Err(ctx.err(format!("then branch yields {} values, else branch {}", then_y.len(), else_y.len())));
    }
    then_y
        .iter()
        .zip(else_y)
        .enumerate()
        .map(|(i, (&t, &e))| {
            let (tt, et) = (&g.values[t].ty, &g.values[e].ty);
            if tt.dtype != et.dtype {
                return Err(ctx.err(format!("output {i}: then branch gives {}, else branch {}", tt.dtype, et.dtype)));
            }
            if tt.rank() != et.rank() {
                return Err(ctx.err(format!(
                    "output {i}: then branch gives rank {}, else branch rank {}; d2nnc needs branches of equal rank",
                    tt.rank(),
                    et.rank()
                )));
            }
            let shape = tt.shape.iter().zip(&et.shape).map(|(&a, &b)| if a == b { a } else { Dim::Unknown }).collect();
            Ok(TensorType::new(tt.dtype, shape))
        })
        .collect()
}
