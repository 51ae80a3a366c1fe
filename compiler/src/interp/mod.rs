//! The reference interpreter: evaluates the IR node by node with naive,
//! obviously correct kernels. It is the oracle every other path is checked
//! against, so clarity beats speed everywhere in this module.
//!
//! After each node it checks the result's shape against the node's static
//! type, so a wrong inference rule is caught here rather than in a back end.

mod conv;
mod dynamic;
mod elementwise;
mod profile;
mod reduce;
mod shape;
pub mod util;

use crate::ir::{Dim, Family, Graph, NodeId, Op, RegionId, Symbol, TensorType, ValueDef, ValueId};
use crate::ir::types::TypeDisplay;
use d2nn_runtime::Tensor;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub use dynamic::{run_dynamic, Knobs};
pub(crate) use dynamic::{element as dynamic_element, sample_count};
pub use profile::{NodeTiming, OpTiming, Profile};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InterpError {
    #[error("input `{input}`: expected {expected}, got {given}")]
    Input { input: String, expected: String, given: String },
    #[error("input `{0}` was not provided")]
    MissingInput(String),
    #[error("`{0}` is not an input of the model (inputs: {1})")]
    UnknownInput(String, String),
    #[error("node `{node}` ({op}): {reason}")]
    Node { node: String, op: String, reason: String },
}

/// What a kernel sees: its node, operands and the resolved output shapes.
pub struct EvalCtx<'a> {
    pub graph: &'a Graph,
    pub node: NodeId,
    pub inputs: Vec<Option<&'a Tensor>>,
    bindings: &'a HashMap<Symbol, usize>,
}

impl<'a> EvalCtx<'a> {
    pub fn op(&self) -> &'a Op {
        &self.graph.nodes[self.node].op
    }

    /// A required operand.
    pub fn input(&self, i: usize) -> Result<&'a Tensor, String> {
        self.inputs.get(i).copied().flatten().ok_or_else(|| format!("required input {i} is missing"))
    }

    pub fn opt_input(&self, i: usize) -> Option<&'a Tensor> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn num_outputs(&self) -> usize {
        self.graph.nodes[self.node].outputs.len()
    }

    pub fn output_type(&self, i: usize) -> &'a TensorType {
        &self.graph.values[self.graph.nodes[self.node].outputs[i]].ty
    }

    /// Output `i`'s static shape with symbols bound; errors if a dim is unknown.
    pub fn output_shape(&self, i: usize) -> Result<Vec<usize>, String> {
        resolve_shape(&self.output_type(i).shape, self.bindings)
            .ok_or_else(|| "output shape is not static and no shape operand was given".to_string())
    }
}

fn resolve_shape(shape: &[Dim], bindings: &HashMap<Symbol, usize>) -> Option<Vec<usize>> {
    shape.iter().map(|d| d.resolve(&|s| bindings.get(&s).copied())).collect()
}

/// Runs the graph on named inputs and returns the outputs in graph order.
pub fn run(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, InterpError> {
    run_inner(graph, inputs, None)
}

/// [`run`], also adding each node's exclusive time to `profile` (see
/// [`Profile`]). Only this entry point reads the clock; [`run`] does not.
pub fn run_with_profile(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    profile: &mut Profile,
) -> Result<Vec<Tensor>, InterpError> {
    run_inner(graph, inputs, Some(profile))
}

fn run_inner(graph: &Graph, inputs: &HashMap<String, Tensor>, profile: Option<&mut Profile>) -> Result<Vec<Tensor>, InterpError> {
    let mut it = Interp::new(graph, profile);
    it.bind_inputs(inputs)?;
    it.run_region(graph.root)?;
    let outputs = graph.outputs().iter().map(|&v| it.value(v).map(|t| (*t).clone())).collect::<Result<Vec<_>, _>>()?;
    if let Some(p) = it.profile {
        p.finish_run();
    }
    Ok(outputs)
}

/// Checks named inputs against the graph's inputs (names, dtypes, ranks and
/// dims) and returns the value each symbolic dim takes. Every execution
/// engine validates its inputs with this, so they report mistakes alike.
pub fn bind_inputs(g: &Graph, inputs: &HashMap<String, Tensor>) -> Result<HashMap<Symbol, usize>, InterpError> {
    let mut bindings = HashMap::new();
    for name in inputs.keys() {
        if !g.inputs.iter().any(|&v| &g.values[v].name == name) {
            let all: Vec<&str> = g.inputs.iter().map(|&v| g.values[v].name.as_str()).collect();
            return Err(InterpError::UnknownInput(name.clone(), all.join(", ")));
        }
    }
    for &v in &g.inputs {
        let value = &g.values[v];
        let t = inputs.get(&value.name).ok_or_else(|| InterpError::MissingInput(value.name.clone()))?;
        let expected = || TypeDisplay { ty: &value.ty, symbols: &g.symbols }.to_string();
        let given = || format!("{}{:?}", t.dtype(), t.shape());
        let mismatch = || InterpError::Input { input: value.name.clone(), expected: expected(), given: given() };
        if t.dtype() != value.ty.dtype || t.rank() != value.ty.rank() {
            return Err(mismatch());
        }
        for (&dim, &n) in value.ty.shape.iter().zip(t.shape()) {
            match dim {
                Dim::Known(k) if k != n => return Err(mismatch()),
                Dim::Sym { sym, factor } => {
                    if n % factor != 0 {
                        return Err(mismatch());
                    }
                    let bound = *bindings.entry(sym).or_insert(n / factor);
                    if bound * factor != n {
                        let sym_name = &g.symbols[sym.0 as usize];
                        return Err(InterpError::Input {
                            input: value.name.clone(),
                            expected: format!("{} with {sym_name} = {bound} as bound by an earlier input", expected()),
                            given: given(),
                        });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(bindings)
}

/// Evaluates one node (not an `If`) on the given operands with symbols bound,
/// using the interpreter's kernels. Constant folding and the plan executor's
/// reference steps use it.
pub fn eval_node(
    graph: &Graph,
    node: NodeId,
    inputs: Vec<Option<&Tensor>>,
    bindings: &HashMap<Symbol, usize>,
) -> Result<Vec<Tensor>, String> {
    let n = &graph.nodes[node];
    if !n.regions.is_empty() {
        return Err(format!("{} owns regions and is not evaluated on its own", n.op.name()));
    }
    let results = eval(&EvalCtx { graph, node, inputs, bindings })?;
    if results.len() != n.outputs.len() {
        return Err(format!("kernel produced {} outputs, node has {}", results.len(), n.outputs.len()));
    }
    Ok(results)
}

/// Evaluates one node whose operands are all constants, with the same kernels
/// as [`run`]; constant folding uses it. Output shapes must not depend on
/// symbolic dims (nothing is bound).
pub fn eval_node_on_constants(graph: &Graph, node: NodeId) -> Result<Vec<Tensor>, String> {
    let inputs = graph.nodes[node]
        .inputs
        .iter()
        .map(|i| match i {
            None => Ok(None),
            Some(v) => graph.const_value(*v).map(Some).ok_or_else(|| format!("input `{}` is not a constant", graph.values[*v].name)),
        })
        .collect::<Result<Vec<_>, String>>()?;
    eval_node(graph, node, inputs, &HashMap::new())
}

struct Interp<'g, 'p> {
    graph: &'g Graph,
    env: Vec<Option<Arc<Tensor>>>,
    bindings: HashMap<Symbol, usize>,
    /// Set only by [`run_with_profile`]; `None` keeps the clock out of the loop.
    profile: Option<&'p mut Profile>,
    /// Knob values replacing the model's constants (dynamic mode).
    overrides: HashMap<ValueId, Arc<Tensor>>,
    /// The schedule being followed and the trace being filled (dynamic mode).
    dynamic: Option<dynamic::State<'g>>,
}

impl<'g, 'p> Interp<'g, 'p> {
    fn new(graph: &'g Graph, profile: Option<&'p mut Profile>) -> Self {
        Interp { graph, env: vec![None; graph.values.len()], bindings: HashMap::new(), profile, overrides: HashMap::new(), dynamic: None }
    }
}

impl Interp<'_, '_> {
    fn bind_inputs(&mut self, inputs: &HashMap<String, Tensor>) -> Result<(), InterpError> {
        self.bindings = bind_inputs(self.graph, inputs)?;
        for &v in &self.graph.inputs {
            let t = &inputs[&self.graph.values[v].name];
            self.env[v.index()] = Some(Arc::new(t.clone()));
        }
        Ok(())
    }

    fn value(&self, v: ValueId) -> Result<Arc<Tensor>, InterpError> {
        if let Some(t) = self.overrides.get(&v) {
            return Ok(t.clone());
        }
        if let ValueDef::Const(t) = &self.graph.values[v].def {
            return Ok(t.clone());
        }
        self.env[v.index()].clone().ok_or_else(|| InterpError::Node {
            node: self.graph.values[v].name.clone(),
            op: "-".into(),
            reason: "value read before it was computed".into(),
        })
    }

    fn run_region(&mut self, region: RegionId) -> Result<(), InterpError> {
        for &n in &self.graph.regions[region].nodes {
            if self.profile.is_some() {
                self.run_node_timed(n)?;
            } else {
                self.run_node(n)?;
            }
        }
        Ok(())
    }

    fn run_node_timed(&mut self, n: NodeId) -> Result<(), InterpError> {
        let mark = self.profile.as_ref().map_or_else(Default::default, |p| p.mark());
        let start = Instant::now();
        self.run_node(n)?;
        let elapsed = start.elapsed();
        if let Some(p) = self.profile.as_deref_mut() {
            p.record(n, elapsed, mark);
        }
        Ok(())
    }

    fn node_err(&self, n: NodeId, reason: String) -> InterpError {
        let node = &self.graph.nodes[n];
        InterpError::Node { node: node.name.clone(), op: node.op.name().to_string(), reason }
    }

    fn run_node(&mut self, n: NodeId) -> Result<(), InterpError> {
        let g = self.graph;
        let node = &g.nodes[n];
        let results = if let Op::If = node.op {
            let cond = self.value(node.input(0).ok_or_else(|| self.node_err(n, "missing condition".into()))?)?;
            let taken = match cond.as_bool() {
                Ok(a) if a.len() == 1 => *a.iter().next().expect("one element"),
                _ => return Err(self.node_err(n, format!("condition must be one bool, got {}{:?}", cond.dtype(), cond.shape()))),
            };
            let branch = node.regions[if taken { 0 } else { 1 }];
            self.enter_branch(n, taken);
            self.run_region(branch)?;
            g.regions[branch].outputs.iter().map(|&v| self.value(v).map(|t| (*t).clone())).collect::<Result<Vec<_>, _>>()?
        } else {
            let held: Vec<Option<Arc<Tensor>>> =
                node.inputs.iter().map(|i| i.map(|v| self.value(v)).transpose()).collect::<Result<_, _>>()?;
            self.check_output_sizes(n)?;
            let ctx = EvalCtx {
                graph: g,
                node: n,
                inputs: held.iter().map(|o| o.as_deref()).collect(),
                bindings: &self.bindings,
            };
            let mut results = eval(&ctx).map_err(|r| self.node_err(n, r))?;
            self.apply_gate(n, &held, &mut results).map_err(|r| self.node_err(n, r))?;
            results
        };
        if results.len() != node.outputs.len() {
            return Err(self.node_err(n, format!("kernel produced {} outputs, node has {}", results.len(), node.outputs.len())));
        }
        for (t, &v) in results.into_iter().zip(&node.outputs) {
            self.check_type(n, v, &t)?;
            self.env[v.index()] = Some(Arc::new(t));
        }
        Ok(())
    }

    /// Refuses, before any allocation, outputs whose known size exceeds the
    /// tensor size limit (a hostile shape must not exhaust memory).
    fn check_output_sizes(&self, n: NodeId) -> Result<(), InterpError> {
        let limit = crate::front::onnx::tensor::MAX_ELEMENTS;
        for &v in &self.graph.nodes[n].outputs {
            let ty = &self.graph.values[v].ty;
            let count = ty.shape.iter().try_fold(1u64, |acc, d| {
                let n = d.resolve(&|s| self.bindings.get(&s).copied()).unwrap_or(1) as u64;
                acc.checked_mul(n)
            });
            if count.is_none_or(|c| c > limit) {
                return Err(self.node_err(
                    n,
                    format!("output `{}` would hold more than {limit} elements", self.graph.values[v].name),
                ));
            }
        }
        Ok(())
    }

    fn check_type(&self, n: NodeId, v: ValueId, t: &Tensor) -> Result<(), InterpError> {
        let ty = &self.graph.values[v].ty;
        let fits = t.dtype() == ty.dtype
            && t.rank() == ty.rank()
            && ty.shape.iter().zip(t.shape()).all(|(d, &actual)| match d.resolve(&|s| self.bindings.get(&s).copied()) {
                Some(expected) => expected == actual,
                None => true,
            });
        if fits {
            Ok(())
        } else {
            Err(self.node_err(
                n,
                format!(
                    "computed {}{:?} for `{}` but its inferred type is {}",
                    t.dtype(),
                    t.shape(),
                    self.graph.values[v].name,
                    TypeDisplay { ty, symbols: &self.graph.symbols }
                ),
            ))
        }
    }
}

fn eval(ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
    match ctx.op().family() {
        Family::Conv => conv::eval(ctx),
        Family::Elementwise => elementwise::eval(ctx),
        Family::Shape => shape::eval(ctx),
        Family::Reduce => reduce::eval(ctx),
        Family::Control => Err("If is evaluated by the interpreter loop".into()),
    }
}
