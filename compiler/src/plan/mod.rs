//! The backend-neutral execution plan.
//!
//! [`lower`] turns an optimised graph into a [`Program`]: every value becomes
//! a [`Buffer`] whose shape is constant except for the batch dimension; every
//! intermediate buffer gets a slot in one scratch arena placed by liveness
//! ([`memory`]); every node becomes a [`Step`] calling a [`Kernel`]; and each
//! `If` becomes a step holding its two branch blocks. [`exec::Executor`] runs a
//! program; the compiled back ends translate the same program.
//!
//! Kernels are chosen per node. [`Kernel::Reference`] runs the interpreter's
//! kernel on the node's operands and is correct for every op; the runtime's
//! fast kernels take over op by op where their conditions hold (f32 — or any
//! dtype for data movement and the control logic of comparisons, `Where`,
//! the logical ops on bools, `Cast`, arg-reductions and `OneHot` — constant parameters,
//! batch-independent geometry). [`fuse`] merges a convolution or fully connected layer with the
//! residual `Add` and activation after it into one step.

pub mod exec;
mod exec_dynamic;
mod exec_typed;
pub mod fuse;
mod kernels;
pub mod lower;
pub mod memory;
pub mod print;

pub use exec::{ExecError, Executor};
pub use lower::{lower, lower_dynamic, LowerError};

use crate::ir::{Dim, Graph, NodeId};
use d2nn_runtime::kernels::conv_transpose::{ConvTranspose2d, ConvTransposeWeights};
use d2nn_runtime::kernels::copy;
use d2nn_runtime::kernels::elementwise::{Binary, Unary};
use d2nn_runtime::kernels::logic::{BoolOp, Compare};
use d2nn_runtime::kernels::norm::{BatchNorm, LayerNorm};
use d2nn_runtime::kernels::one_hot::OneHot;
use d2nn_runtime::kernels::pool::{GlobalKind, Pool2d};
use d2nn_runtime::kernels::reduce::{ArgReduce, ReduceKind};
use d2nn_runtime::{DType, Tensor};
use std::sync::Arc;

/// Index of a [`Buffer`] in [`Program::buffers`].
pub type BufferId = usize;

/// Where a buffer's data lives at run time.
#[derive(Clone, Debug)]
pub enum Storage {
    /// The `i`-th graph input, read in place from the caller's tensor.
    Input(usize),
    /// A constant of the model.
    Const(Arc<Tensor>),
    /// Arena slot `i` (an index into the program's arena layout).
    Arena(usize),
    /// Knob `k` of the program's analysis: a threshold the executor's
    /// caller may set (it starts at the model's value).
    Knob(usize),
}

/// One tensor of the program.
#[derive(Clone, Debug)]
pub struct Buffer {
    /// The IR value's name, for diagnostics.
    pub name: String,
    pub dtype: DType,
    /// Each dim is `Known`, or the batch symbol times a factor.
    pub shape: Vec<Dim>,
    pub storage: Storage,
}

impl Buffer {
    /// The concrete shape at batch size `batch`.
    pub fn shape_at(&self, batch: usize) -> Vec<usize> {
        self.shape.iter().map(|d| d.resolve(&|_| Some(batch)).unwrap_or(0)).collect()
    }

    /// The element count at batch size `batch` (no allocation: the step loop uses it).
    pub fn elements_at(&self, batch: usize) -> usize {
        self.shape.iter().map(|d| d.resolve(&|_| Some(batch)).unwrap_or(0)).product()
    }
}

/// How a node's step computes its outputs.
///
/// The fast kernels run the runtime's kernels (`d2nn_runtime::kernels`; f32,
/// or any dtype for data movement, comparisons, `Where`, `Cast` and `OneHot`;
/// bool for the logical ops)
/// on the operands in place. Their parameters are computed at lowering time
/// and never depend on the batch size: the kernels derive the batch-scaled
/// outer count (batch × channels planes, softmax rows…) from the lengths of
/// the slices they get, and [`BinaryKernel`] keeps the batch in its outermost
/// iteration dim only, resolved per call. See `kernels::choose` for when each
/// is chosen.
#[derive(Clone, Debug)]
pub enum Kernel {
    /// The interpreter's kernel, on copies of the operands.
    Reference,
    /// The output holds the input's bytes unchanged (Identity, Dropout,
    /// Reshape, Flatten, Squeeze, Unsqueeze): one copy, no interpretation.
    Copy,
    /// An f32 elementwise op of input 0 (Clip's constant bounds folded in).
    Unary(Unary),
    /// An f32 broadcasting binary op of inputs 0 and 1.
    Binary(BinaryKernel),
    /// f32 MaxPool (values only) or AveragePool over `[planes, H, W]`
    /// (1-D pools with `H = 1`).
    Pool(Pool2d),
    /// f32 GlobalMaxPool or GlobalAveragePool over `plane` spatial elements.
    GlobalPool { kind: GlobalKind, plane: usize },
    /// f32 Softmax or LogSoftmax over the middle axis of `[outer, len, inner]`.
    Softmax { log: bool, len: usize, inner: usize },
    /// f32 ReduceSum/Mean/Max/Min over the middle axis of `[outer, len, inner]`
    /// (the reduced axes form one contiguous block).
    Reduce { kind: ReduceKind, len: usize, inner: usize },
    /// f32 BatchNormalization with constant statistics over `[N, C, plane]`.
    BatchNorm { bn: BatchNorm, plane: usize },
    /// f32 1-D/2-D convolution as GEMM over packed weights, with its
    /// epilogue (bias, fused residual and activation).
    Conv(ConvKernel),
    /// f32 depthwise convolution (`group = C_in`): weights `[C_out, kh, kw]`,
    /// with a fused activation (`fused.residual` is always false).
    Depthwise {
        geometry: d2nn_runtime::kernels::depthwise::Depthwise,
        weights: Arc<Vec<f32>>,
        bias: Option<Arc<Vec<f32>>>,
        fused: Fused,
    },
    /// f32 fully connected layer: `act([rows, k] · packed [k, n] + bias + residual)`.
    Dense(DenseKernel),
    /// Transpose of any dtype: a strided copy per outer block (the leading
    /// axes the permutation keeps in place, where the batch may be).
    Transpose(copy::Transpose),
    /// Slice of any dtype with constant starts, ends, axes and steps: a
    /// strided window per outer block (the axes before the first cut one).
    Slice(copy::Slice),
    /// Concat of any dtype: input `i` holds `rows[i]` elements per outer
    /// row (the axes before the concat axis); the output their sum.
    Concat { rows: Vec<usize> },
    /// Split of any dtype with constant sizes: output `j` holds `rows[j]`
    /// elements of each outer row of the input.
    Split { rows: Vec<usize> },
    /// Gather of any dtype with constant indices, over `[outer, axis, inner]`.
    Gather(copy::Gather),
    /// Constant-mode Pad of any dtype with constant pads; `fill` is the
    /// one-element value (the data's dtype) written outside the input.
    Pad { geometry: copy::Pad, fill: Tensor },
    /// f32 ReduceSum/Mean/Max/Min over the middle axis of `[outer, len,
    /// inner]` whose reduced block holds the batch (e.g. every axis
    /// reduced): `len` is resolved per call; `outer` (batch-independent) is
    /// derived from the output's length. The same runtime kernel as
    /// [`Kernel::Reduce`].
    ReduceOverBatch { kind: ReduceKind, len: Dim, inner: usize },
    /// A broadcasting comparison of inputs 0 and 1 (both f32, i64 or i32;
    /// bool for `Equal`) into bool bytes (`kernels::logic::compare_strided`).
    Compare(CompareKernel),
    /// `Where(cond, X, Y)` with broadcasting, for any data dtype
    /// (`kernels::logic::where_strided`).
    Where(WhereKernel),
    /// A broadcasting `And`, `Or` or `Xor` of bool inputs 0 and 1 into bool
    /// bytes (`kernels::logic::bool_strided`): how decisions combine in
    /// D2NN hierarchies.
    Logic(LogicKernel),
    /// `Not` of bool input 0, elementwise over the whole buffer
    /// (`kernels::logic::not`); it needs no geometry, the length carries
    /// the batch.
    Not,
    /// `Cast` of input 0 from `from` to `to` (f32, i64, i32, bool), exactly
    /// as the interpreter converts (`kernels::cast::cast`).
    Cast { from: DType, to: DType },
    /// ArgMax/ArgMin of f32, i64 or i32 input 0 over the middle axis of
    /// `[outer, len, inner]` into i64 indices (`kernels::reduce::arg_reduce`).
    ArgReduce(ArgReduce),
    /// OneHot of f32, i64 or i32 indices (input 0) with constant depth and
    /// values; `off_on` holds `[off, on]` in the output's dtype
    /// (`kernels::one_hot::one_hot`).
    OneHot { geometry: OneHot, off_on: Tensor },
    /// f32 LayerNormalization (Y only) over rows of `geometry.row`
    /// elements, with constant scale and optional bias broadcast onto a row
    /// (`kernels::norm::layer_norm`, bit for bit the interpreter's).
    LayerNorm { geometry: LayerNorm, scale: Arc<Vec<f32>>, bias: Option<Arc<Vec<f32>>> },
    /// f32 1-D/2-D ConvTranspose as GEMM + col2im over weights packed at
    /// lowering (`kernels::conv_transpose`).
    ConvTranspose(ConvTransposeKernel),
}

/// A broadcasting comparison as a strided loop over the output, laid out as
/// [`BinaryKernel`] (dims resolved per call, batch-independent strides).
#[derive(Clone, Debug, PartialEq)]
pub struct CompareKernel {
    pub op: Compare,
    pub dims: Vec<Dim>,
    pub a_strides: Vec<usize>,
    pub b_strides: Vec<usize>,
}

/// A logical `And`/`Or`/`Xor` as a strided loop over the output, laid out
/// as [`CompareKernel`] (dims resolved per call, batch-independent strides).
#[derive(Clone, Debug, PartialEq)]
pub struct LogicKernel {
    pub op: BoolOp,
    pub dims: Vec<Dim>,
    pub a_strides: Vec<usize>,
    pub b_strides: Vec<usize>,
}

/// `Where` as a strided loop over the output, laid out as [`BinaryKernel`]
/// with a stride vector per operand.
#[derive(Clone, Debug, PartialEq)]
pub struct WhereKernel {
    pub dims: Vec<Dim>,
    pub cond_strides: Vec<usize>,
    pub x_strides: Vec<usize>,
    pub y_strides: Vec<usize>,
}

/// A transposed convolution: weights packed per group, optional bias.
#[derive(Clone, Debug)]
pub struct ConvTransposeKernel {
    pub geometry: ConvTranspose2d,
    pub weights: Arc<ConvTransposeWeights>,
    /// The model constant the weights were packed from (`[c_in, c_out /
    /// group, kh, kw]`): compiled back ends pack it again at load time.
    pub weight_value: crate::ir::ValueId,
    pub bias: Option<Arc<Vec<f32>>>,
}

/// Input index of the residual operand of a step whose kernel fused an
/// `Add` (after the head node's own `X, W, B`).
pub const RESIDUAL_INPUT: usize = 3;

/// What a convolution or fully connected step applies to its product
/// before storing it, absorbed from the nodes that followed it (see
/// [`fuse`]): `act(product + bias + residual)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fused {
    /// The step reads a residual of the output's shape at [`RESIDUAL_INPUT`].
    pub residual: bool,
    pub activation: d2nn_runtime::gemm::Activation,
}

impl Fused {
    /// Whether nothing was fused.
    pub fn is_none(&self) -> bool {
        *self == Fused::default()
    }
}

/// A convolution lowered to GEMM (`d2nn_runtime::kernels::conv`): one
/// packed weight matrix per group.
#[derive(Clone, Debug)]
pub struct ConvKernel {
    pub geometry: d2nn_runtime::kernels::conv::Conv2d,
    pub weights: Arc<d2nn_runtime::layers::ConvWeights>,
    /// The model constant the weights were packed from (`[c_out, c_in/group,
    /// kh, kw]`): the compiled back ends pack it again at load time.
    pub weight_value: crate::ir::ValueId,
    pub bias: Option<Arc<Vec<f32>>>,
    pub fused: Fused,
}

/// A fully connected layer: rows of the input times a packed `[k, n]` weight.
#[derive(Clone, Debug)]
pub struct DenseKernel {
    pub k: usize,
    pub n: usize,
    pub weights: Arc<d2nn_runtime::layers::DenseWeights>,
    /// The model constant the weights were packed from: `[n, k]` when
    /// `transposed` (a `Gemm` with `transB = 1`), else `[k, n]`.
    pub weight_value: crate::ir::ValueId,
    pub transposed: bool,
    pub bias: Option<Arc<Vec<f32>>>,
    pub fused: Fused,
}

/// A broadcasting binary op as a strided loop over the output.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryKernel {
    pub op: Binary,
    /// The output's dims with size-1 axes dropped and uniformly strided
    /// neighbours merged; they may hold the batch symbol and are resolved per
    /// call (`Buffer::shape_at` style).
    pub dims: Vec<Dim>,
    /// Operand strides over `dims` in elements (0 where broadcast); they
    /// never depend on the batch.
    pub a_strides: Vec<usize>,
    pub b_strides: Vec<usize>,
}

/// One step of a block.
#[derive(Clone, Debug)]
// Steps are built once at lowering and walked by reference; a few hundred
// bytes per step is not worth a box on every kernel.
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// Node `node` computes `outputs` from `inputs` with `kernel`.
    Node { node: NodeId, kernel: Kernel, inputs: Vec<Option<BufferId>>, outputs: Vec<BufferId> },
    /// `If`: run `then_block` or `else_block` on `cond`, then copy the
    /// branch's yields to `outputs`.
    If {
        node: NodeId,
        cond: BufferId,
        then_block: Vec<Step>,
        else_block: Vec<Step>,
        then_yields: Vec<BufferId>,
        else_yields: Vec<BufferId>,
        outputs: Vec<BufferId>,
    },
    /// A guarded block of the dynamic schedule (`dynamic::Block` `block`):
    /// evaluate its guard on each row from the `atoms`' buffers; run `body`
    /// when it holds — on the whole frame, or, for a routed block, on the
    /// rows where it holds after copying them into the `gathers` twins —
    /// then scatter `outputs` back in place, zeros on the rows that did not
    /// run.
    Block {
        block: crate::dynamic::BlockId,
        atoms: Vec<(crate::dynamic::AtomId, BufferId)>,
        gathers: Vec<(BufferId, BufferId)>,
        outputs: Vec<BufferId>,
        body: Vec<Step>,
    },
    /// After a gated `Mul` (node `node`): the rows of `output` whose `gate`
    /// is 0 become exactly 0.
    Mask { node: NodeId, gate: BufferId, output: BufferId },
}

/// A lowered model.
#[derive(Debug)]
pub struct Program {
    /// The optimised graph the program was lowered from (node names, ops and
    /// the reference kernels' attributes).
    pub graph: Graph,
    pub buffers: Vec<Buffer>,
    /// Buffers of the graph inputs, in order.
    pub inputs: Vec<BufferId>,
    /// Buffers of the graph outputs, in order.
    pub outputs: Vec<BufferId>,
    pub body: Vec<Step>,
    /// Placement of every arena slot.
    pub arena: memory::ArenaLayout,
    /// The dynamic schedule the program follows (`None`: dense, every node runs).
    pub dynamic: Option<Arc<crate::dynamic::Analysis>>,
}

impl Program {
    /// Every node step's node name and kernel, in execution order, the
    /// steps inside `If` branches included (then before else).
    pub fn node_kernels(&self) -> Vec<(&str, &Kernel)> {
        fn walk<'p>(p: &'p Program, steps: &'p [Step], out: &mut Vec<(&'p str, &'p Kernel)>) {
            for step in steps {
                match step {
                    Step::Node { node, kernel, .. } => out.push((p.graph.nodes[*node].name.as_str(), kernel)),
                    Step::If { then_block, else_block, .. } => {
                        walk(p, then_block, out);
                        walk(p, else_block, out);
                    }
                    Step::Block { body, .. } => walk(p, body, out),
                    Step::Mask { .. } => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &self.body, &mut out);
        out
    }
}

/// Bytes per element as stored in the arena (bool as one byte).
pub fn element_bytes(dtype: DType) -> usize {
    dtype.size_of()
}
