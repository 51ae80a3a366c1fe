//! The plan executor's fast steps whose operands and result differ in
//! element type — comparisons (→ bool), `Where` (bool condition), `Cast`,
//! ArgMax/ArgMin (→ i64) and OneHot — and the logical ops on bools, which
//! go through the same typed views so a bool operand is checked to be bool
//! rather than read as raw bytes. [`Executor::with_typed`] hands each
//! operand and the output over as a slice of its own dtype (bool as 0/1
//! bytes): graph inputs, knobs and constants in place, arena buffers
//! through one checked split of the arena, as `with_io` does for one type.

use super::exec::{ArenaElem, Call, Executor};
use super::{Buffer, BufferId, Kernel, Program, Storage};
use d2nn_runtime::kernels::typed::{self, Elems, ElemsMut};
use d2nn_runtime::kernels::KernelError;
use d2nn_runtime::{DType, Tensor};
use smallvec::SmallVec;
use std::borrow::Cow;

/// An operand outside the arena (graph input, knob or constant), in its dtype.
enum Outside<'a> {
    F32(Cow<'a, [f32]>),
    I64(Cow<'a, [i64]>),
    I32(Cow<'a, [i32]>),
    Bool(Cow<'a, [u8]>),
}

impl Outside<'_> {
    fn of<'t>(t: &'t Tensor, buffer: &Buffer) -> Result<Outside<'t>, String> {
        fn typed<'t, T: ArenaElem>(t: &'t Tensor, buffer: &Buffer) -> Result<Cow<'t, [T]>, String> {
            T::slice_of(t).ok_or_else(|| format!("`{}` is {}, not {}", buffer.name, t.dtype(), buffer.dtype))
        }
        if t.dtype() != buffer.dtype {
            return Err(format!("`{}` is {}, the plan expects {}", buffer.name, t.dtype(), buffer.dtype));
        }
        Ok(match buffer.dtype {
            DType::F32 => Outside::F32(typed(t, buffer)?),
            DType::I64 => Outside::I64(typed(t, buffer)?),
            DType::I32 => Outside::I32(typed(t, buffer)?),
            DType::Bool => Outside::Bool(typed(t, buffer)?),
        })
    }

    fn elems(&self) -> Elems<'_> {
        match self {
            Outside::F32(c) => Elems::F32(c),
            Outside::I64(c) => Elems::I64(c),
            Outside::I32(c) => Elems::I32(c),
            Outside::Bool(c) => Elems::Bool(c),
        }
    }
}

impl Executor {
    /// Calls `f` with the step's operands and output, each in its own dtype.
    pub(super) fn with_typed(
        &mut self,
        p: &Program,
        inputs: &[BufferId],
        output: BufferId,
        call: &Call,
        f: impl FnOnce(&[Elems], ElemsMut) -> Result<(), String>,
    ) -> Result<(), String> {
        let out_buf = &p.buffers[output];
        let Storage::Arena(out_slot) = out_buf.storage else {
            return Err(format!("`{}` is not an arena buffer", out_buf.name));
        };
        let span = |b: &Buffer| b.elements_at(call.batch) * super::element_bytes(b.dtype);
        let out_off = self.offset(p, out_slot, call, out_buf).map_err(|e| e.to_string())?;
        let mut outside: SmallVec<[Option<Outside>; 4]> = SmallVec::with_capacity(inputs.len());
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
            outside.push(tensor.map(|t| Outside::of(t, buffer)).transpose()?);
        }
        let (arena_reads, out) = self.arena.split(&reads, (out_off, span(out_buf))).map_err(|e| format!("buffer `{}`: {e}", out_buf.name))?;
        let mut arena_reads = arena_reads.into_iter();
        let mut slices: SmallVec<[Elems; 4]> = SmallVec::with_capacity(inputs.len());
        for (o, &b) in outside.iter().zip(inputs) {
            slices.push(match o {
                Some(o) => o.elems(),
                None => {
                    let bytes = arena_reads.next().ok_or("operand bookkeeping went wrong")?;
                    Elems::from_bytes(p.buffers[b].dtype, bytes).ok_or("misaligned operand")?
                }
            });
        }
        f(&slices, ElemsMut::from_bytes(out_buf.dtype, out).ok_or("misaligned output")?)
    }

    pub(super) fn typed(&mut self, p: &Program, kernel: &Kernel, inputs: &[Option<BufferId>], out: BufferId, call: &Call) -> Result<(), String> {
        let operand = |i: usize| inputs.get(i).copied().flatten().ok_or_else(|| format!("required input {i} is missing"));
        let err = |e: KernelError| e.to_string();
        let resolve = |dims: &[crate::ir::Dim]| -> Result<SmallVec<[usize; 8]>, String> {
            dims.iter().map(|d| d.resolve(&|_| Some(call.batch)).ok_or_else(|| "a dim of the iteration space is unknown".to_string())).collect()
        };
        match kernel {
            Kernel::Compare(k) => {
                let dims = resolve(&k.dims)?;
                self.with_typed(p, &[operand(0)?, operand(1)?], out, call, |x, y| typed::compare(k.op, x[0], x[1], &dims, &k.a_strides, &k.b_strides, y).map_err(err))
            }
            Kernel::Where(k) => {
                let dims = resolve(&k.dims)?;
                let strides = [&k.cond_strides[..], &k.x_strides[..], &k.y_strides[..]];
                self.with_typed(p, &[operand(0)?, operand(1)?, operand(2)?], out, call, |x, y| typed::select(x[0], x[1], x[2], &dims, strides, y).map_err(err))
            }
            Kernel::Logic(k) => {
                let dims = resolve(&k.dims)?;
                self.with_typed(p, &[operand(0)?, operand(1)?], out, call, |x, y| typed::logic(k.op, x[0], x[1], &dims, &k.a_strides, &k.b_strides, y).map_err(err))
            }
            Kernel::Not => self.with_typed(p, &[operand(0)?], out, call, |x, y| typed::not(x[0], y).map_err(err)),
            Kernel::Cast { .. } => self.with_typed(p, &[operand(0)?], out, call, |x, y| typed::cast(x[0], y).map_err(err)),
            Kernel::ArgReduce(g) => self.with_typed(p, &[operand(0)?], out, call, |x, y| typed::arg_reduce(g, x[0], y).map_err(err)),
            Kernel::OneHot { geometry, off_on } => {
                let values = Outside::of(off_on, &p.buffers[out])?;
                self.with_typed(p, &[operand(0)?], out, call, |x, y| typed::one_hot(geometry, x[0], values.elems(), y).map_err(err))
            }
            _ => Err("not a mixed-type kernel".into()),
        }
    }
}
