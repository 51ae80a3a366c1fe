//! The plan executor: runs a [`Program`] over one reusable scratch arena.
//!
//! Inputs are read in place from the caller's tensors, constants from the
//! program, and everything else lives in the arena at its planned offset.
//! The arena grows to the largest batch seen and is then reused.

use super::{Buffer, BufferId, Kernel, Program, Step, Storage};
use crate::interp::{self, InterpError, Profile};
use std::time::Instant;
use d2nn_runtime::arena::{Arena, ArenaError};
use d2nn_runtime::kernels::elementwise::{self, BroadcastLayout};
use d2nn_runtime::kernels::{norm, pool, reduce, softmax, KernelError};
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
    /// Scratch for convolutions' im2col matrices, grown to the largest one.
    im2col: Vec<f32>,
}

/// The state of one call: the caller's inputs and the batch size.
pub(super) struct Call<'a> {
    inputs: Vec<&'a Tensor>,
    batch: usize,
    bindings: HashMap<crate::ir::Symbol, usize>,
}

impl Executor {
    pub fn new(program: Arc<Program>) -> Self {
        Executor { program, arena: Arena::new(), im2col: Vec::new() }
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
                Step::Node { node, kernel, inputs, outputs } => {
                    self.fast(p, kernel, inputs, outputs, call).map_err(|reason| node_err(p, *node, reason))?;
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

    /// Calls `f` with the elements of `inputs` and the arena buffer `output`,
    /// as slices of `T`: graph inputs and constants in place (copied only if
    /// not contiguous), arena buffers through one checked split of the arena.
    /// This is how fast kernels see their operands.
    pub(super) fn with_io<T: ArenaElem>(
        &mut self,
        p: &Program,
        inputs: &[BufferId],
        output: BufferId,
        call: &Call,
        f: impl FnOnce(&[&[T]], &mut [T]) -> Result<(), String>,
    ) -> Result<(), String> {
        let out_buf = &p.buffers[output];
        let Storage::Arena(out_slot) = out_buf.storage else {
            return Err(format!("`{}` is not an arena buffer", out_buf.name));
        };
        let span = |b: &Buffer| b.shape_at(call.batch).iter().product::<usize>() * super::element_bytes(b.dtype);
        let out_off = self.offset(p, out_slot, call, out_buf).map_err(|e| e.to_string())?;
        let mut outside: Vec<Option<Cow<[T]>>> = Vec::with_capacity(inputs.len());
        let mut reads = Vec::new();
        for &b in inputs {
            let buffer = &p.buffers[b];
            let tensor: Option<&Tensor> = match &buffer.storage {
                Storage::Input(i) => Some(call.inputs[*i]),
                Storage::Const(t) => Some(t),
                Storage::Arena(slot) => {
                    reads.push((self.offset(p, *slot, call, buffer).map_err(|e| e.to_string())?, span(buffer)));
                    None
                }
            };
            match tensor {
                Some(t) => outside.push(Some(T::slice_of(t).ok_or_else(|| format!("`{}` is {}, not {}", buffer.name, t.dtype(), T::NAME))?)),
                None => outside.push(None),
            }
        }
        let (arena_reads, out) = self.arena.split(&reads, (out_off, span(out_buf))).map_err(|e| format!("buffer `{}`: {e}", out_buf.name))?;
        let mut arena_reads = arena_reads.into_iter();
        let mut slices: Vec<&[T]> = Vec::with_capacity(inputs.len());
        for o in &outside {
            match o {
                Some(c) => slices.push(c),
                None => {
                    let bytes = arena_reads.next().ok_or("operand bookkeeping went wrong")?;
                    slices.push(bytemuck::try_cast_slice(bytes).map_err(|e| format!("misaligned operand: {e}"))?);
                }
            }
        }
        let out: &mut [T] = bytemuck::try_cast_slice_mut(out).map_err(|e| format!("misaligned output: {e}"))?;
        f(&slices, out)
    }

    /// Runs one of the runtime's f32 kernels on the step's operands (see [`Kernel`]).
    fn fast(&mut self, p: &Program, kernel: &Kernel, inputs: &[Option<BufferId>], outputs: &[BufferId], call: &Call) -> Result<(), String> {
        let operand = |i: usize| inputs.get(i).copied().flatten().ok_or_else(|| format!("required input {i} is missing"));
        let out = *outputs.first().ok_or("the node has no output")?;
        let err = |e: KernelError| e.to_string();
        match kernel {
            Kernel::Unary(op) => self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| elementwise::unary(*op, x[0], y).map_err(err)),
            Kernel::Binary(b) => {
                let dims = b.dims.iter().map(|d| d.resolve(&|_| Some(call.batch)).ok_or("a dim of the iteration space is unknown"));
                let layout = BroadcastLayout { dims: dims.collect::<Result<_, _>>()?, a_strides: b.a_strides.clone(), b_strides: b.b_strides.clone() };
                self.with_io::<f32>(p, &[operand(0)?, operand(1)?], out, call, |x, y| elementwise::binary(b.op, x[0], x[1], &layout, y).map_err(err))
            }
            Kernel::Pool(pool) => self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| pool::pool2d(pool, x[0], y).map_err(err)),
            Kernel::GlobalPool { kind, plane } => {
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| pool::global_pool(*kind, *plane, x[0], y).map_err(err))
            }
            Kernel::Softmax { log, len, inner } => {
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| softmax::softmax(*log, *len, *inner, x[0], y).map_err(err))
            }
            Kernel::Reduce { kind, len, inner } => {
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| reduce::reduce(*kind, *len, *inner, x[0], y).map_err(err))
            }
            Kernel::BatchNorm { bn, plane } => {
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| norm::batch_norm(bn, *plane, x[0], y).map_err(err))
            }
            Kernel::Conv(c) => {
                // The im2col scratch lives in the executor so steady-state calls don't allocate.
                let mut col = std::mem::take(&mut self.im2col);
                let result = self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| super::gemm_steps::conv(c, x[0], y, &mut col));
                self.im2col = col;
                result
            }
            Kernel::Depthwise { geometry, weights, bias } => self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                d2nn_runtime::kernels::depthwise::depthwise(
                    geometry,
                    weights,
                    bias.as_deref().map(Vec::as_slice),
                    d2nn_runtime::gemm::Activation::Identity,
                    x[0],
                    y,
                    &d2nn_runtime::pool::ThreadPool::new(1),
                )
                .map_err(err)
            }),
            Kernel::Dense(d) => self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| super::gemm_steps::dense(d, x[0], y)),
            Kernel::Reference | Kernel::Copy => Err("not one of the runtime's fast kernels".into()),
        }
    }

    /// Copies `src`'s bytes into arena buffer `dst` (same size and dtype).
    fn copy(&mut self, p: &Program, src: BufferId, dst: BufferId, call: &Call) -> Result<(), String> {
        let (sname, dname) = (&p.buffers[src].name, &p.buffers[dst].name);
        self.with_io::<u8>(p, &[src], dst, call, |ins, out| {
            if ins[0].len() != out.len() {
                return Err(format!("`{sname}` holds {} bytes, `{dname}` needs {}", ins[0].len(), out.len()));
            }
            out.copy_from_slice(ins[0]);
            Ok(())
        })
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

/// An element type fast kernels read and write in the arena.
pub(super) trait ArenaElem: bytemuck::Pod {
    const NAME: &'static str;
    /// The tensor's elements in logical order, borrowed when contiguous and of
    /// this type; `None` when the dtype does not match.
    fn slice_of(t: &Tensor) -> Option<Cow<'_, [Self]>>;
}

fn contiguous<T: Copy>(a: &ndarray::ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

impl ArenaElem for f32 {
    const NAME: &'static str = "f32";
    fn slice_of(t: &Tensor) -> Option<Cow<'_, [f32]>> {
        t.as_f32().ok().map(contiguous)
    }
}

impl ArenaElem for i64 {
    const NAME: &'static str = "i64";
    fn slice_of(t: &Tensor) -> Option<Cow<'_, [i64]>> {
        t.as_i64().ok().map(contiguous)
    }
}

/// Raw bytes of any tensor (bool as 0/1), for kernels that move data.
impl ArenaElem for u8 {
    const NAME: &'static str = "bytes";
    fn slice_of(t: &Tensor) -> Option<Cow<'_, [u8]>> {
        fn bytes<T: bytemuck::Pod>(a: &ndarray::ArrayD<T>) -> Cow<'_, [u8]> {
            match contiguous(a) {
                Cow::Borrowed(s) => Cow::Borrowed(bytemuck::cast_slice(s)),
                Cow::Owned(v) => Cow::Owned(bytemuck::cast_slice(&v).to_vec()),
            }
        }
        Some(match t {
            Tensor::F32(a) => bytes(a),
            Tensor::I64(a) => bytes(a),
            Tensor::I32(a) => bytes(a),
            Tensor::Bool(a) => Cow::Owned(a.iter().map(|&b| b as u8).collect()),
        })
    }
}

fn node_err(p: &Program, node: crate::ir::NodeId, reason: String) -> ExecError {
    let n = &p.graph.nodes[node];
    ExecError::Node { node: n.name.clone(), op: n.op.name().to_string(), reason }
}
