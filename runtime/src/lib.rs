//! `d2nn-runtime`: everything a compiled d2nnc model needs at run time.
//!
//! It never depends on the compiler. It holds the dynamically typed
//! [`Tensor`] shared by the compiler's interpreter and generated code,
//! `.npy` / `.npz` I/O, the scratch [`arena`], the thread [`pool`] for
//! intra-op parallelism, the f32 [`gemm`] core (packed weights, fused
//! bias/activation/residual epilogue, AVX-512 / AVX2 / portable micro-kernels)
//! that conv, `Gemm`/`MatMul` and fully-connected layers call, and the
//! cheap-op [`kernels`] (elementwise, pooling, softmax, reductions and
//! arg-reductions, batch and layer norm, Winograd, depthwise and transposed
//! convolutions; comparisons, Where, Cast and OneHot for every element type),
//! the per-sample [`routing`] of
//! dynamic execution (row gather, scatter and masks) and its [`trace`], and
//! the [`weights`] file a generated crate embeds.

pub mod abi;
pub mod arena;
pub mod compiled;
pub mod gemm;
pub mod kernels;
pub mod layers;
pub mod npy;
pub mod pool;
pub mod routing;
pub mod tensor;
pub mod trace;
pub mod weights;

pub use tensor::{DType, Tensor, TensorError};

/// The ndarray version of the public tensor API, for generated crates (which depend on this crate alone).
pub use ndarray;
