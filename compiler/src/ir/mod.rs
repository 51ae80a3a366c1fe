//! The graph IR: typed arenas, static shapes with symbolic dims, explicit regions.
//!
//! The IR knows nothing about protobuf or opset versions; the front end
//! normalises those away.

pub mod arena;
pub mod graph;
pub mod op;
pub mod printer;
pub mod types;
pub mod verify;

pub use arena::{Arena, Handle};
pub use graph::{Graph, Node, NodeId, Region, RegionId, RegionKind, Value, ValueDef, ValueId};
pub use op::*;
pub use types::{Dim, Symbol, TensorType};
