//! The C API that `model.h` declares: create a compiled model, run it on
//! float buffers, set knobs, read the trace. Every function checks its
//! pointers, returns a [`Status`] code, never unwinds into C, and leaves a
//! message for [`d2nn_last_error`] when it fails.

use super::{Compiled, Model, ModelError, Status};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Runs `f`, turning errors and panics into a status and a message.
fn guarded(f: impl FnOnce() -> Result<(), (Status, String)>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::Ok as i32,
        Ok(Err((status, message))) => {
            set_error(&message);
            status as i32
        }
        Err(_) => {
            set_error("the d2nn runtime panicked (a bug); do not use this model again");
            Status::Panic as i32
        }
    }
}

fn model_err(e: ModelError) -> (Status, String) {
    (e.status(), e.to_string())
}

fn null(what: &str) -> (Status, String) {
    (Status::NullPointer, format!("`{what}` is a null pointer"))
}

/// The model behind a C handle.
pub struct CModel {
    model: Model,
}

/// Creates a model from the compiled record an object file exports
/// (`<name>_compiled`), its kernels on `threads` threads (0 counts as 1).
///
/// # Safety
/// `compiled` must be null or point to a record emitted by d2nnc; `out`
/// must be null or point to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn d2nn_model_create(compiled: *const Compiled, threads: usize, out: *mut *mut CModel) -> i32 {
    guarded(|| {
        if out.is_null() {
            return Err(null("out"));
        }
        if compiled.is_null() {
            return Err(null("compiled"));
        }
        // SAFETY: a non-null record emitted by d2nnc (the function's contract).
        let model = unsafe { Model::from_compiled(compiled, threads.max(1)) }.map_err(model_err)?;
        // SAFETY: `out` is non-null and writable (the function's contract).
        unsafe { *out = Box::into_raw(Box::new(CModel { model })) };
        Ok(())
    })
}

/// Frees a model (null is ignored).
///
/// # Safety
/// `model` must be null or a pointer from [`d2nn_model_create`] not yet freed.
#[no_mangle]
pub unsafe extern "C" fn d2nn_model_free(model: *mut CModel) {
    if !model.is_null() {
        // SAFETY: created by `Box::into_raw` in `d2nn_model_create`, freed once.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// # Safety
/// `model` null or valid; see the C API's functions.
unsafe fn model_mut<'a>(model: *mut CModel) -> Result<&'a mut Model, (Status, String)> {
    // SAFETY: null or a live model (the caller's contract).
    unsafe { model.as_mut() }.map(|m| &mut m.model).ok_or_else(|| null("model"))
}

/// # Safety
/// `model` null or valid.
unsafe fn model_ref<'a>(model: *const CModel) -> Result<&'a Model, (Status, String)> {
    // SAFETY: null or a live model (the caller's contract).
    unsafe { model.as_ref() }.map(|m| &m.model).ok_or_else(|| null("model"))
}

/// Runs the model. `inputs[i]` holds `input_lens[i]` floats of graph input
/// `i`; `outputs[j]` has room for `output_lens[j]` floats of output `j`.
/// The batch is the first batch-scaled input's length over its per-sample
/// size; every length must be its port's at that batch. The batch is
/// stored in `*batch` when `batch` is not null.
///
/// # Safety
/// Every non-null pointer must be valid for the counts given with it.
#[no_mangle]
pub unsafe extern "C" fn d2nn_model_run(
    model: *mut CModel,
    inputs: *const *const f32,
    input_lens: *const usize,
    input_count: usize,
    outputs: *const *mut f32,
    output_lens: *const usize,
    output_count: usize,
    batch: *mut usize,
) -> i32 {
    guarded(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_mut(model) }?;
        let arrays = [(inputs.is_null(), "inputs"), (input_lens.is_null(), "input_lens"), (outputs.is_null(), "outputs"), (output_lens.is_null(), "output_lens")];
        if let Some((_, what)) = arrays.iter().find(|(is_null, _)| *is_null && (input_count > 0 || output_count > 0)) {
            return Err(null(what));
        }
        let meta = m.meta();
        if let Some(p) = meta.inputs.iter().chain(&meta.outputs).find(|p| p.dtype != crate::DType::F32) {
            return Err((Status::BadModel, format!("port `{}` holds {} elements; the C API runs float models", p.name, p.dtype.name())));
        }
        // Each buffer: its pointer and byte length, null only when empty.
        let spans = |ptrs: *const *const f32, lens: *const usize, count: usize, what: &str| -> Result<Vec<(*const f32, usize)>, (Status, String)> {
            (0..count)
                .map(|i| {
                    // SAFETY: `ptrs` and `lens` hold `count` entries (the contract).
                    let (p, n) = unsafe { (*ptrs.add(i), *lens.add(i)) };
                    let bytes = n.checked_mul(4).ok_or((Status::BadSize, format!("{what}[{i}]: {n} floats overflow")))?;
                    if p.is_null() && n > 0 {
                        return Err(null(&format!("{what}[{i}]")));
                    }
                    Ok((p, bytes))
                })
                .collect()
        };
        let ins: Vec<&[u8]> = if input_count == 0 { Vec::new() } else { spans(inputs, input_lens, input_count, "inputs")? }
            .into_iter()
            // SAFETY: valid for `bytes` reads (the contract); null only when empty.
            .map(|(p, bytes)| if bytes == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(p as *const u8, bytes) } })
            .collect();
        let mut outs: Vec<&mut [u8]> = if output_count == 0 { Vec::new() } else { spans(outputs as *const *const f32, output_lens, output_count, "outputs")? }
            .into_iter()
            // SAFETY: valid for `bytes` writes and not otherwise referenced
            // during the call (the contract); null only when empty.
            .map(|(p, bytes)| if bytes == 0 { &mut [][..] } else { unsafe { std::slice::from_raw_parts_mut(p as *mut u8, bytes) } })
            .collect();
        let b = m.run(&ins, &mut outs).map_err(model_err)?;
        if !batch.is_null() {
            // SAFETY: non-null and writable (the contract).
            unsafe { *batch = b };
        }
        Ok(())
    })
}

/// # Safety
/// `name` null or a NUL-terminated string.
unsafe fn name_of<'a>(name: *const c_char) -> Result<&'a str, (Status, String)> {
    if name.is_null() {
        return Err(null("name"));
    }
    // SAFETY: NUL-terminated (the caller's contract).
    unsafe { CStr::from_ptr(name) }.to_str().map_err(|_| (Status::BadKnob, "the knob name is not UTF-8".into()))
}

/// Sets knob `name` (a threshold of the model) to `value` for the following runs.
///
/// # Safety
/// `model` null or valid; `name` null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn d2nn_model_set_knob(model: *mut CModel, name: *const c_char, value: f32) -> i32 {
    guarded(|| {
        // SAFETY: the function's contract.
        let (m, name) = unsafe { (model_mut(model)?, name_of(name)?) };
        m.set_knob(name, value).map_err(model_err)
    })
}

/// Reads knob `name` into `*value`.
///
/// # Safety
/// `model` null or valid; `name` null or NUL-terminated; `value` null or writable.
#[no_mangle]
pub unsafe extern "C" fn d2nn_model_get_knob(model: *const CModel, name: *const c_char, value: *mut f32) -> i32 {
    guarded(|| {
        // SAFETY: the function's contract.
        let (m, name) = unsafe { (model_ref(model)?, name_of(name)?) };
        if value.is_null() {
            return Err(null("value"));
        }
        let v = m.knob(name).map_err(model_err)?;
        // SAFETY: non-null and writable (the contract).
        unsafe { *value = v };
        Ok(())
    })
}

/// FLOPs the last run executed, and what the dense model would have at its batch.
///
/// # Safety
/// `model` null or valid; `executed` and `dense` null or writable.
#[no_mangle]
pub unsafe extern "C" fn d2nn_model_flops(model: *const CModel, executed: *mut u64, dense: *mut u64) -> i32 {
    guarded(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model) }?;
        let batch = m.last_batch().ok_or((Status::OutOfRange, "the model has not run yet".to_string()))?;
        if executed.is_null() || dense.is_null() {
            return Err(null(if executed.is_null() { "executed" } else { "dense" }));
        }
        // SAFETY: non-null and writable (the contract).
        unsafe {
            *executed = m.trace().flops_executed;
            *dense = m.meta().dense.at(batch);
        }
        Ok(())
    })
}

/// The index of the path sample `sample` took in the last run (`model.h`
/// lists the paths).
///
/// # Safety
/// `model` null or valid; `path` null or writable.
#[no_mangle]
pub unsafe extern "C" fn d2nn_model_sample_path(model: *const CModel, sample: usize, path: *mut usize) -> i32 {
    guarded(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model) }?;
        m.last_batch().ok_or((Status::OutOfRange, "the model has not run yet".to_string()))?;
        let batch = m.trace().batch;
        if path.is_null() {
            return Err(null("path"));
        }
        if sample >= batch {
            return Err((Status::OutOfRange, format!("sample {sample} is out of range for the last run's batch of {batch}")));
        }
        let p = m.path_of(sample).ok_or((Status::OutOfRange, format!("sample {sample} took a path the model does not list")))?;
        // SAFETY: non-null and writable (the contract).
        unsafe { *path = p };
        Ok(())
    })
}

/// The number of samples whose guard held for region `region` in the last run.
///
/// # Safety
/// `model` null or valid; `rows` null or writable.
#[no_mangle]
pub unsafe extern "C" fn d2nn_model_region_rows(model: *const CModel, region: usize, rows: *mut usize) -> i32 {
    guarded(|| {
        // SAFETY: the function's contract.
        let m = unsafe { model_ref(model) }?;
        m.last_batch().ok_or((Status::OutOfRange, "the model has not run yet".to_string()))?;
        if rows.is_null() {
            return Err(null("rows"));
        }
        let r = *m.trace().rows.get(region).ok_or((Status::OutOfRange, format!("region {region} is out of range ({} regions)", m.trace().rows.len())))?;
        // SAFETY: non-null and writable (the contract).
        unsafe { *rows = r };
        Ok(())
    })
}

/// The message of the last failed call on this thread ("" if none). The
/// string stays valid until the next failing call on the thread.
#[no_mangle]
pub extern "C" fn d2nn_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
