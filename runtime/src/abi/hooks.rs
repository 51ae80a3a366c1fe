//! The two functions compiled model code calls: run a kernel of the table,
//! record a region entry in the trace. Both are `extern "C"`, take the
//! call's [`Frame`], and never unwind into the generated code.

use super::model::{CallState, Loaded, ModelError};
use super::table::Prepared;
use super::{dtype_of_code, Frame, Operand, Status};
use crate::kernels::KernelError;
use smallvec::SmallVec;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs kernel `index` of the model's table on a frame of `rows` rows.
/// `operands` holds the node's inputs, then its output. Returns 0, or a
/// [`Status`] after recording the error in the call's state.
///
/// # Safety
/// `frame` must be the frame [`super::Model::run`] passed to the compiled
/// code, and `operands` must point to `count` operands whose pointers are
/// valid for their byte counts: the generated code derives both from the
/// same metadata as the arena size.
#[no_mangle]
pub unsafe extern "C" fn d2nn_rt_kernel(frame: *const Frame, index: u32, rows: usize, operands: *const Operand, count: u32) -> i32 {
    // SAFETY: `frame` comes from `Model::run`, which keeps the model and the
    // call state alive and unaliased for the duration of the call.
    let (loaded, state) = unsafe { (&*((*frame).model as *const Loaded), &mut *((*frame).state as *mut CallState)) };
    // SAFETY: the caller passes `count` operands (see the function's contract).
    let operands = unsafe { std::slice::from_raw_parts(operands, count as usize) };
    let result = catch_unwind(AssertUnwindSafe(|| run_kernel(loaded, index as usize, rows, operands)));
    let entry = loaded.meta.kernels.get(index as usize);
    let (node, op) = entry.map(|e| (e.node.clone(), e.op.clone())).unwrap_or_else(|| (format!("#{index}"), "?".into()));
    match result {
        Ok(Ok(())) => Status::Ok as i32,
        Ok(Err(source)) => {
            state.error = Some(ModelError::Node { node, op, source });
            Status::Kernel as i32
        }
        Err(panic) => {
            let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into());
            state.error = Some(ModelError::Panic(format!("in node `{node}` ({op}): {what}")));
            Status::Panic as i32
        }
    }
}

fn run_kernel(loaded: &Loaded, index: usize, rows: usize, operands: &[Operand]) -> Result<(), KernelError> {
    let kernel = loaded.table.get(index).ok_or_else(|| KernelError::Geometry(format!("kernel {index} is not in the table")))?;
    if let Prepared::External { outputs } = kernel {
        return run_external(loaded, index, rows, operands, *outputs);
    }
    let (out, inputs) = operands.split_last().ok_or_else(|| KernelError::Geometry("no output operand".into()))?;
    let dtype = |o: &Operand| dtype_of_code(o.dtype).ok_or_else(|| KernelError::Geometry(format!("unknown dtype code {}", o.dtype)));
    let out_dtype = dtype(out)?;
    let span = |o: &Operand| (o.ptr as usize, o.ptr as usize + o.bytes);
    let (out_start, out_end) = span(out);
    if inputs.len() == 1 && kernel.in_place() && inputs[0].ptr == out.ptr && inputs[0].bytes == out.bytes {
        // SAFETY: the generated code passes an output valid for `bytes`
        // writable bytes that nothing else references during the call.
        let data = unsafe { raw_mut(out) };
        return kernel.run_in_place(&loaded.pool, data);
    }
    let mut views: SmallVec<[(crate::DType, &[u8]); 4]> = SmallVec::new();
    for o in inputs {
        let (start, end) = span(o);
        if o.bytes > 0 && out.bytes > 0 && start < out_end && out_start < end {
            return Err(KernelError::Geometry("an operand overlaps the output".into()));
        }
        // SAFETY: valid for `bytes` readable bytes (the function's
        // contract); it does not overlap the output (checked above), so the
        // shared and the mutable view never alias.
        views.push((dtype(o)?, unsafe { raw(o) }));
    }
    // SAFETY: as above; the output is disjoint from every input.
    let out_bytes = unsafe { raw_mut(out) };
    kernel.run(&loaded.pool, rows, &views, (out_dtype, out_bytes))
}

/// Runs an external kernel: `operands` are its inputs, then `outputs` outputs.
fn run_external(loaded: &Loaded, index: usize, rows: usize, operands: &[Operand], outputs: usize) -> Result<(), KernelError> {
    let host = loaded.external.as_ref().ok_or_else(|| KernelError::Geometry("the model has no host for its external kernels".into()))?;
    let split = operands.len().checked_sub(outputs).ok_or_else(|| KernelError::Geometry("fewer operands than outputs".into()))?;
    let (ins, outs) = operands.split_at(split);
    let span = |o: &Operand| (o.ptr as usize, o.ptr as usize + o.bytes);
    for (k, o) in outs.iter().enumerate() {
        let (start, end) = span(o);
        let overlaps = |p: &Operand| p.bytes > 0 && o.bytes > 0 && span(p).0 < end && start < span(p).1;
        if ins.iter().chain(&outs[k + 1..]).any(overlaps) {
            return Err(KernelError::Geometry("an output overlaps another operand".into()));
        }
    }
    let dtype = |o: &Operand| dtype_of_code(o.dtype).ok_or_else(|| KernelError::Geometry(format!("unknown dtype code {}", o.dtype)));
    // SAFETY: every operand is valid for its bytes (the hook's contract);
    // each output is disjoint from every other operand (checked above).
    let in_views: SmallVec<[(crate::DType, &[u8]); 4]> = ins.iter().map(|o| Ok((dtype(o)?, unsafe { raw(o) }))).collect::<Result<_, KernelError>>()?;
    // SAFETY: as above.
    let mut out_views: SmallVec<[(crate::DType, &mut [u8]); 2]> = outs.iter().map(|o| Ok((dtype(o)?, unsafe { raw_mut(o) }))).collect::<Result<_, KernelError>>()?;
    host.run(index as u32, rows, &in_views, &mut out_views)
}

/// # Safety
/// `o.ptr` must be valid for `o.bytes` readable bytes for the caller's lifetime choice.
unsafe fn raw<'a>(o: &Operand) -> &'a [u8] {
    if o.bytes == 0 {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(o.ptr, o.bytes) }
}

/// # Safety
/// `o.ptr` must be valid for `o.bytes` writable bytes, referenced nowhere else.
unsafe fn raw_mut<'a>(o: &Operand) -> &'a mut [u8] {
    if o.bytes == 0 {
        return &mut [];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(o.ptr, o.bytes) }
}

/// Records that region `region` ran on `rows_run` rows for the `count`
/// samples at `samples` (indices into the whole batch). Returns 0.
///
/// # Safety
/// `frame` as for [`d2nn_rt_kernel`]; `samples` valid for `count` reads.
#[no_mangle]
pub unsafe extern "C" fn d2nn_rt_trace_enter(frame: *const Frame, region: u32, samples: *const usize, count: usize, rows_run: usize) -> i32 {
    // SAFETY: see `d2nn_rt_kernel`.
    let (loaded, state) = unsafe { (&*((*frame).model as *const Loaded), &mut *((*frame).state as *mut CallState)) };
    let samples: &[usize] = if count == 0 {
        &[]
    } else {
        // SAFETY: the caller passes `count` sample indices.
        unsafe { std::slice::from_raw_parts(samples, count) }
    };
    // `Trace::enter` ignores indices out of range and never panics on them.
    state.trace.enter(&loaded.meta.trace, region as usize, samples, rows_run);
    Status::Ok as i32
}
