//! Cases for the cheap kernels: Softmax/LogSoftmax over any axis,
//! ReduceSum/Mean/Max/Min over any axes, unfolded BatchNormalization, unary
//! ops, broadcasting binary ops (along the batch, inner axes and scalars) and
//! the reshape-like copies, over batches 1..=64.

use super::harness::{check_against_interpreter, data, expect_kernel, kernels, optimize_and_lower, Builder, Tolerance};
use d2nn_runtime::kernels::reduce::ReduceKind;
use d2nnc::ir::{BinaryOp, Dim, Op, ReduceOp, UnaryOp, ValueId, VariadicOp};
use d2nnc::plan::Kernel;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

/// Elements per input per case and batch.
const BUDGET: usize = 60_000;

fn batch() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(1usize), 4 => 1usize..=64, 1 => Just(64usize)]
}

/// Non-batch dims, some of them 1 (the kernels drop or merge size-1 axes).
fn dims(rank: std::ops::RangeInclusive<usize>, max: usize) -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1 => Just(1usize), 3 => 1..=max], rank)
}

/// Both batch sizes, shrunk so `per_sample` elements times the batch fit the budget.
fn fit(batches: (usize, usize), per_sample: usize) -> [usize; 2] {
    [batches.0, batches.1].map(|b| b.min((BUDGET / per_sample.max(1)).max(1)))
}

#[derive(Clone, Debug)]
pub struct SoftmaxCase {
    pub batches: [usize; 2],
    pub dims: Vec<usize>,
    pub axis: i64,
    pub log: bool,
    pub coerce_2d: bool,
    pub seed: u64,
}

pub fn softmax_case() -> impl Strategy<Value = SoftmaxCase> {
    (dims(1..=3, 12), any::<bool>()).prop_flat_map(|(mut dims, long_rows)| {
        if long_rows {
            // Rows longer than any vector width.
            *dims.last_mut().expect("rank ≥ 1") += 90;
        }
        let rank = dims.len() as i64 + 1;
        ((batch(), 1usize..=4), Just(dims), -rank..rank, any::<bool>(), any::<bool>(), any::<u64>()).prop_map(|(b, dims, axis, log, coerce_2d, seed)| SoftmaxCase {
            batches: fit(b, dims.iter().product()),
            dims,
            axis,
            log,
            coerce_2d,
            seed,
        })
    })
}

/// Over an axis past the batch, the softmax kernel with the row length and
/// stride of that axis (every axis from it on for the opset < 13 form); over
/// the batch, the reference. Both equal the interpreter bit for bit.
pub fn check_softmax(c: &SoftmaxCase) -> Result<(), TestCaseError> {
    let mut b = Builder::new(c.seed);
    let x = b.input("x", &c.dims);
    let y = b.op("softmax", Op::Softmax { axis: c.axis, log: c.log, coerce_2d: c.coerce_2d }, &[x]);
    let mut graph = b.finish(vec![y]);
    let program = optimize_and_lower(&mut graph);
    let axis = if c.axis < 0 { c.axis + c.dims.len() as i64 + 1 } else { c.axis } as usize;
    if axis == 0 {
        expect_kernel(&program, "softmax", "the reference (batch axis)", |k| matches!(k, Kernel::Reference))?;
    } else {
        let after: usize = c.dims[axis..].iter().product();
        let (len, inner) = if c.coerce_2d { (c.dims[axis - 1] * after, 1) } else { (c.dims[axis - 1], after) };
        let log = c.log;
        expect_kernel(&program, "softmax", &format!("the softmax kernel with len {len}, inner {inner}"), |k| {
            matches!(k, Kernel::Softmax { log: l, len: n, inner: i } if *l == log && *n == len && *i == inner)
        })?;
    }
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::EXACT)
}

#[derive(Clone, Debug)]
pub struct ReduceCase {
    pub batches: [usize; 2],
    pub dims: Vec<usize>,
    pub op: ReduceOp,
    /// Reduced axes of `[N, dims…]`; none reduces every axis.
    pub reduced: Vec<bool>,
    pub keepdims: bool,
    /// Name the axes from the end (negative).
    pub negative: bool,
    pub seed: u64,
}

pub fn reduce_case() -> impl Strategy<Value = ReduceCase> {
    dims(1..=3, 8).prop_flat_map(|dims| {
        let rank = dims.len() + 1;
        let op = select(vec![ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min]);
        // The batch axis is reduced rarely (over the batch, or every axis).
        let reduced = (prop_oneof![5 => Just(false), 1 => Just(true)], vec(any::<bool>(), rank - 1)).prop_map(|(batch, rest)| [vec![batch], rest].concat());
        ((batch(), 1usize..=4), Just(dims), op, reduced, any::<bool>(), any::<bool>(), any::<u64>()).prop_map(|(b, dims, op, reduced, keepdims, negative, seed)| ReduceCase {
            batches: fit(b, dims.iter().product()),
            dims,
            op,
            reduced,
            keepdims,
            negative,
            seed,
        })
    })
}

/// The reduction kernel a case should get.
enum ExpectedReduce {
    /// `Kernel::Reduce { len, inner }`.
    Block(usize, usize),
    /// `Kernel::ReduceOverBatch` with `len = N × per_sample`.
    OverBatch(usize, usize),
    Reference,
}

impl ReduceCase {
    /// The fast kernel when the reduced axes that are not size 1 form one
    /// block (the batch is never size 1): `Reduce` when the batch is outside
    /// it, `ReduceOverBatch` when it is inside.
    fn expected(&self) -> ExpectedReduce {
        let full: Vec<Option<usize>> = std::iter::once(None).chain(self.dims.iter().map(|&d| Some(d))).collect();
        let all = !self.reduced.contains(&true);
        let significant = |i: usize| full[i] != Some(1);
        let block: Vec<usize> = (0..full.len()).filter(|&i| (all || self.reduced[i]) && significant(i)).collect();
        let (Some(&first), Some(&last)) = (block.first(), block.last()) else { return ExpectedReduce::Block(1, 1) };
        if (first..=last).any(|i| !(all || self.reduced[i]) && significant(i)) {
            return ExpectedReduce::Reference;
        }
        let inner: usize = self.dims[last..].iter().product();
        if first == 0 {
            ExpectedReduce::OverBatch(self.dims[..last].iter().product(), inner)
        } else {
            ExpectedReduce::Block(self.dims[first - 1..last].iter().product(), inner)
        }
    }
}

/// The reduction kernel exactly when the reduced axes form one block (over
/// the batch or not); Max and Min equal the interpreter exactly, Sum and
/// Mean within f64 reordering of the reduced elements.
pub fn check_reduce(c: &ReduceCase) -> Result<(), TestCaseError> {
    let mut b = Builder::new(c.seed);
    let x = b.input("x", &c.dims);
    let rank = c.dims.len() as i64 + 1;
    let axes: Vec<i64> = (0..rank).filter(|&i| c.reduced[i as usize]).map(|i| if c.negative { i - rank } else { i }).collect();
    let axes = (!axes.is_empty()).then(|| b.ints("axes", axes));
    let y = b.node("reduce", Op::Reduce { op: c.op, keepdims: c.keepdims, noop_with_empty_axes: false }, vec![Some(x), axes]);
    let mut graph = b.finish(vec![y]);
    let program = optimize_and_lower(&mut graph);
    let kind = match c.op {
        ReduceOp::Sum => ReduceKind::Sum,
        ReduceOp::Mean => ReduceKind::Mean,
        ReduceOp::Max => ReduceKind::Max,
        _ => ReduceKind::Min,
    };
    match c.expected() {
        ExpectedReduce::Block(len, inner) => expect_kernel(&program, "reduce", &format!("the reduction kernel with len {len}, inner {inner}"), |k| {
            matches!(k, Kernel::Reduce { kind: kd, len: l, inner: i } if *kd == kind && *l == len && *i == inner)
        })?,
        ExpectedReduce::OverBatch(per_sample, inner) => expect_kernel(&program, "reduce", &format!("the reduction over the batch with len N·{per_sample}, inner {inner}"), |k| {
            matches!(k, Kernel::ReduceOverBatch { kind: kd, len: Dim::Sym { factor, .. }, inner: i } if *kd == kind && *factor == per_sample && *i == inner)
        })?,
        ExpectedReduce::Reference => expect_kernel(&program, "reduce", "the reference", |k| matches!(k, Kernel::Reference))?,
    }
    let tol = match c.op {
        ReduceOp::Max | ReduceOp::Min => Tolerance::EXACT,
        // Every element at the largest batch, an upper bound on any output's terms.
        _ => Tolerance::f64_sum(64 * c.dims.iter().product::<usize>()),
    };
    check_against_interpreter(&graph, program, &c.batches, c.seed, tol)
}

#[derive(Clone, Debug)]
pub struct BatchNormCase {
    pub batches: [usize; 2],
    pub channels: usize,
    pub spatial: Vec<usize>,
    pub seed: u64,
}

pub fn batch_norm_case() -> impl Strategy<Value = BatchNormCase> {
    ((batch(), 1usize..=4), 1usize..=16, dims(0..=2, 9), any::<u64>()).prop_map(|(b, channels, spatial, seed)| BatchNormCase {
        batches: fit(b, channels * spatial.iter().product::<usize>()),
        channels,
        spatial,
        seed,
    })
}

/// A batch norm with no conv to fold into runs its own kernel, which folds
/// the statistics into one f64 factor: within f64 rounding of the terms
/// `scale·(x − mean)/√(var + ε)` and `bias`.
pub fn check_batch_norm(c: &BatchNormCase) -> Result<(), TestCaseError> {
    let mut b = Builder::new(c.seed);
    let x = b.input("x", &[&[c.channels][..], &c.spatial].concat());
    let scale = b.random("scale", &[c.channels], 0.5);
    let bias = b.random("bias", &[c.channels], 1.0);
    let mean = b.random("mean", &[c.channels], 0.5);
    let var = b.constant("var", &[c.channels], data(c.channels, c.seed ^ 0x5A).into_iter().map(|v| v.abs() + 0.01).collect());
    let y = b.op("bn", Op::BatchNorm { epsilon: 1e-5 }, &[x, scale, bias, mean, var]);
    let mut graph = b.finish(vec![y]);
    let program = optimize_and_lower(&mut graph);
    let plane: usize = c.spatial.iter().product();
    expect_kernel(&program, "bn", "the batch norm kernel", |k| matches!(k, Kernel::BatchNorm { plane: p, .. } if *p == plane))?;
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::f64_sum(4))
}

#[derive(Clone, Debug)]
pub struct LayerNormCase {
    pub batches: [usize; 2],
    pub dims: Vec<usize>,
    /// Over `[N, dims…]`; 0 normalises the batch too.
    pub axis: i64,
    /// Scale and bias shapes: the normalised dims with some set to 1 and
    /// some leading ones dropped (they broadcast onto the normalised dims).
    pub scale: (Vec<bool>, usize),
    pub bias: Option<(Vec<bool>, usize)>,
    pub epsilon: f32,
    pub seed: u64,
}

pub fn layer_norm_case() -> impl Strategy<Value = LayerNormCase> {
    dims(1..=3, 12).prop_flat_map(|dims| {
        let rank = dims.len() as i64 + 1;
        let shape = || (vec(prop_oneof![3 => Just(true), 1 => Just(false)], 4), 0usize..=4);
        let axis = prop_oneof![1 => Just(0i64), 6 => 1..rank].prop_flat_map(move |a| prop_oneof![Just(a), Just(a - rank)]);
        ((batch(), 1usize..=4), Just(dims), axis, shape(), prop::option::of(shape()), select(vec![1e-5f32, 1e-3, 0.5]), any::<u64>()).prop_map(
            |(b, dims, axis, scale, bias, epsilon, seed)| LayerNormCase { batches: fit(b, dims.iter().product()), dims, axis, scale, bias, epsilon, seed },
        )
    })
}

/// The layer norm kernel whenever the batch is not normalised, bit for bit
/// the interpreter's (the runtime sums in its order, in f64).
pub fn check_layer_norm(c: &LayerNormCase) -> Result<(), TestCaseError> {
    let mut b = Builder::new(c.seed);
    let x = b.input("x", &c.dims);
    let rank = c.dims.len() + 1;
    let axis = if c.axis < 0 { c.axis + rank as i64 } else { c.axis } as usize;
    // The normalised dims, past the batch (the batch's own size is 1 here: a shape for scale and bias).
    let normalized: Vec<usize> = if axis == 0 { [&[1][..], &c.dims].concat() } else { c.dims[axis - 1..].to_vec() };
    let shaped = |(mask, skip): &(Vec<bool>, usize)| -> Vec<usize> {
        let dims: Vec<usize> = normalized.iter().zip(mask.iter().chain(std::iter::repeat(&true))).map(|(&d, &keep)| if keep { d } else { 1 }).collect();
        dims[(*skip).min(dims.len())..].to_vec()
    };
    let scale = b.random("scale", &shaped(&c.scale), 1.0);
    let bias = c.bias.as_ref().map(|s| b.random("bias", &shaped(s), 1.0));
    let y = b.node("ln", Op::LayerNorm { axis: c.axis, epsilon: c.epsilon }, vec![Some(x), Some(scale), bias]);
    let mut graph = b.finish(vec![y]);
    let program = optimize_and_lower(&mut graph);
    if axis == 0 {
        expect_kernel(&program, "ln", "the reference (the batch is normalised)", |k| matches!(k, Kernel::Reference))?;
    } else {
        let row: usize = normalized.iter().product();
        expect_kernel(&program, "ln", &format!("the layer norm kernel over rows of {row}"), |k| matches!(k, Kernel::LayerNorm { geometry, .. } if geometry.row == row))?;
    }
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::EXACT)
}

/// The unary ops with a fast kernel, and Clip with constant (or absent) bounds.
#[derive(Clone, Copy, Debug)]
pub enum UnaryCaseOp {
    Unary(UnaryOp),
    Clip(Option<f32>, Option<f32>),
}

#[derive(Clone, Debug)]
pub struct UnaryCase {
    pub batches: [usize; 2],
    pub dims: Vec<usize>,
    pub op: UnaryCaseOp,
    pub seed: u64,
}

pub fn unary_case() -> impl Strategy<Value = UnaryCase> {
    use UnaryOp::*;
    let ops = vec![
        Relu,
        LeakyRelu { alpha: 0.1 },
        Sigmoid,
        HardSigmoid { alpha: 0.2, beta: 0.5 },
        HardSwish,
        Tanh,
        Elu { alpha: 0.7 },
        Selu { alpha: 1.673_263_2, gamma: 1.050_701 },
        Softplus,
        Exp,
        Log,
        Sqrt,
        Reciprocal,
        Neg,
        Abs,
        Floor,
        Ceil,
        Round,
        Sign,
    ];
    let bound = prop_oneof![1 => Just(None), 4 => select(vec![-2.0f32, -0.5, 0.0, 1.0, 3.0]).prop_map(Some)];
    // Bounds may cross (min > max): every element becomes max.
    let op = prop_oneof![4 => select(ops).prop_map(UnaryCaseOp::Unary), 1 => (bound.clone(), bound).prop_map(|(lo, hi)| UnaryCaseOp::Clip(lo, hi))];
    ((batch(), 1usize..=4), dims(0..=3, 9), op, any::<u64>()).prop_map(|(b, dims, op, seed)| UnaryCase { batches: fit(b, dims.iter().product()), dims, op, seed })
}

/// Every fast unary op equals the interpreter bit for bit (the runtime
/// evaluates them with the interpreter's expressions, in f64 where it does).
pub fn check_unary(c: &UnaryCase) -> Result<(), TestCaseError> {
    let mut b = Builder::new(c.seed);
    let x = b.input("x", &c.dims);
    let y = match c.op {
        UnaryCaseOp::Unary(op) => b.op("unary", Op::Unary(op), &[x]),
        UnaryCaseOp::Clip(lo, hi) => {
            let lo = lo.map(|v| b.constant("lo", &[], vec![v]));
            let hi = hi.map(|v| b.constant("hi", &[], vec![v]));
            b.node("unary", Op::Clip, vec![Some(x), lo, hi])
        }
    };
    let mut graph = b.finish(vec![y]);
    let program = optimize_and_lower(&mut graph);
    expect_kernel(&program, "unary", "the unary kernel", |k| matches!(k, Kernel::Unary(_)))?;
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::EXACT)
}

/// The second operand of a binary op, against a first operand `[N, dims…]`
/// (some dims 1).
#[derive(Clone, Debug)]
pub enum Other {
    /// Input `[N, dims…]`, masked to 1 where false.
    Batched(Vec<bool>),
    /// `[1, dims…]` (broadcast along the batch), masked; an input or a constant.
    BatchOne(Vec<bool>, bool),
    /// A constant of the trailing dims from `skip` on, masked.
    Trailing(usize, Vec<bool>),
    Scalar,
}

#[derive(Clone, Debug)]
pub struct BinaryCase {
    pub batches: [usize; 2],
    pub dims: Vec<usize>,
    /// Operation: 0..7 the binary ops, 7..10 two-input Sum, Max, Min.
    pub op: usize,
    pub first: Vec<bool>,
    pub other: Other,
    /// Whether the batch-carrying operand comes second.
    pub swap: bool,
    pub seed: u64,
}

const BINARY_OPS: [BinaryOp; 7] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min, BinaryOp::PRelu];
const PRELU: usize = 6;

pub fn binary_case() -> impl Strategy<Value = BinaryCase> {
    dims(0..=3, 6).prop_flat_map(|dims| {
        let rank = dims.len();
        let mask = || vec(prop_oneof![3 => Just(true), 1 => Just(false)], rank);
        let other = prop_oneof![
            2 => mask().prop_map(Other::Batched),
            2 => (mask(), any::<bool>()).prop_map(|(m, input)| Other::BatchOne(m, input)),
            2 => (0..=rank, mask()).prop_map(|(skip, m)| Other::Trailing(skip, m)),
            1 => Just(Other::Scalar),
        ];
        ((batch(), 1usize..=4), Just(dims), 0usize..10, mask(), other, any::<bool>(), any::<u64>()).prop_map(|(b, dims, op, mut first, other, mut swap, seed)| {
            if op == PRELU {
                // PRelu broadcasts the slope to X only: X is the full shape.
                first.fill(true);
                swap = false;
            }
            BinaryCase { batches: fit(b, dims.iter().product()), dims, op, first, other, swap, seed }
        })
    })
}

/// Binary ops whose operands carry the batch outermost or not at all run the
/// strided kernel and equal the interpreter bit for bit.
pub fn check_binary(c: &BinaryCase) -> Result<(), TestCaseError> {
    let mut b = Builder::new(c.seed);
    let masked = |mask: &[bool]| c.dims.iter().zip(mask).map(|(&d, &keep)| if keep { d } else { 1 }).collect::<Vec<usize>>();
    let first = b.input("a", &masked(&c.first));
    let other: ValueId = match &c.other {
        Other::Batched(m) => b.input("b", &masked(m)),
        Other::BatchOne(m, true) => b.input_shaped("b", std::iter::once(1).chain(masked(m)).map(Dim::Known).collect()),
        Other::BatchOne(m, false) => b.random("b", &[&[1][..], &masked(m)].concat(), 1.0),
        Other::Trailing(skip, m) => b.random("b", &masked(m)[*skip..], 1.0),
        Other::Scalar => b.random("b", &[], 1.0),
    };
    let operands = if c.swap { [other, first] } else { [first, other] };
    let op = match c.op {
        i if i < BINARY_OPS.len() => Op::Binary(BINARY_OPS[i]),
        7 => Op::Variadic(VariadicOp::Sum),
        8 => Op::Variadic(VariadicOp::Max),
        _ => Op::Variadic(VariadicOp::Min),
    };
    let y = b.op("binary", op, &operands);
    let mut graph = b.finish(vec![y]);
    let program = optimize_and_lower(&mut graph);
    expect_kernel(&program, "binary", "the broadcasting binary kernel", |k| matches!(k, Kernel::Binary(_)))?;
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::EXACT)
}

#[derive(Clone, Debug)]
pub struct CopyCase {
    pub batches: [usize; 2],
    pub dims: [usize; 3],
    pub seed: u64,
}

pub fn copy_case() -> impl Strategy<Value = CopyCase> {
    ((batch(), 1usize..=4), [1usize..=6, 1usize..=6, 1usize..=6], any::<u64>()).prop_map(|(b, dims, seed)| CopyCase { batches: fit(b, dims.iter().product()), dims, seed })
}

/// Unsqueeze, Squeeze, Flatten, Reshape and Identity move bytes unchanged.
pub fn check_copies(c: &CopyCase) -> Result<(), TestCaseError> {
    let mut b = Builder::new(c.seed);
    let d1 = c.dims[0];
    let x = b.input("x", &c.dims);
    let one = b.ints("one", vec![1]);
    let up = b.op("unsqueeze", Op::Unsqueeze, &[x, one]);
    let down = b.op("squeeze", Op::Squeeze, &[up, one]);
    let flat = b.op("flatten", Op::Flatten { axis: 1 }, &[down]);
    let target = b.ints("target", vec![0, d1 as i64, -1]);
    let back = b.op("reshape", Op::Reshape { allowzero: false }, &[flat, target]);
    let same = b.op("identity", Op::Identity, &[back]);
    let mut graph = b.finish(vec![same, flat]);
    let program = optimize_and_lower(&mut graph);
    let all = kernels(&program);
    prop_assert!(!all.is_empty() && all.iter().all(|(_, k)| matches!(k, Kernel::Copy)), "every step should copy: {all:?}");
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::EXACT)
}
