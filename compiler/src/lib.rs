//! d2nnc: an ahead-of-time compiler for dynamic (gated, early-exit) neural networks.
//!
//! Pipeline: [`front::onnx`] reads a model into the [`ir`]; [`passes`] infer
//! types and simplify; [`interp`] evaluates the IR as the reference oracle.
//! See `ARCHITECTURE.md` at the repository root for the whole map.

pub mod back;
pub mod calibrate;
pub mod compare;
pub mod dynamic;
pub mod error;
pub mod flops;
pub mod front;
pub mod interp;
pub mod ir;
pub mod passes;
pub mod plan;

pub use error::Error;

/// Loads an ONNX file and runs the standard pass pipeline on it.
pub fn load_and_optimize(path: &std::path::Path) -> Result<front::onnx::Model, Error> {
    let mut model = front::onnx::load(path)?;
    passes::optimize(&mut model.graph)?;
    Ok(model)
}
