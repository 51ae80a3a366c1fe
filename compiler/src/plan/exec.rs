//! The plan executor: runs a [`Program`] over one reusable scratch arena.
//!
//! Inputs are read in place from the caller's tensors, constants from the
//! program, and everything else lives in the arena at its planned offset.
//! The arena grows to the largest batch seen and is then reused.

use super::{Buffer, BufferId, Kernel, Program, Step, Storage, RESIDUAL_INPUT};
use crate::interp::{self, InterpError, Profile};
use std::time::Instant;
use d2nn_runtime::arena::{Arena, ArenaError};
use d2nn_runtime::kernels::conv::ConvEpilogue;
use d2nn_runtime::kernels::elementwise;
use d2nn_runtime::kernels::{copy, norm, pool, reduce, softmax, KernelError};
use d2nn_runtime::pool::{for_units, ThreadPool};
use d2nn_runtime::{DType, Tensor};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// Runs a data-movement kernel (generic over the element) through
/// [`Executor::with_io`] with the Rust type of `out`'s dtype (bool as bytes).
macro_rules! by_dtype {
    ($self:ident, $p:ident, $inputs:expr, $out:expr, $call:ident, |$x:ident, $y:ident| $body:expr) => {
        match $p.buffers[$out].dtype {
            DType::F32 => $self.with_io::<f32>($p, $inputs, $out, $call, |$x, $y| $body),
            DType::I64 => $self.with_io::<i64>($p, $inputs, $out, $call, |$x, $y| $body),
            DType::I32 => $self.with_io::<i32>($p, $inputs, $out, $call, |$x, $y| $body),
            DType::Bool => $self.with_io::<u8>($p, $inputs, $out, $call, |$x, $y| $body),
        }
    };
}

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
    pub(super) arena: Arena,
    /// Intra-op parallelism; a pool of one thread runs every task inline.
    pool: Arc<ThreadPool>,
    /// Outputs below which the cheap kernels stay on one thread.
    min_parallel_outputs: usize,
    /// Current knob values, by knob index (dynamic programs).
    knobs: Arc<Vec<Tensor>>,
    /// What the last run of a dynamic program did.
    pub(super) trace: Option<crate::dynamic::Trace>,
}

/// The state of one call: the caller's inputs and the batch size.
pub(super) struct Call<'a> {
    pub(super) inputs: &'a [&'a Tensor],
    /// Rows in the current frame (a routed block runs on fewer).
    pub(super) batch: usize,
    /// The call's batch: arena offsets scale with it in every frame.
    pub(super) layout: usize,
    pub(super) bindings: HashMap<crate::ir::Symbol, usize>,
    pub(super) knobs: &'a [Tensor],
    /// The global sample index of each row of the frame (dynamic programs).
    pub(super) samples: Vec<usize>,
}

impl Executor {
    /// An executor running every kernel on the calling thread.
    pub fn new(program: Arc<Program>) -> Self {
        Self::with_threads(program, 1)
    }

    /// An executor whose kernels spread their work over `threads` threads
    /// (the caller and `threads - 1` persistent workers; 0 counts as 1).
    pub fn with_threads(program: Arc<Program>, threads: usize) -> Self {
        let knobs = match &program.dynamic {
            Some(a) => a.knobs.iter().map(|k| knob_tensor(&program, k.value, k.default)).collect(),
            None => Vec::new(),
        };
        Executor {
            program,
            arena: Arena::new(),
            pool: Arc::new(ThreadPool::new(threads)),
            min_parallel_outputs: d2nn_runtime::pool::MIN_PARALLEL_OUTPUTS,
            knobs: Arc::new(knobs),
            trace: None,
        }
    }

    /// Sets knob `name` (a threshold of the model) to `value` for the
    /// following runs.
    pub fn set_knob(&mut self, name: &str, value: f32) -> Result<(), crate::dynamic::KnobError> {
        let program = Arc::clone(&self.program);
        let knobs = program.dynamic.as_ref().map(|a| a.knobs.as_slice()).unwrap_or_default();
        let Some(k) = knobs.iter().position(|k| k.name == name) else {
            let available = if knobs.is_empty() { "none".into() } else { knobs.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ") };
            return Err(crate::dynamic::KnobError::Unknown { name: name.into(), available });
        };
        if !value.is_finite() {
            return Err(crate::dynamic::KnobError::NotFinite { name: name.into(), value });
        }
        Arc::make_mut(&mut self.knobs)[k] = knob_tensor(&program, knobs[k].value, value);
        Ok(())
    }

    /// What the last run did (dynamic programs only).
    pub fn trace(&self) -> Option<&crate::dynamic::Trace> {
        self.trace.as_ref()
    }

    /// Sets the output size from which the cheap kernels (elementwise,
    /// pooling, softmax, reductions) split their work over the threads
    /// (default 16 Ki elements). Tests lower it to exercise the split on
    /// small tensors.
    pub fn with_parallel_threshold(mut self, outputs: usize) -> Self {
        self.min_parallel_outputs = outputs;
        self
    }

    /// Threads the kernels run on, the caller included.
    pub fn threads(&self) -> usize {
        self.pool.threads()
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
        let feeds: SmallVec<[&Tensor; 4]> = g.inputs.iter().map(|&v| &inputs[&g.values[v].name]).collect();
        let knobs = Arc::clone(&self.knobs);
        let samples: Vec<usize> = if program.dynamic.is_some() { (0..interp::sample_count(g, inputs)).collect() } else { Vec::new() };
        self.trace = program.dynamic.as_ref().map(|a| crate::dynamic::Trace::new(&a.trace_spec, samples.len()));
        let call = Call { inputs: &feeds, batch, layout: batch, bindings, knobs: &knobs, samples };
        self.block(&program, &program.body, &call, &mut profile)?;
        if let Some(p) = profile {
            p.finish_run();
        }
        program.outputs.iter().map(|&b| self.read(&program, b, &call).map(Cow::into_owned)).collect()
    }

    pub(super) fn block(&mut self, p: &Program, steps: &[Step], call: &Call, profile: &mut Option<&mut Profile>) -> Result<(), ExecError> {
        for step in steps {
            let node = match step {
                Step::Node { node, .. } | Step::If { node, .. } | Step::Mask { node, .. } => *node,
                Step::Block { block, atoms, gathers, outputs, body } => {
                    self.guarded(p, *block, atoms, gathers, outputs, body, call, profile)?;
                    continue;
                }
            };
            let timing = profile.as_ref().map(|p| (p.mark(), Instant::now()));
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
                    self.enter_branch(p, *node, taken, call);
                    self.block(p, block, call, profile)?;
                    for (&y, &o) in yields.iter().zip(outputs) {
                        let t = self.read(p, y, call)?.into_owned();
                        self.write(p, o, &t, call).map_err(|reason| node_err(p, *node, reason))?;
                    }
                }
                Step::Mask { node, gate, output } => self.mask(p, *gate, *output, call).map_err(|reason| node_err(p, *node, reason))?,
                Step::Block { .. } => unreachable!("blocks are run by `block`"),
            }
        }
        Ok(())
    }

    pub(super) fn offset(&self, p: &Program, slot: usize, call: &Call, buffer: &Buffer) -> Result<usize, ExecError> {
        p.arena.offset(slot, call.layout).ok_or_else(|| ExecError::Arena {
            buffer: buffer.name.clone(),
            source: ArenaError::OutOfBounds { offset: usize::MAX, end: usize::MAX, size: self.arena.len() },
        })
    }

    /// A buffer's contents as a tensor (borrowed where it already is one).
    pub(super) fn read<'a>(&'a self, p: &'a Program, b: BufferId, call: &Call<'a>) -> Result<Cow<'a, Tensor>, ExecError> {
        let buffer = &p.buffers[b];
        match &buffer.storage {
            Storage::Input(i) => Ok(Cow::Borrowed(call.inputs[*i])),
            Storage::Knob(k) => Ok(Cow::Borrowed(&call.knobs[*k])),
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
        let span = |b: &Buffer| b.elements_at(call.batch) * super::element_bytes(b.dtype);
        let out_off = self.offset(p, out_slot, call, out_buf).map_err(|e| e.to_string())?;
        // Inline storage: the step loop allocates nothing for up to four operands.
        let mut outside: SmallVec<[Option<Cow<[T]>>; 4]> = SmallVec::with_capacity(inputs.len());
        let mut reads: SmallVec<[(usize, usize); 4]> = SmallVec::new();
        for &b in inputs {
            let buffer = &p.buffers[b];
            let tensor: Option<&Tensor> = match &buffer.storage {
                Storage::Input(i) => Some(call.inputs[*i]),
                Storage::Knob(k) => Some(&call.knobs[*k]),
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
        let mut slices: SmallVec<[&[T]; 4]> = SmallVec::with_capacity(inputs.len());
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
            Kernel::Unary(op) if same_slot(p, operand(0)?, out) => {
                let (pool, min) = (Arc::clone(&self.pool), self.min_parallel_outputs);
                self.in_place::<f32>(p, out, call, |y| {
                    elementwise::unary_in_place_par(&pool, min, *op, y);
                    Ok(())
                })
            }
            Kernel::Unary(op) => {
                let (pool, min) = (Arc::clone(&self.pool), self.min_parallel_outputs);
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                    for_units(&pool, min, x[0], y, (1, 1), |x, y| elementwise::unary(*op, x, y)).map_err(err)
                })
            }
            Kernel::Binary(b) => {
                let dims = b.dims.iter().map(|d| d.resolve(&|_| Some(call.batch)).ok_or("a dim of the iteration space is unknown"));
                let dims: SmallVec<[usize; 8]> = dims.collect::<Result<_, _>>()?;
                self.with_io::<f32>(p, &[operand(0)?, operand(1)?], out, call, |x, y| {
                    elementwise::binary_strided(b.op, x[0], x[1], &dims, &b.a_strides, &b.b_strides, y).map_err(err)
                })
            }
            Kernel::Pool(geometry) => {
                let (pool, min) = (Arc::clone(&self.pool), self.min_parallel_outputs);
                let unit = (geometry.h.input * geometry.w.input, geometry.h.output * geometry.w.output);
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                    for_units(&pool, min, x[0], y, unit, |x, y| pool::pool2d(geometry, x, y)).map_err(err)
                })
            }
            Kernel::GlobalPool { kind, plane } => {
                let (pool, min) = (Arc::clone(&self.pool), self.min_parallel_outputs);
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                    for_units(&pool, min, x[0], y, (*plane, 1), |x, y| pool::global_pool(*kind, *plane, x, y)).map_err(err)
                })
            }
            Kernel::Softmax { log, len, inner } => {
                let (pool, min) = (Arc::clone(&self.pool), self.min_parallel_outputs);
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                    for_units(&pool, min, x[0], y, (len * inner, len * inner), |x, y| softmax::softmax(*log, *len, *inner, x, y)).map_err(err)
                })
            }
            Kernel::Reduce { kind, len, inner } => {
                let (pool, min) = (Arc::clone(&self.pool), self.min_parallel_outputs);
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                    for_units(&pool, min, x[0], y, (len * inner, *inner), |x, y| reduce::reduce(*kind, *len, *inner, x, y)).map_err(err)
                })
            }
            Kernel::BatchNorm { bn, plane } => {
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| norm::batch_norm(bn, *plane, x[0], y).map_err(err))
            }
            Kernel::Conv(c) => {
                let pool = Arc::clone(&self.pool);
                let ids = [operand(0)?, if c.fused.residual { operand(RESIDUAL_INPUT)? } else { operand(0)? }];
                let ins = &ids[..1 + usize::from(c.fused.residual)];
                self.with_io::<f32>(p, ins, out, call, |x, y| {
                    let epi = ConvEpilogue { bias: c.bias.as_deref().map(Vec::as_slice), residual: x.get(1).copied(), activation: c.fused.activation };
                    c.weights.run(&c.geometry, epi, x[0], y, &pool).map_err(err)
                })
            }
            Kernel::Depthwise { geometry, weights, bias, fused } => {
                let pool = Arc::clone(&self.pool);
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                    let bias = bias.as_deref().map(Vec::as_slice);
                    d2nn_runtime::kernels::depthwise::depthwise(geometry, weights, bias, fused.activation, x[0], y, &pool).map_err(err)
                })
            }
            Kernel::Dense(d) => {
                let pool = Arc::clone(&self.pool);
                let ids = [operand(0)?, if d.fused.residual { operand(RESIDUAL_INPUT)? } else { operand(0)? }];
                let ins = &ids[..1 + usize::from(d.fused.residual)];
                self.with_io::<f32>(p, ins, out, call, |x, y| {
                    d.weights.run(d.bias.as_deref().map(Vec::as_slice), x.get(1).copied(), d.fused.activation, x[0], y, &pool).map_err(err)
                })
            }
            Kernel::Transpose(t) => by_dtype!(self, p, &[operand(0)?], out, call, |x, y| copy::transpose(t, x[0], y).map_err(err)),
            Kernel::Slice(s) => by_dtype!(self, p, &[operand(0)?], out, call, |x, y| copy::slice(s, x[0], y).map_err(err)),
            Kernel::Gather(g) => by_dtype!(self, p, &[operand(0)?], out, call, |x, y| copy::gather(g, x[0], y).map_err(err)),
            Kernel::Concat { rows } => {
                let all = (0..inputs.len()).map(operand).collect::<Result<SmallVec<[BufferId; 8]>, _>>()?;
                by_dtype!(self, p, &all, out, call, |x, y| copy::concat(rows, x, y).map_err(err))
            }
            Kernel::Split { rows } => {
                let x = operand(0)?;
                for (piece, &o) in outputs.iter().enumerate() {
                    by_dtype!(self, p, &[x], o, call, |x, y| copy::split(rows, piece, x[0], y).map_err(err))?;
                }
                Ok(())
            }
            Kernel::Pad { geometry, fill } => by_dtype!(self, p, &[operand(0)?], out, call, |x, y| {
                let fill = ArenaElem::slice_of(fill).and_then(|f| f.first().copied()).ok_or("the fill value does not match the data")?;
                copy::pad(geometry, fill, x[0], y).map_err(err)
            }),
            Kernel::ReduceOverBatch { kind, len, inner } => {
                let (pool, min) = (Arc::clone(&self.pool), self.min_parallel_outputs);
                let len = len.resolve(&|_| Some(call.batch)).ok_or("the reduced length is unknown")?;
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                    for_units(&pool, min, x[0], y, (len * inner, *inner), |x, y| reduce::reduce(*kind, len, *inner, x, y)).map_err(err)
                })
            }
            Kernel::LayerNorm { geometry, scale, bias } => {
                let (pool, min) = (Arc::clone(&self.pool), self.min_parallel_outputs);
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                    let bias = bias.as_deref().map(Vec::as_slice);
                    for_units(&pool, min, x[0], y, (geometry.row, geometry.row), |x, y| norm::layer_norm(geometry, scale, bias, x, y)).map_err(err)
                })
            }
            Kernel::ConvTranspose(c) => {
                let pool = Arc::clone(&self.pool);
                self.with_io::<f32>(p, &[operand(0)?], out, call, |x, y| {
                    let bias = c.bias.as_deref().map(Vec::as_slice);
                    d2nn_runtime::kernels::conv_transpose::conv_transpose2d(&c.geometry, &c.weights, bias, x[0], y, &pool).map_err(err)
                })
            }
            Kernel::Compare(_) | Kernel::Where(_) | Kernel::Logic(_) | Kernel::Not | Kernel::Cast { .. } | Kernel::ArgReduce(_) | Kernel::OneHot { .. } => {
                self.typed(p, kernel, inputs, out, call)
            }
            Kernel::Reference | Kernel::Copy => Err("not one of the runtime's fast kernels".into()),
        }
    }

    /// Calls `f` with arena buffer `b`'s elements, to be updated in place.
    pub(super) fn in_place<T: ArenaElem>(&mut self, p: &Program, b: BufferId, call: &Call, f: impl FnOnce(&mut [T]) -> Result<(), String>) -> Result<(), String> {
        let buffer = &p.buffers[b];
        let Storage::Arena(slot) = buffer.storage else {
            return Err(format!("`{}` is not an arena buffer", buffer.name));
        };
        let off = self.offset(p, slot, call, buffer).map_err(|e| e.to_string())?;
        let data = self.arena.view_mut::<T>(off, buffer.elements_at(call.batch)).map_err(|e| format!("buffer `{}`: {e}", buffer.name))?;
        f(data)
    }

    /// Copies `src`'s bytes into arena buffer `dst` (same size and dtype);
    /// nothing to do when lowering placed `dst` over `src`.
    fn copy(&mut self, p: &Program, src: BufferId, dst: BufferId, call: &Call) -> Result<(), String> {
        if same_slot(p, src, dst) {
            return Ok(());
        }
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

impl ArenaElem for i32 {
    const NAME: &'static str = "i32";
    fn slice_of(t: &Tensor) -> Option<Cow<'_, [i32]>> {
        match t {
            Tensor::I32(a) => Some(contiguous(a)),
            _ => None,
        }
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

/// A knob's value as a tensor of the constant's shape.
fn knob_tensor(p: &Program, v: crate::ir::ValueId, value: f32) -> Tensor {
    let shape: Vec<usize> = p.graph.values[v].ty.shape.iter().map(|d| d.known().unwrap_or(1)).collect();
    let len = shape.iter().product();
    Tensor::from_f32(&shape, vec![value; len]).expect("the element count follows from the shape")
}

/// Whether two buffers occupy the same arena slot (a step writing in place).
fn same_slot(p: &Program, a: BufferId, b: BufferId) -> bool {
    matches!((&p.buffers[a].storage, &p.buffers[b].storage), (Storage::Arena(x), Storage::Arena(y)) if x == y)
}

pub(super) fn node_err(p: &Program, node: crate::ir::NodeId, reason: String) -> ExecError {
    let n = &p.graph.nodes[node];
    ExecError::Node { node: n.name.clone(), op: n.op.name().to_string(), reason }
}
