//! `d2nn-runtime`: everything a compiled d2nnc model needs at run time.
//!
//! It never depends on the compiler. Today it holds the dynamically typed
//! [`Tensor`] shared by the compiler's interpreter and generated code, and
//! `.npy` / `.npz` I/O. Kernels, the scratch arena and routing helpers join it
//! as the back ends land.
//!
//! [`gemm`] is the f32 GEMM/GEMV core (packed weights, fused bias/activation/
//! residual epilogue, AVX-512 / AVX2 / portable micro-kernels) that conv,
//! `Gemm`/`MatMul` and fully-connected kernels call.

pub mod gemm;
pub mod npy;
pub mod tensor;

pub use tensor::{DType, Tensor, TensorError};
