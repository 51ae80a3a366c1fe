//! The plan's data-movement kernels: random Transpose, Slice, Concat, Split,
//! Gather and constant Pad nodes over every dtype, with and without a
//! symbolic batch, get their fast kernel where its conditions hold, and the
//! plan executor's outputs equal the interpreter's exactly at random batch
//! sizes (one executor per graph, so the arena is reused as the batch
//! changes). Then the DenseNet and ShuffleNet fixtures, whose Concat, Slice
//! and Transpose nodes motivated the kernels.

use d2nn_runtime::{DType, Tensor};
use d2nnc::compare::compare;
use d2nnc::ir::{Dim, Graph, Op, PadMode, Symbol, TensorType, ValueId};
use d2nnc::plan::{Executor, Kernel, Program, Step};
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Builds a graph node by node, typing each output by inference.
struct Builder {
    g: Graph,
    batch: Symbol,
}

impl Builder {
    fn new() -> Builder {
        let mut g = Graph::new("plan_copy");
        let batch = g.symbol("N");
        Builder { g, batch }
    }

    /// A graph input of `dims`, behind a batch axis when `batched`.
    fn input(&mut self, name: &str, dtype: DType, batched: bool, dims: &[usize]) -> ValueId {
        let lead = batched.then_some(Dim::sym(self.batch));
        let shape = lead.into_iter().chain(dims.iter().map(|&d| Dim::Known(d))).collect();
        self.g.add_input(name, TensorType::new(dtype, shape))
    }

    fn ints(&mut self, name: &str, values: Vec<i64>) -> ValueId {
        self.g.add_const(name, Tensor::vec_i64(values))
    }

    /// A node with `outputs` outputs named `name`, `name.1`…
    fn node(&mut self, name: &str, op: Op, inputs: Vec<Option<ValueId>>, outputs: usize) -> Vec<ValueId> {
        let placeholders = (0..outputs).map(|k| (if k == 0 { name.to_string() } else { format!("{name}.{k}") }, TensorType::scalar(DType::F32))).collect();
        let root = self.g.root;
        let n = self.g.add_node(root, name, op, inputs, placeholders);
        let types = d2nnc::passes::infer::infer_node(&self.g, n).unwrap_or_else(|e| panic!("{name}: {e}"));
        let outs = self.g.nodes[n].outputs.clone();
        for (&v, ty) in outs.iter().zip(types) {
            self.g.values[v].ty = ty;
        }
        outs
    }

    fn finish(mut self, outputs: Vec<ValueId>) -> Graph {
        let root = self.g.root;
        self.g.regions[root].outputs = outputs;
        d2nnc::ir::verify::verify(&self.g).unwrap_or_else(|e| panic!("{e}"));
        self.g
    }
}

/// Distinct, dtype-specific values, so a misplaced element shows.
fn tensor(dtype: DType, shape: &[usize], seed: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let result = match dtype {
        DType::F32 => Tensor::from_f32(shape, (0..n).map(|i| i as f32 * 0.25 - seed as f32).collect()),
        DType::I64 => Tensor::from_i64(shape, (0..n).map(|i| (i as i64 + 1) * 1_000_000_007 - seed as i64).collect()),
        DType::I32 => Tensor::from_i32(shape, (0..n).map(|i| i as i32 * 3 - seed as i32).collect()),
        DType::Bool => Tensor::from_bool(shape, (0..n).map(|i| (i * 7 + seed).is_multiple_of(3)).collect()),
    };
    result.unwrap()
}

/// The kernel the plan chose for node `name`.
fn kernel_of(p: &Program, name: &str) -> Kernel {
    p.node_kernels().into_iter().find(|(n, _)| *n == name).map(|(_, k)| k.clone()).unwrap_or_else(|| panic!("no step for `{name}`"))
}

/// Lowers `graph`, checks node `name`'s kernel (fast when `fast`, any
/// otherwise), then runs plan and interpreter at each batch size and
/// requires identical outputs.
fn check(graph: &Graph, name: &str, fast: bool, batches: &[usize]) -> Result<(), TestCaseError> {
    let program = d2nnc::plan::lower(graph).map_err(|e| TestCaseError::fail(format!("lowering: {e}")))?;
    let kernel = kernel_of(&program, name);
    if fast {
        prop_assert!(!matches!(kernel, Kernel::Reference | Kernel::Copy), "`{}` kept {:?}", name, kernel);
    }
    let mut executor = Executor::new(Arc::new(program));
    for &batch in batches {
        let feeds: HashMap<String, Tensor> = graph
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let value = &graph.values[v];
                let shape: Vec<usize> = value.ty.shape.iter().map(|d| d.resolve(&|_| Some(batch)).unwrap()).collect();
                (value.name.clone(), tensor(value.ty.dtype, &shape, i + batch))
            })
            .collect();
        let want = d2nnc::interp::run(graph, &feeds).map_err(|e| TestCaseError::fail(format!("interp at batch {batch}: {e}")))?;
        let got = executor.run(&feeds).map_err(|e| TestCaseError::fail(format!("plan at batch {batch}: {e}")))?;
        prop_assert_eq!(got, want, "{:?} at batch {}", kernel, batch);
    }
    Ok(())
}

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(vec![DType::F32, DType::I64, DType::I32, DType::Bool])
}

/// Known dims, mostly small, sometimes 0 or 1.
fn dims(ranks: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![8 => 2usize..=5, 2 => Just(1usize), 1 => Just(0usize)], ranks)
}

/// Two batch sizes in 1..=64: the arena is planned at one and reused at the other.
fn batches() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=64, 2)
}

/// An axis of a rank-`rank` tensor, written negative half the time.
fn axis_value(axis: usize, rank: usize, negative: bool) -> i64 {
    if negative {
        axis as i64 - rank as i64
    } else {
        axis as i64
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Fast whenever the batch (axis 0) stays in front.
    #[test]
    fn transpose(dtype in dtype(), batched in any::<bool>(), (dims, perm) in dims(0..=4).prop_flat_map(|d| {
        let r = d.len() + 1;
        (Just(d), Just((0..r).collect::<Vec<_>>()).prop_shuffle())
    }), batches in batches()) {
        let mut b = Builder::new();
        // Without a batch, axis 0 is a known dim of 3.
        let (x, perm) = if batched { (b.input("x", dtype, true, &dims), perm) } else {
            let mut all = vec![3];
            all.extend(&dims);
            (b.input("x", dtype, false, &all), perm)
        };
        let fast = !batched || perm[0] == 0;
        let y = b.node("t", Op::Transpose { perm }, vec![Some(x)], 1);
        check(&b.finish(y), "t", fast, &batches)?;
    }

    /// Random windows over the non-batch axes: out-of-range and negative
    /// starts and ends, negative steps; a whole-range slice of the batch axis.
    #[test]
    fn slice(dtype in dtype(), batched in any::<bool>(), dims in dims(1..=4), windows in prop::collection::vec(
        (any::<prop::sample::Index>(), -7i64..=7, prop_oneof![3 => -7i64..=7, 1 => Just(i64::MAX), 1 => Just(i64::MIN)], prop::sample::select(vec![-3i64, -2, -1, 1, 1, 2, 3]), any::<bool>()),
        1..=3), whole_batch in any::<bool>(), batches in batches()) {
        let mut b = Builder::new();
        let x = b.input("x", dtype, batched, &dims);
        let lead = usize::from(batched);
        let rank = dims.len() + lead;
        let (mut starts, mut ends, mut axes, mut steps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (axis, start, end, step, negative) in windows {
            let a = lead + axis.index(dims.len());
            if axes.contains(&axis_value(a, rank, false)) || axes.contains(&axis_value(a, rank, true)) {
                continue;
            }
            starts.push(start);
            ends.push(end);
            steps.push(step);
            axes.push(axis_value(a, rank, negative));
        }
        if batched && whole_batch {
            starts.push(0);
            ends.push(i64::MAX);
            steps.push(1);
            axes.push(0);
        }
        let inputs = [b.ints("starts", starts), b.ints("ends", ends), b.ints("axes", axes), b.ints("steps", steps)];
        let y = b.node("s", Op::Slice, vec![Some(x), Some(inputs[0]), Some(inputs[1]), Some(inputs[2]), Some(inputs[3])], 1);
        check(&b.finish(y), "s", true, &batches)?;
    }

    /// One to three inputs, differing along the concat axis (after the batch).
    #[test]
    fn concat(dtype in dtype(), batched in any::<bool>(), dims in dims(1..=3), axis in any::<prop::sample::Index>(), sizes in prop::collection::vec(0usize..=4, 1..=3), negative in any::<bool>(), batches in batches()) {
        let mut b = Builder::new();
        let a = axis.index(dims.len());
        let xs: Vec<ValueId> = sizes.iter().enumerate().map(|(i, &s)| {
            let mut d = dims.clone();
            d[a] = s;
            b.input(&format!("x{i}"), dtype, batched, &d)
        }).collect();
        let lead = usize::from(batched);
        let op = Op::Concat { axis: axis_value(a + lead, dims.len() + lead, negative) };
        let y = b.node("c", op, xs.into_iter().map(Some).collect(), 1);
        check(&b.finish(y), "c", true, &batches)?;
    }

    /// Constant sizes (zeros allowed) or the equal chunks of opset 18.
    #[test]
    fn split(dtype in dtype(), batched in any::<bool>(), dims in dims(1..=3), axis in any::<prop::sample::Index>(), sizes in prop::collection::vec(0usize..=3, 1..=4), explicit in any::<bool>(), negative in any::<bool>(), batches in batches()) {
        let mut b = Builder::new();
        let a = axis.index(dims.len());
        let mut dims = dims;
        let parts = sizes.len();
        if explicit {
            dims[a] = sizes.iter().sum();
        } else {
            // Equal chunks need ⌈d/n⌉·(n−1) ≤ d.
            dims[a] = dims[a].max(1) * parts;
        }
        let x = b.input("x", dtype, batched, &dims);
        let lead = usize::from(batched);
        let split = explicit.then(|| b.ints("split", sizes.iter().map(|&s| s as i64).collect()));
        let ys = b.node("sp", Op::Split { axis: axis_value(a + lead, dims.len() + lead, negative) }, vec![Some(x), split], parts);
        check(&b.finish(ys), "sp", true, &batches)?;
    }

    /// Constant indices of rank 0 to 2, negative ones included.
    #[test]
    fn gather(dtype in dtype(), batched in any::<bool>(), dims in dims(1..=3), axis in any::<prop::sample::Index>(), idx_shape in prop::collection::vec(0usize..=3, 0..=2), picks in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 9), negative in any::<bool>(), batches in batches()) {
        let mut b = Builder::new();
        let a = axis.index(dims.len());
        let mut dims = dims;
        dims[a] = dims[a].max(1);
        let count: usize = idx_shape.iter().product();
        let indices: Vec<i64> = picks.iter().cycle().take(count).map(|(i, neg)| {
            let j = i.index(dims[a]) as i64;
            if *neg { j - dims[a] as i64 } else { j }
        }).collect();
        let indices = b.g.add_const("indices", Tensor::from_i64(&idx_shape, indices).unwrap());
        let x = b.input("x", dtype, batched, &dims);
        let lead = usize::from(batched);
        let y = b.node("g", Op::Gather { axis: axis_value(a + lead, dims.len() + lead, negative) }, vec![Some(x), Some(indices)], 1);
        check(&b.finish(y), "g", true, &batches)?;
    }

    /// Pads from -2 to 3 on the non-batch axes (listed by `axes` or all),
    /// with an explicit fill or the default zero.
    #[test]
    fn pad(dtype in dtype(), batched in any::<bool>(), dims in dims(1..=3), pads in prop::collection::vec((-2i64..=3, -2i64..=3), 3), with_axes in any::<bool>(), with_fill in any::<bool>(), batches in batches()) {
        let mut b = Builder::new();
        let x = b.input("x", dtype, batched, &dims);
        let lead = usize::from(batched);
        let (mut begins, mut ends) = (Vec::new(), Vec::new());
        for (k, &d) in dims.iter().enumerate() {
            let (pb, pe) = pads[k];
            // Crop no more than the axis holds.
            let pe = pe.max(-(d as i64 + pb));
            begins.push(pb);
            ends.push(pe);
        }
        let axes: Vec<i64> = (lead..lead + dims.len()).map(|a| a as i64).collect();
        let (pads, axes) = if with_axes || !batched {
            (begins.into_iter().chain(ends).collect(), with_axes.then(|| b.ints("axes", axes)))
        } else {
            (std::iter::once(0).chain(begins).chain(std::iter::once(0)).chain(ends).collect(), None)
        };
        let pads = b.ints("pads", pads);
        let fill = with_fill.then(|| b.g.add_const("fill", tensor(dtype, &[], 5)));
        let y = b.node("p", Op::Pad { mode: PadMode::Constant }, vec![Some(x), Some(pads), fill, axes], 1);
        check(&b.finish(y), "p", true, &batches)?;
    }
}

/// A ShuffleNet unit's data movement over a batch: split the channels,
/// concatenate them back, shuffle through reshape → transpose → reshape.
#[test]
fn channel_shuffle_chain() {
    let mut b = Builder::new();
    let x = b.input("x", DType::F32, true, &[8, 3, 5]);
    let halves = b.ints("halves", vec![4, 4]);
    let parts = b.node("split", Op::Split { axis: 1 }, vec![Some(x), Some(halves)], 2);
    let joined = b.node("concat", Op::Concat { axis: 1 }, vec![Some(parts[1]), Some(parts[0])], 1);
    let grouped = b.g.add_const("grouped", Tensor::vec_i64(vec![0, 2, 4, 3, 5]));
    let viewed = b.node("view", Op::Reshape { allowzero: false }, vec![Some(joined[0]), Some(grouped)], 1);
    let shuffled = b.node("shuffle", Op::Transpose { perm: vec![0, 2, 1, 3, 4] }, vec![Some(viewed[0])], 1);
    let flat = b.g.add_const("flat", Tensor::vec_i64(vec![0, 8, 3, 5]));
    let back = b.node("unview", Op::Reshape { allowzero: false }, vec![Some(shuffled[0]), Some(flat)], 1);
    let graph = b.finish(back);
    for name in ["split", "concat", "shuffle"] {
        let program = d2nnc::plan::lower(&graph).unwrap();
        assert!(!matches!(kernel_of(&program, name), Kernel::Reference), "{name}");
    }
    check(&graph, "shuffle", true, &[1, 7, 64, 2]).unwrap();
}

/// The fixtures: every Concat, Slice, Split and Transpose runs its fast
/// kernel, and the outputs match the interpreter at batch 1 and 3.
#[test]
fn densenet_and_shufflenet_fixtures_move_data_fast() {
    for fixture in ["densenet_tiny", "shufflenet_tiny"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(fixture);
        let model = d2nnc::load_and_optimize(&dir.join("model.onnx")).unwrap();
        let program = d2nnc::plan::lower(&model.graph).unwrap();
        let mut moved = 0;
        for step in &program.body {
            let Step::Node { node, kernel, .. } = step else { continue };
            let n = &program.graph.nodes[*node];
            if matches!(n.op, Op::Concat { .. } | Op::Slice | Op::Split { .. } | Op::Transpose { .. }) {
                assert!(!matches!(kernel, Kernel::Reference), "{fixture}: `{}` ({}) kept the reference kernel", n.name, n.op.name());
                moved += 1;
            }
        }
        assert!(moved > 0, "{fixture} has no data movement left to test");
        let one = d2nn_runtime::npy::read_npy(&dir.join("input_0.npy")).unwrap();
        let sample = &one.to_f32_vec()[..one.len() / one.shape()[0]];
        let mut executor = Executor::new(Arc::new(program));
        for batch in [1usize, 3] {
            let values: Vec<f32> = (0..batch).flat_map(|k| sample.iter().map(move |&v| v * (1.0 - 0.2 * k as f32))).collect();
            let mut shape = one.shape().to_vec();
            shape[0] = batch;
            let feeds = HashMap::from([("input".to_string(), Tensor::from_f32(&shape, values).unwrap())]);
            let want = d2nnc::interp::run(&model.graph, &feeds).unwrap();
            let got = executor.run(&feeds).unwrap();
            compare(&got[0], &want[0], 1e-5, 1e-4).unwrap_or_else(|m| panic!("{fixture} at batch {batch}: {m}"));
        }
    }
}
