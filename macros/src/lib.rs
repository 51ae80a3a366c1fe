//! `dynamic_net!`: compile an ONNX model into the calling crate at build time.
//!
//! The macro is built on the compiler's Rust back end, which lands after the
//! foundation; this crate exists now so the workspace has its final shape and
//! the dependency direction (runtime ← compiler ← macros) is fixed from day one.
//! It currently exports nothing.
