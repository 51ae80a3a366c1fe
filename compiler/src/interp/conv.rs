//! Kernels for the conv op family (placeholder being filled in).

use super::EvalCtx;
use d2nn_runtime::Tensor;

pub(super) fn eval(ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
    Err(format!("{} is not implemented in the interpreter", ctx.op().name()))
}
