//! The interpreter's dynamic mode: follows the schedule of a
//! [`crate::dynamic::Analysis`], skipping blocks whose guard fails and
//! running routed blocks on the compacted rows that need them, with the
//! same naive kernels as the dense mode. It is the oracle for the plan
//! executor's dynamic execution; the dense mode ([`super::run`]) stays the
//! oracle for the ONNX semantics.

use super::{Interp, InterpError};
use crate::dynamic::{Analysis, Item, Mode, Trace};
use crate::ir::{Graph, NodeId, ValueId};
use d2nn_runtime::Tensor;
use ndarray::{ArrayD, Axis};
use std::collections::HashMap;
use std::sync::Arc;

/// Knob values by name (`--knob NAME=VALUE`); unnamed knobs keep the model's value.
pub type Knobs = HashMap<String, f32>;

/// The dynamic-mode state of a run.
pub(super) struct State<'g> {
    analysis: &'g Analysis,
    trace: Trace,
    /// Global sample index of each row of the current frame.
    samples: Vec<usize>,
}

/// Runs `graph` in dynamic mode: only what each sample needs, as `analysis`
/// schedules it. Returns the outputs and what ran.
pub fn run_dynamic(
    graph: &Graph,
    analysis: &Analysis,
    inputs: &HashMap<String, Tensor>,
    knobs: &Knobs,
) -> Result<(Vec<Tensor>, Trace), InterpError> {
    let mut it = Interp::new(graph, None);
    it.bind_inputs(inputs)?;
    for (name, &value) in knobs {
        let knob = analysis.knob(name).ok_or_else(|| InterpError::Node {
            node: name.clone(),
            op: "knob".into(),
            reason: format!("not a knob of this model (knobs: {})", knob_names(analysis)),
        })?;
        let shape = graph.values[knob.value].ty.shape.iter().map(|d| d.known().unwrap_or(1)).collect::<Vec<_>>();
        let t = Tensor::from_f32(&shape, vec![value; shape.iter().product()]).map_err(|e| InterpError::Node {
            node: name.clone(),
            op: "knob".into(),
            reason: e.to_string(),
        })?;
        it.overrides.insert(knob.value, Arc::new(t));
    }
    let batch = sample_count(graph, inputs);
    it.dynamic = Some(State { analysis, trace: Trace::new(&analysis.trace_spec, batch), samples: (0..batch).collect() });
    it.run_items(&analysis.body)?;
    let outputs = graph.outputs().iter().map(|&v| it.value(v).map(|t| (*t).clone())).collect::<Result<Vec<_>, _>>()?;
    let trace = it.dynamic.take().map(|s| s.trace).unwrap_or_default();
    Ok((outputs, trace))
}

fn knob_names(analysis: &Analysis) -> String {
    if analysis.knobs.is_empty() {
        return "none".into();
    }
    analysis.knobs.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The batch of a call: axis 0 of the first input (1 for scalar inputs).
/// The samples of a call: axis 0 of the first input (1 for a scalar). With a
/// batch symbol this is its value; with a fixed batch, the decisions of a
/// `[N, …]` model still have one row per sample.
pub(crate) fn sample_count(graph: &Graph, inputs: &HashMap<String, Tensor>) -> usize {
    graph.inputs.first().and_then(|&v| inputs.get(&graph.values[v].name)).and_then(|t| t.shape().first().copied()).unwrap_or(1)
}

/// Element `i` of `t` (element 0 when `t` holds one), as f64 (bool as 0/1).
pub(crate) fn element(t: &Tensor, i: usize) -> f64 {
    let i = if t.len() == 1 { 0 } else { i };
    match t {
        Tensor::F32(a) => a.iter().nth(i).map_or(0.0, |&x| x as f64),
        Tensor::I64(a) => a.iter().nth(i).map_or(0.0, |&x| x as f64),
        Tensor::I32(a) => a.iter().nth(i).map_or(0.0, |&x| x as f64),
        Tensor::Bool(a) => a.iter().nth(i).map_or(0.0, |&x| f64::from(u8::from(x))),
    }
}

fn select_rows(t: &Tensor, rows: &[usize]) -> Tensor {
    match t {
        Tensor::F32(a) => Tensor::F32(a.select(Axis(0), rows)),
        Tensor::I64(a) => Tensor::I64(a.select(Axis(0), rows)),
        Tensor::I32(a) => Tensor::I32(a.select(Axis(0), rows)),
        Tensor::Bool(a) => Tensor::Bool(a.select(Axis(0), rows)),
    }
}

/// A tensor of `total` rows holding `t`'s rows at positions `rows` and zeros elsewhere.
fn scatter_rows(t: &Tensor, rows: &[usize], total: usize) -> Tensor {
    fn scatter<T: Clone + Default>(a: &ArrayD<T>, rows: &[usize], total: usize) -> ArrayD<T> {
        let mut shape = a.shape().to_vec();
        shape[0] = total;
        let mut out = ArrayD::default(shape);
        for (i, &r) in rows.iter().enumerate() {
            out.index_axis_mut(Axis(0), r).assign(&a.index_axis(Axis(0), i));
        }
        out
    }
    match t {
        Tensor::F32(a) => Tensor::F32(scatter(a, rows, total)),
        Tensor::I64(a) => Tensor::I64(scatter(a, rows, total)),
        Tensor::I32(a) => Tensor::I32(scatter(a, rows, total)),
        Tensor::Bool(a) => Tensor::Bool(scatter(a, rows, total)),
    }
}

/// Sets to zero the rows (along axis 0) of `t` whose `keep` entry is false.
fn zero_rows(t: &mut Tensor, keep: &dyn Fn(usize) -> bool) {
    fn zero<T: Clone + Default>(a: &mut ArrayD<T>, keep: &dyn Fn(usize) -> bool) {
        if a.ndim() == 0 {
            if !keep(0) {
                a.fill(T::default());
            }
            return;
        }
        for (i, mut row) in a.axis_iter_mut(Axis(0)).enumerate() {
            if !keep(i) {
                row.fill(T::default());
            }
        }
    }
    match t {
        Tensor::F32(a) => zero(a, keep),
        Tensor::I64(a) => zero(a, keep),
        Tensor::I32(a) => zero(a, keep),
        Tensor::Bool(a) => zero(a, keep),
    }
}

impl<'g> Interp<'g, '_> {
    fn analysis(&self) -> Option<&'g Analysis> {
        self.dynamic.as_ref().map(|s| s.analysis)
    }

    fn run_items(&mut self, items: &[Item]) -> Result<(), InterpError> {
        for item in items {
            match *item {
                Item::Node(n) => self.run_node(n)?,
                Item::Block(b) => self.run_block(b)?,
            }
        }
        Ok(())
    }

    /// The rows of the current frame where guard `local` of block `b` holds.
    fn guard_rows(&self, b: usize) -> Result<Vec<usize>, InterpError> {
        let analysis = self.analysis().expect("dynamic mode");
        let block = &analysis.blocks[b];
        let rows = self.dynamic.as_ref().map_or(0, |s| s.samples.len());
        let mut atom_values = HashMap::new();
        for a in block.local.atoms() {
            atom_values.insert(a, self.value(analysis.atoms[a as usize].value())?);
        }
        Ok((0..rows).filter(|&i| block.local.eval(&mut |a| analysis.atoms[a as usize].holds(element(&atom_values[&a], i)))).collect())
    }

    fn run_block(&mut self, b: usize) -> Result<(), InterpError> {
        let analysis = self.analysis().expect("dynamic mode");
        let block = &analysis.blocks[b];
        let frame: Vec<usize> = self.dynamic.as_ref().map(|s| s.samples.clone()).unwrap_or_default();
        let rows = self.guard_rows(b)?;
        let needed: Vec<usize> = rows.iter().map(|&r| frame[r]).collect();
        if rows.is_empty() {
            self.record(b, &needed, 0);
            return self.zero_outputs(&block.outputs);
        }
        let all = rows.len() == frame.len();
        if all || !matches!(block.mode, Mode::Routed) {
            self.record(b, &needed, frame.len());
            return self.run_items(&block.items);
        }
        self.record(b, &needed, rows.len());
        // Compact: the block sees only its rows, the batch symbol bound to their count.
        let batch = analysis.batch.expect("a routed block has a batch symbol");
        let mut saved: Vec<(ValueId, Option<Arc<Tensor>>)> = Vec::with_capacity(block.gathers.len());
        for &v in &block.gathers {
            let full = self.value(v)?;
            saved.push((v, self.env[v.index()].take()));
            self.env[v.index()] = Some(Arc::new(select_rows(&full, &rows)));
        }
        let saved_batch = self.bindings.insert(batch, rows.len());
        if let Some(s) = self.dynamic.as_mut() {
            s.samples = needed.clone();
        }
        let result = self.run_items(&block.items);
        if let Some(s) = self.dynamic.as_mut() {
            s.samples = frame.clone();
        }
        match saved_batch {
            Some(n) => self.bindings.insert(batch, n),
            None => self.bindings.remove(&batch),
        };
        for (v, t) in saved {
            self.env[v.index()] = t;
        }
        result?;
        for &v in &block.outputs {
            let sub = self.value(v)?;
            self.env[v.index()] = Some(Arc::new(scatter_rows(&sub, &rows, frame.len())));
        }
        Ok(())
    }

    fn record(&mut self, b: usize, samples: &[usize], rows_run: usize) {
        if let Some(s) = self.dynamic.as_mut() {
            s.trace.enter(&s.analysis.trace_spec, b, samples, rows_run);
        }
    }

    /// Values of a block that did not run: zeros of their shape in this frame.
    fn zero_outputs(&mut self, outputs: &[ValueId]) -> Result<(), InterpError> {
        for &v in outputs {
            let ty = &self.graph.values[v].ty;
            let shape: Option<Vec<usize>> = ty.shape.iter().map(|d| d.resolve(&|s| self.bindings.get(&s).copied())).collect();
            let shape = shape.ok_or_else(|| InterpError::Node {
                node: self.graph.values[v].name.clone(),
                op: "-".into(),
                reason: "a skipped block's output has a shape unknown before run time".into(),
            })?;
            self.env[v.index()] = Some(Arc::new(Tensor::zeros(ty.dtype, &shape)));
        }
        Ok(())
    }

    /// Dynamic mode: records the branch an `If` takes.
    pub(super) fn enter_branch(&mut self, n: NodeId, taken: bool) {
        let Some(s) = self.dynamic.as_mut() else { return };
        if let Some(br) = s.analysis.branches.get(&n) {
            let b = br[if taken { 0 } else { 1 }];
            let samples = s.samples.clone();
            s.trace.enter(&s.analysis.trace_spec, b, &samples, samples.len());
        }
    }

    /// Dynamic mode: a gated `Mul` is exactly 0 where its gate is 0, even
    /// where the skipped operand holds NaN or infinity.
    pub(super) fn apply_gate(&self, n: NodeId, operands: &[Option<Arc<Tensor>>], results: &mut [Tensor]) -> Result<(), String> {
        let Some(analysis) = self.analysis() else { return Ok(()) };
        let Some(&gi) = analysis.gates.get(&n) else { return Ok(()) };
        let gate = operands.get(gi).and_then(|o| o.as_ref()).ok_or("the gate operand is missing")?;
        if let Some(out) = results.first_mut() {
            zero_rows(out, &|i| element(gate, i) != 0.0);
        }
        Ok(())
    }
}
