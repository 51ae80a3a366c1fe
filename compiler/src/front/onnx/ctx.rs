//! What a converter sees of one ONNX node: typed attribute access, its
//! resolved inputs, and a way to add constants (for attributes that later
//! opsets turned into inputs).

use super::error::{invalid, ConvertResult};
use super::tensor::tensor_from_proto;
use crate::ir::{Graph, TensorType, ValueId};
use d2nn_runtime::Tensor;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, NodeProto};
use std::path::Path;

pub struct ConvertCtx<'a> {
    pub(super) proto: &'a NodeProto,
    /// The model's opset for the default domain.
    pub opset: i64,
    /// Resolved operands in ONNX order; converters may append or replace
    /// entries to reach the IR op's input convention.
    pub inputs: Vec<Option<ValueId>>,
    /// Number of outputs the node really produces (unused trailing optional outputs dropped).
    pub num_outputs: usize,
    pub(super) graph: &'a mut Graph,
    pub(super) base_dir: Option<&'a Path>,
    pub(super) name: String,
}

impl<'a> ConvertCtx<'a> {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name == name)
    }

    fn typed(&self, name: &str, want: AttributeType) -> ConvertResult<Option<&'a AttributeProto>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                let ty = a.type_.enum_value().ok();
                // Pre-IR-v3 files may omit the type tag; accept when the field is filled.
                if ty == Some(want) || ty == Some(AttributeType::UNDEFINED) {
                    Ok(Some(a))
                } else {
                    invalid(format!("attribute `{name}` has type {ty:?}, expected {want:?}"))
                }
            }
        }
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn attr_int(&self, name: &str) -> ConvertResult<Option<i64>> {
        Ok(self.typed(name, AttributeType::INT)?.map(|a| a.i))
    }

    pub fn attr_int_or(&self, name: &str, default: i64) -> ConvertResult<i64> {
        Ok(self.attr_int(name)?.unwrap_or(default))
    }

    pub fn attr_float(&self, name: &str) -> ConvertResult<Option<f32>> {
        Ok(self.typed(name, AttributeType::FLOAT)?.map(|a| a.f))
    }

    pub fn attr_float_or(&self, name: &str, default: f32) -> ConvertResult<f32> {
        Ok(self.attr_float(name)?.unwrap_or(default))
    }

    pub fn attr_ints(&self, name: &str) -> ConvertResult<Option<Vec<i64>>> {
        Ok(self.typed(name, AttributeType::INTS)?.map(|a| a.ints.clone()))
    }

    pub fn attr_floats(&self, name: &str) -> ConvertResult<Option<Vec<f32>>> {
        Ok(self.typed(name, AttributeType::FLOATS)?.map(|a| a.floats.clone()))
    }

    pub fn attr_string(&self, name: &str) -> ConvertResult<Option<String>> {
        match self.typed(name, AttributeType::STRING)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s.clone())
                .map(Some)
                .or_else(|_| invalid(format!("attribute `{name}` is not valid UTF-8"))),
        }
    }

    pub fn attr_string_or(&self, name: &str, default: &str) -> ConvertResult<String> {
        Ok(self.attr_string(name)?.unwrap_or_else(|| default.to_string()))
    }

    pub fn attr_tensor(&self, name: &str) -> ConvertResult<Option<Tensor>> {
        match self.typed(name, AttributeType::TENSOR)? {
            None => Ok(None),
            Some(a) => tensor_from_proto(&a.t, self.base_dir)
                .map(Some)
                .or_else(|e| invalid(format!("attribute `{name}`: {e}"))),
        }
    }

    /// Required attribute helper: errors name the attribute.
    pub fn require<T>(&self, name: &str, v: ConvertResult<Option<T>>) -> ConvertResult<T> {
        v?.ok_or_else(|| super::error::ConvertError::Invalid(format!("required attribute `{name}` is missing")))
    }

    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn input_type(&self, i: usize) -> Option<&TensorType> {
        self.input(i).map(|v| &self.graph.values[v].ty)
    }

    pub fn const_input(&self, i: usize) -> Option<&Tensor> {
        self.input(i).and_then(|v| self.graph.const_value(v))
    }

    /// Adds a constant and returns its value, named after this node.
    pub fn add_const(&mut self, suffix: &str, tensor: Tensor) -> ValueId {
        let name = format!("{}.{suffix}", self.name);
        self.graph.add_const(&name, tensor)
    }

    /// Sets input slot `i` (growing the list with `None`s as needed).
    pub fn set_input(&mut self, i: usize, v: Option<ValueId>) {
        if self.inputs.len() <= i {
            self.inputs.resize(i + 1, None);
        }
        self.inputs[i] = v;
    }
}
