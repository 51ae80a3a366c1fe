//! Compiled back ends: code generated from a lowered `plan::Program`.

pub mod rust;
