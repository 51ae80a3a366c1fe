//! Cheap elementwise steps emitted inline: a run of consecutive f32 `Unary`
//! and `Binary` steps over the same number of elements becomes one loop
//! over 4-lane vectors (and a scalar tail), each intermediate kept in a
//! register for the steps after it. Only ops whose inline form is exactly
//! the runtime kernel's are taken (same comparisons, so NaN and signed
//! zeros come out alike); the rest stay runtime calls.
//!
//! Comparisons of numbers against a threshold or each other — the tests
//! controllers' decisions are made of, `Greater(gate, threshold)` with the
//! threshold read from the knob block — are emitted inline too, one bool
//! byte per element.

use super::emit::FunctionWriter;
use super::ClifError;
use crate::ir::Dim;
use crate::plan::{BufferId, Kernel, Program, Step};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;
use d2nn_runtime::kernels::elementwise::{Binary, Unary};
use d2nn_runtime::kernels::logic::Compare;
use d2nn_runtime::DType;
use std::collections::HashMap;

/// One inline step: `out = op(a, b)`.
struct Inline {
    out: BufferId,
    op: Op,
    a: Operand,
    b: Option<Operand>,
}

#[derive(Clone, Copy)]
enum Op {
    Unary(Unary),
    Binary(Binary),
}

/// An operand read at the loop index, or one value for every index.
#[derive(Clone, Copy)]
enum Operand {
    Each(BufferId),
    Scalar(BufferId),
}

fn unary_inline(op: &Unary) -> bool {
    matches!(op, Unary::Relu | Unary::LeakyRelu { .. } | Unary::Clip { .. } | Unary::Neg | Unary::Abs | Unary::Sqrt)
}

fn binary_inline(op: &Binary) -> bool {
    matches!(op, Binary::Add | Binary::Sub | Binary::Mul | Binary::Div | Binary::PRelu)
}

/// How an operand with `strides` over the output's `dims` is read: at the
/// loop index (contiguous, the output's shape) or as one value (all 0).
fn layout(dims: &[Dim], strides: &[usize]) -> Option<bool> {
    if strides.iter().all(|&s| s == 0) {
        return Some(false);
    }
    let mut expected = 1usize;
    for (d, &s) in dims.iter().zip(strides).rev() {
        if s != expected {
            return None;
        }
        match d {
            Dim::Known(k) => expected = expected.checked_mul(*k)?,
            // Only the outermost dim may hold the batch; nothing is outside it.
            _ => expected = 0,
        }
    }
    Some(true)
}

/// The size of a buffer in units of the frame's rows: (elements per row
/// factor, fixed elements) — two buffers with equal keys have equal lengths.
fn size_key(p: &Program, b: BufferId) -> (bool, usize) {
    let buf = &p.buffers[b];
    (buf.shape.iter().any(|d| matches!(d, Dim::Sym { .. })), buf.elements_at(1))
}

fn inline_of(p: &Program, step: &Step) -> Option<Inline> {
    let Step::Node { kernel, inputs, outputs, .. } = step else { return None };
    let out = *outputs.first()?;
    let operand = |i: usize| inputs.get(i).copied().flatten();
    match kernel {
        Kernel::Unary(op) if unary_inline(op) => {
            let a = operand(0)?;
            (size_key(p, a) == size_key(p, out)).then_some(Inline { out, op: Op::Unary(*op), a: Operand::Each(a), b: None })
        }
        Kernel::Binary(k) if binary_inline(&k.op) => {
            let (a, b) = (operand(0)?, operand(1)?);
            Some(Inline { out, op: Op::Binary(k.op), a: read_as(p, &k.dims, a, &k.a_strides, out)?, b: Some(read_as(p, &k.dims, b, &k.b_strides, out)?) })
        }
        _ => None,
    }
}

/// How operand `buf` with `strides` over the output `out`'s iteration
/// `dims` is read inline: at the index (the output's shape) or as one value.
fn read_as(p: &Program, dims: &[Dim], buf: BufferId, strides: &[usize], out: BufferId) -> Option<Operand> {
    let read_layout = layout(dims, strides)?;
    let scalar_ok = !size_key(p, buf).0 && p.buffers[buf].elements_at(1) == 1;
    // Equal sizes: read at the index (a one-element run included, whose
    // operands an earlier step of the run may have written).
    match read_layout {
        _ if size_key(p, buf) == size_key(p, out) => Some(Operand::Each(buf)),
        false if scalar_ok => Some(Operand::Scalar(buf)),
        _ => None,
    }
}

/// A comparison emitted inline: `out[i] = a[i] op b[i]` as 0/1 bytes.
pub struct InlineCompare {
    op: Compare,
    dtype: DType,
    out: BufferId,
    a: Operand,
    b: Operand,
}

/// The step as an inline comparison, when its operands are numbers read
/// at the index or as one value.
pub fn inline_compare(p: &Program, step: &Step) -> Option<InlineCompare> {
    let Step::Node { kernel: Kernel::Compare(k), inputs, outputs, .. } = step else { return None };
    let (a, b, out) = (inputs.first().copied().flatten()?, inputs.get(1).copied().flatten()?, *outputs.first()?);
    let dtype = p.buffers[a].dtype;
    if dtype == DType::Bool || p.buffers[b].dtype != dtype {
        return None;
    }
    Some(InlineCompare { op: k.op, dtype, out, a: read_as(p, &k.dims, a, &k.a_strides, out)?, b: read_as(p, &k.dims, b, &k.b_strides, out)? })
}

/// Emits an [`inline_compare`] as a loop over the output's elements.
pub fn emit_compare(w: &mut FunctionWriter, fb: &mut FunctionBuilder, c: &InlineCompare, rows: super::emit::Rows) -> Result<(), ClifError> {
    let count = w.bytes(fb, c.out, rows);
    let (ty, size) = match c.dtype {
        DType::F32 => (types::F32, 4i64),
        DType::I64 => (types::I64, 8),
        _ => (types::I32, 4),
    };
    let flags = MemFlagsData::new().with_notrap();
    let place = |w: &mut FunctionWriter, fb: &mut FunctionBuilder, o: Operand| -> Result<(Value, bool), ClifError> {
        Ok(match o {
            Operand::Each(b) => (w.ptr(fb, b)?, true),
            // Loaded once: the output may reuse a scalar operand's slot.
            Operand::Scalar(b) => {
                let at = w.ptr(fb, b)?;
                (fb.ins().load(ty, flags, at, 0), false)
            }
        })
    };
    let (a, a_each) = place(w, fb, c.a)?;
    let (b, b_each) = place(w, fb, c.b)?;
    let out = w.ptr(fb, c.out)?;
    let (op, dtype) = (c.op, c.dtype);
    w.for_range(fb, count, |_, fb, i| {
        let offset = fb.ins().imul_imm_s(i, size);
        let mut value = |base: Value, each: bool| {
            if each {
                let at = fb.ins().iadd(base, offset);
                fb.ins().load(ty, flags, at, 0)
            } else {
                base
            }
        };
        let (x, y) = (value(a, a_each), value(b, b_each));
        let holds = if dtype == DType::F32 {
            // Ordered comparisons: false on NaN, as Rust's operators.
            let cc = match op {
                Compare::Greater => FloatCC::GreaterThan,
                Compare::Less => FloatCC::LessThan,
                Compare::GreaterOrEqual => FloatCC::GreaterThanOrEqual,
                Compare::LessOrEqual => FloatCC::LessThanOrEqual,
                Compare::Equal => FloatCC::Equal,
            };
            fb.ins().fcmp(cc, x, y)
        } else {
            let cc = match op {
                Compare::Greater => IntCC::SignedGreaterThan,
                Compare::Less => IntCC::SignedLessThan,
                Compare::GreaterOrEqual => IntCC::SignedGreaterThanOrEqual,
                Compare::LessOrEqual => IntCC::SignedLessThanOrEqual,
                Compare::Equal => IntCC::Equal,
            };
            fb.ins().icmp(cc, x, y)
        };
        let at = fb.ins().iadd(out, i);
        fb.ins().store(flags, holds, at, 0);
        Ok(())
    })
}

/// How many of the leading `steps` form one inline run (0: the first is not inline).
pub fn fusible_run(p: &Program, steps: &[Step]) -> usize {
    let mut key = None;
    let mut n = 0;
    for step in steps {
        let Some(inline) = inline_of(p, step) else { break };
        let k = size_key(p, inline.out);
        if *key.get_or_insert(k) != k {
            break;
        }
        n += 1;
    }
    n
}

/// Emits `steps` (a run [`fusible_run`] accepted) as one loop.
pub fn emit_run(w: &mut FunctionWriter, fb: &mut FunctionBuilder, steps: &[Step], rows: super::emit::Rows) -> Result<(), ClifError> {
    let p = w.program();
    let ops: Vec<Inline> = steps.iter().map(|s| inline_of(p, s)).collect::<Option<_>>().ok_or_else(|| ClifError::Codegen("an inline run holds a step that is not inline".into()))?;
    let first = ops.first().ok_or_else(|| ClifError::Codegen("an empty inline run".into()))?;
    let bytes = w.bytes(fb, first.out, rows);
    let count = fb.ins().ushr_imm_u(bytes, 2);
    // Addresses and scalar operands, loaded once before the loop.
    let mut base: HashMap<BufferId, Value> = HashMap::new();
    let mut scalar: HashMap<BufferId, Value> = HashMap::new();
    for op in &ops {
        for operand in [Some(op.a), op.b].into_iter().flatten() {
            match operand {
                Operand::Each(b) => {
                    if let std::collections::hash_map::Entry::Vacant(e) = base.entry(b) {
                        e.insert(w.ptr(fb, b)?);
                    }
                }
                Operand::Scalar(b) => {
                    if let std::collections::hash_map::Entry::Vacant(e) = scalar.entry(b) {
                        let at = w.ptr(fb, b)?;
                        e.insert(fb.ins().load(types::F32, MemFlagsData::new().with_notrap(), at, 0));
                    }
                }
            }
        }
        if let std::collections::hash_map::Entry::Vacant(e) = base.entry(op.out) {
            e.insert(w.ptr(fb, op.out)?);
        }
    }
    let splats: HashMap<BufferId, Value> = scalar.iter().map(|(&b, &v)| (b, fb.ins().splat(types::F32X4, v))).collect();
    let i = fb.declare_var(types::I64);
    let zero = fb.ins().iconst(types::I64, 0);
    fb.def_var(i, zero);
    for vector in [true, false] {
        let (width, ty) = if vector { (4i64, types::F32X4) } else { (1, types::F32) };
        let (head, body, exit) = (fb.create_block(), fb.create_block(), fb.create_block());
        fb.ins().jump(head, &[]);
        fb.switch_to_block(head);
        let iv = fb.use_var(i);
        let end = fb.ins().iadd_imm_s(iv, width);
        let more = fb.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, count);
        fb.ins().brif(more, body, &[], exit, &[]);
        fb.switch_to_block(body);
        let iv = fb.use_var(i);
        let offset = fb.ins().imul_imm_s(iv, 4);
        let mut regs: HashMap<BufferId, Value> = HashMap::new();
        let flags = MemFlagsData::new().with_notrap();
        for op in &ops {
            let read = |fb: &mut FunctionBuilder, operand: Operand| -> Value {
                match operand {
                    Operand::Scalar(b) => if vector { splats[&b] } else { scalar[&b] },
                    Operand::Each(b) => match regs.get(&b) {
                        Some(&v) => v,
                        None => {
                            let at = fb.ins().iadd(base[&b], offset);
                            fb.ins().load(ty, flags, at, 0)
                        }
                    },
                }
            };
            let a = read(fb, op.a);
            let b = op.b.map(|o| read(fb, o));
            let v = apply(fb, op.op, a, b, vector);
            let at = fb.ins().iadd(base[&op.out], offset);
            fb.ins().store(flags, v, at, 0);
            regs.insert(op.out, v);
        }
        let next = fb.ins().iadd_imm_s(iv, width);
        fb.def_var(i, next);
        fb.ins().jump(head, &[]);
        fb.switch_to_block(exit);
    }
    Ok(())
}

/// A constant of the loop's type.
fn constant(fb: &mut FunctionBuilder, v: f32, vector: bool) -> Value {
    let c = fb.ins().f32const(v);
    if vector {
        fb.ins().splat(types::F32X4, c)
    } else {
        c
    }
}

/// `cond ? x : y`, lane by lane for vectors.
fn choose(fb: &mut FunctionBuilder, cond: Value, x: Value, y: Value, vector: bool) -> Value {
    if vector {
        let mask = fb.ins().bitcast(types::F32X4, MemFlagsData::new(), cond);
        fb.ins().bitselect(mask, x, y)
    } else {
        fb.ins().select(cond, x, y)
    }
}

/// The op as the runtime computes it (`kernels::elementwise`).
fn apply(fb: &mut FunctionBuilder, op: Op, a: Value, b: Option<Value>, vector: bool) -> Value {
    match (op, b) {
        (Op::Unary(u), _) => match u {
            // `x < 0 ? 0 : x` keeps NaN and -0, as the runtime does.
            Unary::Relu => {
                let z = constant(fb, 0.0, vector);
                let lt = fb.ins().fcmp(FloatCC::LessThan, a, z);
                choose(fb, lt, z, a, vector)
            }
            Unary::LeakyRelu { alpha } => {
                let (z, al) = (constant(fb, 0.0, vector), constant(fb, alpha, vector));
                let lt = fb.ins().fcmp(FloatCC::LessThan, a, z);
                let scaled = fb.ins().fmul(al, a);
                choose(fb, lt, scaled, a, vector)
            }
            Unary::Clip { min, max } => {
                let (lo, hi) = (constant(fb, min, vector), constant(fb, max, vector));
                let below = fb.ins().fcmp(FloatCC::LessThan, a, lo);
                let v = choose(fb, below, lo, a, vector);
                let above = fb.ins().fcmp(FloatCC::GreaterThan, v, hi);
                choose(fb, above, hi, v, vector)
            }
            Unary::Neg => fb.ins().fneg(a),
            Unary::Abs => fb.ins().fabs(a),
            Unary::Sqrt => fb.ins().sqrt(a),
            // `inline_of` admits only the ops above.
            _ => a,
        },
        (Op::Binary(k), Some(b)) => match k {
            Binary::Add => fb.ins().fadd(a, b),
            Binary::Sub => fb.ins().fsub(a, b),
            Binary::Mul => fb.ins().fmul(a, b),
            Binary::Div => fb.ins().fdiv(a, b),
            Binary::PRelu => {
                let z = constant(fb, 0.0, vector);
                let lt = fb.ins().fcmp(FloatCC::LessThan, a, z);
                let scaled = fb.ins().fmul(b, a);
                choose(fb, lt, scaled, a, vector)
            }
            _ => a,
        },
        (Op::Binary(_), None) => a,
    }
}
