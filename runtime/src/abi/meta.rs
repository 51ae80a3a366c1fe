//! The description of a natively compiled model that travels with its code:
//! ports, knobs, trace spec, arena size and the kernel table. The compiler
//! writes it (postcard-encoded) next to the machine code; [`super::Model`]
//! reads it back when the model is created.

use crate::compiled::Dim;
use crate::gemm::Activation;
use crate::kernels::copy::CopyArgs;
use crate::kernels::elementwise::{Binary, Unary};
use crate::kernels::logic::Compare;
use crate::kernels::norm::LayerNorm;
use crate::kernels::one_hot::OneHot;
use crate::kernels::pool::{GlobalKind, Pool2d};
use crate::kernels::reduce::{ArgReduce, ReduceKind};
use crate::trace::{RegionCost, TraceSpec};
use crate::DType;
use serde::{Deserialize, Serialize};

/// Everything the runtime needs to know about a compiled model besides its code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// The model's name (the symbol prefix of an object file).
    pub name: String,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub knobs: Vec<Knob>,
    /// Regions, their costs and the paths (no regions for a dense model).
    pub trace: TraceSpec,
    /// FLOPs of the dense model (every region run) per sample and fixed.
    pub dense: RegionCost,
    /// Descriptions of the regions and paths, for reports.
    pub region_text: Vec<String>,
    pub path_text: Vec<String>,
    /// Arena bytes: `bytes_per_batch · batch + fixed_bytes`.
    pub arena_bytes_per_batch: usize,
    pub arena_fixed_bytes: usize,
    /// Number of guarded blocks, each with a rows and a samples list of
    /// one entry per sample in the frame's list space.
    pub blocks: usize,
    /// Samples per call (axis 0 of the first input; 1 without inputs):
    /// the rows decisions are taken for.
    pub samples: Dim,
    /// The constant operands, in the order of the frame's constant table:
    /// an index into the weights table each.
    pub consts: Vec<u32>,
    /// The kernels the code calls through `d2nn_rt_kernel`, by index.
    pub kernels: Vec<KernelEntry>,
}

/// A graph input or output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl Port {
    /// Elements at batch `batch` (`None` on overflow).
    pub fn elements(&self, batch: usize) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |acc, d| match *d {
            Dim::Known(n) => acc.checked_mul(n),
            Dim::Batch(k) => acc.checked_mul(k.checked_mul(batch)?),
        })
    }

    /// Whether the port's size depends on the batch.
    pub fn is_batched(&self) -> bool {
        self.dims.iter().any(|d| matches!(d, Dim::Batch(_)))
    }
}

/// A threshold the caller may move at run time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Knob {
    pub name: String,
    pub default: f32,
    /// Elements of the model constant it replaces (each set to the value).
    pub elements: usize,
    /// The decisions that read it, for documentation.
    pub used_by: String,
}

/// One kernel of the table, with the node it computes for error messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelEntry {
    pub node: String,
    pub op: String,
    pub kernel: KernelDesc,
}

/// A dimension of a strided iteration space: known, or the frame's rows
/// times a factor.
pub type IterDim = Dim;

/// A runtime kernel call with its parameters; packed weights and other
/// constant tensors are indices into the model's weights table. The operands
/// the compiled code passes are the node's inputs, then its output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KernelDesc {
    /// f32 elementwise op; in place when the output is the input.
    Unary(Unary),
    /// f32 broadcasting binary op over a strided iteration space.
    Binary { op: Binary, dims: Vec<IterDim>, a_strides: Vec<usize>, b_strides: Vec<usize> },
    Pool(Pool2d),
    GlobalPool { kind: GlobalKind, plane: usize },
    Softmax { log: bool, len: usize, inner: usize },
    /// Reduction over the middle axis of `[outer, len, inner]` (`len` may
    /// hold the batch).
    Reduce { kind: ReduceKind, len: IterDim, inner: usize },
    /// Batch norm with folded statistics (`(x - mean) · factor + bias`).
    BatchNorm { mean: Vec<f64>, factor: Vec<f64>, bias: Vec<f64>, plane: usize },
    Conv { geometry: crate::kernels::conv::Conv2d, weights: u32, bias: Option<u32>, residual: bool, activation: Activation },
    Depthwise { geometry: crate::kernels::depthwise::Depthwise, weights: u32, bias: Option<u32>, activation: Activation },
    Dense { k: usize, n: usize, transposed: bool, weights: u32, bias: Option<u32>, residual: bool, activation: Activation },
    ConvTranspose { geometry: crate::kernels::conv_transpose::ConvTranspose2d, weights: u32, bias: Option<u32> },
    LayerNorm { geometry: LayerNorm, scale: u32, bias: Option<u32> },
    /// Transpose, Slice or Pad of elements of `dtype` (Pad's fill in `fill`,
    /// as the element's little-endian bytes).
    Copy { dtype: DType, args: CopyArgs, fill: Vec<u8> },
    Gather { dtype: DType, axis: usize, inner: usize, indices: Vec<i64> },
    Concat { dtype: DType, rows: Vec<usize> },
    /// Piece `piece` of a Split.
    Split { dtype: DType, rows: Vec<usize>, piece: usize },
    /// Comparison of two operands of `dtype` into bool bytes.
    Compare { op: Compare, dtype: DType, dims: Vec<IterDim>, a_strides: Vec<usize>, b_strides: Vec<usize> },
    Where { dtype: DType, dims: Vec<IterDim>, cond_strides: Vec<usize>, x_strides: Vec<usize>, y_strides: Vec<usize> },
    Cast { from: DType, to: DType },
    ArgReduce { dtype: DType, geometry: ArgReduce },
    /// OneHot of `index` indices into `dtype` values `[off, on]` (little-endian bytes).
    OneHot { index: DType, dtype: DType, geometry: OneHot, off_on: Vec<u8> },
    /// And/Or/Xor of two bool operands into bool bytes.
    Logic { op: crate::kernels::logic::BoolOp, dims: Vec<IterDim>, a_strides: Vec<usize>, b_strides: Vec<usize> },
    /// Not of a bool operand.
    Not,
    /// A step the host of the code runs (the JIT hands the interpreter's
    /// kernel over as an [`super::External`]); its operands are the inputs,
    /// then `outputs` outputs. A model with one cannot be loaded without a host.
    External { outputs: u32 },
}

/// Why the metadata of a compiled model cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetaError {
    #[error("the model description does not decode: {0} (is the object file from a different d2nnc version?)")]
    Decode(String),
    #[error("the compiled model uses ABI version {found}; this runtime speaks {expected}")]
    Version { found: u32, expected: u32 },
}

impl ModelMeta {
    /// The postcard encoding embedded next to the code.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding into a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<ModelMeta, MetaError> {
        postcard::from_bytes(bytes).map_err(|e| MetaError::Decode(e.to_string()))
    }

    /// Arena bytes at batch `batch` (`None` on overflow).
    pub fn arena_bytes(&self, batch: usize) -> Option<usize> {
        self.arena_bytes_per_batch.checked_mul(batch)?.checked_add(self.arena_fixed_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let meta = ModelMeta {
            name: "m".into(),
            inputs: vec![Port { name: "x".into(), dtype: DType::F32, dims: vec![Dim::Batch(1), Dim::Known(3)] }],
            outputs: vec![],
            knobs: vec![Knob { name: "t".into(), default: 0.5, elements: 1, used_by: "g".into() }],
            trace: TraceSpec::default(),
            dense: RegionCost::default(),
            region_text: vec![],
            path_text: vec![],
            arena_bytes_per_batch: 64,
            arena_fixed_bytes: 0,
            blocks: 0,
            samples: Dim::Batch(1),
            consts: vec![],
            kernels: vec![KernelEntry { node: "r".into(), op: "Relu".into(), kernel: KernelDesc::Unary(Unary::Relu) }],
        };
        assert_eq!(ModelMeta::decode(&meta.encode()).unwrap(), meta);
        assert!(ModelMeta::decode(&[0xff; 3]).is_err());
        assert_eq!(meta.inputs[0].elements(4), Some(12));
        assert_eq!(meta.inputs[0].elements(usize::MAX), None);
    }
}
