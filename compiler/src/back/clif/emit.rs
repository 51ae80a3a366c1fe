//! The function writer: a plan's steps as one Cranelift function
//! `run(frame) -> status`. Arena addressing, decisions, `If` branches, row
//! compaction and scatter, masks, copies and cheap elementwise loops are
//! emitted inline; every other kernel is a call to the runtime's
//! `d2nn_rt_kernel` hook with its table index and operands.

use super::meta::{elem_bytes, KernelCall, MetaBuilder};
use super::simd;
use super::ClifError;
use crate::dynamic::{Analysis, AtomKind, BlockId, Mode};
use crate::ir::{Dim, NodeId};
use crate::plan::memory::Placement;
use crate::plan::{BufferId, Kernel, Program, Step, Storage};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, Block, FuncRef, InstBuilder, MemFlagsData, StackSlot, StackSlotData, StackSlotKind, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};
use d2nn_runtime::abi::{dtype_code, frame_layout, operand_layout};
use d2nn_runtime::DType;

/// Memory accesses to the frame, the arena and the operands: aligned and
/// known not to trap (the runtime sized and checked every buffer).
pub fn flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// The current frame of rows: the whole batch, or a routed block's rows.
#[derive(Clone, Copy)]
pub(super) struct Rows {
    /// Rows in the frame.
    pub(super) n: Value,
    /// The global sample index of each row.
    pub(super) samples: Value,
    /// Rows decisions are taken for: the samples in the frame (with a fixed
    /// batch the arena has no batch axis, but decisions still have a row per sample).
    pub(super) count: Value,
}

pub struct FunctionWriter<'a, 'm> {
    p: &'a Program,
    meta: &'m mut MetaBuilder<'a>,
    dynamic: Option<&'a Analysis>,
    /// Bytes per batch row of each batch-scaled buffer.
    bytes_per_row: Vec<Option<usize>>,
    knob_starts: Vec<usize>,
    config: TargetFrontendConfig,
    kernel_fn: FuncRef,
    trace_fn: FuncRef,
    operands: StackSlot,
    /// The status the failure exit returns.
    status: Variable,
    fail: Block,
    frame: Value,
    arena: Value,
    inputs: Value,
    outputs: Value,
    consts: Value,
    knobs: Value,
    lists: Value,
    /// The call's batch: arena offsets and list positions scale with it.
    nb: Value,
    /// Samples in the call: the stride of the row lists.
    ns: Value,
}

const PTR: Type = types::I64;

/// Most operands one kernel call passes (Concat's inputs and the output).
const MAX_OPERANDS: usize = 64;

impl<'a, 'm> FunctionWriter<'a, 'm> {
    pub(super) fn program(&self) -> &'a Program {
        self.p
    }

    /// Starts the function: reads the frame's fields in the entry block.
    #[allow(clippy::too_many_arguments)]
    pub fn new(p: &'a Program, meta: &'m mut MetaBuilder<'a>, fb: &mut FunctionBuilder, config: TargetFrontendConfig, kernel_fn: FuncRef, trace_fn: FuncRef) -> Result<Self, ClifError> {
        let mut bytes_per_row = Vec::with_capacity(p.buffers.len());
        for b in &p.buffers {
            let syms = b.shape.iter().filter(|d| matches!(d, Dim::Sym { .. })).count();
            if syms > 1 {
                return Err(ClifError::Value { what: "value", name: b.name.clone(), reason: "its size is not linear in the batch".into() });
            }
            bytes_per_row.push((syms == 1).then(|| b.elements_at(1) * elem_bytes(b.dtype)));
        }
        let knob_starts = meta.knob_starts();
        let entry = fb.create_block();
        fb.append_block_params_for_function_params(entry);
        fb.switch_to_block(entry);
        let frame = fb.block_params(entry)[0];
        let load = |fb: &mut FunctionBuilder, offset: i32| fb.ins().load(PTR, flags(), frame, offset);
        let (arena, inputs, outputs, consts) = (load(fb, frame_layout::ARENA), load(fb, frame_layout::INPUTS), load(fb, frame_layout::OUTPUTS), load(fb, frame_layout::CONSTS));
        let (knobs, lists, nb, ns) = (load(fb, frame_layout::KNOBS), load(fb, frame_layout::LISTS), load(fb, frame_layout::BATCH), load(fb, frame_layout::SAMPLES));
        let operands = fb.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, (MAX_OPERANDS as u32) * operand_layout::SIZE, 3));
        let status = fb.declare_var(types::I32);
        let zero = fb.ins().iconst(types::I32, 0);
        fb.def_var(status, zero);
        let fail = fb.create_block();
        Ok(FunctionWriter {
            p,
            meta,
            dynamic: p.dynamic.as_deref(),
            bytes_per_row,
            knob_starts,
            config,
            kernel_fn,
            trace_fn,
            operands,
            status,
            fail,
            frame,
            arena,
            inputs,
            outputs,
            consts,
            knobs,
            lists,
            nb,
            ns,
        })
    }

    /// Emits the whole body, the output copies and the exits.
    pub fn finish(mut self, fb: &mut FunctionBuilder) -> Result<(), ClifError> {
        let root = Rows { n: self.nb, samples: self.lists, count: self.ns };
        let p = self.p;
        self.steps(fb, &p.body, root)?;
        for (i, &b) in p.outputs.iter().enumerate() {
            let dst = fb.ins().load(PTR, flags(), self.outputs, (8 * i) as i32);
            let src = self.ptr(fb, b)?;
            let bytes = self.bytes(fb, b, root);
            fb.call_memcpy(self.config, dst, src, bytes);
        }
        let ok = fb.ins().iconst(types::I32, 0);
        fb.ins().return_(&[ok]);
        fb.switch_to_block(self.fail);
        let status = fb.use_var(self.status);
        fb.ins().return_(&[status]);
        fb.seal_all_blocks();
        Ok(())
    }

    fn node_err(&self, node: NodeId, reason: impl Into<String>) -> ClifError {
        let n = &self.p.graph.nodes[node];
        ClifError::Unsupported { node: n.name.clone(), op: n.op.name().to_string(), reason: reason.into() }
    }

    fn iconst(fb: &mut FunctionBuilder, v: usize) -> Value {
        fb.ins().iconst(PTR, v as i64)
    }

    /// `v · k` (no instruction for k = 1).
    fn scaled(fb: &mut FunctionBuilder, v: Value, k: usize) -> Value {
        if k == 1 {
            v
        } else {
            fb.ins().imul_imm_s(v, k as i64)
        }
    }

    /// The address of buffer `b`'s first element.
    pub(super) fn ptr(&mut self, fb: &mut FunctionBuilder, b: BufferId) -> Result<Value, ClifError> {
        let buf = &self.p.buffers[b];
        Ok(match &buf.storage {
            Storage::Arena(slot) => {
                let place = self.p.arena.placements.get(*slot).ok_or_else(|| ClifError::Value { what: "buffer", name: buf.name.clone(), reason: "has no arena slot".into() })?;
                match *place {
                    Placement::Batch { offset: 0 } => self.arena,
                    Placement::Batch { offset } => {
                        let off = Self::scaled(fb, self.nb, offset);
                        fb.ins().iadd(self.arena, off)
                    }
                    Placement::Fixed { offset } => {
                        let off = Self::scaled(fb, self.nb, self.p.arena.bytes_per_batch);
                        let off = fb.ins().iadd_imm_s(off, offset as i64);
                        fb.ins().iadd(self.arena, off)
                    }
                }
            }
            Storage::Input(i) => fb.ins().load(PTR, flags(), self.inputs, (8 * i) as i32),
            Storage::Const(_) => {
                let slot = self.meta.const_slot(b)?;
                fb.ins().load(PTR, flags(), self.consts, (8 * slot) as i32)
            }
            Storage::Knob(k) => {
                let start = *self.knob_starts.get(*k).ok_or_else(|| ClifError::Value { what: "knob", name: buf.name.clone(), reason: "is not a knob of the analysis".into() })?;
                fb.ins().iadd_imm_s(self.knobs, (4 * start) as i64)
            }
        })
    }

    /// Buffer `b`'s size in bytes in frame `rows`.
    pub(super) fn bytes(&self, fb: &mut FunctionBuilder, b: BufferId, rows: Rows) -> Value {
        match self.bytes_per_row[b] {
            Some(per) => Self::scaled(fb, rows.n, per),
            None => {
                let buf = &self.p.buffers[b];
                Self::iconst(fb, buf.elements_at(1) * elem_bytes(buf.dtype))
            }
        }
    }

    /// Jumps to the failure exit when `status` is not 0.
    fn check(&mut self, fb: &mut FunctionBuilder, status: Value) {
        let next = fb.create_block();
        let bad = fb.create_block();
        fb.ins().brif(status, bad, &[], next, &[]);
        fb.switch_to_block(bad);
        fb.def_var(self.status, status);
        fb.ins().jump(self.fail, &[]);
        fb.switch_to_block(next);
    }

    fn same_slot(&self, a: BufferId, b: BufferId) -> bool {
        matches!((&self.p.buffers[a].storage, &self.p.buffers[b].storage), (Storage::Arena(x), Storage::Arena(y)) if x == y)
    }

    fn steps(&mut self, fb: &mut FunctionBuilder, steps: &[Step], rows: Rows) -> Result<(), ClifError> {
        let mut i = 0;
        while i < steps.len() {
            if let Some(c) = simd::inline_compare(self.p, &steps[i]) {
                simd::emit_compare(self, fb, &c, rows)?;
                i += 1;
                continue;
            }
            // Runs of cheap elementwise steps become one vector loop.
            let run = simd::fusible_run(self.p, &steps[i..]);
            if run > 0 {
                simd::emit_run(self, fb, &steps[i..i + run], rows)?;
                i += run;
                continue;
            }
            self.step(fb, &steps[i], rows)?;
            i += 1;
        }
        Ok(())
    }

    fn step(&mut self, fb: &mut FunctionBuilder, step: &Step, rows: Rows) -> Result<(), ClifError> {
        match step {
            Step::Node { node, kernel, inputs, outputs } => self.node(fb, *node, kernel, inputs, outputs, rows),
            Step::If { node, cond, then_block, else_block, then_yields, else_yields, outputs } => {
                let c = self.ptr(fb, *cond)?;
                let byte = fb.ins().load(types::I8, flags(), c, 0);
                let (then_b, else_b, merge) = (fb.create_block(), fb.create_block(), fb.create_block());
                fb.ins().brif(byte, then_b, &[], else_b, &[]);
                let branches = self.dynamic.and_then(|a| a.branches.get(node)).copied();
                for (taken, block, yields, region) in [(then_b, then_block, then_yields, branches.map(|b| b[0])), (else_b, else_block, else_yields, branches.map(|b| b[1]))] {
                    fb.switch_to_block(taken);
                    if let Some(r) = region {
                        self.record(fb, r, rows.samples, rows.count, rows.count);
                    }
                    self.steps(fb, block, rows)?;
                    for (&y, &o) in yields.iter().zip(outputs) {
                        self.copy(fb, y, o, rows)?;
                    }
                    fb.ins().jump(merge, &[]);
                }
                fb.switch_to_block(merge);
                Ok(())
            }
            Step::Block { block, atoms, gathers, outputs, body } => self.block(fb, *block, atoms, gathers, outputs, body, rows),
            Step::Mask { gate, output, .. } => self.mask(fb, *gate, *output, rows),
        }
    }

    /// Copies buffer `src` into `dst` (nothing when they share a slot).
    fn copy(&mut self, fb: &mut FunctionBuilder, src: BufferId, dst: BufferId, rows: Rows) -> Result<(), ClifError> {
        if self.same_slot(src, dst) {
            return Ok(());
        }
        let (s, d) = (self.ptr(fb, src)?, self.ptr(fb, dst)?);
        let bytes = self.bytes(fb, dst, rows);
        fb.call_memcpy(self.config, d, s, bytes);
        Ok(())
    }

    fn node(&mut self, fb: &mut FunctionBuilder, node: NodeId, kernel: &Kernel, inputs: &[Option<BufferId>], outputs: &[BufferId], rows: Rows) -> Result<(), ClifError> {
        if let Kernel::Copy = kernel {
            let src = inputs.first().copied().flatten().ok_or_else(|| self.node_err(node, "missing data input"))?;
            let dst = *outputs.first().ok_or_else(|| self.node_err(node, "it has no output"))?;
            return self.copy(fb, src, dst, rows);
        }
        let calls = self.meta.calls(node, kernel, inputs, outputs)?;
        for call in calls {
            self.call_kernel(fb, node, &call, rows)?;
        }
        Ok(())
    }

    /// `d2nn_rt_kernel(frame, index, rows, operands, count)`, then the status check.
    fn call_kernel(&mut self, fb: &mut FunctionBuilder, node: NodeId, call: &KernelCall, rows: Rows) -> Result<(), ClifError> {
        let all: Vec<BufferId> = call.inputs.iter().chain(&call.outputs).copied().collect();
        if all.len() > MAX_OPERANDS {
            return Err(self.node_err(node, format!("{} operands; at most {MAX_OPERANDS} are supported", all.len())));
        }
        let base = fb.ins().stack_addr(PTR, self.operands, 0);
        for (j, &b) in all.iter().enumerate() {
            let at = (j as u32 * operand_layout::SIZE) as i32;
            let ptr = self.ptr(fb, b)?;
            let bytes = self.bytes(fb, b, rows);
            let dtype = fb.ins().iconst(types::I32, dtype_code(self.p.buffers[b].dtype) as i64);
            fb.ins().store(flags(), ptr, base, at + operand_layout::PTR);
            fb.ins().store(flags(), bytes, base, at + operand_layout::BYTES);
            fb.ins().store(flags(), dtype, base, at + operand_layout::DTYPE);
        }
        let index = fb.ins().iconst(types::I32, call.index as i64);
        let count = fb.ins().iconst(types::I32, all.len() as i64);
        let inst = fb.ins().call(self.kernel_fn, &[self.frame, index, rows.n, base, count]);
        let status = fb.inst_results(inst)[0];
        self.check(fb, status);
        Ok(())
    }

    /// Records that region `region` ran on `rows_run` rows for `count` samples at `samples`.
    fn record(&mut self, fb: &mut FunctionBuilder, region: BlockId, samples: Value, count: Value, rows_run: Value) {
        let r = fb.ins().iconst(types::I32, region as i64);
        fb.ins().call(self.trace_fn, &[self.frame, r, samples, count, rows_run]);
    }

    /// `for i in 0..count { body(i) }`.
    pub(super) fn for_range(&mut self, fb: &mut FunctionBuilder, count: Value, mut body: impl FnMut(&mut Self, &mut FunctionBuilder, Value) -> Result<(), ClifError>) -> Result<(), ClifError> {
        let i = fb.declare_var(PTR);
        let zero = Self::iconst(fb, 0);
        fb.def_var(i, zero);
        let (head, inner, exit) = (fb.create_block(), fb.create_block(), fb.create_block());
        fb.ins().jump(head, &[]);
        fb.switch_to_block(head);
        let iv = fb.use_var(i);
        let more = fb.ins().icmp(IntCC::UnsignedLessThan, iv, count);
        fb.ins().brif(more, inner, &[], exit, &[]);
        fb.switch_to_block(inner);
        let iv = fb.use_var(i);
        body(self, fb, iv)?;
        let iv = fb.use_var(i);
        let next = fb.ins().iadd_imm_s(iv, 1);
        fb.def_var(i, next);
        fb.ins().jump(head, &[]);
        fb.switch_to_block(exit);
        Ok(())
    }

    /// Element `i` of decision buffer `b` as the runtime's `compiled::at`
    /// reads it (element 0 of a one-element buffer), compared as `literal`.
    fn atom_value(&mut self, fb: &mut FunctionBuilder, b: BufferId, kind: &AtomKind, positive: bool, i: Value) -> Result<Value, ClifError> {
        let buf = &self.p.buffers[b];
        let dtype = buf.dtype;
        let size = elem_bytes(dtype);
        let base = self.ptr(fb, b)?;
        let addr = if self.bytes_per_row[b].is_none() && buf.elements_at(1) == 1 {
            base
        } else {
            let off = Self::scaled(fb, i, size);
            fb.ins().iadd(base, off)
        };
        // Negations as the opposite comparison: NaN compares alike both ways.
        let (choice, holds_if_equal) = match kind {
            AtomKind::Test { .. } => (0i64, false),
            AtomKind::Choice { choice, .. } => (*choice as i64, true),
        };
        let equal = holds_if_equal == positive;
        Ok(match dtype {
            DType::F32 => {
                let v = fb.ins().load(types::F32, flags(), addr, 0);
                let c = fb.ins().f32const(choice as f32);
                fb.ins().fcmp(if equal { FloatCC::Equal } else { FloatCC::NotEqual }, v, c)
            }
            DType::I64 | DType::I32 | DType::Bool => {
                let ty = match dtype {
                    DType::I64 => types::I64,
                    DType::I32 => types::I32,
                    _ => types::I8,
                };
                let v = fb.ins().load(ty, flags(), addr, 0);
                fb.ins().icmp_imm_s(if equal { IntCC::Equal } else { IntCC::NotEqual }, v, choice)
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn block(&mut self, fb: &mut FunctionBuilder, block: BlockId, atoms: &[(crate::dynamic::AtomId, BufferId)], gathers: &[(BufferId, BufferId)], outputs: &[BufferId], body: &[Step], rows: Rows) -> Result<(), ClifError> {
        let analysis = self.dynamic.ok_or_else(|| ClifError::Value { what: "region", name: format!("R{block}"), reason: "a guarded block in a program without a dynamic schedule".into() })?;
        let b = &analysis.blocks[block];
        let list = |fb: &mut FunctionBuilder, me: &Self, which: usize| {
            let words = Self::scaled(fb, me.ns, 8 * which);
            fb.ins().iadd(me.lists, words)
        };
        let rows_list = list(fb, self, 1 + 2 * block);
        let samples_list = list(fb, self, 2 + 2 * block);
        // The decision loop: the rows whose guard holds, in order.
        let count = fb.declare_var(PTR);
        let zero = Self::iconst(fb, 0);
        fb.def_var(count, zero);
        let terms = b.local.terms().to_vec();
        self.for_range(fb, rows.count, |me, fb, i| {
            let mut guard: Option<Value> = if terms.is_empty() { Some(fb.ins().iconst(types::I8, 0)) } else { None };
            for term in &terms {
                let mut conj = fb.ins().iconst(types::I8, 1);
                for lit in term.iter() {
                    let Some(&(_, buf)) = atoms.iter().find(|(a, _)| *a == lit.atom) else {
                        conj = fb.ins().iconst(types::I8, 0);
                        continue;
                    };
                    let v = me.atom_value(fb, buf, &analysis.atoms[lit.atom as usize].kind, lit.positive, i)?;
                    conj = fb.ins().band(conj, v);
                }
                guard = Some(match guard {
                    Some(g) => fb.ins().bor(g, conj),
                    None => conj,
                });
            }
            let guard = guard.unwrap_or_else(|| fb.ins().iconst(types::I8, 0));
            let (push, skip) = (fb.create_block(), fb.create_block());
            fb.ins().brif(guard, push, &[], skip, &[]);
            fb.switch_to_block(push);
            let c = fb.use_var(count);
            let at = Self::scaled(fb, c, 8);
            let addr = fb.ins().iadd(rows_list, at);
            fb.ins().store(flags(), i, addr, 0);
            let c1 = fb.ins().iadd_imm_s(c, 1);
            fb.def_var(count, c1);
            fb.ins().jump(skip, &[]);
            fb.switch_to_block(skip);
            Ok(())
        })?;
        let count = fb.use_var(count);
        // Their global sample indices.
        self.for_range(fb, count, |_, fb, j| {
            let at = Self::scaled(fb, j, 8);
            let r_addr = fb.ins().iadd(rows_list, at);
            let r = fb.ins().load(PTR, flags(), r_addr, 0);
            let s_at = Self::scaled(fb, r, 8);
            let s_addr = fb.ins().iadd(rows.samples, s_at);
            let s = fb.ins().load(PTR, flags(), s_addr, 0);
            let dst = fb.ins().iadd(samples_list, at);
            fb.ins().store(flags(), s, dst, 0);
            Ok(())
        })?;
        let (none, some, done) = (fb.create_block(), fb.create_block(), fb.create_block());
        fb.ins().brif(count, some, &[], none, &[]);
        // Nobody needs the region: its outputs are 0 (the D2NN default).
        fb.switch_to_block(none);
        let zero = Self::iconst(fb, 0);
        self.record(fb, block, samples_list, zero, zero);
        for &o in outputs {
            if !matches!(self.p.buffers[o].storage, Storage::Arena(_)) {
                continue;
            }
            let (ptr, bytes) = (self.ptr(fb, o)?, self.bytes(fb, o, rows));
            let z = fb.ins().iconst(types::I8, 0);
            fb.call_memset(self.config, ptr, z, bytes);
        }
        fb.ins().jump(done, &[]);
        fb.switch_to_block(some);
        if b.mode == Mode::Routed {
            self.record(fb, block, samples_list, count, count);
            for &(full, twin) in gathers {
                let rb = self.bytes_per_row[full].ok_or_else(|| ClifError::Value { what: "value", name: self.p.buffers[full].name.clone(), reason: "does not scale with the batch and cannot be compacted".into() })?;
                let (src, dst) = (self.ptr(fb, full)?, self.ptr(fb, twin)?);
                let rb_v = Self::iconst(fb, rb);
                let config = self.config;
                self.for_range(fb, count, |_, fb, j| {
                    let at = Self::scaled(fb, j, 8);
                    let r_addr = fb.ins().iadd(rows_list, at);
                    let r = fb.ins().load(PTR, flags(), r_addr, 0);
                    let from = Self::scaled(fb, r, rb);
                    let from = fb.ins().iadd(src, from);
                    let to = Self::scaled(fb, j, rb);
                    let to = fb.ins().iadd(dst, to);
                    fb.call_memcpy(config, to, from, rb_v);
                    Ok(())
                })?;
            }
            self.steps(fb, body, Rows { n: count, samples: samples_list, count })?;
            for &o in outputs {
                if !matches!(self.p.buffers[o].storage, Storage::Arena(_)) {
                    continue;
                }
                if let Some(rb) = self.bytes_per_row[o] {
                    let base = self.ptr(fb, o)?;
                    self.scatter(fb, base, rb, rows_list, count, rows.n);
                }
            }
        } else {
            self.record(fb, block, samples_list, count, rows.count);
            self.steps(fb, body, rows)?;
        }
        fb.ins().jump(done, &[]);
        fb.switch_to_block(done);
        Ok(())
    }

    /// Expands in place a buffer whose first `count` rows (of `rb` bytes)
    /// hold the results for rows `rows_list[..count]` (increasing) of `n`:
    /// walking down from the last row, each listed row moves to its place
    /// and every other row becomes 0. A destination row is never below its
    /// source, and a zeroed row lies above every source still to move.
    fn scatter(&mut self, fb: &mut FunctionBuilder, base: Value, rb: usize, rows_list: Value, count: Value, n: Value) {
        let (r, j) = (fb.declare_var(PTR), fb.declare_var(PTR));
        fb.def_var(r, n);
        fb.def_var(j, count);
        let rb_v = Self::iconst(fb, rb);
        let (head, inner, exit) = (fb.create_block(), fb.create_block(), fb.create_block());
        fb.ins().jump(head, &[]);
        fb.switch_to_block(head);
        let rv = fb.use_var(r);
        fb.ins().brif(rv, inner, &[], exit, &[]);
        fb.switch_to_block(inner);
        let rv = fb.use_var(r);
        let row = fb.ins().iadd_imm_s(rv, -1);
        fb.def_var(r, row);
        let jv = fb.use_var(j);
        let dst_off = Self::scaled(fb, row, rb);
        let dst = fb.ins().iadd(base, dst_off);
        // Is `row` the next listed row (j > 0 and rows_list[j - 1] == row)?
        let (check, moved, zeroed) = (fb.create_block(), fb.create_block(), fb.create_block());
        fb.ins().brif(jv, check, &[], zeroed, &[]);
        fb.switch_to_block(check);
        let jm = fb.ins().iadd_imm_s(jv, -1);
        let at = Self::scaled(fb, jm, 8);
        let addr = fb.ins().iadd(rows_list, at);
        let listed = fb.ins().load(PTR, flags(), addr, 0);
        let hit = fb.ins().icmp(IntCC::Equal, listed, row);
        fb.ins().brif(hit, moved, &[], zeroed, &[]);
        fb.switch_to_block(moved);
        fb.def_var(j, jm);
        let src_off = Self::scaled(fb, jm, rb);
        let src = fb.ins().iadd(base, src_off);
        fb.call_memmove(self.config, dst, src, rb_v);
        fb.ins().jump(head, &[]);
        fb.switch_to_block(zeroed);
        let z = fb.ins().iconst(types::I8, 0);
        fb.call_memset(self.config, dst, z, rb_v);
        fb.ins().jump(head, &[]);
        fb.switch_to_block(exit);
    }

    /// After a gated `Mul`: the rows of `output` whose gate is 0 become 0.
    fn mask(&mut self, fb: &mut FunctionBuilder, gate: BufferId, output: BufferId, rows: Rows) -> Result<(), ClifError> {
        let out_buf = &self.p.buffers[output];
        let row_count = match out_buf.shape.first() {
            Some(Dim::Sym { factor, .. }) => Self::scaled(fb, rows.n, *factor),
            Some(Dim::Known(k)) => Self::iconst(fb, *k),
            _ => Self::iconst(fb, 1),
        };
        let bytes = self.bytes(fb, output, rows);
        let base = self.ptr(fb, output)?;
        let gate_buf = &self.p.buffers[gate];
        let (gdtype, gsize) = (gate_buf.dtype, elem_bytes(gate_buf.dtype));
        let gate_single = self.bytes_per_row[gate].is_none() && gate_buf.elements_at(1) == 1;
        let gptr = self.ptr(fb, gate)?;
        let (go, done) = (fb.create_block(), fb.create_block());
        fb.ins().brif(row_count, go, &[], done, &[]);
        fb.switch_to_block(go);
        let row_bytes = fb.ins().udiv(bytes, row_count);
        let config = self.config;
        self.for_range(fb, row_count, |_, fb, r| {
            let addr = if gate_single {
                gptr
            } else {
                let off = Self::scaled(fb, r, gsize);
                fb.ins().iadd(gptr, off)
            };
            let closed = match gdtype {
                DType::F32 => {
                    let v = fb.ins().load(types::F32, flags(), addr, 0);
                    let z = fb.ins().f32const(0.0);
                    fb.ins().fcmp(FloatCC::Equal, v, z)
                }
                DType::I64 => {
                    let v = fb.ins().load(types::I64, flags(), addr, 0);
                    fb.ins().icmp_imm_s(IntCC::Equal, v, 0)
                }
                DType::I32 => {
                    let v = fb.ins().load(types::I32, flags(), addr, 0);
                    fb.ins().icmp_imm_s(IntCC::Equal, v, 0)
                }
                DType::Bool => {
                    let v = fb.ins().load(types::I8, flags(), addr, 0);
                    fb.ins().icmp_imm_s(IntCC::Equal, v, 0)
                }
            };
            let (zero_it, next) = (fb.create_block(), fb.create_block());
            fb.ins().brif(closed, zero_it, &[], next, &[]);
            fb.switch_to_block(zero_it);
            let off = fb.ins().imul(r, row_bytes);
            let dst = fb.ins().iadd(base, off);
            let z = fb.ins().iconst(types::I8, 0);
            fb.call_memset(config, dst, z, row_bytes);
            fb.ins().jump(next, &[]);
            fb.switch_to_block(next);
            Ok(())
        })?;
        fb.ins().jump(done, &[]);
        fb.switch_to_block(done);
        Ok(())
    }
}

