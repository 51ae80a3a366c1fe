//! The graph: arenas of values, nodes and regions, plus the graph's interface.
//!
//! A region is an ordered list of nodes (a topological order) with the values
//! it yields. The root region is the graph body; each `If` node owns two child
//! regions. Nodes in a child region may read any value defined earlier in an
//! enclosing region — that is how ONNX subgraphs capture outer-scope values —
//! and the verifier checks exactly that. Guarded regions (issue 4) are a
//! further [`RegionKind`] on the same structure.

use super::arena::{Arena, Handle};
use super::op::Op;
use super::types::{Symbol, TensorType};
use d2nn_runtime::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

pub type ValueId = Handle<Value>;
pub type NodeId = Handle<Node>;
pub type RegionId = Handle<Region>;

/// Where a value comes from.
#[derive(Clone, Debug)]
pub enum ValueDef {
    /// The `i`-th graph input.
    Input(usize),
    /// A constant: an initializer, a `Constant` node, or a folded result.
    Const(Arc<Tensor>),
    /// Output `index` of `node`.
    Node { node: NodeId, index: usize },
}

/// An SSA value.
#[derive(Clone, Debug)]
pub struct Value {
    /// The ONNX name (unique within the model); generated names start with `%`.
    pub name: String,
    pub ty: TensorType,
    pub def: ValueDef,
}

/// One operation.
#[derive(Clone, Debug)]
pub struct Node {
    /// The ONNX node name, or a generated `op_type_N` when the model left it empty.
    pub name: String,
    pub op: Op,
    /// Operands in ONNX order; `None` is an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// Child regions: `[then, else]` for `If`, empty otherwise.
    pub regions: Vec<RegionId>,
}

impl Node {
    /// The present inputs, in order.
    pub fn present_inputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs.iter().flatten().copied()
    }

    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }
}

/// What a region is for.
#[derive(Clone, Debug, PartialEq)]
pub enum RegionKind {
    /// The graph body.
    Root,
    /// A branch of an `If` node.
    IfBranch { node: NodeId, then_branch: bool },
}

/// An ordered block of nodes yielding values.
#[derive(Clone, Debug)]
pub struct Region {
    pub kind: RegionKind,
    pub parent: Option<RegionId>,
    /// Nodes in execution order.
    pub nodes: Vec<NodeId>,
    /// The values the region yields: graph outputs for the root, branch results for an `If`.
    pub outputs: Vec<ValueId>,
}

/// A whole model.
#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub values: Arena<Value>,
    pub nodes: Arena<Node>,
    pub regions: Arena<Region>,
    pub root: RegionId,
    /// Graph inputs in ONNX order (initializers excluded).
    pub inputs: Vec<ValueId>,
    /// Interned symbolic dimension names.
    pub symbols: Vec<String>,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new("")
    }
}

impl Graph {
    pub fn new(name: &str) -> Self {
        let mut regions = Arena::new();
        let root = regions.alloc(Region { kind: RegionKind::Root, parent: None, nodes: Vec::new(), outputs: Vec::new() });
        Graph {
            name: name.to_string(),
            values: Arena::new(),
            nodes: Arena::new(),
            regions,
            root,
            inputs: Vec::new(),
            symbols: Vec::new(),
        }
    }

    /// Graph outputs (the root region's yields).
    pub fn outputs(&self) -> &[ValueId] {
        &self.regions[self.root].outputs
    }

    /// Interns a symbolic dimension name.
    pub fn symbol(&mut self, name: &str) -> Symbol {
        if let Some(i) = self.symbols.iter().position(|s| s == name) {
            return Symbol(i as u32);
        }
        self.symbols.push(name.to_string());
        Symbol((self.symbols.len() - 1) as u32)
    }

    pub fn add_input(&mut self, name: &str, ty: TensorType) -> ValueId {
        let v = self.values.alloc(Value { name: name.to_string(), ty, def: ValueDef::Input(self.inputs.len()) });
        self.inputs.push(v);
        v
    }

    pub fn add_const(&mut self, name: &str, tensor: Tensor) -> ValueId {
        let ty = TensorType::fixed(tensor.dtype(), tensor.shape());
        self.values.alloc(Value { name: name.to_string(), ty, def: ValueDef::Const(Arc::new(tensor)) })
    }

    /// Appends a node to `region`, creating its output values with the given names and types.
    pub fn add_node(
        &mut self,
        region: RegionId,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<(String, TensorType)>,
    ) -> NodeId {
        let node = self.nodes.alloc(Node { name: name.to_string(), op, inputs, outputs: Vec::new(), regions: Vec::new() });
        let outs = outputs
            .into_iter()
            .enumerate()
            .map(|(index, (name, ty))| self.values.alloc(Value { name, ty, def: ValueDef::Node { node, index } }))
            .collect();
        self.nodes[node].outputs = outs;
        self.regions[region].nodes.push(node);
        node
    }

    /// Creates an empty child region of `parent`.
    pub fn add_region(&mut self, kind: RegionKind, parent: RegionId) -> RegionId {
        self.regions.alloc(Region { kind, parent: Some(parent), nodes: Vec::new(), outputs: Vec::new() })
    }

    /// The constant a value holds, if it is one.
    pub fn const_value(&self, v: ValueId) -> Option<&Tensor> {
        match &self.values[v].def {
            ValueDef::Const(t) => Some(t),
            _ => None,
        }
    }

    /// The constant an optional input holds (`None` if absent or not constant).
    pub fn input_const(&self, node: NodeId, i: usize) -> Option<&Tensor> {
        self.nodes[node].input(i).and_then(|v| self.const_value(v))
    }

    /// All nodes reachable from the root, parents before the regions they own,
    /// in execution order.
    pub fn walk_nodes(&self) -> Vec<NodeId> {
        let mut out = Vec::new();
        self.walk_region(self.root, &mut out);
        out
    }

    fn walk_region(&self, region: RegionId, out: &mut Vec<NodeId>) {
        for &n in &self.regions[region].nodes {
            out.push(n);
            for &r in &self.nodes[n].regions {
                self.walk_region(r, out);
            }
        }
    }

    /// Number of reads of each value across all live regions, graph outputs included.
    pub fn use_counts(&self) -> HashMap<ValueId, usize> {
        let mut counts = HashMap::new();
        for n in self.walk_nodes() {
            for v in self.nodes[n].present_inputs() {
                *counts.entry(v).or_insert(0) += 1;
            }
            for &r in &self.nodes[n].regions {
                for &v in &self.regions[r].outputs {
                    *counts.entry(v).or_insert(0) += 1;
                }
            }
        }
        for &v in self.outputs() {
            *counts.entry(v).or_insert(0) += 1;
        }
        counts
    }

    /// Rewrites every read of `from` (node operands and region yields) to read `to`.
    pub fn replace_uses(&mut self, from: ValueId, to: ValueId) {
        for n in self.walk_nodes() {
            for slot in self.nodes[n].inputs.iter_mut().flatten() {
                if *slot == from {
                    *slot = to;
                }
            }
        }
        let regions: Vec<RegionId> = self.regions.handles().collect();
        for r in regions {
            for slot in self.regions[r].outputs.iter_mut() {
                if *slot == from {
                    *slot = to;
                }
            }
        }
    }

    /// Total number of elements in constants of float type: the parameter count.
    pub fn parameter_count(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for n in self.walk_nodes() {
            for v in self.nodes[n].present_inputs() {
                if let Some(t) = self.const_value(v) {
                    if t.dtype().is_float() && seen.insert(v) {
                        total += t.len();
                    }
                }
            }
        }
        total
    }
}
