//! Cheap elementwise steps emitted inline: a run of consecutive f32 `Unary`
//! and `Binary` steps over the same number of elements becomes one loop
//! over 4-lane vectors (and a scalar tail), each intermediate kept in a
//! register for the steps after it. Only ops whose inline form is exactly
//! the runtime kernel's are taken (same comparisons, so NaN and signed
//! zeros come out alike); the rest stay runtime calls.

use super::emit::FunctionWriter;
use super::ClifError;
use crate::ir::Dim;
use crate::plan::{BufferId, Kernel, Program, Step};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;
use d2nn_runtime::kernels::elementwise::{Binary, Unary};
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
    let scalar_ok = |b: BufferId| !size_key(p, b).0 && p.buffers[b].elements_at(1) == 1;
    match kernel {
        Kernel::Unary(op) if unary_inline(op) => {
            let a = operand(0)?;
            (size_key(p, a) == size_key(p, out)).then_some(Inline { out, op: Op::Unary(*op), a: Operand::Each(a), b: None })
        }
        Kernel::Binary(k) if binary_inline(&k.op) => {
            let (a, b) = (operand(0)?, operand(1)?);
            let read = |buf: BufferId, strides: &[usize]| -> Option<Operand> {
                let read_layout = layout(&k.dims, strides)?;
                // Equal sizes: read at the index (a one-element run included,
                // whose operands an earlier step of the run may have written).
                match read_layout {
                    _ if size_key(p, buf) == size_key(p, out) => Some(Operand::Each(buf)),
                    false if scalar_ok(buf) => Some(Operand::Scalar(buf)),
                    _ => None,
                }
            };
            Some(Inline { out, op: Op::Binary(k.op), a: read(a, &k.a_strides)?, b: Some(read(b, &k.b_strides)?) })
        }
        _ => None,
    }
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
