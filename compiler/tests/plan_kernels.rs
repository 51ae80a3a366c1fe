//! Kernel selection in the plan: nodes that meet a fast kernel's conditions
//! get it (and the rest keep the reference kernel), and the plan executor's
//! outputs equal the interpreter's at batch 1 and 3, on small graphs built
//! with the Graph API and on a fixture model.

use d2nn_runtime::kernels::elementwise::{Binary, Unary};
use d2nn_runtime::kernels::pool::{GlobalKind, PoolKind as RtPoolKind};
use d2nn_runtime::kernels::reduce::ReduceKind;
use d2nn_runtime::npy::read_npy;
use d2nn_runtime::{DType, Tensor};
use d2nnc::compare::compare;
use d2nnc::ir::{BinaryOp, Dim, Graph, Op, Padding, PoolAttrs, PoolKind, ReduceOp, Symbol, TensorType, UnaryOp, ValueId};
use d2nn_runtime::gemm::Activation;
use d2nnc::plan::{Executor, Fused, Kernel, Program, Storage};
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
        let mut g = Graph::new("plan_kernels");
        let batch = g.symbol("N");
        Builder { g, batch }
    }

    /// A graph input of shape `[N, dims…]`.
    fn input(&mut self, name: &str, dims: &[usize]) -> ValueId {
        let shape = std::iter::once(Dim::sym(self.batch)).chain(dims.iter().map(|&d| Dim::Known(d))).collect();
        self.g.add_input(name, TensorType::new(DType::F32, shape))
    }

    fn input_shaped(&mut self, name: &str, shape: Vec<Dim>) -> ValueId {
        self.g.add_input(name, TensorType::new(DType::F32, shape))
    }

    fn constant(&mut self, name: &str, shape: &[usize], values: Vec<f32>) -> ValueId {
        self.g.add_const(name, Tensor::from_f32(shape, values).unwrap())
    }

    fn ints(&mut self, name: &str, values: Vec<i64>) -> ValueId {
        self.g.add_const(name, Tensor::vec_i64(values))
    }

    fn node(&mut self, name: &str, op: Op, inputs: Vec<Option<ValueId>>) -> ValueId {
        let placeholder = TensorType::scalar(DType::F32);
        let root = self.g.root;
        let n = self.g.add_node(root, name, op, inputs, vec![(name.to_string(), placeholder)]);
        let ty = d2nnc::passes::infer::infer_node(&self.g, n).unwrap_or_else(|e| panic!("{name}: {e}"))[0].clone();
        let out = self.g.nodes[n].outputs[0];
        self.g.values[out].ty = ty;
        out
    }

    fn op(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> ValueId {
        self.node(name, op, inputs.iter().copied().map(Some).collect())
    }

    fn finish(mut self, outputs: Vec<ValueId>) -> Graph {
        let root = self.g.root;
        self.g.regions[root].outputs = outputs;
        d2nnc::ir::verify::verify(&self.g).unwrap_or_else(|e| panic!("{e}"));
        self.g
    }
}

/// `n` deterministic values in about [-4, 4], with some exact zeros.
fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503));
            ((h >> 8) % 801) as f32 / 100.0 - 4.0
        })
        .collect()
}

/// Each node's kernel, by node name, over every block.
fn kernels(p: &Program) -> HashMap<String, Kernel> {
    p.node_kernels().into_iter().map(|(name, k)| (name.to_string(), k.clone())).collect()
}

/// Runs the plan (one executor, so the arena is reused across batches) and
/// the interpreter on random inputs at batch 1, 3 and 1 again, and requires
/// equal outputs. The fast kernels agree with the reference to f64 rounding,
/// which rounding to f32 hides: 1e-6 relative is generous.
fn check_against_interpreter(graph: &Graph, program: Program) {
    let program = Arc::new(program);
    // One thread, and two threads splitting even the smallest outputs.
    for mut executor in [Executor::new(Arc::clone(&program)), Executor::with_threads(program, 2).with_parallel_threshold(1)] {
        check_executor(graph, &mut executor);
    }
}

fn check_executor(graph: &Graph, executor: &mut Executor) {
    for (round, batch) in [1usize, 3, 1].into_iter().enumerate() {
        let feeds: HashMap<String, Tensor> = graph
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let value = &graph.values[v];
                let shape: Vec<usize> = value.ty.shape.iter().map(|d| d.resolve(&|_| Some(batch)).unwrap()).collect();
                let n = shape.iter().product();
                (value.name.clone(), Tensor::from_f32(&shape, data(n, (round * 10 + i) as u32)).unwrap())
            })
            .collect();
        let want = d2nnc::interp::run(graph, &feeds).unwrap_or_else(|e| panic!("interp at batch {batch}: {e}"));
        let got = executor.run(&feeds).unwrap_or_else(|e| panic!("plan at batch {batch}: {e}"));
        assert_eq!(got.len(), want.len());
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            compare(g, w, 0.0, 1e-6).unwrap_or_else(|m| panic!("batch {batch}, output {k} (`{}`): {m}", graph.values[graph.outputs()[k]].name));
        }
    }
}

fn pool_attrs(kernel: usize, stride: usize, pad: usize, ceil_mode: bool) -> PoolAttrs {
    PoolAttrs { kernel: vec![kernel; 2], strides: vec![stride; 2], dilations: vec![1; 2], padding: Padding::Explicit(vec![pad; 4]), ceil_mode }
}

/// A small CNN head with every fast kernel family, plus nodes that must
/// keep the reference kernel.
fn cnn_graph() -> Graph {
    let mut b = Builder::new();
    let x = b.input("x", &[3, 9, 9]);
    let relu = b.op("relu", Op::Unary(UnaryOp::Relu), &[x]);
    let (lo, hi) = (b.constant("lo", &[], vec![0.0]), b.constant("hi", &[], vec![2.5]));
    let clip = b.op("clip", Op::Clip, &[relu, lo, hi]);
    let gain = b.constant("gain", &[1, 3, 1, 1], vec![0.5, -1.0, 2.0]);
    let per_channel = b.op("per_channel", Op::Binary(BinaryOp::Mul), &[clip, gain]);
    let residual = b.op("residual", Op::Binary(BinaryOp::Add), &[per_channel, x]);
    let half = b.constant("half", &[], vec![0.5]);
    let scalar = b.op("scalar", Op::Binary(BinaryOp::Sub), &[residual, half]);
    let swish = b.op("hardswish", Op::Unary(UnaryOp::HardSwish), &[scalar]);
    let maxpool = b.op("maxpool", Op::Pool { kind: PoolKind::Max { column_major_indices: false }, attrs: pool_attrs(3, 2, 1, false) }, &[swish]);
    let avg_kind = PoolKind::Average { count_include_pad: false };
    let avgpool = b.op("avgpool", Op::Pool { kind: avg_kind, attrs: pool_attrs(2, 2, 0, true) }, &[maxpool]);
    let stats: Vec<ValueId> = [("scale", 1.5), ("bias", 0.25), ("mean", -0.5), ("var", 2.0)]
        .iter()
        .map(|&(name, v)| b.constant(name, &[3], vec![v, v * 0.5, v + 1.0]))
        .collect();
    let bn = b.op("bn", Op::BatchNorm { epsilon: 1e-5 }, &[avgpool, stats[0], stats[1], stats[2], stats[3]]);
    let gap = b.op("gap", Op::GlobalPool { kind: PoolKind::Average { count_include_pad: false } }, &[bn]);
    let gmp = b.op("gmp", Op::GlobalPool { kind: PoolKind::Max { column_major_indices: false } }, &[bn]);
    let spatial = b.ints("spatial", vec![2, 3]);
    let reduce = b.node("reduce_mean", Op::Reduce { op: ReduceOp::Mean, keepdims: true, noop_with_empty_axes: false }, vec![Some(bn), Some(spatial)]);
    let pooled = b.op("sum3", Op::Binary(BinaryOp::Add), &[gap, reduce]);
    let pooled = b.op("max2", Op::Binary(BinaryOp::Max), &[pooled, gmp]);
    let flat = b.op("flatten", Op::Flatten { axis: 1 }, &[pooled]);
    let row = b.constant("row", &[3], vec![0.1, -0.2, 0.3]);
    let logits = b.op("row_bias", Op::Binary(BinaryOp::Add), &[flat, row]);
    let softmax = b.op("softmax", Op::Softmax { axis: -1, log: false, coerce_2d: false }, &[logits]);
    let sigmoid = b.op("sigmoid", Op::Unary(UnaryOp::Sigmoid), &[logits]);
    // The normalised axis is the batch: the softmax's row length is not known.
    let over_batch = b.op("logsoftmax_over_batch", Op::Softmax { axis: 0, log: true, coerce_2d: false }, &[logits]);
    // Erf has no fast kernel.
    let erf = b.op("erf", Op::Unary(UnaryOp::Erf), &[logits]);
    b.finish(vec![softmax, sigmoid, over_batch, erf, bn])
}

#[test]
fn cnn_nodes_get_fast_kernels_and_match_the_interpreter() {
    let graph = cnn_graph();
    let program = d2nnc::plan::lower(&graph).unwrap();
    let k = kernels(&program);
    let n = Dim::Sym { sym: Symbol(0), factor: 1 };
    assert!(matches!(k["relu"], Kernel::Unary(Unary::Relu)));
    assert!(matches!(k["clip"], Kernel::Unary(Unary::Clip { min: 0.0, max: 2.5 })));
    assert!(matches!(k["hardswish"], Kernel::Unary(Unary::HardSwish)));
    assert!(matches!(k["sigmoid"], Kernel::Unary(Unary::Sigmoid)));
    let binary = |name: &str| match &k[name] {
        Kernel::Binary(b) => b.clone(),
        other => panic!("{name} got {other:?}"),
    };
    // Per-channel constant: rows are 81-element planes with one gain each.
    let pc = binary("per_channel");
    assert_eq!((pc.op, pc.dims, pc.a_strides, pc.b_strides), (Binary::Mul, vec![n, Dim::Known(3), Dim::Known(81)], vec![243, 81, 1], vec![0, 1, 0]));
    // Same shape and scalar: one batch-scaled row.
    let whole = Dim::Sym { sym: Symbol(0), factor: 243 };
    let res = binary("residual");
    assert_eq!((res.dims, res.a_strides, res.b_strides), (vec![whole], vec![1], vec![1]));
    let sc = binary("scalar");
    assert_eq!((sc.dims, sc.a_strides, sc.b_strides), (vec![whole], vec![1], vec![0]));
    // Row vector over the last dim.
    let rb = binary("row_bias");
    assert_eq!((rb.dims, rb.a_strides, rb.b_strides), (vec![n, Dim::Known(3)], vec![3, 1], vec![0, 1]));
    assert!(matches!(binary("max2").op, Binary::Max));
    match &k["maxpool"] {
        Kernel::Pool(p) => {
            assert_eq!(p.kind, RtPoolKind::Max);
            assert_eq!((p.h.input, p.h.output, p.h.pad_begin, p.w.output), (9, 5, 1, 5));
        }
        other => panic!("maxpool got {other:?}"),
    }
    match &k["avgpool"] {
        // Ceil mode: (5 - 2) / 2 rounded up + 1 = 3, the last window overhanging.
        Kernel::Pool(p) => assert_eq!((p.kind, p.h.output, p.w.output), (RtPoolKind::Average { count_include_pad: false }, 3, 3)),
        other => panic!("avgpool got {other:?}"),
    }
    assert!(matches!(k["bn"], Kernel::BatchNorm { plane: 9, .. }));
    assert!(matches!(k["gap"], Kernel::GlobalPool { kind: GlobalKind::Average, plane: 9 }));
    assert!(matches!(k["gmp"], Kernel::GlobalPool { kind: GlobalKind::Max, plane: 9 }));
    assert!(matches!(k["reduce_mean"], Kernel::Reduce { kind: ReduceKind::Mean, len: 9, inner: 1 }));
    assert!(matches!(k["softmax"], Kernel::Softmax { log: false, len: 3, inner: 1 }));
    assert!(matches!(k["flatten"], Kernel::Copy));
    assert!(matches!(k["logsoftmax_over_batch"], Kernel::Reference));
    assert!(matches!(k["erf"], Kernel::Reference));
    check_against_interpreter(&graph, program);
}

/// Broadcasting patterns around the batch axis, softmax and reductions
/// over inner axes, pooling in 1-D, and the cases that must fall back.
#[test]
fn layouts_around_the_batch() {
    let mut b = Builder::new();
    let n = Dim::sym(b.batch);
    let col = b.input_shaped("col", vec![n, Dim::Known(1)]);
    let row = b.input_shaped("row", vec![Dim::Known(1), n]);
    // [N, 1] ∘ [1, N]: symbolic iteration dims, static strides.
    let outer = b.op("outer", Op::Binary(BinaryOp::Div), &[col, row]);
    let x = b.input("x", &[4, 5]);
    let mid = b.constant("mid", &[4, 1], vec![1.0, -1.0, 2.0, 0.5]);
    let middle = b.op("middle", Op::Binary(BinaryOp::Sub), &[x, mid]);
    let slope = b.constant("slope", &[4, 1], vec![0.1, 0.2, 0.3, 0.4]);
    let prelu = b.op("prelu", Op::Binary(BinaryOp::PRelu), &[middle, slope]);
    // Softmax over a middle axis: [N, 4, 5] as [N, 4, 5] with inner 5.
    let sm = b.op("softmax_mid", Op::Softmax { axis: 1, log: true, coerce_2d: false }, &[prelu]);
    // The opset < 13 form over axes 1 and 2 together.
    let sm2d = b.op("softmax_2d", Op::Softmax { axis: 1, log: false, coerce_2d: true }, &[prelu]);
    let axis1 = b.ints("axis1", vec![1]);
    let rmax = b.node("reduce_max_mid", Op::Reduce { op: ReduceOp::Max, keepdims: false, noop_with_empty_axes: false }, vec![Some(prelu), Some(axis1)]);
    // Axes 0 and 2 do not form one block.
    let axes02 = b.ints("axes02", vec![0, 2]);
    let rsplit = b.node("reduce_sum_split", Op::Reduce { op: ReduceOp::Sum, keepdims: true, noop_with_empty_axes: false }, vec![Some(prelu), Some(axes02)]);
    // 1-D pooling over [N, 4, 5].
    let attrs = PoolAttrs { kernel: vec![2], strides: vec![1], dilations: vec![2], padding: Padding::SameUpper, ceil_mode: false };
    let pool1d = b.op("avgpool_1d", Op::Pool { kind: PoolKind::Average { count_include_pad: true }, attrs }, &[prelu]);
    // A batch-sized operand inside a wider shape: its outer stride depends on N.
    let wide = b.input_shaped("wide", vec![Dim::Known(2), n, Dim::Known(3)]);
    let three = b.constant("three", &[3], vec![1.0, 2.0, 3.0]);
    let inner_batch = b.op("inner_batch", Op::Binary(BinaryOp::Add), &[wide, three]);
    let graph = b.finish(vec![outer, sm, sm2d, rmax, rsplit, pool1d, inner_batch]);
    let program = d2nnc::plan::lower(&graph).unwrap();
    let k = kernels(&program);
    match &k["outer"] {
        Kernel::Binary(b) => assert_eq!((b.dims.len(), &b.a_strides, &b.b_strides), (2, &vec![1, 0], &vec![0, 1])),
        other => panic!("outer got {other:?}"),
    }
    assert!(matches!(k["middle"], Kernel::Binary(_)));
    assert!(matches!(k["prelu"], Kernel::Binary(ref b) if b.op == Binary::PRelu));
    assert!(matches!(k["softmax_mid"], Kernel::Softmax { log: true, len: 4, inner: 5 }));
    assert!(matches!(k["softmax_2d"], Kernel::Softmax { log: false, len: 20, inner: 1 }));
    assert!(matches!(k["reduce_max_mid"], Kernel::Reduce { kind: ReduceKind::Max, len: 4, inner: 5 }));
    assert!(matches!(k["reduce_sum_split"], Kernel::Reference));
    assert!(matches!(k["avgpool_1d"], Kernel::Pool(_)));
    assert!(matches!(k["inner_batch"], Kernel::Reference));
    check_against_interpreter(&graph, program);
}

/// Nodes whose conditions fail keep the reference kernel: non-constant
/// Clip bounds, MaxPool with `Indices`, integer data.
#[test]
fn unmet_conditions_fall_back_to_reference() {
    let mut b = Builder::new();
    let x = b.input("x", &[2, 6, 6]);
    let bound = b.input_shaped("bound", vec![]);
    let clip = b.node("clip_dynamic", Op::Clip, vec![Some(x), None, Some(bound)]);
    let indices_ty = TensorType::new(DType::I64, vec![]);
    let root = b.g.root;
    let attrs = pool_attrs(2, 2, 0, false);
    let pool = b.g.add_node(
        root,
        "maxpool_indices",
        Op::Pool { kind: PoolKind::Max { column_major_indices: false }, attrs },
        vec![Some(clip)],
        vec![("values".into(), TensorType::scalar(DType::F32)), ("indices".into(), indices_ty)],
    );
    let types = d2nnc::passes::infer::infer_node(&b.g, pool).unwrap();
    let outs: Vec<ValueId> = b.g.nodes[pool].outputs.clone();
    for (&v, ty) in outs.iter().zip(types) {
        b.g.values[v].ty = ty;
    }
    let ints = b.g.add_const("ints", Tensor::vec_i64(vec![1, -2, 3]));
    let neg = b.op("neg_int", Op::Unary(UnaryOp::Neg), &[ints]);
    let clip_no_max = b.node("clip_min_only", Op::Clip, vec![Some(outs[0]), Some(bound), None]);
    let graph = b.finish(vec![outs[0], outs[1], neg, clip_no_max]);
    let program = d2nnc::plan::lower(&graph).unwrap();
    let k = kernels(&program);
    for name in ["clip_dynamic", "maxpool_indices", "neg_int", "clip_min_only"] {
        assert!(matches!(k[name], Kernel::Reference), "{name} got {:?}", k[name]);
    }
    check_against_interpreter(&graph, program);
}

/// The MobileNetV2 fixture: every convolution, the classifier, every Clip
/// (ReLU6), residual Add and the ReduceMean global pool run fast kernels, and outputs match the
/// interpreter at batch 1 and 3 (the stored input, then three perturbed copies).
#[test]
fn mobilenet_fixture_runs_fast_kernels() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mobilenetv2_tiny");
    let model = d2nnc::load_and_optimize(&dir.join("model.onnx")).unwrap();
    let program = d2nnc::plan::lower(&model.graph).unwrap();
    let mut by_op: HashMap<&str, (usize, usize)> = HashMap::new();
    for (name, kernel) in kernels(&program) {
        let node = program.graph.walk_nodes().into_iter().find(|&n| program.graph.nodes[n].name == name).unwrap();
        let entry = by_op.entry(program.graph.nodes[node].op.name()).or_default();
        if matches!(kernel, Kernel::Reference) {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
    // Every conv (plain, depthwise, pointwise) and the classifier run on
    // the GEMM core; Clips and residual Adds that are not fused into a conv
    // run fast kernels too.
    for op in ["Clip", "Add", "ReduceMean", "Conv", "Gemm"] {
        let (fast, reference) = by_op.get(op).copied().unwrap_or_default();
        assert!(reference == 0, "{op}: {fast} fast, {reference} reference");
    }
    assert!(by_op["Conv"].0 > 0 && by_op["Gemm"].0 > 0);
    // The pointwise convs absorbed their ReLU6 and the residual Adds.
    let fused: Vec<Fused> = kernels(&program).values().filter_map(|k| if let Kernel::Conv(c) = k { Some(c.fused) } else { None }).collect();
    assert!(fused.iter().any(|f| matches!(f.activation, Activation::Clip { min: 0.0, max: 6.0 })), "{fused:?}");
    assert!(fused.iter().any(|f| f.residual), "{fused:?}");
    let input = read_npy(&dir.join("input_0.npy")).unwrap();
    let one = input.to_f32_vec();
    let mut executor = Executor::with_threads(Arc::new(program), 2).with_parallel_threshold(1);
    for batch in [1usize, 3] {
        let values: Vec<f32> = (0..batch).flat_map(|k| one.iter().map(move |&v| v * (1.0 - 0.2 * k as f32) + 0.05 * k as f32)).collect();
        let feeds = HashMap::from([("input".to_string(), Tensor::from_f32(&[batch, 3, 64, 64], values).unwrap())]);
        let want = d2nnc::interp::run(&model.graph, &feeds).unwrap();
        let got = executor.run(&feeds).unwrap();
        // The fixture's own tolerance against ONNX Runtime (`fixture.json`):
        // through 50-odd layers, f32 accumulation in a different order (and
        // fused multiply-adds) drifts by a few 1e-5 from the interpreter, as
        // ONNX Runtime's does. Per-kernel error bounds are in `plan_prop.rs`.
        compare(&got[0], &want[0], 1e-4, 1e-3).unwrap_or_else(|m| panic!("batch {batch}: {m}"));
    }
}

/// A step whose input dies there writes over it: the Relu after a Mul runs in
/// place, the Flatten after it moves nothing, and a Relu whose input is read
/// again later gets its own buffer. Outputs still match the interpreter.
#[test]
fn dying_inputs_are_overwritten_in_place() {
    let mut b = Builder::new();
    let x = b.input("x", &[15]);
    let two = b.constant("two", &[], vec![2.0]);
    let doubled = b.op("doubled", Op::Binary(BinaryOp::Mul), &[x, two]);
    let relu = b.op("relu", Op::Unary(UnaryOp::Relu), &[doubled]);
    let flat = b.op("flat", Op::Flatten { axis: 1 }, &[relu]);
    let kept = b.op("kept", Op::Unary(UnaryOp::Relu), &[x]);
    let tanh = b.op("tanh", Op::Unary(UnaryOp::Tanh), &[flat]);
    let sum = b.op("sum", Op::Binary(BinaryOp::Add), &[tanh, kept]);
    let graph = b.finish(vec![sum]);
    let program = d2nnc::plan::lower(&graph).unwrap();
    let slot = |name: &str| {
        let buffer = program.buffers.iter().find(|buf| buf.name == name).unwrap();
        match buffer.storage {
            Storage::Arena(s) => s,
            ref other => panic!("{name} is not in the arena: {other:?}"),
        }
    };
    assert_eq!(slot("relu"), slot("doubled"));
    assert_eq!(slot("flat"), slot("doubled"));
    assert_eq!(slot("tanh"), slot("doubled"));
    assert_ne!(slot("sum"), slot("doubled"), "a binary op never writes over an operand");
    check_against_interpreter(&graph, program);
}
