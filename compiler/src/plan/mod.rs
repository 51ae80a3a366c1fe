//! The backend-neutral execution plan (issue 3, in progress).
//!
//! Lowering the IR to a `Program` of kernel calls over one scratch arena is
//! being built in steps; today this module holds the memory planner that
//! places every intermediate buffer in that arena.

pub mod memory;
