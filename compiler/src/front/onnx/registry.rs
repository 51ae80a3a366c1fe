//! The converter registry: ONNX op type → converter, each declaring the opset
//! range, arity and attribute names it understands.

use super::ctx::ConvertCtx;
use super::error::ConvertResult;
use crate::ir::Op;
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::OnceLock;

/// Newest default-domain opset d2nnc reads. Opsets 22–28 changed only the
/// type lists (bf16, fp8, int4…) of the ops d2nnc supports, not their semantics.
pub const MAX_OPSET: i64 = 28;

pub type Converter = fn(&mut ConvertCtx) -> ConvertResult<Op>;

/// How to convert one ONNX op type.
pub struct OpDef {
    pub op_type: &'static str,
    /// Opsets (of the model's default domain) this converter handles.
    pub opsets: RangeInclusive<i64>,
    /// Accepted number of inputs, counting omitted optional ones up to the last present.
    pub inputs: RangeInclusive<usize>,
    /// Accepted number of used outputs.
    pub outputs: RangeInclusive<usize>,
    /// Attribute names the converter understands; any other is reported.
    pub attrs: &'static [&'static str],
    pub convert: Converter,
}

#[derive(Default)]
pub struct Registry {
    defs: HashMap<&'static str, OpDef>,
}

impl Registry {
    /// The registry of every supported op.
    pub fn standard() -> &'static Registry {
        static REG: OnceLock<Registry> = OnceLock::new();
        REG.get_or_init(|| {
            let mut reg = Registry::default();
            super::ops::register_all(&mut reg);
            reg
        })
    }

    pub fn insert(&mut self, def: OpDef) {
        let previous = self.defs.insert(def.op_type, def);
        debug_assert!(previous.is_none(), "op registered twice");
    }

    pub fn get(&self, op_type: &str) -> Option<&OpDef> {
        self.defs.get(op_type)
    }

    /// Registered op types, sorted.
    pub fn op_types(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.defs.keys().copied().collect();
        v.sort_unstable();
        v
    }
}
