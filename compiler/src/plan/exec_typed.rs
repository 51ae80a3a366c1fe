//! The plan executor's fast steps whose operands and result differ in
//! element type: comparisons (→ bool), `Where` (bool condition), `Cast`,
//! ArgMax/ArgMin (→ i64) and OneHot. [`Executor::with_typed`] hands each
//! operand and the output over as a slice of its own dtype (bool as 0/1
//! bytes): graph inputs, knobs and constants in place, arena buffers
//! through one checked split of the arena, as `with_io` does for one type.

use super::exec::{ArenaElem, Call, Executor};
use super::{Buffer, BufferId, Kernel, Program, Storage};
use d2nn_runtime::kernels::cast::cast;
use d2nn_runtime::kernels::logic::{compare_strided, where_strided, Compare};
use d2nn_runtime::kernels::one_hot::one_hot;
use d2nn_runtime::kernels::reduce::arg_reduce;
use d2nn_runtime::kernels::KernelError;
use d2nn_runtime::{DType, Tensor};
use smallvec::SmallVec;
use std::borrow::Cow;

/// An operand's elements in its dtype (bool as bytes).
pub(super) enum Elems<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    Bool(&'a [u8]),
}

/// The output's elements in its dtype (bool as bytes).
pub(super) enum ElemsMut<'a> {
    F32(&'a mut [f32]),
    I64(&'a mut [i64]),
    I32(&'a mut [i32]),
    Bool(&'a mut [u8]),
}

/// An operand read from outside the arena, borrowed where it can be.
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

fn cast_bytes(dtype: DType, bytes: &[u8]) -> Result<Elems<'_>, String> {
    let e = |e: bytemuck::PodCastError| format!("misaligned operand: {e}");
    Ok(match dtype {
        DType::F32 => Elems::F32(bytemuck::try_cast_slice(bytes).map_err(e)?),
        DType::I64 => Elems::I64(bytemuck::try_cast_slice(bytes).map_err(e)?),
        DType::I32 => Elems::I32(bytemuck::try_cast_slice(bytes).map_err(e)?),
        DType::Bool => Elems::Bool(bytes),
    })
}

fn cast_bytes_mut(dtype: DType, bytes: &mut [u8]) -> Result<ElemsMut<'_>, String> {
    let e = |e: bytemuck::PodCastError| format!("misaligned output: {e}");
    Ok(match dtype {
        DType::F32 => ElemsMut::F32(bytemuck::try_cast_slice_mut(bytes).map_err(e)?),
        DType::I64 => ElemsMut::I64(bytemuck::try_cast_slice_mut(bytes).map_err(e)?),
        DType::I32 => ElemsMut::I32(bytemuck::try_cast_slice_mut(bytes).map_err(e)?),
        DType::Bool => ElemsMut::Bool(bytes),
    })
}

/// The message for a dtype combination a kernel was not chosen for.
fn unsupported(what: &str) -> String {
    format!("{what}: the operands' dtypes do not fit the kernel")
}

impl Executor {
    /// Calls `f` with the elements of `inputs` and of the arena buffer
    /// `output`, each as a slice of its own dtype.
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
                None => cast_bytes(p.buffers[b].dtype, arena_reads.next().ok_or("operand bookkeeping went wrong")?)?,
            });
        }
        f(&slices, cast_bytes_mut(out_buf.dtype, out)?)
    }

    /// Runs a comparison, `Where`, `Cast`, arg-reduction or OneHot step.
    pub(super) fn typed(&mut self, p: &Program, kernel: &Kernel, inputs: &[Option<BufferId>], out: BufferId, call: &Call) -> Result<(), String> {
        let operand = |i: usize| inputs.get(i).copied().flatten().ok_or_else(|| format!("required input {i} is missing"));
        let err = |e: KernelError| e.to_string();
        let resolve = |dims: &[crate::ir::Dim]| -> Result<SmallVec<[usize; 8]>, String> {
            dims.iter().map(|d| d.resolve(&|_| Some(call.batch)).ok_or_else(|| "a dim of the iteration space is unknown".to_string())).collect()
        };
        match kernel {
            Kernel::Compare(k) => {
                let dims = resolve(&k.dims)?;
                self.with_typed(p, &[operand(0)?, operand(1)?], out, call, |x, y| {
                    let (s, o) = ((&dims[..], &k.a_strides[..], &k.b_strides[..]), y);
                    let ElemsMut::Bool(o) = o else { return Err(unsupported("Compare")) };
                    match (&x[0], &x[1]) {
                        (Elems::F32(a), Elems::F32(b)) => compare_strided(k.op, a, b, s.0, s.1, s.2, o),
                        (Elems::I64(a), Elems::I64(b)) => compare_strided(k.op, a, b, s.0, s.1, s.2, o),
                        (Elems::I32(a), Elems::I32(b)) => compare_strided(k.op, a, b, s.0, s.1, s.2, o),
                        (Elems::Bool(a), Elems::Bool(b)) if k.op == Compare::Equal => compare_strided(k.op, a, b, s.0, s.1, s.2, o),
                        _ => return Err(unsupported("Compare")),
                    }
                    .map_err(err)
                })
            }
            Kernel::Where(k) => {
                let dims = resolve(&k.dims)?;
                let strides = [&k.cond_strides[..], &k.x_strides[..], &k.y_strides[..]];
                self.with_typed(p, &[operand(0)?, operand(1)?, operand(2)?], out, call, |x, y| {
                    let Elems::Bool(c) = x[0] else { return Err(unsupported("Where")) };
                    match (&x[1], &x[2], y) {
                        (Elems::F32(a), Elems::F32(b), ElemsMut::F32(o)) => where_strided(c, a, b, &dims, strides, o),
                        (Elems::I64(a), Elems::I64(b), ElemsMut::I64(o)) => where_strided(c, a, b, &dims, strides, o),
                        (Elems::I32(a), Elems::I32(b), ElemsMut::I32(o)) => where_strided(c, a, b, &dims, strides, o),
                        (Elems::Bool(a), Elems::Bool(b), ElemsMut::Bool(o)) => where_strided(c, a, b, &dims, strides, o),
                        _ => return Err(unsupported("Where")),
                    }
                    .map_err(err)
                })
            }
            Kernel::Cast { .. } => self.with_typed(p, &[operand(0)?], out, call, |x, y| {
                macro_rules! to {
                    ($x:expr) => {
                        match y {
                            ElemsMut::F32(o) => cast($x, o),
                            ElemsMut::I64(o) => cast($x, o),
                            ElemsMut::I32(o) => cast($x, o),
                            ElemsMut::Bool(o) => cast($x, o),
                        }
                    };
                }
                match x[0] {
                    Elems::F32(v) => to!(v),
                    Elems::I64(v) => to!(v),
                    Elems::I32(v) => to!(v),
                    Elems::Bool(v) => to!(v),
                }
                .map_err(err)
            }),
            Kernel::ArgReduce(g) => self.with_typed(p, &[operand(0)?], out, call, |x, y| {
                let ElemsMut::I64(o) = y else { return Err(unsupported("ArgMax/ArgMin")) };
                match x[0] {
                    Elems::F32(v) => arg_reduce(g, v, o),
                    Elems::I64(v) => arg_reduce(g, v, o),
                    Elems::I32(v) => arg_reduce(g, v, o),
                    Elems::Bool(_) => return Err(unsupported("ArgMax/ArgMin")),
                }
                .map_err(err)
            }),
            Kernel::OneHot { geometry, off_on } => self.with_typed(p, &[operand(0)?], out, call, |x, y| {
                fn pair<T: ArenaElem>(t: &Tensor) -> Result<(T, T), String> {
                    match T::slice_of(t).as_deref() {
                        Some(&[off, on]) => Ok((off, on)),
                        _ => Err("the one-hot values do not match the output".into()),
                    }
                }
                macro_rules! values {
                    ($idx:expr) => {
                        match y {
                            ElemsMut::F32(o) => pair(off_on).and_then(|(off, on)| one_hot(geometry, $idx, off, on, o).map_err(err)),
                            ElemsMut::I64(o) => pair(off_on).and_then(|(off, on)| one_hot(geometry, $idx, off, on, o).map_err(err)),
                            ElemsMut::I32(o) => pair(off_on).and_then(|(off, on)| one_hot(geometry, $idx, off, on, o).map_err(err)),
                            ElemsMut::Bool(o) => pair(off_on).and_then(|(off, on)| one_hot(geometry, $idx, off, on, o).map_err(err)),
                        }
                    };
                }
                match x[0] {
                    Elems::F32(v) => values!(v),
                    Elems::I64(v) => values!(v),
                    Elems::I32(v) => values!(v),
                    Elems::Bool(_) => Err(unsupported("OneHot")),
                }
            }),
            _ => Err("not a mixed-type kernel".into()),
        }
    }
}
