//! `d2nn-runtime`: everything a compiled d2nnc model needs at run time.
//!
//! It never depends on the compiler. Today it holds the dynamically typed
//! [`Tensor`] shared by the compiler's interpreter and generated code,
//! `.npy` / `.npz` I/O, and the thread pool for intra-op parallelism. Kernels, the scratch arena and routing helpers join it
//! as the back ends land.

pub mod arena;
pub mod kernels;
pub mod npy;
pub mod pool;
pub mod tensor;

pub use tensor::{DType, Tensor, TensorError};
