//! The operator set of the IR.
//!
//! Each operator follows the newest ONNX opset's semantics. The front end
//! rewrites older forms (attributes that later became inputs, `Upsample`,
//! legacy `Softmax` coercion…) into these, so nothing past `front/` knows about
//! opset versions. Operands that ONNX passes as tensors (axes, pads, shapes,
//! bounds) stay node inputs: constant folding makes them constants, and the
//! interpreter reads them at run time when they are not.
//!
//! Input conventions are documented on each variant; `?` marks an optional
//! input, which a node stores as `None`.

use d2nn_runtime::{DType, Tensor};
use std::fmt;

/// How convolution and pooling pads are chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Padding {
    /// Begin pads for every spatial axis, then end pads (ONNX `pads` order).
    Explicit(Vec<usize>),
    /// `SAME_UPPER`: output = ceil(input / stride); odd padding goes at the end.
    SameUpper,
    /// `SAME_LOWER`: like `SameUpper`, odd padding goes at the beginning.
    SameLower,
}

/// Attributes shared by Conv and ConvTranspose.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    /// Spatial kernel size (from the weight's shape when the attribute is absent).
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub padding: Padding,
    pub group: usize,
}

/// `ConvTranspose`-only attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTransposeAttrs {
    pub conv: ConvAttrs,
    pub output_padding: Vec<usize>,
    /// Explicit spatial output shape; when set, pads are derived from it.
    pub output_shape: Option<Vec<usize>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub padding: Padding,
    pub ceil_mode: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolKind {
    /// Maximum. A MaxPool node may have a second output, `Indices` (i64): the
    /// flat position of each maximum in X, counting batch and channel planes
    /// row-major and the spatial position within a plane row-major, or
    /// column-major when `column_major_indices` (ONNX `storage_order = 1`).
    Max { column_major_indices: bool },
    /// Average; `count_include_pad` decides whether pads count in the divisor.
    Average { count_include_pad: bool },
}

/// Elementwise single-input operators, parameterised where ONNX is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Relu,
    LeakyRelu { alpha: f32 },
    Sigmoid,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    Tanh,
    Elu { alpha: f32 },
    Selu { alpha: f32, gamma: f32 },
    Softplus,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Neg,
    Abs,
    Erf,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Sign,
    /// Logical not (bool → bool).
    Not,
}

/// Elementwise two-input operators with multidirectional broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// `PRelu(x, slope)`: `x < 0 ? slope·x : x`.
    PRelu,
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
    Equal,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    /// Whether the result is bool regardless of the operand type.
    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Greater | Less | GreaterOrEqual | LessOrEqual | Equal | And | Or | Xor)
    }
}

/// N-ary elementwise operators with broadcasting (`Sum`, `Mean`, `Max`, `Min`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VariadicOp {
    Sum,
    Mean,
    Max,
    Min,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Mean,
    Max,
    Min,
    Sum,
    Prod,
    L2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    /// Wrap-around: the axis repeats periodically, as if on a torus.
    Wrap,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ResizeMode {
    Nearest,
    Linear,
    /// Keys' cubic convolution with parameter `a` (ONNX `cubic_coeff_a`).
    Cubic { coeff_a: f32 },
}

/// Resize's `coordinate_transformation_mode`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CoordinateTransform {
    HalfPixel,
    /// Like `HalfPixel`, shifted so the input's centre maps to the output's
    /// centre when the output length was rounded.
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    /// Samples the region the `roi` input gives (as fractions of each axis,
    /// starts then ends) with align-corners spacing; outputs whose source
    /// falls outside the input get `extrapolation_value`.
    TfCropAndResize { extrapolation_value: f32 },
}

/// Resize's `nearest_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// Resize's `keep_aspect_ratio_policy`, which applies to `sizes` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspectRatioPolicy {
    /// Each resized axis gets exactly its requested size.
    Stretch,
    /// One scale for every resized axis, the smallest `size / input`: the
    /// result fits within the requested sizes.
    NotLarger,
    /// One scale for every resized axis, the largest `size / input`: the
    /// result covers the requested sizes.
    NotSmaller,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coordinate_transform: CoordinateTransform,
    pub nearest_mode: NearestMode,
    /// The axes that `scales` or `sizes` list, in their order (distinct,
    /// non-negative); `None` means every axis in order.
    pub axes: Option<Vec<usize>>,
    pub keep_aspect_ratio: AspectRatioPolicy,
    /// Gives taps outside the input weight 0 and renormalises the rest
    /// (linear and cubic modes).
    pub exclude_outside: bool,
    /// Linear and cubic: when shrinking an axis, stretch the filter by
    /// 1/scale so every input element contributes.
    pub antialias: bool,
}

impl ResizeAttrs {
    /// Resizes every axis, takes `sizes` as given, clamps taps to the edge and
    /// does not antialias.
    pub fn new(mode: ResizeMode, coordinate_transform: CoordinateTransform, nearest_mode: NearestMode) -> ResizeAttrs {
        ResizeAttrs {
            mode,
            coordinate_transform,
            nearest_mode,
            axes: None,
            keep_aspect_ratio: AspectRatioPolicy::Stretch,
            exclude_outside: false,
            antialias: false,
        }
    }
}

/// An operator and its attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // ── conv and pooling ──
    /// Inputs: X, W, B?.
    Conv(ConvAttrs),
    /// Inputs: X, W, B?.
    ConvTranspose(ConvTransposeAttrs),
    /// Inference-mode batch norm. Inputs: X, scale, bias, mean, var.
    BatchNorm { epsilon: f32 },
    /// Inputs: X.
    Pool { kind: PoolKind, attrs: PoolAttrs },
    /// Inputs: X. Reduces every spatial axis, keeping them as size 1.
    GlobalPool { kind: PoolKind },
    /// Inputs: X.
    Lrn { size: usize, alpha: f32, beta: f32, bias: f32 },

    // ── matrix ──
    /// `alpha·A'·B' + beta·C`. Inputs: A, B, C?.
    Gemm { alpha: f32, beta: f32, trans_a: bool, trans_b: bool },
    /// numpy `matmul`. Inputs: A, B.
    MatMul,

    // ── elementwise ──
    /// Inputs: X.
    Unary(UnaryOp),
    /// Inputs: A, B.
    Binary(BinaryOp),
    /// Inputs: one or more.
    Variadic(VariadicOp),
    /// Inputs: X, min?, max? (scalars).
    Clip,
    /// Inputs: condition (bool), X, Y.
    Where,

    // ── softmax and normalisation ──
    /// Along one axis. `log` selects LogSoftmax. `coerce_2d` keeps the
    /// opset < 13 meaning: `axis` and every axis after it are normalised
    /// jointly (the input viewed as 2-D); the front end sets it only when that
    /// differs from the single-axis form. Inputs: X.
    Softmax { axis: i64, log: bool, coerce_2d: bool },
    /// Inputs: X, scale, bias?.
    LayerNorm { axis: i64, epsilon: f32 },
    /// Inputs: X, scale, bias.
    InstanceNorm { epsilon: f32 },

    // ── shape and indexing ──
    /// Inputs: X.
    Identity,
    /// Inference-time dropout: nothing is dropped. Inputs: X. Outputs: X and,
    /// optionally, the `mask`: an all-true bool tensor of X's shape.
    Dropout,
    /// Inputs: X.
    Flatten { axis: i64 },
    /// Inputs: data, shape?. Without `shape` the output's (folded) type is the target.
    Reshape { allowzero: bool },
    /// Inputs: X.
    Transpose { perm: Vec<usize> },
    /// Inputs: one or more.
    Concat { axis: i64 },
    /// Inputs: X, split?. Without `split` the axis is divided evenly among the outputs.
    Split { axis: i64 },
    /// Inputs: data, starts, ends, axes?, steps?.
    Slice,
    /// Inputs: data, axes?.
    Squeeze,
    /// Inputs: data, axes.
    Unsqueeze,
    /// Inputs: data, indices.
    Gather { axis: i64 },
    /// Inputs: X. Output: i64 dims `start..end`.
    Shape { start: i64, end: Option<i64> },
    /// Inputs: X. Output: i64 scalar element count.
    Size,
    /// Inputs: X, shape?. Without `shape` the output's type is the target.
    Expand,
    /// Inputs: X, repeats.
    Tile,
    /// Inputs: X.
    Cast { to: DType },
    /// Inputs: data, pads, constant_value?, axes?.
    Pad { mode: PadMode },
    /// Inputs: X, roi? (only with `TfCropAndResize`), scales?, sizes?.
    Resize(ResizeAttrs),
    /// Inputs: start, limit, delta (scalars).
    Range,
    /// Inputs: X, K. Outputs: values, indices (i64).
    TopK { axis: i64, largest: bool, sorted: bool },
    /// Inputs: shape?. Without `shape` the output's type gives the shape.
    ConstantOfShape { value: Tensor },

    // ── reductions ──
    /// Inputs: data, axes?.
    Reduce { op: ReduceOp, keepdims: bool, noop_with_empty_axes: bool },
    /// Inputs: data. Output: i64 indices.
    ArgReduce { max: bool, axis: i64, keepdims: bool, select_last_index: bool },

    // ── one-hot ──
    /// Inputs: indices, depth, values ([off, on]).
    OneHot { axis: i64 },

    // ── control flow ──
    /// Inputs: cond (bool, one element). The node's two regions are the
    /// `then` and `else` branches; its outputs are the chosen branch's yields.
    If,
}

/// The op families; each has one file in the front end, inference and the
/// interpreter, and dispatch goes through [`Op::family`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Convolution, pooling, softmax and the normalisations.
    Conv,
    /// Matrix products and elementwise arithmetic, logic and casts.
    Elementwise,
    /// Shape manipulation, indexing and data movement.
    Shape,
    /// Reductions, arg-reductions, TopK and OneHot.
    Reduce,
    /// `If`.
    Control,
}

impl Op {
    /// The family whose files implement this op.
    pub fn family(&self) -> Family {
        match self {
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::BatchNorm { .. }
            | Op::Pool { .. }
            | Op::GlobalPool { .. }
            | Op::Lrn { .. }
            | Op::LayerNorm { .. }
            | Op::InstanceNorm { .. }
            | Op::Softmax { .. } => Family::Conv,
            Op::Gemm { .. }
            | Op::MatMul
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Variadic(_)
            | Op::Clip
            | Op::Where
            | Op::Cast { .. } => Family::Elementwise,
            Op::Identity
            | Op::Dropout
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Gather { .. }
            | Op::Shape { .. }
            | Op::Size
            | Op::Expand
            | Op::Tile
            | Op::Pad { .. }
            | Op::Resize(_)
            | Op::Range
            | Op::ConstantOfShape { .. } => Family::Shape,
            Op::Reduce { .. } | Op::ArgReduce { .. } | Op::TopK { .. } | Op::OneHot { .. } => Family::Reduce,
            Op::If => Family::Control,
        }
    }

    /// A short, stable operator name for diagnostics and printing.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Pool { kind: PoolKind::Max { .. }, .. } => "MaxPool",
            Op::Pool { kind: PoolKind::Average { .. }, .. } => "AveragePool",
            Op::GlobalPool { kind: PoolKind::Max { .. } } => "GlobalMaxPool",
            Op::GlobalPool { kind: PoolKind::Average { .. } } => "GlobalAveragePool",
            Op::Lrn { .. } => "LRN",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Unary(u) => unary_name(*u),
            Op::Binary(b) => binary_name(*b),
            Op::Variadic(VariadicOp::Sum) => "Sum",
            Op::Variadic(VariadicOp::Mean) => "Mean",
            Op::Variadic(VariadicOp::Max) => "Max",
            Op::Variadic(VariadicOp::Min) => "Min",
            Op::Clip => "Clip",
            Op::Where => "Where",
            Op::Softmax { log: false, .. } => "Softmax",
            Op::Softmax { log: true, .. } => "LogSoftmax",
            Op::LayerNorm { .. } => "LayerNormalization",
            Op::InstanceNorm { .. } => "InstanceNormalization",
            Op::Identity => "Identity",
            Op::Dropout => "Dropout",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Slice => "Slice",
            Op::Squeeze => "Squeeze",
            Op::Unsqueeze => "Unsqueeze",
            Op::Gather { .. } => "Gather",
            Op::Shape { .. } => "Shape",
            Op::Size => "Size",
            Op::Expand => "Expand",
            Op::Tile => "Tile",
            Op::Cast { .. } => "Cast",
            Op::Pad { .. } => "Pad",
            Op::Resize(_) => "Resize",
            Op::Range => "Range",
            Op::TopK { .. } => "TopK",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Reduce { op, .. } => match op {
                ReduceOp::Mean => "ReduceMean",
                ReduceOp::Max => "ReduceMax",
                ReduceOp::Min => "ReduceMin",
                ReduceOp::Sum => "ReduceSum",
                ReduceOp::Prod => "ReduceProd",
                ReduceOp::L2 => "ReduceL2",
            },
            Op::ArgReduce { max: true, .. } => "ArgMax",
            Op::ArgReduce { max: false, .. } => "ArgMin",
            Op::OneHot { .. } => "OneHot",
            Op::If => "If",
        }
    }

    /// The attributes in a compact, stable text form (empty when there are none).
    pub fn attrs_text(&self) -> String {
        let dbg = match self {
            Op::Conv(a) => format!("{a:?}"),
            Op::ConvTranspose(a) => format!("{a:?}"),
            Op::BatchNorm { epsilon } => format!("epsilon: {epsilon:?}"),
            Op::Pool { kind, attrs } => match kind {
                PoolKind::Max { column_major_indices: false } => format!("{attrs:?}"),
                PoolKind::Max { column_major_indices: true } => format!("{attrs:?}, column_major_indices: true"),
                PoolKind::Average { count_include_pad } => format!("{attrs:?}, count_include_pad: {count_include_pad}"),
            },
            Op::GlobalPool { .. } | Op::MatMul | Op::Clip | Op::Where | Op::Identity | Op::Dropout | Op::Slice => String::new(),
            Op::Squeeze | Op::Unsqueeze | Op::Size | Op::Expand | Op::Tile | Op::Range | Op::If => String::new(),
            Op::Unary(u) => strip_variant(&format!("{u:?}")),
            Op::Binary(_) | Op::Variadic(_) => String::new(),
            Op::Lrn { size, alpha, beta, bias } => format!("size: {size}, alpha: {alpha:?}, beta: {beta:?}, bias: {bias:?}"),
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
                format!("alpha: {alpha:?}, beta: {beta:?}, trans_a: {trans_a}, trans_b: {trans_b}")
            }
            Op::Softmax { axis, coerce_2d: false, .. } => format!("axis: {axis}"),
            Op::Softmax { axis, coerce_2d: true, .. } => format!("axis: {axis}, coerce_2d: true"),
            Op::LayerNorm { axis, epsilon } => format!("axis: {axis}, epsilon: {epsilon:?}"),
            Op::InstanceNorm { epsilon } => format!("epsilon: {epsilon:?}"),
            Op::Flatten { axis } => format!("axis: {axis}"),
            Op::Reshape { allowzero } => format!("allowzero: {allowzero}"),
            Op::Transpose { perm } => format!("perm: {perm:?}"),
            Op::Concat { axis } | Op::Split { axis } | Op::Gather { axis } | Op::OneHot { axis } => format!("axis: {axis}"),
            Op::Shape { start, end } => format!("start: {start}, end: {end:?}"),
            Op::Cast { to } => format!("to: {to}"),
            Op::Pad { mode } => format!("mode: {mode:?}"),
            Op::Resize(a) => format!("{a:?}"),
            Op::TopK { axis, largest, sorted } => format!("axis: {axis}, largest: {largest}, sorted: {sorted}"),
            Op::ConstantOfShape { value } => format!("value: {:?}", value.to_f32_vec()),
            Op::Reduce { keepdims, noop_with_empty_axes, .. } => {
                format!("keepdims: {keepdims}, noop_with_empty_axes: {noop_with_empty_axes}")
            }
            Op::ArgReduce { axis, keepdims, select_last_index, .. } => {
                format!("axis: {axis}, keepdims: {keepdims}, select_last_index: {select_last_index}")
            }
        };
        strip_struct_name(&dbg)
    }
}

fn strip_struct_name(s: &str) -> String {
    // "ConvAttrs { kernel: .. }" → "kernel: .."; keeps the printer free of Rust type names.
    match (s.find('{'), s.rfind('}')) {
        (Some(open), Some(close)) if s[..open].trim().chars().all(|c| c.is_alphanumeric()) && close > open => {
            s[open + 1..close].trim().to_string()
        }
        _ => s.to_string(),
    }
}

fn strip_variant(s: &str) -> String {
    match s.find('{') {
        Some(_) => strip_struct_name(s),
        None => String::new(),
    }
}

fn unary_name(u: UnaryOp) -> &'static str {
    use UnaryOp::*;
    match u {
        Relu => "Relu",
        LeakyRelu { .. } => "LeakyRelu",
        Sigmoid => "Sigmoid",
        HardSigmoid { .. } => "HardSigmoid",
        HardSwish => "HardSwish",
        Tanh => "Tanh",
        Elu { .. } => "Elu",
        Selu { .. } => "Selu",
        Softplus => "Softplus",
        Exp => "Exp",
        Log => "Log",
        Sqrt => "Sqrt",
        Reciprocal => "Reciprocal",
        Neg => "Neg",
        Abs => "Abs",
        Erf => "Erf",
        Floor => "Floor",
        Ceil => "Ceil",
        Round => "Round",
        Sign => "Sign",
        Not => "Not",
    }
}

fn binary_name(b: BinaryOp) -> &'static str {
    use BinaryOp::*;
    match b {
        Add => "Add",
        Sub => "Sub",
        Mul => "Mul",
        Div => "Div",
        Pow => "Pow",
        Max => "Max",
        Min => "Min",
        PRelu => "PRelu",
        Greater => "Greater",
        Less => "Less",
        GreaterOrEqual => "GreaterOrEqual",
        LessOrEqual => "LessOrEqual",
        Equal => "Equal",
        And => "And",
        Or => "Or",
        Xor => "Xor",
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attrs = self.attrs_text();
        if attrs.is_empty() {
            f.write_str(self.name())
        } else {
            write!(f, "{}{{{}}}", self.name(), attrs)
        }
    }
}
