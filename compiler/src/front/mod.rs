//! Front ends: readers that turn a model file into the IR.

pub mod onnx;
