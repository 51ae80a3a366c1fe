//! Dynamic execution: find the decisions controllers make in an exported
//! graph, give every node the guard under which its result is needed, and
//! group nodes into guarded blocks that the executors skip, or run only on
//! the samples that need them.
//!
//! The semantics are those of `DESIGN.md` §2:
//! - `Mul(x, g)` with `g` a decision reads `x` only where `g ≠ 0`, and its
//!   result is exactly 0 where `g = 0` (the D2NN default value), even where
//!   the skipped `x` would have been NaN or infinite.
//! - `Where(c, a, b)` reads `a` only where `c` holds and `b` where it does not.
//! - `If` reads a branch only when its condition selects it.
//! - Every other node reads its operands wherever its own guard holds.
//!
//! A decision that sees NaN is false: comparisons with NaN are false (a NaN
//! confidence never exits early, a NaN gate logit closes the gate), and an
//! `ArgMax` over a row holding NaN picks the first NaN, as numpy does.
//!
//! [`analyze`] builds an [`Analysis`]: the atoms, each node's guard, the
//! schedule (a tree of [`Block`]s over the root region's nodes), the knobs
//! and the FLOPs of every path. The interpreter's dynamic mode and the plan
//! executor walk the same schedule and fill a [`Trace`].

mod analyze;
mod decision;
pub mod guard;
mod paths;
pub mod print;
pub mod rows;
mod schedule;

pub use analyze::{analyze, fix_knobs, KnobError};
pub use guard::{AtomId, Guard, GuardDisplay};
pub use d2nn_runtime::trace::{Trace, TraceSpec};
pub use paths::Path;

use crate::ir::{NodeId, Symbol, ValueId};
use std::collections::HashMap;

/// Whether a decision is made per sample (`[N, 1, …]`) or once for the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Sample,
    Batch,
}

/// A decision a controller makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AtomKind {
    /// Where the bool value `value` is true (a comparison, usually).
    Test { value: ValueId },
    /// Where the `ArgMax` output `index` equals `choice` (of `choices`).
    Choice { index: ValueId, choice: usize, choices: usize },
}

#[derive(Clone, Debug)]
pub struct Atom {
    pub kind: AtomKind,
    pub scope: Scope,
    /// The node that makes the decision (`/Greater`, `/ArgMax==1`).
    pub name: String,
    /// Knobs (indices into [`Analysis::knobs`]) the decision compares against.
    pub knobs: Vec<usize>,
}

impl Atom {
    /// The value the executors read to evaluate the atom.
    pub fn value(&self) -> ValueId {
        match self.kind {
            AtomKind::Test { value } => value,
            AtomKind::Choice { index, .. } => index,
        }
    }

    /// The atom's truth from element `i` of its value (see [`Atom::value`]):
    /// nonzero for a test, equal to the choice for an `ArgMax`.
    pub fn holds(&self, element: f64) -> bool {
        match self.kind {
            AtomKind::Test { .. } => element != 0.0,
            AtomKind::Choice { choice, .. } => element == choice as f64,
        }
    }
}

/// A run-time parameter: a threshold constant that decisions compare against.
#[derive(Clone, Debug)]
pub struct Knob {
    /// The constant's name in the model (its initializer).
    pub name: String,
    pub value: ValueId,
    /// The model's value.
    pub default: f32,
    /// The decisions that read it.
    pub atoms: Vec<AtomId>,
}

/// Index of a [`Block`] in [`Analysis::blocks`]: the region ids of reports.
pub type BlockId = usize;

/// How a block runs when its guard holds for some samples only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The guard is one decision for the whole batch: run or skip.
    Batch,
    /// Per-sample guard on a batch-separable block: compact the rows whose
    /// guard holds, run on that sub-batch, scatter the results back.
    Routed,
    /// Per-sample guard, but the block cannot be split by rows: it runs on
    /// the whole batch whenever any sample needs it. The reason says why.
    WholeBatch { reason: String },
}

/// What the block is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// A set of nodes sharing a guard, made by the analysis.
    Guarded,
    /// A branch of an `If` node (`then` or `else`), run by the `If`.
    Branch { node: NodeId, then: bool },
}

/// One step of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Node(NodeId),
    Block(BlockId),
}

/// A guarded region of the graph.
#[derive(Clone, Debug)]
pub struct Block {
    pub kind: BlockKind,
    pub parent: Option<BlockId>,
    /// When the block's results are needed (implies the parent's guard).
    pub guard: Guard,
    /// What remains to test once the parent's guard holds.
    pub local: Guard,
    pub mode: Mode,
    /// The block's schedule.
    pub items: Vec<Item>,
    /// Per-sample values defined outside and read inside (by its nodes or by
    /// its children's guards): what a routed block compacts.
    pub gathers: Vec<ValueId>,
    /// Values defined inside and read after the block: what it scatters back
    /// (and fills with zeros where it did not run).
    pub outputs: Vec<ValueId>,
    /// FLOPs of the block's own nodes (not its children's) per sample, and
    /// independent of the batch.
    pub flops_per_sample: u64,
    pub flops_fixed: u64,
}

/// Everything the executors and `inspect` need to run and describe a
/// model's dynamic structure.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub atoms: Vec<Atom>,
    pub knobs: Vec<Knob>,
    /// The guard of every node that runs (root region and `If` branches).
    pub node_guard: HashMap<NodeId, Guard>,
    /// Gated `Mul` nodes and the operand index of their gate.
    pub gates: HashMap<NodeId, usize>,
    pub blocks: Vec<Block>,
    /// The root schedule.
    pub body: Vec<Item>,
    /// The two branch blocks of every `If` node.
    pub branches: HashMap<NodeId, [BlockId; 2]>,
    /// FLOPs of the root schedule's own nodes per sample and fixed.
    pub root_flops_per_sample: u64,
    pub root_flops_fixed: u64,
    /// FLOPs of the whole graph at batch 1 (both branches of every `If`).
    pub dense_flops_per_sample: u64,
    pub dense_flops_fixed: u64,
    /// Every distinct path through the network (`None` when there are too
    /// many decision combinations to list).
    pub paths: Option<Vec<Path>>,
    /// The batch symbol (routing needs one).
    pub batch: Option<Symbol>,
    /// Region costs and paths for recording a [`Trace`].
    pub trace_spec: TraceSpec,
}

impl Analysis {
    /// Whether the graph has any decision at all.
    pub fn is_dynamic(&self) -> bool {
        !self.blocks.is_empty()
    }

    pub fn guard_text(&self, guard: &Guard) -> String {
        let name = |a: AtomId| self.atoms[a as usize].name.clone();
        GuardDisplay { guard, name: &name }.to_string()
    }

    /// Dense FLOPs at batch `n`.
    pub fn dense_flops(&self, n: usize) -> u64 {
        self.dense_flops_per_sample.saturating_mul(n as u64).saturating_add(self.dense_flops_fixed)
    }

    /// The knob named `name`.
    pub fn knob(&self, name: &str) -> Option<&Knob> {
        self.knobs.iter().find(|k| k.name == name)
    }

    /// Every node of a block's subtree, in schedule order.
    pub fn block_nodes(&self, b: BlockId) -> Vec<NodeId> {
        let mut out = Vec::new();
        self.collect_nodes(&self.blocks[b].items, &mut out);
        out
    }

    fn collect_nodes(&self, items: &[Item], out: &mut Vec<NodeId>) {
        for item in items {
            match *item {
                Item::Node(n) => {
                    out.push(n);
                    if let Some(br) = self.branches.get(&n) {
                        for &b in br {
                            self.collect_nodes(&self.blocks[b].items, out);
                        }
                    }
                }
                Item::Block(b) => self.collect_nodes(&self.blocks[b].items, out),
            }
        }
    }
}
