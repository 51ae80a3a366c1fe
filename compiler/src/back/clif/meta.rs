//! What travels with the machine code: the model's [`ModelMeta`] (ports,
//! knobs, trace spec, arena size, constant table) and its kernel table,
//! built from the plan as the code is emitted, plus the weights file the
//! table and the constants index into.

use super::ClifError;
use crate::dynamic::Analysis;
use crate::ir::{Dim, Graph, NodeId};
use crate::plan::{BufferId, Kernel, Program, Storage, RESIDUAL_INPUT};
use d2nn_runtime::abi::{KernelDesc, KernelEntry, ModelMeta, Port};
use d2nn_runtime::compiled;
use d2nn_runtime::trace::{RegionCost, TraceSpec};
use d2nn_runtime::weights::WeightsWriter;
use d2nn_runtime::{DType, Tensor};
use std::collections::HashMap;

/// One runtime kernel call of a step: the table index, its input buffers
/// and its output.
pub struct KernelCall {
    pub index: u32,
    pub inputs: Vec<BufferId>,
    pub outputs: Vec<BufferId>,
}

/// A step left to the interpreter (`Kernel::Reference`), compiled as an
/// external kernel the JIT's host runs.
#[derive(Clone, Debug)]
pub struct ExternalStep {
    pub index: u32,
    pub node: NodeId,
    /// The node's inputs (absent optional ones as `None`); the call passes the present ones.
    pub inputs: Vec<Option<BufferId>>,
    pub outputs: Vec<BufferId>,
}

/// Collects the kernel table, the constants and the weights file.
pub struct MetaBuilder<'a> {
    graph: &'a Graph,
    p: &'a Program,
    pub weights: WeightsWriter,
    pub kernels: Vec<KernelEntry>,
    /// Weights-table index of each constant in the frame's constant table.
    pub consts: Vec<u32>,
    const_slot: HashMap<BufferId, u32>,
    /// Whether `Kernel::Reference` steps become external kernels (the JIT)
    /// rather than errors (object files, which have no interpreter).
    allow_external: bool,
    pub external: Vec<ExternalStep>,
}

/// A tensor's elements as little-endian bytes (bool as 0/1).
pub fn bytes_of(t: &Tensor) -> Vec<u8> {
    match t {
        Tensor::F32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Tensor::I64(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Tensor::I32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Tensor::Bool(a) => a.iter().map(|&b| u8::from(b)).collect(),
    }
}

fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl<'a> MetaBuilder<'a> {
    pub fn new(graph: &'a Graph, p: &'a Program, allow_external: bool) -> Self {
        MetaBuilder { graph, p, weights: WeightsWriter::new(), kernels: Vec::new(), consts: Vec::new(), const_slot: HashMap::new(), allow_external, external: Vec::new() }
    }

    fn node_err(&self, node: NodeId, reason: impl Into<String>) -> ClifError {
        node_err(self.p, node, reason)
    }

    /// The slot of constant buffer `b` in the frame's constant table.
    pub fn const_slot(&mut self, b: BufferId) -> Result<u32, ClifError> {
        if let Some(&s) = self.const_slot.get(&b) {
            return Ok(s);
        }
        let buf = &self.p.buffers[b];
        let Storage::Const(t) = &buf.storage else {
            return Err(ClifError::Value { what: "buffer", name: buf.name.clone(), reason: "is not a constant".into() });
        };
        let w = self.push_tensor(&buf.name, t);
        let slot = index(self.consts.len());
        self.consts.push(w);
        self.const_slot.insert(b, slot);
        Ok(slot)
    }

    fn push_tensor(&mut self, name: &str, t: &Tensor) -> u32 {
        index(match t {
            Tensor::F32(a) => self.weights.push_f32(name, &a.iter().copied().collect::<Vec<_>>()),
            Tensor::I64(a) => self.weights.push_i64(name, &a.iter().copied().collect::<Vec<_>>()),
            Tensor::I32(a) => self.weights.push_i32(name, &a.iter().copied().collect::<Vec<_>>()),
            Tensor::Bool(a) => self.weights.push_bool(name, &a.iter().copied().collect::<Vec<_>>()),
        })
    }

    fn push_f32(&mut self, name: &str, data: &[f32]) -> u32 {
        index(self.weights.push_f32(name, data))
    }

    fn bias(&mut self, node: &str, bias: Option<&Vec<f32>>) -> Option<u32> {
        bias.map(|b| self.push_f32(&format!("{node}.bias"), b))
    }

    /// The raw f32 weight a kernel packs, from the source graph.
    fn packed(&mut self, v: crate::ir::ValueId, node: NodeId) -> Result<u32, ClifError> {
        let t = self.graph.const_value(v).ok_or_else(|| self.node_err(node, format!("its weight `{}` is not a constant of the model", self.graph.values[v].name)))?;
        let data: Vec<f32> = t.as_f32().map_err(|_| self.node_err(node, "its weight is not f32"))?.iter().copied().collect();
        let name = self.graph.values[v].name.clone();
        Ok(self.push_f32(&name, &data))
    }

    fn push_kernel(&mut self, node: NodeId, kernel: KernelDesc) -> u32 {
        let n = &self.p.graph.nodes[node];
        self.kernels.push(KernelEntry { node: n.name.clone(), op: n.op.name().to_string(), kernel });
        index(self.kernels.len() - 1)
    }

    /// The runtime kernel calls that compute a node step.
    pub fn calls(&mut self, node: NodeId, kernel: &Kernel, inputs: &[Option<BufferId>], outputs: &[BufferId]) -> Result<Vec<KernelCall>, ClifError> {
        let p = self.p;
        let operand = |i: usize| inputs.get(i).copied().flatten().ok_or_else(|| node_err(p, node, format!("required input {i} is missing")));
        let out = *outputs.first().ok_or_else(|| node_err(p, node, "it has no output"))?;
        let dtype_of = |b: BufferId| p.buffers[b].dtype;
        let name = p.graph.nodes[node].name.clone();
        let single = |me: &mut Self, desc: KernelDesc, ins: Vec<BufferId>| -> Vec<KernelCall> {
            let index = me.push_kernel(node, desc);
            vec![KernelCall { index, inputs: ins, outputs: vec![out] }]
        };
        let with_residual = |residual: bool| -> Result<Vec<BufferId>, ClifError> {
            let mut ins = vec![operand(0)?];
            if residual {
                ins.push(operand(RESIDUAL_INPUT)?);
            }
            Ok(ins)
        };
        let dims = |d: &[Dim]| -> Result<Vec<compiled::Dim>, ClifError> { d.iter().map(|d| iter_dim(d).ok_or_else(|| node_err(p, node, "a dim of its iteration space is unknown"))).collect() };
        Ok(match kernel {
            Kernel::Reference if self.allow_external => {
                let index = self.push_kernel(node, KernelDesc::External { outputs: index(outputs.len()) });
                self.external.push(ExternalStep { index, node, inputs: inputs.to_vec(), outputs: outputs.to_vec() });
                vec![KernelCall { index, inputs: inputs.iter().flatten().copied().collect(), outputs: outputs.to_vec() }]
            }
            Kernel::Reference => return Err(self.node_err(node, "no runtime kernel covers it with these operand types or attributes (the JIT and the plan executor run the interpreter's kernel here; an object file has no interpreter)")),
            Kernel::Copy => return Err(self.node_err(node, "a copy is emitted inline, not called")),
            Kernel::Unary(op) => single(self, KernelDesc::Unary(*op), vec![operand(0)?]),
            Kernel::Binary(b) => {
                let desc = KernelDesc::Binary { op: b.op, dims: dims(&b.dims)?, a_strides: b.a_strides.clone(), b_strides: b.b_strides.clone() };
                single(self, desc, vec![operand(0)?, operand(1)?])
            }
            Kernel::Pool(g) => single(self, KernelDesc::Pool(*g), vec![operand(0)?]),
            Kernel::GlobalPool { kind, plane } => single(self, KernelDesc::GlobalPool { kind: *kind, plane: *plane }, vec![operand(0)?]),
            Kernel::Softmax { log, len, inner } => single(self, KernelDesc::Softmax { log: *log, len: *len, inner: *inner }, vec![operand(0)?]),
            Kernel::Reduce { kind, len, inner } => single(self, KernelDesc::Reduce { kind: *kind, len: compiled::Dim::Known(*len), inner: *inner }, vec![operand(0)?]),
            Kernel::ReduceOverBatch { kind, len, inner } => {
                let len = iter_dim(len).ok_or_else(|| self.node_err(node, "its reduced length is unknown"))?;
                single(self, KernelDesc::Reduce { kind: *kind, len, inner: *inner }, vec![operand(0)?])
            }
            Kernel::BatchNorm { bn, plane } => {
                let (mean, factor, bias) = bn.folded();
                single(self, KernelDesc::BatchNorm { mean: mean.to_vec(), factor: factor.to_vec(), bias: bias.to_vec(), plane: *plane }, vec![operand(0)?])
            }
            Kernel::Conv(c) => {
                let weights = self.packed(c.weight_value, node)?;
                let bias = self.bias(&name, c.bias.as_deref());
                let desc = KernelDesc::Conv { geometry: c.geometry.clone(), weights, bias, residual: c.fused.residual, activation: c.fused.activation };
                single(self, desc, with_residual(c.fused.residual)?)
            }
            Kernel::Depthwise { geometry, weights, bias, fused } => {
                let w = self.push_f32(&format!("{name}.weight"), weights);
                let bias = self.bias(&name, bias.as_deref());
                single(self, KernelDesc::Depthwise { geometry: geometry.clone(), weights: w, bias, activation: fused.activation }, vec![operand(0)?])
            }
            Kernel::Dense(d) => {
                let weights = self.packed(d.weight_value, node)?;
                let bias = self.bias(&name, d.bias.as_deref());
                let desc = KernelDesc::Dense { k: d.k, n: d.n, transposed: d.transposed, weights, bias, residual: d.fused.residual, activation: d.fused.activation };
                single(self, desc, with_residual(d.fused.residual)?)
            }
            Kernel::ConvTranspose(c) => {
                let weights = self.packed(c.weight_value, node)?;
                let bias = self.bias(&name, c.bias.as_deref());
                single(self, KernelDesc::ConvTranspose { geometry: c.geometry.clone(), weights, bias }, vec![operand(0)?])
            }
            Kernel::LayerNorm { geometry, scale, bias } => {
                let scale = self.push_f32(&format!("{name}.scale"), scale);
                let bias = self.bias(&name, bias.as_deref());
                single(self, KernelDesc::LayerNorm { geometry: *geometry, scale, bias }, vec![operand(0)?])
            }
            Kernel::Transpose(t) => single(self, KernelDesc::Copy { dtype: dtype_of(out), args: t.args().clone(), fill: Vec::new() }, vec![operand(0)?]),
            Kernel::Slice(s) => single(self, KernelDesc::Copy { dtype: dtype_of(out), args: s.args().clone(), fill: Vec::new() }, vec![operand(0)?]),
            Kernel::Pad { geometry, fill } => single(self, KernelDesc::Copy { dtype: dtype_of(out), args: geometry.args().clone(), fill: bytes_of(fill) }, vec![operand(0)?]),
            Kernel::Gather(g) => {
                let (axis, inner, indices) = g.parts();
                let indices = indices.iter().map(|&i| i as i64).collect();
                single(self, KernelDesc::Gather { dtype: dtype_of(out), axis, inner, indices }, vec![operand(0)?])
            }
            Kernel::Concat { rows } => {
                let ins = (0..inputs.len()).map(operand).collect::<Result<Vec<_>, _>>()?;
                single(self, KernelDesc::Concat { dtype: dtype_of(out), rows: rows.clone() }, ins)
            }
            Kernel::Split { rows } => {
                let x = operand(0)?;
                let mut calls = Vec::new();
                for (piece, &o) in outputs.iter().enumerate() {
                    let index = self.push_kernel(node, KernelDesc::Split { dtype: dtype_of(o), rows: rows.clone(), piece });
                    calls.push(KernelCall { index, inputs: vec![x], outputs: vec![o] });
                }
                calls
            }
            Kernel::Compare(k) => {
                let (a, b) = (operand(0)?, operand(1)?);
                let desc = KernelDesc::Compare { op: k.op, dtype: dtype_of(a), dims: dims(&k.dims)?, a_strides: k.a_strides.clone(), b_strides: k.b_strides.clone() };
                single(self, desc, vec![a, b])
            }
            Kernel::Where(k) => {
                let desc = KernelDesc::Where { dtype: dtype_of(out), dims: dims(&k.dims)?, cond_strides: k.cond_strides.clone(), x_strides: k.x_strides.clone(), y_strides: k.y_strides.clone() };
                single(self, desc, vec![operand(0)?, operand(1)?, operand(2)?])
            }
            Kernel::Logic(k) => {
                let desc = KernelDesc::Logic { op: k.op, dims: dims(&k.dims)?, a_strides: k.a_strides.clone(), b_strides: k.b_strides.clone() };
                single(self, desc, vec![operand(0)?, operand(1)?])
            }
            Kernel::Not => single(self, KernelDesc::Not, vec![operand(0)?]),
            Kernel::Cast { from, to } => single(self, KernelDesc::Cast { from: *from, to: *to }, vec![operand(0)?]),
            Kernel::ArgReduce(g) => {
                let x = operand(0)?;
                single(self, KernelDesc::ArgReduce { dtype: dtype_of(x), geometry: *g }, vec![x])
            }
            Kernel::OneHot { geometry, off_on } => {
                let x = operand(0)?;
                single(self, KernelDesc::OneHot { index: dtype_of(x), dtype: dtype_of(out), geometry: *geometry, off_on: bytes_of(off_on) }, vec![x])
            }
        })
    }

    /// The finished description (the kernel table and constants collected so far).
    pub fn meta(&self, name: &str, analysis: &Analysis) -> Result<ModelMeta, ClifError> {
        let p = self.p;
        let port = |b: BufferId| -> Result<Port, ClifError> {
            let buf = &p.buffers[b];
            let dims = buf.shape.iter().map(iter_dim).collect::<Option<Vec<_>>>().ok_or_else(|| ClifError::Value { what: "port", name: buf.name.clone(), reason: "has a dim that is neither known nor the batch".into() })?;
            Ok(Port { name: buf.name.clone(), dtype: buf.dtype, dims })
        };
        let dense = RegionCost { flops_per_sample: analysis.dense_flops_per_sample, flops_fixed: analysis.dense_flops_fixed };
        let (trace, knobs, blocks, (region_text, path_text)) = match p.dynamic.as_deref() {
            Some(a) => {
                let knobs = a
                    .knobs
                    .iter()
                    .map(|k| {
                        let elements = p.graph.values[k.value].ty.shape.iter().map(|d| d.known().unwrap_or(1)).product();
                        let used_by = k.atoms.iter().map(|&x| a.atoms[x as usize].name.clone()).collect::<Vec<_>>().join(", ");
                        d2nn_runtime::abi::Knob { name: k.name.clone(), default: k.default, elements, used_by }
                    })
                    .collect();
                (a.trace_spec.clone(), knobs, a.blocks.len(), super::super::describe_regions(p, a))
            }
            None => (TraceSpec { root: dense, regions: Vec::new(), paths: None }, Vec::new(), 0, (Vec::new(), Vec::new())),
        };
        Ok(ModelMeta {
            name: name.to_string(),
            inputs: p.inputs.iter().map(|&b| port(b)).collect::<Result<_, _>>()?,
            outputs: p.outputs.iter().map(|&b| port(b)).collect::<Result<_, _>>()?,
            knobs,
            trace,
            dense,
            region_text,
            path_text,
            arena_bytes_per_batch: p.arena.bytes_per_batch,
            arena_fixed_bytes: p.arena.fixed_bytes,
            blocks,
            samples: match p.inputs.first().and_then(|&b| p.buffers[b].shape.first()) {
                Some(Dim::Sym { factor, .. }) => compiled::Dim::Batch(*factor),
                Some(Dim::Known(k)) => compiled::Dim::Known(*k),
                _ => compiled::Dim::Known(1),
            },
            consts: self.consts.clone(),
            kernels: self.kernels.clone(),
        })
    }

    /// Where each knob's values start in the frame's knob block.
    pub fn knob_starts(&self) -> Vec<usize> {
        let mut starts = Vec::new();
        let mut at = 0;
        if let Some(a) = self.p.dynamic.as_deref() {
            for k in &a.knobs {
                starts.push(at);
                at += self.p.graph.values[k.value].ty.shape.iter().map(|d| d.known().unwrap_or(1)).product::<usize>();
            }
        }
        starts
    }
}

fn node_err(p: &Program, node: NodeId, reason: impl Into<String>) -> ClifError {
    let n = &p.graph.nodes[node];
    ClifError::Unsupported { node: n.name.clone(), op: n.op.name().to_string(), reason: reason.into() }
}

/// An IR dim as the runtime's: known, or the batch (the frame's rows) times a factor.
pub fn iter_dim(d: &Dim) -> Option<compiled::Dim> {
    match d {
        Dim::Known(k) => Some(compiled::Dim::Known(*k)),
        Dim::Sym { factor, .. } => Some(compiled::Dim::Batch(*factor)),
        Dim::Unknown => None,
    }
}

/// Bytes of one element of `dtype` in the arena.
pub fn elem_bytes(dtype: DType) -> usize {
    crate::plan::element_bytes(dtype)
}
