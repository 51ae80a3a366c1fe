//! The native ABI between machine code that d2nnc emits with Cranelift (JIT
//! or object files) and this runtime.
//!
//! A compiled model is a [`Compiled`] record: its `run` function, its
//! [`ModelMeta`] (postcard bytes) and its weights file. [`Model`] loads one:
//! it prepares the kernel table (weights packed once), owns the scratch
//! arena, the knobs and the trace, and calls `run` with a [`Frame`].
//!
//! The generated code does the control flow itself — decisions, branches,
//! row compaction and scatter, arena addressing, cheap elementwise loops —
//! and calls back into the runtime through two `extern "C"` hooks:
//! [`hooks::d2nn_rt_kernel`] runs entry `index` of the kernel table on
//! operands it passes as [`Operand`]s, [`hooks::d2nn_rt_trace_enter`] records
//! a region entry. [`capi`] is the C API of `model.h` over [`Model`].

pub mod capi;
pub mod hooks;
pub mod meta;
mod model;
mod table;
#[cfg(test)]
mod tests;

pub use meta::{Knob, KernelDesc, KernelEntry, MetaError, ModelMeta, Port};
pub use model::{Model, ModelError};
pub use table::PrepareError;

/// Kernels the host of a compiled model runs itself ([`KernelDesc::External`]):
/// the JIT passes the compiler's interpreter for steps no runtime kernel covers.
pub trait External: Send + Sync {
    /// Runs kernel `kernel` of the table on a frame of `rows` rows.
    fn run(&self, kernel: u32, rows: usize, inputs: &[(crate::DType, &[u8])], outputs: &mut [(crate::DType, &mut [u8])]) -> Result<(), crate::kernels::KernelError>;
}

/// Version of [`Compiled`], [`Frame`] and [`Operand`]; bumped on any change.
pub const ABI_VERSION: u32 = 1;

/// What an object file (or the JIT) exports for one model.
#[repr(C)]
#[derive(Debug)]
pub struct Compiled {
    pub abi_version: u32,
    pub reserved: u32,
    /// [`ModelMeta`], postcard-encoded.
    pub meta: *const u8,
    pub meta_len: usize,
    /// The weights file (`crate::weights`), 64-byte aligned.
    pub weights: *const u8,
    pub weights_len: usize,
    /// The model's code.
    pub run: Option<RunFn>,
}

/// The compiled `run` function: 0, or the [`Status`] a hook returned.
pub type RunFn = unsafe extern "C" fn(frame: *const Frame) -> i32;

/// Byte offsets of [`Compiled`]'s fields, for the code generator.
pub mod compiled_layout {
    pub const ABI_VERSION: u32 = 0;
    pub const META: u32 = 8;
    pub const META_LEN: u32 = 16;
    pub const WEIGHTS: u32 = 24;
    pub const WEIGHTS_LEN: u32 = 32;
    pub const RUN: u32 = 40;
    pub const SIZE: u32 = 48;
}

/// What `run` receives: where everything of this call is.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    /// The model (opaque to the generated code; the hooks' context).
    pub model: *const std::ffi::c_void,
    /// The scratch arena, 64-byte aligned, `arena_bytes(batch)` long.
    pub arena: *mut u8,
    /// One pointer per graph input, each holding its elements at `batch`.
    pub inputs: *const *const u8,
    /// One pointer per graph output.
    pub outputs: *const *mut u8,
    /// One pointer per constant operand (`ModelMeta::consts`).
    pub consts: *const *const u8,
    /// The knobs' values, `Knob::elements` floats each, in order.
    pub knobs: *const f32,
    /// Row lists: `samples` entries for the root's samples (0, 1, …), then
    /// per guarded block its rows and its samples.
    pub lists: *mut usize,
    pub batch: usize,
    /// Per-call mutable state (trace, error), for the hooks.
    pub state: *mut std::ffi::c_void,
    /// Samples in the call (`ModelMeta::samples` at `batch`): the length
    /// of the root's list and the stride of the blocks' lists.
    pub samples: usize,
}

/// Byte offsets of [`Frame`]'s fields, for the code generator.
pub mod frame_layout {
    pub const ARENA: i32 = 8;
    pub const INPUTS: i32 = 16;
    pub const OUTPUTS: i32 = 24;
    pub const CONSTS: i32 = 32;
    pub const KNOBS: i32 = 40;
    pub const LISTS: i32 = 48;
    pub const BATCH: i32 = 56;
    pub const SAMPLES: i32 = 72;
}

/// One operand of a kernel call: its bytes and element type.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    pub ptr: *mut u8,
    pub bytes: usize,
    /// [`dtype_code`] of the elements.
    pub dtype: u32,
    pub reserved: u32,
}

/// Size of [`Operand`] in bytes, and its fields' offsets.
pub mod operand_layout {
    pub const SIZE: u32 = 24;
    pub const PTR: i32 = 0;
    pub const BYTES: i32 = 8;
    pub const DTYPE: i32 = 16;
}

/// The code of a dtype in [`Operand::dtype`].
pub fn dtype_code(dtype: crate::DType) -> u32 {
    match dtype {
        crate::DType::F32 => 0,
        crate::DType::I64 => 1,
        crate::DType::I32 => 2,
        crate::DType::Bool => 3,
    }
}

fn dtype_of_code(code: u32) -> Option<crate::DType> {
    Some(match code {
        0 => crate::DType::F32,
        1 => crate::DType::I64,
        2 => crate::DType::I32,
        3 => crate::DType::Bool,
        _ => return None,
    })
}

/// Result codes of the hooks and of the C API (`D2NN_*` in `model.h`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    /// A required pointer was null.
    NullPointer = 1,
    /// A buffer's size (or the number of buffers) does not fit the model.
    BadSize = 2,
    /// Unknown knob name, or a value that is not finite.
    BadKnob = 3,
    /// A kernel refused its operands.
    Kernel = 4,
    /// The compiled model is damaged or from another ABI version.
    BadModel = 5,
    /// An index (sample, region) is out of range, or nothing was run yet.
    OutOfRange = 6,
    /// The runtime panicked (a bug); the model must not be used again.
    Panic = 7,
}

/// The symbols compiled code imports from the runtime, with their addresses
/// (what the JIT links against; an object file gets them from the static library).
pub fn hook_symbols() -> [(&'static str, *const u8); 2] {
    [("d2nn_rt_kernel", hooks::d2nn_rt_kernel as *const u8), ("d2nn_rt_trace_enter", hooks::d2nn_rt_trace_enter as *const u8)]
}
