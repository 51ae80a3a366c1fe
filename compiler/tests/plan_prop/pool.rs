//! Pooling cases: 1-D and 2-D MaxPool and AveragePool (kernels 1..=4,
//! strides, dilations, explicit and SAME pads, count_include_pad, ceil_mode)
//! and the global pools, over batches 1..=64.

use super::harness::{check_against_interpreter, expect_kernel, optimize_and_lower, Builder, Tolerance};
use d2nn_runtime::kernels::pool::GlobalKind;
use d2nnc::ir::{Graph, Op, Padding, PoolAttrs, PoolKind};
use d2nnc::plan::Kernel;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Window taps per case and batch.
const BUDGET: usize = 200_000;

#[derive(Clone, Debug)]
pub struct PoolCase {
    pub batches: [usize; 2],
    pub channels: usize,
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// `None`: SAME_UPPER / SAME_LOWER by `same_upper`; otherwise begin then end pads.
    pub pads: Option<Vec<usize>>,
    pub same_upper: bool,
    pub max: bool,
    pub count_include_pad: bool,
    pub ceil_mode: bool,
    pub seed: u64,
}

fn batch() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(1usize), 4 => 1usize..=64, 1 => Just(64usize)]
}

pub fn pool_case() -> impl Strategy<Value = PoolCase> {
    (1usize..=2).prop_flat_map(|spatial| {
        let geometry = (vec(1usize..=4, spatial), vec(1usize..=3, spatial), vec(prop_oneof![3 => Just(1usize), 1 => Just(2)], spatial), vec(1usize..=13, spatial));
        // Pads below the kernel, as ONNX Runtime requires; fractions of it drawn here.
        let pads = prop_oneof![3 => vec(0usize..4, 2 * spatial).prop_map(Some), 1 => Just(None)];
        let flags = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>());
        ((batch(), 1usize..=4), 1usize..=8, geometry, pads, flags, any::<u64>()).prop_map(
            move |((b0, b1), channels, (kernel, strides, dilations, mut input), pads, (same_upper, max, count_include_pad, ceil_mode), seed)| {
                let pads = pads.map(|p| p.iter().enumerate().map(|(i, &v)| v % kernel[i % spatial]).collect::<Vec<_>>());
                for i in 0..spatial {
                    let reach = dilations[i] * (kernel[i] - 1) + 1;
                    let padded = pads.as_ref().map_or(0, |p| p[i] + p[spatial + i]);
                    input[i] = input[i].max(reach.saturating_sub(padded)).max(1);
                }
                let taps = channels * input.iter().product::<usize>() * kernel.iter().product::<usize>();
                let batches = [b0, b1].map(|b| b.min((BUDGET / taps).max(1)));
                PoolCase { batches, channels, input, kernel, strides, dilations, pads, same_upper, max, count_include_pad, ceil_mode, seed }
            },
        )
    })
}

fn pool_graph(c: &PoolCase) -> Graph {
    let mut b = Builder::new(c.seed);
    let x = b.input("x", &[&[c.channels][..], &c.input].concat());
    let padding = match (&c.pads, c.same_upper) {
        (Some(p), _) => Padding::Explicit(p.clone()),
        (None, true) => Padding::SameUpper,
        (None, false) => Padding::SameLower,
    };
    let attrs = PoolAttrs { kernel: c.kernel.clone(), strides: c.strides.clone(), dilations: c.dilations.clone(), padding, ceil_mode: c.ceil_mode };
    let kind = if c.max { PoolKind::Max { column_major_indices: false } } else { PoolKind::Average { count_include_pad: c.count_include_pad } };
    let y = b.op("pool", Op::Pool { kind, attrs }, &[x]);
    b.finish(vec![y])
}

/// The pool runs the fast kernel and, as its module promises the reference's
/// taps in the reference's order, equals the interpreter bit for bit.
pub fn check_pool(c: &PoolCase) -> Result<(), TestCaseError> {
    let mut graph = pool_graph(c);
    let program = optimize_and_lower(&mut graph);
    expect_kernel(&program, "pool", "the pooling kernel", |k| matches!(k, Kernel::Pool(_)))?;
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::EXACT)
}

#[derive(Clone, Debug)]
pub struct GlobalCase {
    pub batches: [usize; 2],
    pub channels: usize,
    /// 0 to 2 spatial dims.
    pub spatial: Vec<usize>,
    pub max: bool,
    pub seed: u64,
}

pub fn global_case() -> impl Strategy<Value = GlobalCase> {
    ((batch(), 1usize..=4), 1usize..=40, vec(1usize..=13, 1..=2), any::<bool>(), any::<u64>()).prop_map(|((b0, b1), channels, spatial, max, seed)| {
        let size = channels * spatial.iter().product::<usize>();
        GlobalCase { batches: [b0, b1].map(|b| b.min((BUDGET / size).max(1))), channels, spatial, max, seed }
    })
}

/// GlobalMaxPool equals the interpreter exactly; GlobalAveragePool sums in
/// interleaved f64 partial sums, so within f64 reordering of `plane` terms.
pub fn check_global(c: &GlobalCase) -> Result<(), TestCaseError> {
    let mut b = Builder::new(c.seed);
    let x = b.input("x", &[&[c.channels][..], &c.spatial].concat());
    let kind = if c.max { PoolKind::Max { column_major_indices: false } } else { PoolKind::Average { count_include_pad: false } };
    let y = b.op("global", Op::GlobalPool { kind }, &[x]);
    let mut graph = b.finish(vec![y]);
    let program = optimize_and_lower(&mut graph);
    let plane: usize = c.spatial.iter().product();
    let want = if c.max { GlobalKind::Max } else { GlobalKind::Average };
    expect_kernel(&program, "global", "the global pooling kernel", |k| matches!(k, Kernel::GlobalPool { kind, plane: p } if *kind == want && *p == plane))?;
    let tol = if c.max { Tolerance::EXACT } else { Tolerance::f64_sum(plane) };
    check_against_interpreter(&graph, program, &c.batches, c.seed, tol)
}
