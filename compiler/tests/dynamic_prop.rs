//! Property test of dynamic execution on random gated graphs built as ONNX
//! models: early-exit chains (`Where(Greater(Sigmoid(Gemm(f)), t), exit,
//! deeper)`, nested), skip blocks (`h + Cast(decision) * block(h)`), one-hot
//! and `Equal(ArgMax)` merges (`Σ branch_k * gate_k`), and decisions (tests,
//! and sets of sibling `ArgMax` choices) combined by `And`/`Or`/`Not`, over
//! a symbolic batch `N`, on `[N, C]` vectors with `Gemm`/`MatMul` blocks or
//! `[N, C, H, W]` maps with small convolutions.
//!
//! For every generated model, batch and knob setting:
//! 1. the interpreter's dynamic mode gives the dense interpreter's outputs
//!    bit for bit (inputs are finite, so a gated-off term is 0 both ways);
//! 2. the plan executor's dynamic schedule (1 and 2 threads) matches dense to
//!    rounding and records the interpreter's trace;
//! 3. the analysis found the gates, and no block saw more samples than the batch;
//! 4. no run executes more FLOPs than the dense graph.
//!
//! Deterministic tests pin the NaN semantics of `DESIGN.md` §2: a NaN
//! controller logit neither exits nor opens a gate, and a gated-off term whose
//! skipped branch would be NaN or infinite contributes exactly 0.

use d2nn_runtime::Tensor;
use d2nnc::dynamic::{Analysis, Trace};
use d2nnc::front::onnx::build::{graph, model_bytes, node, tensor_f32, tensor_i64, value_info_dims, Attr, DataType, Dim, NodeExt};
use d2nnc::interp::Knobs;
use onnx_protobuf::{NodeProto, TensorProto};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// SplitMix64: the weights and inputs of a case come from one proptest seed.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }
}

/// The tensor layout the blocks work on.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// `[N, C]`, blocks `Relu(Gemm)` or `Relu(MatMul + b)`.
    Vector { c: usize },
    /// `[N, C, H, W]`, blocks `Relu(Conv 3x3)`; heads read `GlobalAveragePool`.
    Maps { c: usize, hw: usize },
}

impl Layout {
    fn channels(self) -> usize {
        match self {
            Layout::Vector { c } | Layout::Maps { c, .. } => c,
        }
    }

    fn sample_dims(self) -> Vec<usize> {
        match self {
            Layout::Vector { c } => vec![c],
            Layout::Maps { c, hw } => vec![c, hw, hw],
        }
    }

    /// Shape a per-sample decision `[N, 1]` takes to line up with a block's output.
    fn gate_shape(self) -> Vec<i64> {
        match self {
            Layout::Vector { .. } => vec![-1, 1],
            Layout::Maps { .. } => vec![-1, 1, 1, 1],
        }
    }
}

/// A decision: a controller head's test, or a combination of decisions.
#[derive(Clone, Debug)]
enum Cond {
    /// `Greater(Sigmoid(Gemm(features)), threshold)`, threshold a named initializer.
    Test { threshold: f32 },
    /// `Or` of `Equal(ArgMax(q, keepdims=1), k)` over the chosen `k` of one
    /// controller with `chosen.len()` choices: sibling choices of one `ArgMax`.
    Choices { chosen: Vec<bool> },
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

/// How a merge reads choice `k` of an `ArgMax`.
#[derive(Clone, Copy, Debug)]
enum ChoiceForm {
    /// `Slice(OneHot(ArgMax(q, keepdims=0), K, [0, 1]), k:k+1, axis 1)` → Cast → Reshape `[N, 1]`.
    OneHotSlice,
    /// `Equal(ArgMax(q, keepdims=1), k)` → Cast.
    EqualKeepdims,
    /// `Equal(Reshape(ArgMax(q, keepdims=0), [-1, 1]), k)` → Cast.
    EqualReshaped,
}

/// A stage maps a block-shaped value to one of the same shape.
#[derive(Clone, Debug)]
enum Stage {
    /// One block.
    Plain,
    /// `f = block(h); Where(cond(f), exit_head(f), deeper(f))`.
    Exit { cond: Cond, deeper: Box<Stage> },
    /// `h + Cast(cond(h)) * body(h)`; the gate optionally goes through `[N]`
    /// and back, and is the first or second `Mul` operand.
    Skip { cond: Cond, body: Box<Stage>, through_flat: bool, gate_first: bool },
    /// `Σ_k branch_k(h) * gate_k`, gates the choices of `ArgMax(Gemm(features(h)))`.
    Choice { form: ChoiceForm, branches: Vec<Stage> },
    Seq(Box<Stage>, Box<Stage>),
}

impl Cond {
    fn has_test(&self) -> bool {
        match self {
            Cond::Test { .. } => true,
            Cond::Choices { .. } => false,
            Cond::Not(a) => a.has_test(),
            Cond::And(a, b) | Cond::Or(a, b) => a.has_test() || b.has_test(),
        }
    }
}

impl Stage {
    /// Whether some decision compares against a threshold (which must become a knob).
    fn has_threshold(&self) -> bool {
        match self {
            Stage::Plain => false,
            Stage::Exit { cond, deeper } => cond.has_test() || deeper.has_threshold(),
            Stage::Skip { cond, body, .. } => cond.has_test() || body.has_threshold(),
            Stage::Choice { branches, .. } => branches.iter().any(Stage::has_threshold),
            Stage::Seq(a, b) => a.has_threshold() || b.has_threshold(),
        }
    }

    fn is_gated(&self) -> bool {
        match self {
            Stage::Plain => false,
            Stage::Seq(a, b) => a.is_gated() || b.is_gated(),
            _ => true,
        }
    }
}

/// An ONNX graph under construction: nodes in topological order, initializers, fresh names.
struct ModelBuilder {
    layout: Layout,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    next: usize,
    rng: SplitMix,
}

impl ModelBuilder {
    fn new(layout: Layout, seed: u64) -> Self {
        ModelBuilder { layout, nodes: Vec::new(), inits: Vec::new(), next: 0, rng: SplitMix(seed) }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_{}", self.next)
    }

    /// Appends a one-output node named after its output; returns the output.
    fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op_type.to_lowercase());
        self.nodes.push(node(op_type, inputs, &[&out]).with_name(&out).with_attrs(attrs));
        out
    }

    fn random_f32(&mut self, prefix: &str, dims: &[i64], scale: f32) -> String {
        let name = self.fresh(prefix);
        let len = dims.iter().product::<i64>() as usize;
        let data: Vec<f32> = (0..len).map(|_| self.rng.uniform(-scale, scale)).collect();
        self.inits.push(tensor_f32(&name, dims, &data));
        name
    }

    fn const_f32(&mut self, prefix: &str, dims: &[i64], data: &[f32]) -> String {
        let name = self.fresh(prefix);
        self.inits.push(tensor_f32(&name, dims, data));
        name
    }

    fn const_i64(&mut self, prefix: &str, dims: &[i64], data: &[i64]) -> String {
        let name = self.fresh(prefix);
        self.inits.push(tensor_i64(&name, dims, data));
        name
    }

    fn reshape(&mut self, v: &str, shape: &[i64]) -> String {
        let s = self.const_i64("shape", &[shape.len() as i64], shape);
        self.op("Reshape", &[v, &s], vec![])
    }

    /// One block: same shape in and out.
    fn block(&mut self, h: &str) -> String {
        let c = self.layout.channels() as i64;
        let scale = 1.2 / (c as f32).sqrt();
        let pre = match self.layout {
            Layout::Vector { .. } => {
                let w = self.random_f32("w", &[c, c], scale);
                let b = self.random_f32("b", &[c], 0.3);
                if self.rng.next_u64().is_multiple_of(2) {
                    self.op("Gemm", &[h, &w, &b], vec![])
                } else {
                    let m = self.op("MatMul", &[h, &w], vec![]);
                    self.op("Add", &[&m, &b], vec![])
                }
            }
            Layout::Maps { .. } => {
                let w = self.random_f32("w", &[c, c, 3, 3], scale / 3.0);
                let b = self.random_f32("b", &[c], 0.3);
                self.op("Conv", &[h, &w, &b], vec![("kernel_shape", Attr::Ints(vec![3, 3])), ("pads", Attr::Ints(vec![1, 1, 1, 1]))])
            }
        };
        self.op("Relu", &[&pre], vec![])
    }

    /// An exit head: a linear map of the same shape (a 1x1 conv on maps).
    fn exit_head(&mut self, f: &str) -> String {
        let c = self.layout.channels() as i64;
        match self.layout {
            Layout::Vector { .. } => {
                let w = self.random_f32("exit_w", &[c, c], 1.0);
                let b = self.random_f32("exit_b", &[c], 0.5);
                self.op("Gemm", &[f, &w, &b], vec![])
            }
            Layout::Maps { .. } => {
                let w = self.random_f32("exit_w", &[c, c, 1, 1], 1.0);
                self.op("Conv", &[f, &w], vec![("kernel_shape", Attr::Ints(vec![1, 1]))])
            }
        }
    }

    /// `[N, C]` features a controller reads.
    fn features(&mut self, h: &str) -> String {
        match self.layout {
            Layout::Vector { .. } => h.to_string(),
            Layout::Maps { .. } => {
                let pooled = self.op("GlobalAveragePool", &[h], vec![]);
                self.op("Flatten", &[&pooled], vec![])
            }
        }
    }

    /// A controller's logits `[N, k]`.
    fn logits(&mut self, h: &str, k: usize) -> String {
        let f = self.features(h);
        let c = self.layout.channels() as i64;
        let w = self.random_f32("ctrl_w", &[c, k as i64], 2.0);
        let b = self.random_f32("ctrl_b", &[k as i64], 0.5);
        self.op("Gemm", &[&f, &w, &b], vec![])
    }

    /// A bool `[N, 1]` decision on `h`.
    fn cond(&mut self, h: &str, cond: &Cond) -> String {
        match cond {
            Cond::Test { threshold } => {
                let q = self.logits(h, 1);
                let p = self.op("Sigmoid", &[&q], vec![]);
                let t = self.const_f32("threshold", &[], &[*threshold]);
                self.op("Greater", &[&p, &t], vec![])
            }
            Cond::Choices { chosen } => {
                let q = self.logits(h, chosen.len());
                let index = self.op("ArgMax", &[&q], vec![("axis", Attr::Int(1)), ("keepdims", Attr::Int(1))]);
                let mut any: Option<String> = None;
                for k in (0..chosen.len()).filter(|&k| chosen[k]) {
                    let kc = self.const_i64("choice", &[], &[k as i64]);
                    let eq = self.op("Equal", &[&index, &kc], vec![]);
                    any = Some(match any {
                        None => eq,
                        Some(a) => self.op("Or", &[&a, &eq], vec![]),
                    });
                }
                any.expect("at least one choice")
            }
            Cond::Not(a) => {
                let a = self.cond(h, a);
                self.op("Not", &[&a], vec![])
            }
            Cond::And(a, b) => {
                let (a, b) = (self.cond(h, a), self.cond(h, b));
                self.op("And", &[&a, &b], vec![])
            }
            Cond::Or(a, b) => {
                let (a, b) = (self.cond(h, a), self.cond(h, b));
                self.op("Or", &[&a, &b], vec![])
            }
        }
    }

    /// A decision `[N, 1]` (bool or float) reshaped to line up with blocks.
    fn reshape_to_rows(&mut self, d: &str) -> String {
        match self.layout {
            Layout::Vector { .. } => d.to_string(),
            Layout::Maps { .. } => {
                let shape = self.layout.gate_shape();
                self.reshape(d, &shape)
            }
        }
    }

    fn cast_float(&mut self, v: &str) -> String {
        self.op("Cast", &[v], vec![("to", Attr::Int(DataType::FLOAT as i64))])
    }

    /// The float `[N, 1]` gate of choice `k` of `K`.
    fn choice_gate(&mut self, form: ChoiceForm, q: &str, k: usize, depth: usize) -> String {
        match form {
            ChoiceForm::OneHotSlice => {
                let index = self.op("ArgMax", &[q], vec![("axis", Attr::Int(1)), ("keepdims", Attr::Int(0))]);
                let d = self.const_i64("depth", &[], &[depth as i64]);
                let values = self.const_f32("onehot_values", &[2], &[0.0, 1.0]);
                let hot = self.op("OneHot", &[&index, &d, &values], vec![("axis", Attr::Int(-1))]);
                let starts = self.const_i64("starts", &[1], &[k as i64]);
                let ends = self.const_i64("ends", &[1], &[k as i64 + 1]);
                let axes = self.const_i64("axes", &[1], &[1]);
                let column = self.op("Slice", &[&hot, &starts, &ends, &axes], vec![]);
                let column = self.cast_float(&column);
                self.reshape(&column, &[-1, 1])
            }
            ChoiceForm::EqualKeepdims => {
                let index = self.op("ArgMax", &[q], vec![("axis", Attr::Int(1)), ("keepdims", Attr::Int(1))]);
                let kc = self.const_i64("choice", &[], &[k as i64]);
                let eq = self.op("Equal", &[&index, &kc], vec![]);
                self.cast_float(&eq)
            }
            ChoiceForm::EqualReshaped => {
                let index = self.op("ArgMax", &[q], vec![("axis", Attr::Int(1)), ("keepdims", Attr::Int(0))]);
                let index = self.reshape(&index, &[-1, 1]);
                let kc = self.const_i64("choice", &[1], &[k as i64]);
                let eq = self.op("Equal", &[&index, &kc], vec![]);
                self.cast_float(&eq)
            }
        }
    }

    fn stage(&mut self, h: &str, stage: &Stage) -> String {
        match stage {
            Stage::Plain => self.block(h),
            Stage::Exit { cond, deeper } => {
                let f = self.block(h);
                let c = self.cond(&f, cond);
                let c = self.reshape_to_rows(&c);
                let exit = self.exit_head(&f);
                let rest = self.stage(&f, deeper);
                self.op("Where", &[&c, &exit, &rest], vec![])
            }
            Stage::Skip { cond, body, through_flat, gate_first } => {
                let c = self.cond(h, cond);
                let mut gate = self.cast_float(&c);
                if *through_flat {
                    let flat = self.reshape(&gate, &[-1]);
                    gate = self.reshape(&flat, &[-1, 1]);
                }
                let gate = self.reshape_to_rows(&gate);
                let y = self.stage(h, body);
                let gated = if *gate_first { self.op("Mul", &[&gate, &y], vec![]) } else { self.op("Mul", &[&y, &gate], vec![]) };
                self.op("Add", &[h, &gated], vec![])
            }
            Stage::Choice { form, branches } => {
                let q = self.logits(h, branches.len());
                let mut sum: Option<String> = None;
                for (k, branch) in branches.iter().enumerate() {
                    let gate = self.choice_gate(*form, &q, k, branches.len());
                    let gate = self.reshape_to_rows(&gate);
                    let y = self.stage(h, branch);
                    let term = self.op("Mul", &[&y, &gate], vec![]);
                    sum = Some(match sum {
                        None => term,
                        Some(s) => self.op("Add", &[&s, &term], vec![]),
                    });
                }
                sum.expect("a merge has branches")
            }
            Stage::Seq(a, b) => {
                let mid = self.stage(h, a);
                self.stage(&mid, b)
            }
        }
    }

    fn finish(self, output: &str) -> Vec<u8> {
        let mut dims = vec![Dim::param("N")];
        dims.extend(self.layout.sample_dims().iter().map(|&d| Dim::Fixed(d as i64)));
        let x = value_info_dims("x", DataType::FLOAT, &dims);
        let y = value_info_dims(output, DataType::FLOAT, &dims);
        model_bytes(graph("gated", self.nodes, vec![x], vec![y], self.inits), 8, 13)
    }
}

/// Builds the model of `stage` on input `x`, loads and optimises it.
fn build(layout: Layout, stage: &Stage, seed: u64) -> d2nnc::ir::Graph {
    let mut b = ModelBuilder::new(layout, seed);
    let y = b.stage("x", stage);
    let bytes = b.finish(&y);
    let mut model = d2nnc::front::onnx::load_bytes(&bytes, None, "gated.onnx").unwrap_or_else(|e| panic!("{e}"));
    d2nnc::passes::optimize(&mut model.graph).unwrap_or_else(|e| panic!("{e}"));
    model.graph
}

fn input(layout: Layout, batch: usize, seed: u64) -> Tensor {
    let mut rng = SplitMix(seed ^ 0x005E_ED0F_1A7A);
    let mut shape = vec![batch];
    shape.extend(layout.sample_dims());
    let len = shape.iter().product();
    Tensor::from_f32(&shape, (0..len).map(|_| rng.uniform(-2.0, 2.0)).collect()).unwrap()
}

/// Exact equality, NaN equal to NaN and 0 equal to -0.
fn same(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(format!("{}{:?} vs {}{:?}", a.dtype(), a.shape(), b.dtype(), b.shape()));
    }
    for (i, (p, q)) in a.to_f32_vec().iter().zip(&b.to_f32_vec()).enumerate() {
        if !(p == q || (p.is_nan() && q.is_nan())) {
            return Err(format!("element {i}: {p} vs {q}"));
        }
    }
    Ok(())
}

/// The dense interpreter with knob values substituted into the graph.
fn dense_with_knobs(graph: &d2nnc::ir::Graph, analysis: &Analysis, knobs: &Knobs, feeds: &HashMap<String, Tensor>) -> Vec<Tensor> {
    let mut g = graph.clone();
    for (name, &value) in knobs {
        let knob = analysis.knob(name).unwrap();
        let old = g.const_value(knob.value).unwrap().clone();
        let t = Tensor::from_f32(old.shape(), vec![value; old.len()]).unwrap();
        g.values[knob.value].def = d2nnc::ir::ValueDef::Const(Arc::new(t));
    }
    d2nnc::interp::run(&g, feeds).unwrap()
}

fn plan_run(program: &Arc<d2nnc::plan::Program>, threads: usize, knobs: &Knobs, feeds: &HashMap<String, Tensor>) -> (Vec<Tensor>, Option<Trace>) {
    // A low threshold so that two threads really split the small kernels.
    let mut ex = d2nnc::plan::Executor::with_threads(program.clone(), threads).with_parallel_threshold(16);
    for (name, &v) in knobs {
        ex.set_knob(name, v).unwrap();
    }
    let out = ex.run(feeds).unwrap_or_else(|e| panic!("plan run: {e}"));
    (out, ex.trace().cloned())
}

/// Checks properties 1–4 for one model, batch and knob setting; returns the trace.
fn check(graph: &d2nnc::ir::Graph, analysis: &Analysis, program: &Arc<d2nnc::plan::Program>, x: Tensor, knobs: &Knobs) -> Trace {
    let batch = x.shape()[0];
    let feeds = HashMap::from([("x".to_string(), x)]);
    let dense = dense_with_knobs(graph, analysis, knobs, &feeds);
    let (dynamic, trace) = d2nnc::interp::run_dynamic(graph, analysis, &feeds, knobs).unwrap_or_else(|e| panic!("dynamic run: {e}"));
    for (i, (d, e)) in dynamic.iter().zip(&dense).enumerate() {
        same(d, e).unwrap_or_else(|m| panic!("interpreter output {i}, batch {batch}, knobs {knobs:?}: {m}"));
    }
    assert_eq!(trace.batch, batch);
    for (b, &rows) in trace.rows.iter().enumerate() {
        assert!(rows <= batch, "block {b} saw {rows} samples of {batch}");
    }
    assert!(
        trace.flops_executed <= analysis.dense_flops(batch),
        "executed {} FLOPs, dense {}",
        trace.flops_executed,
        analysis.dense_flops(batch)
    );
    for threads in [1, 2] {
        let (got, plan_trace) = plan_run(program, threads, knobs, &feeds);
        for (i, (g, e)) in got.iter().zip(&dense).enumerate() {
            d2nnc::compare::compare(g, e, 1e-5, 1e-4)
                .unwrap_or_else(|m| panic!("plan output {i}, {threads} threads, batch {batch}, knobs {knobs:?}: {m}"));
        }
        assert_eq!(plan_trace.as_ref(), Some(&trace), "{threads} threads, batch {batch}, knobs {knobs:?}: plan and interpreter traces differ");
        let mut jit = d2nnc::back::clif::JitModel::compile(graph, program, analysis, threads).unwrap_or_else(|e| panic!("JIT compile: {e}"));
        for (name, &v) in knobs {
            jit.set_knob(name, v).unwrap();
        }
        let got = jit.run_tensors(&feeds).unwrap_or_else(|e| panic!("JIT run: {e}"));
        for (i, (g, e)) in got.iter().zip(&dense).enumerate() {
            d2nnc::compare::compare(g, e, 1e-5, 1e-4).unwrap_or_else(|m| panic!("JIT output {i}, {threads} threads, batch {batch}, knobs {knobs:?}: {m}"));
        }
        assert_eq!(jit.trace(), &trace, "{threads} threads, batch {batch}, knobs {knobs:?}: JIT and interpreter traces differ");
    }
    trace
}

fn threshold() -> impl Strategy<Value = f32> {
    // Sigmoid lies in [0, 1]: -1 opens every test, 2 closes every one.
    prop_oneof![4 => 0.05f32..0.95, 1 => Just(-1.0f32), 1 => Just(2.0f32), 1 => Just(0.5f32)]
}

fn cond() -> impl Strategy<Value = Cond> {
    let leaf = prop_oneof![
        3 => threshold().prop_map(|threshold| Cond::Test { threshold }),
        1 => prop::collection::vec(any::<bool>(), 2..=4)
            // Every choice of a controller, or none, is a constant the analysis folds.
            .prop_filter("a proper subset of the choices", |c| c.contains(&true) && c.contains(&false))
            .prop_map(|chosen| Cond::Choices { chosen }),
    ];
    leaf.prop_recursive(2, 4, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| Cond::Not(Box::new(a))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn choice_form() -> impl Strategy<Value = ChoiceForm> {
    prop_oneof![Just(ChoiceForm::OneHotSlice), Just(ChoiceForm::EqualKeepdims), Just(ChoiceForm::EqualReshaped)]
}

/// Stages nested up to three gated levels deep.
fn stage() -> impl Strategy<Value = Stage> {
    Just(Stage::Plain).prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            3 => (cond(), inner.clone()).prop_map(|(cond, deeper)| Stage::Exit { cond, deeper: Box::new(deeper) }),
            3 => (cond(), inner.clone(), any::<bool>(), any::<bool>()).prop_map(|(cond, body, through_flat, gate_first)| Stage::Skip {
                cond,
                body: Box::new(body),
                through_flat,
                gate_first
            }),
            2 => (choice_form(), prop::collection::vec(inner.clone(), 2..=3)).prop_map(|(form, branches)| Stage::Choice { form, branches }),
            1 => (inner.clone(), inner).prop_map(|(a, b)| Stage::Seq(Box::new(a), Box::new(b))),
        ]
    })
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![3 => (2usize..=6).prop_map(|c| Layout::Vector { c }), 1 => Just(Layout::Maps { c: 2, hw: 3 })]
}

/// Knob settings: the model's values, one knob forced to an extreme, or all knobs at a random value.
#[derive(Clone, Debug)]
enum KnobSetting {
    Model,
    OneExtreme { pick: usize, high: bool },
    All(f32),
}

fn knob_setting() -> impl Strategy<Value = KnobSetting> {
    prop_oneof![
        2 => Just(KnobSetting::Model),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, high)| KnobSetting::OneExtreme { pick, high }),
        1 => (0.0f32..1.0).prop_map(KnobSetting::All),
    ]
}

fn knobs_for(setting: &KnobSetting, analysis: &Analysis) -> Knobs {
    match *setting {
        KnobSetting::Model => Knobs::new(),
        KnobSetting::OneExtreme { pick, high } => analysis
            .knobs
            .get(pick % analysis.knobs.len().max(1))
            .map(|k| Knobs::from([(k.name.clone(), if high { 1.0e30 } else { -1.0e30 })]))
            .unwrap_or_default(),
        KnobSetting::All(v) => analysis.knobs.iter().map(|k| (k.name.clone(), v)).collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn dynamic_execution_matches_dense_on_random_gated_graphs(
        layout in layout(),
        stage in stage().prop_filter("a gated stage", Stage::is_gated),
        seed in any::<u64>(),
        batch in 1usize..=64,
        setting in knob_setting(),
    ) {
        let graph = build(layout, &stage, seed);
        let analysis = d2nnc::dynamic::analyze(&graph, &[]);
        prop_assert!(!analysis.blocks.is_empty(), "no gated block found in {}", d2nnc::ir::printer::print(&graph));
        prop_assert_eq!(!analysis.knobs.is_empty(), stage.has_threshold(), "thresholds are the knobs");
        let program = Arc::new(d2nnc::plan::lower_dynamic(&graph, &analysis).unwrap_or_else(|e| panic!("lower_dynamic: {e}")));
        let knobs = knobs_for(&setting, &analysis);
        for b in [batch, 1] {
            check(&graph, &analysis, &program, input(layout, b, seed), &knobs);
        }
    }
}

/// The generator must reach per-sample routing, not only all-or-nothing
/// decisions: over a fixed sample of its cases, blocks often run on part of
/// the batch, on both layouts.
#[test]
fn generator_reaches_partial_routing_on_both_layouts() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut partial_vector, mut partial_maps) = (0, 0);
    for _ in 0..40 {
        let case = (layout(), stage().prop_filter("a gated stage", Stage::is_gated), any::<u64>(), 2usize..=64);
        let (layout, stage, seed, batch) = case.new_tree(&mut runner).unwrap().current();
        let graph = build(layout, &stage, seed);
        let analysis = d2nnc::dynamic::analyze(&graph, &[]);
        let program = Arc::new(d2nnc::plan::lower_dynamic(&graph, &analysis).unwrap());
        let trace = check(&graph, &analysis, &program, input(layout, batch, seed), &Knobs::new());
        if trace.rows.iter().any(|&r| r > 0 && r < batch) {
            match layout {
                Layout::Vector { .. } => partial_vector += 1,
                Layout::Maps { .. } => partial_maps += 1,
            }
        }
    }
    assert!(partial_vector >= 10 && partial_maps >= 3, "partial routing in {partial_vector} vector and {partial_maps} map cases of 40");
}

/// The innermost block holding the producer of `v`.
fn block_of(graph: &d2nnc::ir::Graph, analysis: &Analysis, v: d2nnc::ir::ValueId) -> usize {
    let d2nnc::ir::ValueDef::Node { node: n, .. } = graph.values[v].def else { panic!("{} is not computed", graph.values[v].name) };
    (0..analysis.blocks.len())
        .filter(|&b| analysis.block_nodes(b).contains(&n))
        .min_by_key(|&b| analysis.block_nodes(b).len())
        .unwrap_or_else(|| panic!("{} is not in a block", graph.nodes[n].name))
}

/// A sample whose controller logit is NaN does not exit (NaN > t is false),
/// even with the threshold knob at -1e30 where every other sample exits;
/// both dynamic backends run it and agree with dense on every sample.
#[test]
fn nan_controller_logit_does_not_exit() {
    let layout = Layout::Vector { c: 4 };
    let stage = Stage::Exit { cond: Cond::Test { threshold: 0.5 }, deeper: Box::new(Stage::Plain) };
    let graph = build(layout, &stage, 7);
    let analysis = d2nnc::dynamic::analyze(&graph, &[]);
    assert_eq!(analysis.knobs.len(), 1);
    let program = Arc::new(d2nnc::plan::lower_dynamic(&graph, &analysis).unwrap());
    let where_node = graph.nodes.iter().find(|(_, n)| matches!(n.op, d2nnc::ir::Op::Where)).map(|(_, n)| n.clone()).expect("a Where");
    let exit_block = block_of(&graph, &analysis, where_node.input(1).unwrap());
    let deeper_block = block_of(&graph, &analysis, where_node.input(2).unwrap());
    assert_ne!(exit_block, deeper_block);

    let mut x = input(layout, 5, 7).to_f32_vec();
    x[2 * 4] = f32::NAN;
    let x = Tensor::from_f32(&[5, 4], x).unwrap();
    for knobs in [Knobs::new(), Knobs::from([(analysis.knobs[0].name.clone(), -1.0e30)])] {
        let trace = check(&graph, &analysis, &program, x.clone(), &knobs);
        assert!(!trace.sample_regions[2].contains(&exit_block), "the NaN sample exited (knobs {knobs:?}): {:?}", trace.sample_regions);
        assert!(trace.sample_regions[2].contains(&deeper_block), "the NaN sample skipped the deeper block (knobs {knobs:?})");
        if !knobs.is_empty() {
            assert_eq!(trace.rows[exit_block], 4, "every finite sample exits at threshold -1e30");
        }
    }
}

/// `y = x + g * Log(x - 100) + g * Div(x, 0)`, `g = Cast(Sigmoid(10 x₀) > 0.5)`:
/// where the gate is closed (x₀ < 0, or x₀ NaN) the skipped terms would be
/// NaN and ±inf, and the dynamic output is `x` exactly; where it is open the
/// dynamic output is the dense one.
#[test]
fn gated_off_nan_and_inf_terms_are_exactly_zero() {
    let layout = Layout::Vector { c: 4 };
    let mut b = ModelBuilder::new(layout, 1);
    let w = b.const_f32("ctrl_w", &[4, 1], &[10.0, 0.0, 0.0, 0.0]);
    let bias = b.const_f32("ctrl_b", &[1], &[0.0]);
    let q = b.op("Gemm", &["x", &w, &bias], vec![]);
    let p = b.op("Sigmoid", &[&q], vec![]);
    let t = b.const_f32("threshold", &[], &[0.5]);
    let open = b.op("Greater", &[&p, &t], vec![]);
    let gate = b.cast_float(&open);
    let hundred = b.const_f32("hundred", &[], &[100.0]);
    let shifted = b.op("Sub", &["x", &hundred], vec![]);
    let log = b.op("Log", &[&shifted], vec![]);
    let zero = b.const_f32("zero", &[], &[0.0]);
    let ratio = b.op("Div", &["x", &zero], vec![]);
    let log_term = b.op("Mul", &[&log, &gate], vec![]);
    let ratio_term = b.op("Mul", &[&gate, &ratio], vec![]);
    let partial = b.op("Add", &["x", &log_term], vec![]);
    let y = b.op("Add", &[&partial, &ratio_term], vec![]);
    let bytes = b.finish(&y);
    let mut model = d2nnc::front::onnx::load_bytes(&bytes, None, "poison.onnx").unwrap();
    d2nnc::passes::optimize(&mut model.graph).unwrap();
    let graph = model.graph;
    let analysis = d2nnc::dynamic::analyze(&graph, &[]);
    assert_eq!(analysis.gates.len(), 2, "both Muls are gated");
    let program = Arc::new(d2nnc::plan::lower_dynamic(&graph, &analysis).unwrap());

    let rows: [[f32; 4]; 4] = [[1.0, 1.0, 1.0, 1.0], [-1.0, 2.0, -3.0, 0.0], [f32::NAN, 1.0, 2.0, 3.0], [0.5, -1.0, -2.0, 0.0]];
    let x = Tensor::from_f32(&[4, 4], rows.concat()).unwrap();
    let feeds = HashMap::from([("x".to_string(), x)]);
    let dense = d2nnc::interp::run(&graph, &feeds).unwrap()[0].to_f32_vec();
    let (dynamic, trace) = d2nnc::interp::run_dynamic(&graph, &analysis, &feeds, &Knobs::new()).unwrap();
    let dynamic = dynamic[0].to_f32_vec();
    for threads in [1, 2] {
        let (got, plan_trace) = plan_run(&program, threads, &Knobs::new(), &feeds);
        same(&got[0], &Tensor::from_f32(&[4, 4], dynamic.clone()).unwrap()).unwrap_or_else(|m| panic!("plan, {threads} threads: {m}"));
        assert_eq!(plan_trace.as_ref(), Some(&trace));
    }
    let row = |v: &[f32], r: usize| v[r * 4..r * 4 + 4].to_vec();
    // Open gates: the terms are computed, NaN/inf included, as in dense.
    for r in [0, 3] {
        same(&Tensor::from_f32(&[4], row(&dynamic, r)).unwrap(), &Tensor::from_f32(&[4], row(&dense, r)).unwrap()).unwrap_or_else(|m| panic!("open row {r}: {m}"));
        assert!(row(&dynamic, r).iter().any(|v| !v.is_finite()), "open row {r} computes the poisoned terms");
    }
    // Closed gates (x₀ < 0, and the NaN logit): exactly x, where dense is poisoned.
    for r in [1, 2] {
        same(&Tensor::from_f32(&[4], row(&dynamic, r)).unwrap(), &Tensor::from_f32(&[4], rows[r].to_vec()).unwrap()).unwrap_or_else(|m| panic!("closed row {r}: {m}"));
        assert!(row(&dense, r).iter().all(|v| !v.is_finite()), "dense row {r} is poisoned");
    }
}
