//! The library's top-level error: whatever went wrong on the way from a model
//! file to outputs, with the element at fault named by the inner error.

use crate::front::onnx::LoadError;
use crate::interp::InterpError;
use crate::passes::infer::InferError;
use crate::passes::PassError;
use crate::plan::{ExecError, LowerError};
use d2nn_runtime::npy::NpyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Interp(#[from] InterpError),
    #[error(transparent)]
    Npy(#[from] NpyError),
    #[error(transparent)]
    Knob(#[from] crate::dynamic::KnobError),
    #[error(transparent)]
    Backend(#[from] crate::back::rust::BackendError),
    #[error(transparent)]
    Native(#[from] crate::back::clif::ClifError),
    #[error(transparent)]
    Calibrate(#[from] crate::calibrate::CalibrateError),
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}
