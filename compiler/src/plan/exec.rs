//! The plan executor: runs a [`Program`] over one reusable scratch arena.
//!
//! Inputs are read in place from the caller's tensors, constants from the
//! program, and everything else lives in the arena at its planned offset.
//! The arena grows to the largest batch seen and is then reused.

use super::{Buffer, BufferId, Kernel, Program, Step, Storage};
use crate::interp::{self, InterpError, Profile};
use std::time::Instant;
use d2nn_runtime::arena::{Arena, ArenaError};
use d2nn_runtime::{DType, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// A failure while running a program; names the node or buffer at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Input(#[from] InterpError),
    #[error("node `{node}` ({op}): {reason}")]
    Node { node: String, op: String, reason: String },
    #[error("buffer `{buffer}`: {source}")]
    Arena { buffer: String, source: ArenaError },
    #[error("batch size {0} makes the scratch arena larger than the address space")]
    TooLarge(usize),
}

/// Runs one program; keeps its arena between calls.
pub struct Executor {
    program: Arc<Program>,
    arena: Arena,
}

/// The state of one call: the caller's inputs and the batch size.
struct Call<'a> {
    inputs: Vec<&'a Tensor>,
    batch: usize,
    bindings: HashMap<crate::ir::Symbol, usize>,
}

impl Executor {
    pub fn new(program: Arc<Program>) -> Self {
        Executor { program, arena: Arena::new() }
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Runs the program on named inputs; returns the outputs in graph order.
    pub fn run(&mut self, inputs: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, ExecError> {
        self.run_inner(inputs, None)
    }

    /// [`Executor::run`], also adding each step's exclusive time to `profile`
    /// (by node, as the interpreter's profile does).
    pub fn run_with_profile(&mut self, inputs: &HashMap<String, Tensor>, profile: &mut Profile) -> Result<Vec<Tensor>, ExecError> {
        let outputs = self.run_inner(inputs, Some(profile))?;
        Ok(outputs)
    }

    fn run_inner(&mut self, inputs: &HashMap<String, Tensor>, mut profile: Option<&mut Profile>) -> Result<Vec<Tensor>, ExecError> {
        let program = Arc::clone(&self.program);
        let g = &program.graph;
        let bindings = interp::bind_inputs(g, inputs)?;
        // Lowering allows at most one symbol, the batch.
        let batch = bindings.values().next().copied().unwrap_or(1);
        let bytes = program.arena.total_bytes(batch).ok_or(ExecError::TooLarge(batch))?;
        self.arena.reserve(bytes);
        let call = Call { inputs: g.inputs.iter().map(|&v| &inputs[&g.values[v].name]).collect(), batch, bindings };
        self.block(&program, &program.body, &call, &mut profile)?;
        if let Some(p) = profile {
            p.finish_run();
        }
        program.outputs.iter().map(|&b| self.read(&program, b, &call).map(Cow::into_owned)).collect()
    }

    fn block(&mut self, p: &Program, steps: &[Step], call: &Call, profile: &mut Option<&mut Profile>) -> Result<(), ExecError> {
        for step in steps {
            let timing = profile.as_ref().map(|p| (p.mark(), Instant::now()));
            let node = match step {
                Step::Node { node, .. } | Step::If { node, .. } => *node,
            };
            self.step(p, step, call, profile)?;
            if let (Some(prof), Some((mark, start))) = (profile.as_deref_mut(), timing) {
                prof.record(node, start.elapsed(), mark);
            }
        }
        Ok(())
    }

    fn step(&mut self, p: &Program, step: &Step, call: &Call, profile: &mut Option<&mut Profile>) -> Result<(), ExecError> {
        {
            match step {
                Step::Node { node, kernel: Kernel::Copy, inputs, outputs } => {
                    let (src, dst) = (inputs[0].ok_or_else(|| node_err(p, *node, "missing data input".into()))?, outputs[0]);
                    self.copy(p, src, dst, call).map_err(|reason| node_err(p, *node, reason))?;
                }
                Step::Node { node, kernel: Kernel::Reference, inputs, outputs } => {
                    let operands: Vec<Option<Cow<Tensor>>> =
                        inputs.iter().map(|i| i.map(|b| self.read(p, b, call)).transpose()).collect::<Result<_, _>>()?;
                    let refs = operands.iter().map(|o| o.as_deref()).collect();
                    let results = interp::eval_node(&p.graph, *node, refs, &call.bindings).map_err(|reason| node_err(p, *node, reason))?;
                    for (t, &b) in results.iter().zip(outputs) {
                        self.write(p, b, t, call).map_err(|reason| node_err(p, *node, reason))?;
                    }
                }
                Step::If { node, cond, then_block, else_block, then_yields, else_yields, outputs } => {
                    let c = self.read(p, *cond, call)?;
                    let taken = match c.as_bool() {
                        Ok(a) if a.len() == 1 => a.iter().next().copied().unwrap_or(false),
                        _ => return Err(node_err(p, *node, format!("condition must be one bool, got {}{:?}", c.dtype(), c.shape()))),
                    };
                    let (block, yields) = if taken { (then_block, then_yields) } else { (else_block, else_yields) };
                    self.block(p, block, call, profile)?;
                    for (&y, &o) in yields.iter().zip(outputs) {
                        let t = self.read(p, y, call)?.into_owned();
                        self.write(p, o, &t, call).map_err(|reason| node_err(p, *node, reason))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn offset(&self, p: &Program, slot: usize, call: &Call, buffer: &Buffer) -> Result<usize, ExecError> {
        p.arena.offset(slot, call.batch).ok_or_else(|| ExecError::Arena {
            buffer: buffer.name.clone(),
            source: ArenaError::OutOfBounds { offset: usize::MAX, end: usize::MAX, size: self.arena.len() },
        })
    }

    /// A buffer's contents as a tensor (borrowed where it already is one).
    fn read<'a>(&'a self, p: &'a Program, b: BufferId, call: &Call<'a>) -> Result<Cow<'a, Tensor>, ExecError> {
        let buffer = &p.buffers[b];
        match &buffer.storage {
            Storage::Input(i) => Ok(Cow::Borrowed(call.inputs[*i])),
            Storage::Const(t) => Ok(Cow::Borrowed(t)),
            Storage::Arena(slot) => {
                let shape = buffer.shape_at(call.batch);
                let n: usize = shape.iter().product();
                let off = self.offset(p, *slot, call, buffer)?;
                let err = |source| ExecError::Arena { buffer: buffer.name.clone(), source };
                let t = match buffer.dtype {
                    DType::F32 => Tensor::from_f32(&shape, self.arena.view::<f32>(off, n).map_err(err)?.to_vec()),
                    DType::I64 => Tensor::from_i64(&shape, self.arena.view::<i64>(off, n).map_err(err)?.to_vec()),
                    DType::I32 => Tensor::from_i32(&shape, self.arena.view::<i32>(off, n).map_err(err)?.to_vec()),
                    DType::Bool => Tensor::from_bool(&shape, self.arena.view::<u8>(off, n).map_err(err)?.iter().map(|&x| x != 0).collect()),
                };
                Ok(Cow::Owned(t.expect("the element count follows from the shape")))
            }
        }
    }

    /// The bytes of a buffer that is not in the arena (an input or a constant).
    fn outside_bytes<'a>(p: &'a Program, b: BufferId, call: &Call<'a>) -> Option<Cow<'a, [u8]>> {
        let tensor: &Tensor = match &p.buffers[b].storage {
            Storage::Input(i) => call.inputs[*i],
            Storage::Const(t) => t,
            Storage::Arena(_) => return None,
        };
        Some(tensor_bytes(tensor))
    }

    /// Copies `src`'s bytes into arena buffer `dst` (same element count and dtype).
    fn copy(&mut self, p: &Program, src: BufferId, dst: BufferId, call: &Call) -> Result<(), String> {
        let (sb, db) = (&p.buffers[src], &p.buffers[dst]);
        let bytes = db.shape_at(call.batch).iter().product::<usize>() * super::element_bytes(db.dtype);
        let Storage::Arena(dslot) = db.storage else {
            return Err(format!("`{}` is not an arena buffer", db.name));
        };
        let doff = self.offset(p, dslot, call, db).map_err(|e| e.to_string())?;
        if let Some(data) = Self::outside_bytes(p, src, call) {
            let out = self.arena.view_mut::<u8>(doff, bytes).map_err(|e| format!("buffer `{}`: {e}", db.name))?;
            if data.len() != bytes {
                return Err(format!("`{}` holds {} bytes, `{}` needs {bytes}", sb.name, data.len(), db.name));
            }
            out.copy_from_slice(&data);
            return Ok(());
        }
        let Storage::Arena(sslot) = sb.storage else {
            return Err(format!("`{}` has no bytes to copy", sb.name));
        };
        let soff = self.offset(p, sslot, call, sb).map_err(|e| e.to_string())?;
        let (reads, out) = self.arena.split(&[(soff, bytes)], (doff, bytes)).map_err(|e| format!("buffer `{}`: {e}", db.name))?;
        out.copy_from_slice(reads[0]);
        Ok(())
    }

    /// Stores a kernel's result in its buffer, checking the shape first.
    fn write(&mut self, p: &Program, b: BufferId, t: &Tensor, call: &Call) -> Result<(), String> {
        let buffer = &p.buffers[b];
        let shape = buffer.shape_at(call.batch);
        if t.dtype() != buffer.dtype || t.shape() != shape.as_slice() {
            return Err(format!(
                "computed {}{:?} for `{}`, the plan expects {}{:?}",
                t.dtype(),
                t.shape(),
                buffer.name,
                buffer.dtype,
                shape
            ));
        }
        let Storage::Arena(slot) = buffer.storage else {
            return Err(format!("`{}` is not an arena buffer", buffer.name));
        };
        let off = self.offset(p, slot, call, buffer).map_err(|e| e.to_string())?;
        let n = t.len();
        let res = match t {
            Tensor::F32(a) => self.arena.view_mut::<f32>(off, n).map(|dst| dst.iter_mut().zip(a.iter()).for_each(|(d, s)| *d = *s)),
            Tensor::I64(a) => self.arena.view_mut::<i64>(off, n).map(|dst| dst.iter_mut().zip(a.iter()).for_each(|(d, s)| *d = *s)),
            Tensor::I32(a) => self.arena.view_mut::<i32>(off, n).map(|dst| dst.iter_mut().zip(a.iter()).for_each(|(d, s)| *d = *s)),
            Tensor::Bool(a) => self.arena.view_mut::<u8>(off, n).map(|dst| dst.iter_mut().zip(a.iter()).for_each(|(d, s)| *d = *s as u8)),
        };
        res.map_err(|e| format!("buffer `{}`: {e}", buffer.name))
    }
}

/// A tensor's elements as little-endian bytes in logical order (bool as 0/1).
fn tensor_bytes(t: &Tensor) -> Cow<'_, [u8]> {
    fn pod<T: bytemuck::Pod>(a: &ndarray::ArrayD<T>) -> Cow<'_, [u8]> {
        match a.as_slice() {
            Some(s) => Cow::Borrowed(bytemuck::cast_slice(s)),
            None => Cow::Owned(bytemuck::cast_slice(&a.iter().copied().collect::<Vec<T>>()).to_vec()),
        }
    }
    match t {
        Tensor::F32(a) => pod(a),
        Tensor::I64(a) => pod(a),
        Tensor::I32(a) => pod(a),
        Tensor::Bool(a) => Cow::Owned(a.iter().map(|&b| b as u8).collect()),
    }
}

fn node_err(p: &Program, node: crate::ir::NodeId, reason: String) -> ExecError {
    let n = &p.graph.nodes[node];
    ExecError::Node { node: n.name.clone(), op: n.op.name().to_string(), reason }
}
