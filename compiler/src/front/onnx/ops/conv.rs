//! Converters for the conv op family (placeholder being filled in).

use crate::front::onnx::registry::Registry;

pub(super) fn register(_reg: &mut Registry) {}
