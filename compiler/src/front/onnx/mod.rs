//! The ONNX reader: protobuf (via `onnx-protobuf`) → [`Graph`].
//!
//! This is the only module that knows about protobuf, opset versions and
//! attribute quirks. It decodes the model, turns initializers into constants
//! (whether stored in typed fields, `raw_data` or external files), resolves
//! names through nested scopes so `If` branches can read outer values, and
//! converts every node through the [`registry`]. Problems with nodes are
//! collected, so one error lists every node that cannot be compiled.

pub mod build;
pub mod ctx;
pub mod error;
mod ops;
pub mod registry;
pub mod tensor;

pub use error::{ConvertError, LoadError, NodeIssue};

use crate::ir::{Dim, Graph, NodeId, Op, RegionId, RegionKind, TensorType, ValueId};
use crate::passes::infer;
use ctx::ConvertCtx;
use onnx_protobuf::{GraphProto, Message, ModelProto, NodeProto, ValueInfoProto};
use registry::{Registry, MAX_OPSET};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tensor::{dtype_from_onnx, tensor_from_proto};

/// Newest ONNX IR version read.
pub const MAX_IR_VERSION: i64 = 14;

/// A loaded model: the graph plus what the file said about itself.
#[derive(Debug, Clone)]
pub struct Model {
    pub graph: Graph,
    pub ir_version: i64,
    pub opset: i64,
    pub producer: String,
}

/// Reads an ONNX file; external data is looked up beside it.
pub fn load(path: &Path) -> Result<Model, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    let dir = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    let origin = path.display().to_string();
    let proto = parse(&bytes, &origin)?;
    // The weights now live in the decoded message: free the file's copy
    // before they are converted (a third copy at the peak otherwise).
    drop(bytes);
    from_proto(&proto, dir)
}

/// Decodes a model held in memory. `base_dir` locates external data (none
/// allowed when `None`); `origin` names the model in errors.
pub fn load_bytes(bytes: &[u8], base_dir: Option<&Path>, origin: &str) -> Result<Model, LoadError> {
    from_proto(&parse(bytes, origin)?, base_dir)
}

fn parse(bytes: &[u8], origin: &str) -> Result<ModelProto, LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::Decode { path: origin.to_string(), message: "the file is empty".into() });
    }
    ModelProto::parse_from_bytes(bytes).map_err(|e| LoadError::Decode { path: origin.to_string(), message: e.to_string() })
}

fn from_proto(proto: &ModelProto, base_dir: Option<&Path>) -> Result<Model, LoadError> {
    if proto.graph.is_none() {
        return Err(LoadError::NoGraph);
    }
    // IR versions after 10 only added element types and fields d2nnc rejects
    // where they are used, so they are read too.
    if !(3..=MAX_IR_VERSION).contains(&proto.ir_version) {
        return Err(LoadError::Model(format!("IR version {} is outside the supported range 3–{MAX_IR_VERSION}", proto.ir_version)));
    }
    let opset = default_opset(proto)?;
    let gproto = proto.graph.as_ref().expect("checked above");
    let mut builder = Builder {
        graph: Graph::new(&gproto.name),
        opset,
        base_dir,
        registry: Registry::standard(),
        consumed: HashSet::new(),
        issues: Vec::new(),
        poisoned: HashSet::new(),
        scopes: Vec::new(),
        unnamed: 0,
    };
    collect_consumed(gproto, &mut builder.consumed);
    builder.build_root(gproto)?;
    if !builder.issues.is_empty() {
        return Err(LoadError::Nodes(builder.issues));
    }
    Ok(Model { graph: builder.graph, ir_version: proto.ir_version, opset, producer: proto.producer_name.clone() })
}

fn default_opset(proto: &ModelProto) -> Result<i64, LoadError> {
    let mut opset = None;
    for imp in &proto.opset_import {
        match imp.domain.as_str() {
            "" | "ai.onnx" => opset = Some(imp.version),
            // Training and preview domains only matter if a node uses them;
            // such nodes are reported individually.
            _ => {}
        }
    }
    // Files without an opset import mean opset 1. Old opsets are not refused
    // here: each converter declares the opsets whose semantics it implements
    // (ops unchanged since opset 1 accept it), and nodes outside are reported.
    let opset = opset.unwrap_or(1);
    if !(1..=MAX_OPSET).contains(&opset) {
        return Err(LoadError::Model(format!("opset {opset} is outside the range d2nnc reads, 1–{MAX_OPSET}")));
    }
    Ok(opset)
}

/// Every name read by any node (in any subgraph) or listed as a graph output.
fn collect_consumed(g: &GraphProto, out: &mut HashSet<String>) {
    for n in &g.node {
        out.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        for a in &n.attribute {
            if let Some(sub) = a.g.as_ref() {
                collect_consumed(sub, out);
            }
            for sub in &a.graphs {
                collect_consumed(sub, out);
            }
        }
    }
    out.extend(g.output.iter().map(|o| o.name.clone()));
}

struct Builder<'a> {
    graph: Graph,
    opset: i64,
    base_dir: Option<&'a Path>,
    registry: &'static Registry,
    consumed: HashSet<String>,
    issues: Vec<NodeIssue>,
    /// Values whose producer failed to convert; their users are still checked
    /// for support but not typed.
    poisoned: HashSet<ValueId>,
    /// Name scopes, innermost last.
    scopes: Vec<HashMap<String, ValueId>>,
    unnamed: usize,
}

impl Builder<'_> {
    fn lookup(&self, name: &str) -> Option<ValueId> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn define(&mut self, name: &str, v: ValueId) {
        self.scopes.last_mut().expect("a scope is open").insert(name.to_string(), v);
    }

    fn add_initializers(&mut self, g: &GraphProto) -> Result<(), LoadError> {
        for init in &g.initializer {
            let t = tensor_from_proto(init, self.base_dir)?;
            let v = self.graph.add_const(&init.name, t);
            self.define(&init.name, v);
        }
        if !g.sparse_initializer.is_empty() {
            return Err(LoadError::Model("sparse initializers are not supported".into()));
        }
        Ok(())
    }

    fn build_root(&mut self, g: &GraphProto) -> Result<(), LoadError> {
        self.scopes.push(HashMap::new());
        self.add_initializers(g)?;
        let init_names: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        for input in &g.input {
            // Old IR lists initializers again as inputs; they stay constants.
            if init_names.contains(input.name.as_str()) {
                continue;
            }
            let ty = self.input_type(input)?;
            let v = self.graph.add_input(&input.name, ty);
            self.define(&input.name, v);
        }
        let root = self.graph.root;
        self.convert_nodes(&g.node, root);
        let outputs = self.resolve_outputs(g, true)?;
        self.graph.regions[root].outputs = outputs;
        Ok(())
    }

    fn input_type(&mut self, vi: &ValueInfoProto) -> Result<TensorType, LoadError> {
        let err = |reason: String| LoadError::Input { input: vi.name.clone(), reason };
        let Some(tp) = vi.type_.as_ref() else { return Err(err("has no type".into())) };
        let Some(onnx_protobuf::type_proto::Value::TensorType(tensor)) = tp.value.as_ref() else {
            return Err(err("is not a tensor (sequences, maps and optionals are not supported)".into()));
        };
        let dtype = dtype_from_onnx(tensor.elem_type).map_err(err)?;
        let Some(shape) = tensor.shape.as_ref() else {
            return Err(err("has no shape; d2nnc needs at least the rank of every input".into()));
        };
        let mut dims = Vec::with_capacity(shape.dim.len());
        for (i, d) in shape.dim.iter().enumerate() {
            let dim = if d.has_dim_value() {
                let n = d.dim_value();
                if n < 0 || n as u64 > tensor::MAX_ELEMENTS {
                    return Err(err(format!("dimension {i} has absurd size {n}")));
                }
                Dim::Known(n as usize)
            } else if d.has_dim_param() && !d.dim_param().is_empty() {
                Dim::sym(self.graph.symbol(d.dim_param()))
            } else {
                // An unnamed dynamic dim gets a symbol of its own.
                Dim::sym(self.graph.symbol(&format!("{}_dim{i}", vi.name)))
            };
            dims.push(dim);
        }
        Ok(TensorType::new(dtype, dims))
    }

    fn resolve_outputs(&mut self, g: &GraphProto, root: bool) -> Result<Vec<ValueId>, LoadError> {
        let mut outs = Vec::new();
        for o in &g.output {
            match self.lookup(&o.name) {
                Some(v) => outs.push(v),
                None if !self.issues.is_empty() => {}
                None => {
                    return Err(LoadError::Output {
                        output: o.name.clone(),
                        reason: if root { "is not produced by any node".into() } else { "is not produced inside its subgraph".into() },
                    })
                }
            }
        }
        Ok(outs)
    }

    fn convert_nodes(&mut self, nodes: &[NodeProto], region: RegionId) {
        for n in nodes {
            self.convert_node(n, region);
        }
    }

    fn issue(&mut self, proto: &NodeProto, name: &str, reason: String) {
        self.issues.push(NodeIssue {
            node: name.to_string(),
            op_type: proto.op_type.clone(),
            domain: proto.domain.clone(),
            opset: self.opset,
            reason,
        });
    }

    fn convert_node(&mut self, proto: &NodeProto, region: RegionId) {
        let name = if proto.name.is_empty() {
            self.unnamed += 1;
            format!("{}_{}", proto.op_type, self.unnamed)
        } else {
            proto.name.clone()
        };
        // Resolve operands; an undefined name is reported, not fatal.
        let mut inputs = Vec::with_capacity(proto.input.len());
        let mut poisoned_input = false;
        for input in &proto.input {
            if input.is_empty() {
                inputs.push(None);
                continue;
            }
            match self.lookup(input) {
                Some(v) => {
                    poisoned_input |= self.poisoned.contains(&v);
                    inputs.push(Some(v));
                }
                None => {
                    self.issue(proto, &name, format!("input `{input}` is not defined before this node"));
                    return self.poison_outputs(proto);
                }
            }
        }
        while inputs.last() == Some(&None) {
            inputs.pop();
        }
        let num_outputs = proto
            .output
            .iter()
            .rposition(|o| !o.is_empty() && self.consumed.contains(o))
            .map_or(if proto.output.is_empty() { 0 } else { 1 }, |i| i + 1);

        if !(proto.domain.is_empty() || proto.domain == "ai.onnx") {
            self.issue(proto, &name, format!("operators of domain `{}` are not supported", proto.domain));
            return self.poison_outputs(proto);
        }
        match proto.op_type.as_str() {
            "Constant" => return self.convert_constant(proto, &name),
            "If" => return self.convert_if(proto, &name, region, inputs, num_outputs, poisoned_input),
            _ => {}
        }
        let Some(def) = self.registry.get(&proto.op_type) else {
            self.issue(proto, &name, "operator not supported".into());
            return self.poison_outputs(proto);
        };
        if let Err(reason) = self.check_def(def, proto, inputs.len(), num_outputs) {
            self.issue(proto, &name, reason);
            return self.poison_outputs(proto);
        }
        let mut ctx = ConvertCtx {
            proto,
            opset: self.opset,
            inputs,
            num_outputs,
            graph: &mut self.graph,
            base_dir: self.base_dir,
            name: name.clone(),
        };
        let op = match (def.convert)(&mut ctx) {
            Ok(op) => op,
            Err(e) => {
                self.issue(proto, &name, e.to_string());
                return self.poison_outputs(proto);
            }
        };
        let inputs = ctx.inputs;
        let num_outputs = ctx.num_outputs;
        self.finish_node(proto, &name, region, op, inputs, num_outputs, poisoned_input, Vec::new());
    }

    fn check_def(&self, def: &registry::OpDef, proto: &NodeProto, n_in: usize, n_out: usize) -> Result<(), String> {
        if !def.opsets.contains(&self.opset) {
            return Err(format!("supported for opsets {}–{} only", def.opsets.start(), def.opsets.end()));
        }
        if !def.inputs.contains(&n_in) {
            return Err(format!("has {n_in} inputs, expected {}–{}", def.inputs.start(), def.inputs.end()));
        }
        if !def.outputs.contains(&n_out) {
            return Err(format!(
                "uses {n_out} outputs; using more than {} is not supported",
                def.outputs.end()
            ));
        }
        for a in &proto.attribute {
            if !def.attrs.contains(&a.name.as_str()) {
                return Err(format!("attribute `{}` is not supported", a.name));
            }
        }
        Ok(())
    }

    fn poison_outputs(&mut self, proto: &NodeProto) {
        // Define the outputs so later nodes are still checked for support.
        for o in proto.output.iter().filter(|o| !o.is_empty()) {
            let v = self.graph.add_const(o, d2nn_runtime::Tensor::scalar_f32(0.0));
            self.poisoned.insert(v);
            self.define(o, v);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_node(
        &mut self,
        proto: &NodeProto,
        name: &str,
        region: RegionId,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        num_outputs: usize,
        poisoned_input: bool,
        regions: Vec<RegionId>,
    ) -> Option<NodeId> {
        let placeholder = TensorType::scalar(d2nn_runtime::DType::F32);
        let outs: Vec<(String, TensorType)> = (0..num_outputs)
            .map(|i| {
                let o = proto.output.get(i).filter(|o| !o.is_empty()).cloned();
                (o.unwrap_or_else(|| format!("{name}.out{i}")), placeholder.clone())
            })
            .collect();
        let node = self.graph.add_node(region, name, op, inputs, outs);
        self.graph.nodes[node].regions = regions.clone();
        for r in regions {
            if let RegionKind::IfBranch { node: ref mut owner, .. } = self.graph.regions[r].kind {
                *owner = node;
            }
        }
        let out_values = self.graph.nodes[node].outputs.clone();
        for (i, &v) in out_values.iter().enumerate() {
            if let Some(o) = proto.output.get(i).filter(|o| !o.is_empty()) {
                self.define(o, v);
            }
        }
        if poisoned_input {
            self.poisoned.extend(out_values);
            return Some(node);
        }
        match infer::infer_node(&self.graph, node) {
            Ok(types) => {
                for (v, ty) in out_values.into_iter().zip(types) {
                    self.graph.values[v].ty = ty;
                }
            }
            Err(e) => {
                self.issue(proto, name, e.reason);
                self.poisoned.extend(out_values);
            }
        }
        Some(node)
    }

    fn convert_constant(&mut self, proto: &NodeProto, name: &str) {
        let ctx = ConvertCtx {
            proto,
            opset: self.opset,
            inputs: Vec::new(),
            num_outputs: 1,
            graph: &mut self.graph,
            base_dir: self.base_dir,
            name: name.to_string(),
        };
        match constant_value(&ctx) {
            Ok(t) => {
                let out = proto.output.first().cloned().unwrap_or_else(|| format!("{name}.out0"));
                let v = self.graph.add_const(&out, t);
                self.define(&out, v);
            }
            Err(e) => {
                self.issue(proto, name, e.to_string());
                self.poison_outputs(proto);
            }
        }
    }

    fn convert_if(
        &mut self,
        proto: &NodeProto,
        name: &str,
        region: RegionId,
        inputs: Vec<Option<ValueId>>,
        num_outputs: usize,
        poisoned_input: bool,
    ) {
        let branch = |key: &str| proto.attribute.iter().find(|a| a.name == key).and_then(|a| a.g.as_ref());
        let (Some(then_g), Some(else_g)) = (branch("then_branch"), branch("else_branch")) else {
            self.issue(proto, name, "invalid: `then_branch` and `else_branch` graph attributes are required".into());
            return self.poison_outputs(proto);
        };
        if inputs.len() != 1 || inputs[0].is_none() {
            self.issue(proto, name, format!("invalid: has {} inputs, expected exactly the condition", inputs.len()));
            return self.poison_outputs(proto);
        }
        // A placeholder owner; `finish_node` points the regions at the real node.
        let placeholder = self.graph.nodes.handles().next();
        let mut regions = Vec::new();
        for (g, then_branch) in [(then_g, true), (else_g, false)] {
            let kind = RegionKind::IfBranch { node: placeholder.unwrap_or_else(|| crate::ir::Handle::new(0)), then_branch };
            let r = self.graph.add_region(kind, region);
            self.scopes.push(HashMap::new());
            let built = self.add_initializers(g).and_then(|()| {
                if !g.input.is_empty() {
                    return Err(LoadError::Model(format!("node `{name}`: If branch graphs must not declare inputs")));
                }
                self.convert_nodes(&g.node, r);
                self.resolve_outputs(g, false)
            });
            self.scopes.pop();
            match built {
                Ok(outs) => {
                    if outs.len() != num_outputs && outs.len() != proto.output.len() {
                        self.issue(proto, name, format!("invalid: branch yields {} values for {} outputs", outs.len(), proto.output.len()));
                        return self.poison_outputs(proto);
                    }
                    let mut outs = outs;
                    outs.truncate(num_outputs);
                    self.graph.regions[r].outputs = outs;
                }
                Err(e) => {
                    self.issue(proto, name, e.to_string());
                    return self.poison_outputs(proto);
                }
            }
            regions.push(r);
        }
        let branch_poisoned = regions
            .iter()
            .any(|&r| self.graph.regions[r].outputs.iter().any(|v| self.poisoned.contains(v)));
        self.finish_node(proto, name, region, Op::If, inputs, num_outputs, poisoned_input || branch_poisoned, regions);
    }
}

/// The tensor a `Constant` node holds, from whichever `value*` attribute is set.
fn constant_value(ctx: &ConvertCtx) -> Result<d2nn_runtime::Tensor, ConvertError> {
    use d2nn_runtime::Tensor;
    if let Some(t) = ctx.attr_tensor("value")? {
        return Ok(t);
    }
    if let Some(f) = ctx.attr_float("value_float")? {
        return Ok(Tensor::scalar_f32(f));
    }
    if let Some(i) = ctx.attr_int("value_int")? {
        return Ok(Tensor::scalar_i64(i));
    }
    if let Some(fs) = ctx.attr_floats("value_floats")? {
        return Tensor::from_f32(&[fs.len()], fs).map_err(|e| ConvertError::Invalid(e.to_string()));
    }
    if let Some(is) = ctx.attr_ints("value_ints")? {
        return Ok(Tensor::vec_i64(is));
    }
    if ctx.has_attr("sparse_value") || ctx.has_attr("value_string") || ctx.has_attr("value_strings") {
        return Err(ConvertError::Unsupported("sparse and string constants are not supported".into()));
    }
    Err(ConvertError::Invalid("Constant has no value attribute".into()))
}
