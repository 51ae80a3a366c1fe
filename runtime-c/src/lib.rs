//! `libd2nn_runtime.a`: the d2nn runtime packaged for C programs that link
//! a model object file written by `d2nnc compile --emit object`.
//!
//! The functions live in `d2nn_runtime::abi::{capi, hooks}`; this crate only
//! re-exports them: the C API (`d2nn_model_*`, `d2nn_last_error`) and the
//! hooks compiled code calls (`d2nn_rt_kernel`, `d2nn_rt_trace_enter`). A
//! staticlib bundles its dependencies' object files, and rustc 1.95 keeps
//! their `#[no_mangle]` functions global in the archive, with and without
//! LTO (checked with `nm`). The `#[used]` table below is insurance for a
//! toolchain or profile that would drop upstream symbols nothing here uses:
//! it uses every one of them. Each field is typed with the function's
//! signature, so a signature changed upstream fails to compile here, a
//! reminder that the C header (`compiler/src/back/clif/header.rs`) must
//! change with it.
//!
//! A C program links it with `-ld2nn_runtime` plus the system libraries the
//! Rust standard library needs (`cargo rustc -p d2nn-runtime-c --release --
//! --print native-static-libs` lists them; on Linux with glibc
//! `-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc`).

use d2nn_runtime::abi::capi::CModel;
use d2nn_runtime::abi::{Compiled, Frame, Operand};
use std::ffi::c_char;

pub use d2nn_runtime::abi::capi::{
    d2nn_last_error, d2nn_model_create, d2nn_model_flops, d2nn_model_free, d2nn_model_get_knob, d2nn_model_region_rows, d2nn_model_run, d2nn_model_sample_path,
    d2nn_model_set_knob,
};
pub use d2nn_runtime::abi::hooks::{d2nn_rt_kernel, d2nn_rt_trace_enter};

/// One field per exported function (see the module docs).
pub struct Exports {
    pub model_create: unsafe extern "C" fn(*const Compiled, usize, *mut *mut CModel) -> i32,
    pub model_free: unsafe extern "C" fn(*mut CModel),
    pub model_run: unsafe extern "C" fn(*mut CModel, *const *const f32, *const usize, usize, *const *mut f32, *const usize, usize, *mut usize) -> i32,
    pub model_set_knob: unsafe extern "C" fn(*mut CModel, *const c_char, f32) -> i32,
    pub model_get_knob: unsafe extern "C" fn(*const CModel, *const c_char, *mut f32) -> i32,
    pub model_flops: unsafe extern "C" fn(*const CModel, *mut u64, *mut u64) -> i32,
    pub model_sample_path: unsafe extern "C" fn(*const CModel, usize, *mut usize) -> i32,
    pub model_region_rows: unsafe extern "C" fn(*const CModel, usize, *mut usize) -> i32,
    pub last_error: extern "C" fn() -> *const c_char,
    pub rt_kernel: unsafe extern "C" fn(*const Frame, u32, usize, *const Operand, u32) -> i32,
    pub rt_trace_enter: unsafe extern "C" fn(*const Frame, u32, *const usize, usize, usize) -> i32,
}

/// Keeps every exported function in the archive (see the module docs).
#[used]
pub static EXPORTS: Exports = Exports {
    model_create: d2nn_model_create,
    model_free: d2nn_model_free,
    model_run: d2nn_model_run,
    model_set_knob: d2nn_model_set_knob,
    model_get_knob: d2nn_model_get_knob,
    model_flops: d2nn_model_flops,
    model_sample_path: d2nn_model_sample_path,
    model_region_rows: d2nn_model_region_rows,
    last_error: d2nn_last_error,
    rt_kernel: d2nn_rt_kernel,
    rt_trace_enter: d2nn_rt_trace_enter,
};
