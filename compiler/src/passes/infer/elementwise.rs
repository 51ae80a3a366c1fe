//! Inference rules for the elementwise op family (placeholder being filled in).

use super::{InferCtx, InferError};
use crate::ir::TensorType;

pub(super) fn infer(ctx: &InferCtx) -> Result<Vec<TensorType>, InferError> {
    Err(ctx.err("inference not implemented"))
}
