//! The plan's exact kernels of control logic: random comparisons (every
//! numeric dtype, bool equality), `Where` (every data dtype), `And`, `Or`,
//! `Xor` and `Not` of bools, `Cast` (every pair of dtypes), ArgMax/ArgMin
//! and OneHot nodes, broadcasting along the
//! batch, inner axes and scalars, get their fast kernel where its
//! conditions hold, and the plan executor's outputs equal the
//! interpreter's bit for bit at random batch sizes (one executor per
//! thread count, reused as the batch changes). The data are drawn from
//! small sets with NaN, signed zeros, infinities, ties and out-of-range
//! values, so every edge of the reference's semantics is met.

use d2nn_runtime::kernels::logic::BoolOp;
use d2nn_runtime::{DType, Tensor};
use d2nnc::ir::{BinaryOp, Dim, Graph, Op, Symbol, TensorType, UnaryOp, ValueId};
use d2nnc::plan::{Executor, Kernel, Program};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::HashMap;
use std::sync::Arc;

/// Builds a graph node by node, typing each output by inference.
struct Builder {
    g: Graph,
    batch: Symbol,
}

/// Where an operand's leading batch axis comes from.
#[derive(Clone, Copy, Debug)]
enum Lead {
    /// `[N, dims…]`.
    Batch,
    /// `[1, dims…]`.
    One,
    /// `[dims…]` (possibly fewer trailing dims, see the cases).
    None,
}

impl Builder {
    fn new() -> Builder {
        let mut g = Graph::new("plan_logic");
        let batch = g.symbol("N");
        Builder { g, batch }
    }

    fn shape(&self, lead: Lead, dims: &[usize]) -> Vec<Dim> {
        let lead = match lead {
            Lead::Batch => Some(Dim::sym(self.batch)),
            Lead::One => Some(Dim::Known(1)),
            Lead::None => None,
        };
        lead.into_iter().chain(dims.iter().map(|&d| Dim::Known(d))).collect()
    }

    fn input(&mut self, name: &str, dtype: DType, lead: Lead, dims: &[usize]) -> ValueId {
        let shape = self.shape(lead, dims);
        self.g.add_input(name, TensorType::new(dtype, shape))
    }

    fn constant(&mut self, name: &str, t: Tensor) -> ValueId {
        self.g.add_const(name, t)
    }

    fn node(&mut self, name: &str, op: Op, inputs: Vec<Option<ValueId>>) -> ValueId {
        let root = self.g.root;
        let n = self.g.add_node(root, name, op, inputs, vec![(name.to_string(), TensorType::scalar(DType::F32))]);
        let ty = d2nnc::passes::infer::infer_node(&self.g, n).unwrap_or_else(|e| panic!("{name}: {e}"))[0].clone();
        let out = self.g.nodes[n].outputs[0];
        self.g.values[out].ty = ty;
        out
    }

    fn finish(mut self, y: ValueId) -> Graph {
        let root = self.g.root;
        self.g.regions[root].outputs = vec![y];
        d2nnc::ir::verify::verify(&self.g).unwrap_or_else(|e| panic!("{e}"));
        self.g
    }
}

/// Deterministic values of `dtype` from small sets, so comparisons tie and
/// the edges occur: NaN, ±0, ±∞, halves and values past i32's range for
/// f32; zeros, small values and the extremes for the integers.
fn tensor(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    const F: [f32; 16] = [f32::NAN, -0.0, 0.0, 1.0, -1.0, 2.0, -2.5, 0.5, f32::INFINITY, f32::NEG_INFINITY, 3e9, -3e9, 1e19, 2.0, 1.0, -1.0];
    const I: [i64; 12] = [0, 1, -1, 2, -2, 3, i64::MAX, i64::MIN, 1 << 33, -(1 << 40) - 7, 1, 0];
    const J: [i32; 10] = [0, 1, -1, 2, -2, 3, i32::MAX, i32::MIN, 1, 0];
    let result = match dtype {
        DType::F32 => Tensor::from_f32(shape, (0..n).map(|_| F[(next() % 16) as usize]).collect()),
        DType::I64 => Tensor::from_i64(shape, (0..n).map(|_| I[(next() % 12) as usize]).collect()),
        DType::I32 => Tensor::from_i32(shape, (0..n).map(|_| J[(next() % 10) as usize]).collect()),
        DType::Bool => Tensor::from_bool(shape, (0..n).map(|_| next() % 2 == 0).collect()),
    };
    result.expect("values fit the shape")
}

/// Bitwise equality (NaN payloads included), dtype and shape.
fn identical(got: &Tensor, want: &Tensor) -> bool {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return false;
    }
    match (got, want) {
        (Tensor::F32(a), Tensor::F32(b)) => a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()),
        _ => got == want,
    }
}

fn kernel_of(p: &Program, name: &str) -> Kernel {
    p.node_kernels().into_iter().find(|(n, _)| *n == name).map(|(_, k)| k.clone()).unwrap_or_else(|| panic!("no step for `{name}`"))
}

/// Lowers `graph`, requires node `name`'s kernel to satisfy `expect`, then
/// runs plan (1 and 2 threads) and interpreter at each batch size with
/// `feed` data and requires identical outputs.
fn check(graph: &Graph, name: &str, expect: impl Fn(&Kernel) -> bool, batches: &[usize], feed: impl Fn(DType, &[usize], u64) -> Tensor) -> Result<(), TestCaseError> {
    let program = d2nnc::plan::lower(graph).map_err(|e| TestCaseError::fail(format!("lowering: {e}")))?;
    let kernel = kernel_of(&program, name);
    prop_assert!(expect(&kernel), "`{}` got {:?}", name, kernel);
    let program = Arc::new(program);
    let mut executors: Vec<Executor> = [1, 2].into_iter().map(|t| Executor::with_threads(Arc::clone(&program), t).with_parallel_threshold(1)).collect();
    for &batch in batches {
        let feeds: HashMap<String, Tensor> = graph
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let value = &graph.values[v];
                let shape: Vec<usize> = value.ty.shape.iter().map(|d| d.resolve(&|_| Some(batch)).unwrap()).collect();
                (value.name.clone(), feed(value.ty.dtype, &shape, (i * 1000 + batch) as u64))
            })
            .collect();
        let want = d2nnc::interp::run(graph, &feeds).map_err(|e| TestCaseError::fail(format!("interp at batch {batch}: {e}")))?;
        for executor in &mut executors {
            let got = executor.run(&feeds).map_err(|e| TestCaseError::fail(format!("plan at batch {batch}: {e}")))?;
            prop_assert!(identical(&got[0], &want[0]), "{:?} at batch {}, {} threads: got {:?}, want {:?}", kernel, batch, executor.threads(), got[0], want[0]);
        }
    }
    Ok(())
}

fn batches() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1 => Just(1usize), 3 => 1usize..=64], 2)
}

/// Known dims, mostly small, sometimes 1.
fn dims(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![4 => 2usize..=5, 1 => Just(1usize)], ranks)
}

fn lead() -> impl Strategy<Value = Lead> {
    prop_oneof![3 => Just(Lead::Batch), 1 => Just(Lead::One), 2 => Just(Lead::None)]
}

/// One broadcasting operand: its leading axis, which dims it keeps (the
/// rest are 1), how many leading dims it drops (only without a lead) and
/// whether it is a constant.
#[derive(Clone, Debug)]
struct Operand {
    lead: Lead,
    keep: Vec<bool>,
    skip: usize,
    constant: bool,
}

fn operand(rank: usize) -> impl Strategy<Value = Operand> {
    (lead(), prop::collection::vec(prop_oneof![3 => Just(true), 1 => Just(false)], rank), 0..=rank, prop_oneof![3 => Just(false), 1 => Just(true)])
        .prop_map(|(lead, keep, skip, constant)| Operand { lead, keep, skip, constant })
}

impl Operand {
    fn value(&self, b: &mut Builder, name: &str, dtype: DType, dims: &[usize], seed: u64) -> ValueId {
        let kept: Vec<usize> = dims.iter().zip(&self.keep).map(|(&d, &k)| if k { d } else { 1 }).collect();
        let (lead, kept) = match self.lead {
            Lead::None => (Lead::None, kept[self.skip..].to_vec()),
            // A constant has no batch: one row instead.
            Lead::Batch if self.constant => (Lead::One, kept),
            other => (other, kept),
        };
        if self.constant {
            let shape: Vec<usize> = b.shape(lead, &kept).iter().map(|d| d.known().expect("constants have known dims")).collect();
            b.constant(name, tensor(dtype, &shape, seed))
        } else {
            b.input(name, dtype, lead, &kept)
        }
    }
}

const COMPARISONS: [BinaryOp; 5] = [BinaryOp::Greater, BinaryOp::Less, BinaryOp::GreaterOrEqual, BinaryOp::LessOrEqual, BinaryOp::Equal];

/// The logical connectives and the runtime's op each must lower to.
const CONNECTIVES: [(BinaryOp, BoolOp); 3] = [(BinaryOp::And, BoolOp::And), (BinaryOp::Or, BoolOp::Or), (BinaryOp::Xor, BoolOp::Xor)];

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(vec![DType::F32, DType::I64, DType::I32, DType::Bool])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every comparison of two numeric operands of one dtype (bool only for
    /// Equal), with any mix of batch, broadcast axes and scalars.
    #[test]
    fn comparisons(op in prop::sample::select(COMPARISONS.to_vec()), dtype in dtype(), (d, a, b) in dims(0..=3).prop_flat_map(|d| {
        let r = d.len();
        (Just(d), operand(r), operand(r))
    }), seed in any::<u64>(), batches in batches()) {
        let op = if dtype == DType::Bool { BinaryOp::Equal } else { op };
        let mut g = Builder::new();
        let x = a.value(&mut g, "a", dtype, &d, seed);
        let y = b.value(&mut g, "b", dtype, &d, !seed);
        let out = g.node("cmp", Op::Binary(op), vec![Some(x), Some(y)]);
        check(&g.finish(out), "cmp", |k| matches!(k, Kernel::Compare(_)), &batches, tensor)?;
    }

    /// `Where` over every data dtype, the condition and both branches
    /// broadcast independently.
    #[test]
    fn where_selects(dtype in dtype(), (d, c, x, y) in dims(0..=3).prop_flat_map(|d| {
        let r = d.len();
        (Just(d), operand(r), operand(r), operand(r))
    }), seed in any::<u64>(), batches in batches()) {
        let mut g = Builder::new();
        let cond = c.value(&mut g, "c", DType::Bool, &d, seed);
        let xv = x.value(&mut g, "x", dtype, &d, seed ^ 1);
        let yv = y.value(&mut g, "y", dtype, &d, seed ^ 2);
        let out = g.node("where", Op::Where, vec![Some(cond), Some(xv), Some(yv)]);
        check(&g.finish(out), "where", |k| matches!(k, Kernel::Where(_)), &batches, tensor)?;
    }

    /// `And`, `Or` and `Xor` of two bool operands with any mix of batch,
    /// broadcast axes, scalars and constants.
    #[test]
    fn logical_ops(ops in prop::sample::select(CONNECTIVES.to_vec()), (d, a, b) in dims(0..=3).prop_flat_map(|d| {
        let r = d.len();
        (Just(d), operand(r), operand(r))
    }), seed in any::<u64>(), batches in batches()) {
        let (op, want) = ops;
        let mut g = Builder::new();
        let x = a.value(&mut g, "a", DType::Bool, &d, seed);
        let y = b.value(&mut g, "b", DType::Bool, &d, !seed);
        let out = g.node("logic", Op::Binary(op), vec![Some(x), Some(y)]);
        check(&g.finish(out), "logic", |k| matches!(k, Kernel::Logic(l) if l.op == want), &batches, tensor)?;
    }

    /// `Not` of a bool input with or without the batch, or of a constant.
    #[test]
    fn not(x in dims(0..=3).prop_flat_map(|d| {
        let r = d.len();
        (Just(d), operand(r))
    }), seed in any::<u64>(), batches in batches()) {
        let (d, x) = x;
        let mut g = Builder::new();
        let v = x.value(&mut g, "x", DType::Bool, &d, seed);
        let out = g.node("not", Op::Unary(UnaryOp::Not), vec![Some(v)]);
        check(&g.finish(out), "not", |k| matches!(k, Kernel::Not), &batches, tensor)?;
    }

    /// Every pair of dtypes, on NaN, infinities, values past the integer
    /// ranges and the integer extremes.
    #[test]
    fn casts(from in dtype(), to in dtype(), batched in any::<bool>(), d in dims(0..=3), batches in batches()) {
        let mut g = Builder::new();
        let x = g.input("x", from, if batched { Lead::Batch } else { Lead::None }, &d);
        let out = g.node("cast", Op::Cast { to }, vec![Some(x)]);
        check(&g.finish(out), "cast", |k| matches!(k, Kernel::Cast { from: f, to: t } if *f == from && *t == to), &batches, tensor)?;
    }

    /// ArgMax/ArgMin of f32 (NaN, ties, signed zeros), i64 and i32 over a
    /// non-batch axis (the kernel) or the batch axis (the reference).
    #[test]
    fn arg_reductions(dtype in prop::sample::select(vec![DType::F32, DType::I64, DType::I32]), d in dims(1..=3), axis in any::<prop::sample::Index>(),
        negative in any::<bool>(), max in any::<bool>(), keepdims in any::<bool>(), last in any::<bool>(), batches in batches()) {
        let mut g = Builder::new();
        let x = g.input("x", dtype, Lead::Batch, &d);
        let rank = d.len() + 1;
        let a = axis.index(rank);
        let op = Op::ArgReduce { max, axis: if negative { a as i64 - rank as i64 } else { a as i64 }, keepdims, select_last_index: last };
        let out = g.node("arg", op, vec![Some(x)]);
        let fast = a > 0;
        check(&g.finish(out), "arg", |k| matches!(k, Kernel::ArgReduce(r) if r.max == max && r.select_last_index == last) == fast, &batches, tensor)?;
    }

    /// OneHot of i64, i32 or f32 indices (negative, out of range, fractional)
    /// into any values dtype, at any axis; the kernel unless the new axis
    /// goes before the batch.
    #[test]
    fn one_hot(index_dtype in prop::sample::select(vec![DType::I64, DType::I32, DType::F32]), value_dtype in dtype(), depth in 0usize..=5, float_depth in any::<bool>(),
        d in dims(0..=2), axis in any::<prop::sample::Index>(), negative in any::<bool>(), seed in any::<u64>(), batches in batches()) {
        let mut g = Builder::new();
        let x = g.input("idx", index_dtype, Lead::Batch, &d);
        let depth_value = if float_depth { Tensor::from_f32(&[1], vec![depth as f32 + 0.75]).unwrap() } else { Tensor::scalar_i64(depth as i64) };
        let dv = g.constant("depth", depth_value);
        let values = g.constant("values", tensor(value_dtype, &[2], seed));
        let rank = d.len() + 2;
        let a = axis.index(rank);
        let out = g.node("onehot", Op::OneHot { axis: if negative { a as i64 - rank as i64 } else { a as i64 } }, vec![Some(x), Some(dv), Some(values)]);
        let fast = a > 0;
        let indices = move |dtype: DType, shape: &[usize], s: u64| -> Tensor {
            let n: usize = shape.iter().product();
            let raw: Vec<i64> = (0..n as u64).map(|i| ((i.wrapping_mul(2_654_435_761) ^ s ^ seed) % 15) as i64 - 7).collect();
            match dtype {
                DType::I64 => Tensor::from_i64(shape, raw).unwrap(),
                DType::I32 => Tensor::from_i32(shape, raw.iter().map(|&v| v as i32).collect()).unwrap(),
                _ => Tensor::from_f32(shape, raw.iter().map(|&v| match v {
                    7 => f32::NAN,
                    -7 => f32::NEG_INFINITY,
                    v => v as f32 * 0.75,
                }).collect()).unwrap(),
            }
        };
        check(&g.finish(out), "onehot", |k| matches!(k, Kernel::OneHot { geometry, .. } if geometry.depth == depth) == fast, &batches, indices)?;
    }
}

/// The comparisons of the dynamic fixtures: a batch column against a
/// one-element threshold, and two scalars (an `If` condition).
#[test]
fn threshold_comparisons() {
    for (x_shape, t_shape) in [(vec![Lead::Batch], vec![]), (vec![Lead::Batch], vec![1usize]), (vec![Lead::None], vec![])] {
        let mut g = Builder::new();
        let dims: &[usize] = if matches!(x_shape[0], Lead::Batch) { &[1] } else { &[] };
        let x = g.input("x", DType::F32, x_shape[0], dims);
        let t = g.constant("t", Tensor::from_f32(&t_shape, vec![0.5; t_shape.iter().product()]).unwrap());
        let out = g.node("gt", Op::Binary(BinaryOp::Greater), vec![Some(x), Some(t)]);
        check(&g.finish(out), "gt", |k| matches!(k, Kernel::Compare(_)), &[1, 5, 3], tensor).unwrap();
    }
}

/// A D2NN-style decision: two controllers' comparisons combined with `Not`,
/// `And`, `Or` and `Xor` into the condition of a `Where`. Every step gets a
/// fast kernel (none is left to the interpreter, so the compiled back ends
/// can take the model), the plan names them, and the result is the
/// interpreter's.
#[test]
fn combined_decisions_run_without_the_interpreter() {
    let mut g = Builder::new();
    let p = g.input("p", DType::F32, Lead::Batch, &[1]);
    let q = g.input("q", DType::F32, Lead::Batch, &[1]);
    let h = g.input("h", DType::F32, Lead::Batch, &[4]);
    let hi = g.constant("hi", Tensor::from_f32(&[], vec![0.5]).unwrap());
    let lo = g.constant("lo", Tensor::from_f32(&[1], vec![-1.0]).unwrap());
    let zero = g.constant("zero", Tensor::from_f32(&[1, 4], vec![0.0; 4]).unwrap());
    let deep = g.node("deep", Op::Binary(BinaryOp::Greater), vec![Some(p), Some(hi)]);
    let shallow = g.node("shallow", Op::Binary(BinaryOp::Less), vec![Some(q), Some(lo)]);
    let not_shallow = g.node("not_shallow", Op::Unary(UnaryOp::Not), vec![Some(shallow)]);
    let both = g.node("both", Op::Binary(BinaryOp::And), vec![Some(deep), Some(not_shallow)]);
    let either = g.node("either", Op::Binary(BinaryOp::Or), vec![Some(both), Some(shallow)]);
    let one = g.node("one", Op::Binary(BinaryOp::Xor), vec![Some(either), Some(deep)]);
    let out = g.node("gate", Op::Where, vec![Some(one), Some(h), Some(zero)]);
    let batch = g.batch;
    let graph = g.finish(out);
    let program = d2nnc::plan::lower(&graph).unwrap();
    let reference: Vec<&str> = program.node_kernels().into_iter().filter(|(_, k)| matches!(k, Kernel::Reference)).map(|(n, _)| n).collect();
    assert!(reference.is_empty(), "steps left to the interpreter: {reference:?}");
    for (name, described) in [("not_shallow", "not"), ("both", "logic And"), ("either", "logic Or"), ("one", "logic Xor")] {
        assert_eq!(d2nnc::plan::print::describe(&kernel_of(&program, name)), described);
    }
    // `[N, 1]` against `[N, 1]`: the batch is the only iteration dim, with unit strides.
    match kernel_of(&program, "both") {
        Kernel::Logic(l) => assert_eq!((l.dims, l.a_strides, l.b_strides), (vec![Dim::sym(batch)], vec![1], vec![1])),
        other => panic!("both got {other:?}"),
    }
    check(&graph, "one", |k| matches!(k, Kernel::Logic(l) if l.op == BoolOp::Xor), &[1, 7, 64, 2], tensor).unwrap();
}

/// An operand whose stride would depend on the batch (`[2, N, 3]`: its
/// outer axis steps over `N` rows) keeps the reference kernel, as for the
/// comparisons, and still computes the interpreter's result; its `Not`,
/// which needs no strides, gets the kernel.
#[test]
fn batch_dependent_strides_keep_the_reference() {
    let mut g = Builder::new();
    let n = Dim::sym(g.batch);
    let wide = g.g.add_input("wide", TensorType::new(DType::Bool, vec![Dim::Known(2), n, Dim::Known(3)]));
    let row = g.constant("row", tensor(DType::Bool, &[3], 5));
    let slow = g.node("slow", Op::Binary(BinaryOp::And), vec![Some(wide), Some(row)]);
    let negated = g.node("negated", Op::Unary(UnaryOp::Not), vec![Some(slow)]);
    let graph = g.finish(negated);
    let program = d2nnc::plan::lower(&graph).unwrap();
    assert!(matches!(kernel_of(&program, "slow"), Kernel::Reference), "{:?}", kernel_of(&program, "slow"));
    check(&graph, "negated", |k| matches!(k, Kernel::Not), &[1, 5, 3], tensor).unwrap();
}
