//! The machinery of the plan property tests: a graph builder over a symbolic
//! batch `N`, deterministic pseudo-random data, kernel inspection, and the
//! differential check of the plan executor (1 and 2 threads, one executor
//! reused across batch sizes) against the reference interpreter within a
//! per-element error bound derived from the arithmetic each kernel does.

use d2nn_runtime::{DType, Tensor};
use d2nnc::ir::{BinaryOp, Dim, Graph, Op, PoolKind, ReduceOp, Symbol, TensorType, UnaryOp, ValueDef, ValueId};
use d2nnc::plan::{Executor, Kernel, Program};
use proptest::test_runner::TestCaseError;
use std::collections::HashMap;
use std::sync::Arc;

/// Builds a graph node by node, typing each output by inference.
pub struct Builder {
    pub g: Graph,
    pub batch: Symbol,
    seed: u64,
    next: u64,
}

impl Builder {
    /// `seed` drives the constants [`Builder::random`] makes.
    pub fn new(seed: u64) -> Builder {
        let mut g = Graph::new("plan_prop");
        let batch = g.symbol("N");
        Builder { g, batch, seed, next: 0 }
    }

    pub fn n(&self) -> Dim {
        Dim::sym(self.batch)
    }

    /// A graph input of shape `[N, dims…]`.
    pub fn input(&mut self, name: &str, dims: &[usize]) -> ValueId {
        let shape = std::iter::once(self.n()).chain(dims.iter().map(|&d| Dim::Known(d))).collect();
        self.input_shaped(name, shape)
    }

    pub fn input_shaped(&mut self, name: &str, shape: Vec<Dim>) -> ValueId {
        self.g.add_input(name, TensorType::new(DType::F32, shape))
    }

    pub fn constant(&mut self, name: &str, shape: &[usize], values: Vec<f32>) -> ValueId {
        self.g.add_const(name, Tensor::from_f32(shape, values).expect("values fit the shape"))
    }

    /// A constant of `shape` filled by [`data`] (values in [-4, 4]) times `scale`.
    pub fn random(&mut self, name: &str, shape: &[usize], scale: f32) -> ValueId {
        self.next += 1;
        let values = data(shape.iter().product(), self.seed ^ self.next.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.constant(name, shape, values.into_iter().map(|v| v * scale).collect())
    }

    pub fn ints(&mut self, name: &str, values: Vec<i64>) -> ValueId {
        self.g.add_const(name, Tensor::vec_i64(values))
    }

    pub fn node(&mut self, name: &str, op: Op, inputs: Vec<Option<ValueId>>) -> ValueId {
        let placeholder = TensorType::scalar(DType::F32);
        let root = self.g.root;
        let n = self.g.add_node(root, name, op, inputs, vec![(name.to_string(), placeholder)]);
        let ty = d2nnc::passes::infer::infer_node(&self.g, n).unwrap_or_else(|e| panic!("{name}: {e}"))[0].clone();
        let out = self.g.nodes[n].outputs[0];
        self.g.values[out].ty = ty;
        out
    }

    pub fn op(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> ValueId {
        self.node(name, op, inputs.iter().copied().map(Some).collect())
    }

    pub fn shape(&self, v: ValueId) -> Vec<Dim> {
        self.g.values[v].ty.shape.clone()
    }

    pub fn finish(mut self, outputs: Vec<ValueId>) -> Graph {
        let root = self.g.root;
        self.g.regions[root].outputs = outputs;
        d2nnc::ir::verify::verify(&self.g).unwrap_or_else(|e| panic!("{e}"));
        self.g
    }
}

/// `n` deterministic values in [-4, 4] with full mantissas (so sums of
/// products round, and the tolerances are exercised), about one in 16 an
/// exact zero so ReLU-style branches and zero taps both occur.
pub fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            // SplitMix64: cheap, and good enough to decorrelate neighbours.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            if z.is_multiple_of(16) {
                0.0
            } else {
                ((z >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 4.0) as f32
            }
        })
        .collect()
}

/// The kernel of every node step, with the node's name, over every block.
pub fn kernels(p: &Program) -> Vec<(String, Kernel)> {
    p.node_kernels().into_iter().map(|(name, k)| (name.to_string(), k.clone())).collect()
}

/// Requires node `name`'s kernel to satisfy `ok` (`what` names the expectation).
pub fn expect_kernel(p: &Program, name: &str, what: &str, ok: impl Fn(&Kernel) -> bool) -> Result<(), TestCaseError> {
    let all = kernels(p);
    match all.iter().find(|(n, _)| n == name) {
        Some((_, k)) if ok(k) => Ok(()),
        Some((_, k)) => Err(TestCaseError::fail(format!("node `{name}` should run {what}, got {k:?}"))),
        None => Err(TestCaseError::fail(format!("no step for node `{name}`; steps: {:?}", all.iter().map(|(n, _)| n).collect::<Vec<_>>()))),
    }
}

/// Requires some step's kernel to satisfy `ok`, whatever its node is called
/// (fusion passes may rename or merge nodes).
pub fn expect_some_kernel(p: &Program, what: &str, ok: impl Fn(&Kernel) -> bool) -> Result<(), TestCaseError> {
    let all = kernels(p);
    if all.iter().any(|(_, k)| ok(k)) {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!("no step runs {what}; kernels: {all:?}")))
    }
}

/// Optimises the graph as the pipeline does, then lowers it.
pub fn optimize_and_lower(graph: &mut Graph) -> Program {
    d2nnc::passes::optimize(graph).unwrap_or_else(|e| panic!("optimize: {e}"));
    d2nnc::plan::lower(graph).unwrap_or_else(|e| panic!("lower: {e}"))
}

/// The unit roundoff of f32 (round to nearest).
pub const U: f64 = f32::EPSILON as f64 / 2.0;
/// The unit roundoff of f64.
const U64: f64 = f64::EPSILON / 2.0;
/// Gradual underflow: each f32 product or sum may lose up to 2^-150 absolutely;
/// this covers ~10^14 of them, far more than any case has.
const UNDERFLOW: f64 = 1e-30;

/// How far an output element of the plan may be from the interpreter's:
/// `|got − want| ≤ rel·|want| + per_magnitude·mag + UNDERFLOW`, where `mag`
/// is the interpreter's result of [`magnitude_graph`] on `|inputs|`, i.e.
/// `Σ|terms|` of the sum the element is.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rel: f64,
    pub per_magnitude: f64,
}

impl Tolerance {
    /// Bit-for-bit: data movement, max/min, elementwise ops and every kernel
    /// whose module promises the reference's arithmetic in the same order.
    pub const EXACT: Tolerance = Tolerance { rel: 0.0, per_magnitude: 0.0 };

    /// A sum of `terms` f32 terms (products, bias, residual) accumulated in
    /// f32 in any order and with or without FMA, then passed through
    /// 1-Lipschitz activations and compared with the f64 sum rounded once.
    /// Any summation order errs by at most `γ_n·Σ|terms|` with
    /// `γ_n = n·u / (1 − n·u)` (Higham, Accuracy and Stability, §3.1; the
    /// products' own rounding makes it `n` rather than `n − 1`); the
    /// reference's rounding, and a rounding in each activation or
    /// pre-rounded bias (`beta·c`), add `u` relative each, which `2u` of the
    /// result and `2u` of the magnitude cover.
    pub fn f32_sum(terms: usize) -> Tolerance {
        let n = terms as f64;
        Tolerance { rel: 2.0 * U * (1.0 + 4.0 * U), per_magnitude: n * U / (1.0 - n * U) + 2.0 * U }
    }

    /// A sum of `terms` terms accumulated in f64 by both sides, possibly in
    /// different orders (interleaved partial sums, a pre-folded factor), and
    /// rounded to f32 once: the f64 results differ by at most
    /// `2·γ64_terms·Σ|terms|`, and rounding both to f32 adds at most `u` of
    /// each side, `2u(1 + 2u)` of the result.
    pub fn f64_sum(terms: usize) -> Tolerance {
        let n = terms as f64 + 2.0;
        Tolerance { rel: 2.0 * U * (1.0 + 4.0 * U), per_magnitude: 2.0 * n * U64 / (1.0 - n * U64) * (1.0 + U) }
    }

    fn is_exact(&self) -> bool {
        self.rel == 0.0 && self.per_magnitude == 0.0
    }
}

/// A graph whose outputs bound the magnitude of every term of the original's
/// sums: f32 constants become their absolute values (a BatchNorm's mean its
/// negated absolute value, so `x − mean` becomes `|x| + |mean|`), Sub becomes
/// Add, Gemm's alpha and beta their absolute values, and the 1-Lipschitz
/// activations (whose inputs' errors pass through unamplified) become
/// Identity. Fed `|inputs|`, each output element is `Σ|terms|` of the
/// original's, which bounds the original's pre-activation value too.
pub fn magnitude_graph(graph: &Graph) -> Graph {
    let mut g = graph.clone();
    let mut negated = Vec::new();
    for n in g.walk_nodes() {
        let node = &mut g.nodes[n];
        match &mut node.op {
            Op::Conv(_) | Op::ConvTranspose(_) | Op::MatMul | Op::Binary(BinaryOp::Add | BinaryOp::Mul) | Op::Identity | Op::Flatten { .. } => {}
            Op::Reduce { op: ReduceOp::Sum | ReduceOp::Mean, .. } => {}
            Op::GlobalPool { kind: PoolKind::Average { .. } } | Op::Pool { kind: PoolKind::Average { .. }, .. } => {}
            Op::Binary(BinaryOp::Sub) => node.op = Op::Binary(BinaryOp::Add),
            Op::Gemm { alpha, beta, .. } => (*alpha, *beta) = (alpha.abs(), beta.abs()),
            Op::BatchNorm { .. } => negated.extend(node.input(3)),
            Op::Unary(UnaryOp::Relu | UnaryOp::Sigmoid | UnaryOp::Tanh) | Op::Clip => {
                node.op = Op::Identity;
                node.inputs.truncate(1);
            }
            Op::Unary(UnaryOp::LeakyRelu { alpha }) if alpha.abs() <= 1.0 => {
                node.op = Op::Identity;
                node.inputs.truncate(1);
            }
            other => panic!("no magnitude rule for {other}"),
        }
    }
    let handles: Vec<ValueId> = g.values.handles().collect();
    for v in handles {
        if let ValueDef::Const(t) = &g.values[v].def {
            if let Ok(a) = t.as_f32() {
                let sign = if negated.contains(&v) { -1.0 } else { 1.0 };
                g.values[v].def = ValueDef::Const(Arc::new(Tensor::F32(a.mapv(|x| sign * x.abs()))));
            }
        }
    }
    g
}

/// Random f32 feeds for every graph input at batch `batch`.
pub fn feeds(graph: &Graph, batch: usize, seed: u64) -> HashMap<String, Tensor> {
    graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let value = &graph.values[v];
            let shape: Vec<usize> = value.ty.shape.iter().map(|d| d.resolve(&|_| Some(batch)).expect("only the batch is symbolic")).collect();
            let seed = seed.wrapping_mul(31).wrapping_add((batch * 1000 + i) as u64);
            (value.name.clone(), Tensor::from_f32(&shape, data(shape.iter().product(), seed)).expect("values fit the shape"))
        })
        .collect()
}

fn abs_feeds(feeds: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    feeds.iter().map(|(k, t)| (k.clone(), Tensor::F32(t.as_f32().expect("f32 feeds").mapv(f32::abs)))).collect()
}

/// Runs `program` (lowered from `graph`) on executors of 1 and 2 threads,
/// each reused across `batches` in order (so the arena grows and is reused),
/// and requires every output to match the interpreter's on `graph` within `tol`.
pub fn check_against_interpreter(graph: &Graph, program: Program, batches: &[usize], seed: u64, tol: Tolerance) -> Result<(), TestCaseError> {
    let program = Arc::new(program);
    let mut executors: Vec<Executor> = [1, 2].into_iter().map(|t| Executor::with_threads(Arc::clone(&program), t)).collect();
    let magnitude = (!tol.is_exact()).then(|| magnitude_graph(graph));
    for &batch in batches {
        let feeds = feeds(graph, batch, seed);
        let want = d2nnc::interp::run(graph, &feeds).map_err(|e| TestCaseError::fail(format!("interpreter at batch {batch}: {e}")))?;
        let mags = match &magnitude {
            Some(m) => Some(d2nnc::interp::run(m, &abs_feeds(&feeds)).map_err(|e| TestCaseError::fail(format!("magnitude graph: {e}")))?),
            None => None,
        };
        for executor in &mut executors {
            let threads = executor.threads();
            let got = executor.run(&feeds).map_err(|e| TestCaseError::fail(format!("plan at batch {batch}, {threads} threads: {e}")))?;
            if got.len() != want.len() {
                return Err(TestCaseError::fail(format!("{} outputs, expected {}", got.len(), want.len())));
            }
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let mag = mags.as_ref().map(|m| &m[k]);
                compare_within(g, w, mag, tol).map_err(|m| {
                    let name = &graph.values[graph.outputs()[k]].name;
                    TestCaseError::fail(format!("batch {batch}, {threads} threads, output `{name}` {:?}: {m}", w.shape()))
                })?;
            }
        }
    }
    Ok(())
}

/// Element-wise `|got − want| ≤ bound` (NaN matches NaN, infinities must be equal).
fn compare_within(got: &Tensor, want: &Tensor, mag: Option<&Tensor>, tol: Tolerance) -> Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!("got {}{:?}, expected {}{:?}", got.dtype(), got.shape(), want.dtype(), want.shape()));
    }
    let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
    let m = mag.map(|m| m.to_f32_vec());
    if m.as_ref().is_some_and(|m| m.len() != w.len()) {
        return Err("the magnitude graph's output has another shape".into());
    }
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if tol.is_exact() || b.is_infinite() {
            a == b
        } else {
            let mag = m.as_ref().map_or(0.0, |m| f64::from(m[i]));
            let bound = tol.rel * f64::from(b).abs() + tol.per_magnitude * mag + UNDERFLOW;
            (f64::from(a) - f64::from(b)).abs() <= bound
        };
        if !ok {
            let index = unflatten(i, want.shape());
            let detail = match &m {
                Some(m) => {
                    let bound = tol.rel * f64::from(b).abs() + tol.per_magnitude * f64::from(m[i]) + UNDERFLOW;
                    format!(" (|diff| {:e} > bound {bound:e}, magnitude {})", (f64::from(a) - f64::from(b)).abs(), m[i])
                }
                None => String::new(),
            };
            return Err(format!("element {index:?}: got {a:?}, expected {b:?}{detail}"));
        }
    }
    Ok(())
}

fn unflatten(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (axis, &d) in shape.iter().enumerate().rev() {
        index[axis] = i % d.max(1);
        i /= d.max(1);
    }
    index
}
