//! Graph passes: small rewrites, each in its own file, each re-verifiable.
//!
//! The standard pipeline ([`optimize`]) is: shape/type inference, constant
//! folding (including the symbolic Shape→Gather→Unsqueeze→Concat→Reshape
//! arithmetic torch exports emit), BatchNorm folding into Conv/Gemm, and
//! dead-code elimination.

pub mod infer;

use crate::ir::Graph;

/// The standard pipeline. Today: re-derive every type.
pub fn optimize(graph: &mut Graph) -> Result<(), infer::InferError> {
    infer::run(graph)
}
