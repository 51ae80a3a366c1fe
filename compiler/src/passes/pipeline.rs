//! The standard pass pipeline: infer → fold → bn_fold → dce → infer, with the
//! verifier after every pass in debug and test builds.

use super::{bn_fold, dce, fold, infer, PassError};
use crate::ir::Graph;

/// Simplifies a freshly loaded graph for execution and code generation.
pub fn optimize(graph: &mut Graph) -> Result<(), PassError> {
    run_pass(graph, "infer", |g| infer::run(g).map_err(PassError::from))?;
    run_pass(graph, "fold", |g| fold::run(g).map(drop))?;
    run_pass(graph, "bn_fold", |g| {
        bn_fold::run(g);
        Ok(())
    })?;
    run_pass(graph, "dce", |g| {
        dce::run(g);
        Ok(())
    })?;
    run_pass(graph, "infer", |g| infer::run(g).map_err(PassError::from))
}

fn run_pass(graph: &mut Graph, pass: &'static str, body: impl FnOnce(&mut Graph) -> Result<(), PassError>) -> Result<(), PassError> {
    body(graph)?;
    // Release builds trust the passes; debug and test builds prove each one.
    if cfg!(any(test, debug_assertions)) {
        crate::ir::verify::verify(graph).map_err(|error| PassError::Verify { pass, error })?;
    }
    Ok(())
}
