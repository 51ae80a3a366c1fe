//! Dynamic execution against dense execution on the real fixtures: the
//! interpreter's dynamic mode (and the plan executor's) must give the dense
//! interpreter's outputs bit for bit wherever the same kernels run, at the
//! stored batch and tiled to other batch sizes, with the knobs at the
//! model's values and moved so that every region runs.

use d2nn_runtime::npy::read_npy;
use d2nn_runtime::Tensor;
use d2nnc::dynamic::Analysis;
use d2nnc::interp::Knobs;
use serde_json::Value as Json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn fixture_names() -> Vec<String> {
    let index: Json = serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("index.json")).unwrap()).unwrap();
    index.as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect()
}

/// The stored inputs of a fixture (main case and alternates).
fn fixture_inputs(name: &str) -> Vec<HashMap<String, Tensor>> {
    let dir = fixtures_dir().join(name);
    let manifest: Json = serde_json::from_str(&std::fs::read_to_string(dir.join("fixture.json")).unwrap()).unwrap();
    let read = |list: &Json| -> HashMap<String, Tensor> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), read_npy(&dir.join(e["file"].as_str().unwrap())).unwrap()))
            .collect()
    };
    let mut out = vec![read(&manifest["inputs"])];
    for alt in manifest.get("alt_cases").and_then(Json::as_array).into_iter().flatten() {
        out.push(read(&alt["inputs"]));
    }
    out
}

/// Tiles every input with a symbolic axis 0 to `batch` samples (cyclically).
fn tiled(graph: &d2nnc::ir::Graph, feeds: &HashMap<String, Tensor>, batch: usize) -> Option<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for &v in &graph.inputs {
        let value = &graph.values[v];
        let t = feeds.get(&value.name)?;
        if !matches!(value.ty.shape.first(), Some(d2nnc::ir::Dim::Sym { factor: 1, .. })) {
            return None;
        }
        let rows: Vec<usize> = (0..batch).map(|i| i % t.shape()[0]).collect();
        let a = t.as_f32().ok()?;
        out.insert(value.name.clone(), Tensor::F32(a.select(ndarray::Axis(0), &rows)));
    }
    Some(out)
}

/// Exact equality, NaN equal to NaN and 0 equal to -0.
pub fn same(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(format!("{}{:?} vs {}{:?}", a.dtype(), a.shape(), b.dtype(), b.shape()));
    }
    let (x, y) = (a.to_f32_vec(), b.to_f32_vec());
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        if !(p == q || (p.is_nan() && q.is_nan())) {
            return Err(format!("element {i}: {p} vs {q}"));
        }
    }
    Ok(())
}

fn load(name: &str) -> (d2nnc::ir::Graph, Analysis) {
    let model = d2nnc::load_and_optimize(&fixtures_dir().join(name).join("model.onnx")).unwrap();
    let analysis = d2nnc::dynamic::analyze(&model.graph, &[]);
    (model.graph, analysis)
}

/// Knob settings to try: the model's values, and for each knob the extremes
/// that force every decision it feeds one way and the other.
fn knob_settings(analysis: &Analysis) -> Vec<Knobs> {
    let mut out = vec![Knobs::new()];
    for k in &analysis.knobs {
        for v in [-1.0e30f32, 1.0e30] {
            out.push(Knobs::from([(k.name.clone(), v)]));
        }
    }
    let all = |v: f32| analysis.knobs.iter().map(|k| (k.name.clone(), v)).collect::<Knobs>();
    if !analysis.knobs.is_empty() {
        out.push(all(-1.0e30));
        out.push(all(1.0e30));
    }
    out
}

/// `graph` with the knobs' constants replaced by the given values: what
/// dense execution of a moved threshold runs.
fn with_knobs(graph: &d2nnc::ir::Graph, analysis: &Analysis, knobs: &Knobs) -> d2nnc::ir::Graph {
    let mut g = graph.clone();
    for (name, &value) in knobs {
        let knob = analysis.knob(name).unwrap();
        let old = g.const_value(knob.value).unwrap().clone();
        let t = Tensor::from_f32(old.shape(), vec![value; old.len()]).unwrap();
        g.values[knob.value].def = d2nnc::ir::ValueDef::Const(std::sync::Arc::new(t));
    }
    g
}

#[test]
fn dynamic_interpreter_matches_dense_on_every_fixture() {
    let mut covered_regions = 0;
    let mut total_regions = 0;
    for name in fixture_names() {
        let (graph, analysis) = load(&name);
        let mut ran: HashSet<usize> = HashSet::new();
        for feeds in fixture_inputs(&name) {
            let mut batches = vec![feeds.clone()];
            for b in [1, 3, 17] {
                batches.extend(tiled(&graph, &feeds, b));
            }
            for feeds in &batches {
                for knobs in knob_settings(&analysis) {
                    let dense = d2nnc::interp::run(&with_knobs(&graph, &analysis, &knobs), feeds).unwrap();
                    let (dynamic, trace) = d2nnc::interp::run_dynamic(&graph, &analysis, feeds, &knobs)
                        .unwrap_or_else(|e| panic!("{name}: dynamic run failed: {e}"));
                    for (i, (d, e)) in dynamic.iter().zip(&dense).enumerate() {
                        same(d, e).unwrap_or_else(|m| panic!("{name} output {i} (knobs {knobs:?}): {m}"));
                    }
                    assert!(trace.flops_executed <= analysis.dense_flops(trace.batch), "{name}: executed more than dense");
                    ran.extend((0..analysis.blocks.len()).filter(|&b| trace.rows[b] > 0));
                }
            }
        }
        total_regions += analysis.blocks.len();
        covered_regions += ran.len();
        assert_eq!(ran.len(), analysis.blocks.len(), "{name}: regions never run: {:?}", (0..analysis.blocks.len()).filter(|b| !ran.contains(b)).collect::<Vec<_>>());
    }
    assert!(total_regions >= 10, "the dynamic fixtures have regions ({covered_regions}/{total_regions})");
}

/// Runs a plan with knob values set.
fn plan_run(program: &std::sync::Arc<d2nnc::plan::Program>, threads: usize, knobs: &Knobs, feeds: &HashMap<String, Tensor>) -> (Vec<Tensor>, Option<d2nnc::dynamic::Trace>) {
    let mut ex = d2nnc::plan::Executor::with_threads(program.clone(), threads).with_parallel_threshold(64);
    for (name, &v) in knobs {
        ex.set_knob(name, v).unwrap();
    }
    let out = ex.run(feeds).unwrap();
    (out, ex.trace().cloned())
}

#[test]
fn dynamic_plan_matches_dense_plan_and_the_interpreter_trace_on_every_fixture() {
    for name in fixture_names() {
        let (graph, analysis) = load(&name);
        let dynamic = std::sync::Arc::new(d2nnc::plan::lower_dynamic(&graph, &analysis).unwrap());
        for feeds in fixture_inputs(&name) {
            let mut batches = vec![feeds.clone()];
            for b in [1, 5, 33] {
                batches.extend(tiled(&graph, &feeds, b));
            }
            for feeds in &batches {
                for knobs in knob_settings(&analysis) {
                    let g = with_knobs(&graph, &analysis, &knobs);
                    let dense = std::sync::Arc::new(d2nnc::plan::lower(&g).unwrap());
                    let (expected, _) = plan_run(&dense, 1, &Knobs::new(), feeds);
                    let (_, interp_trace) = d2nnc::interp::run_dynamic(&graph, &analysis, feeds, &knobs).unwrap();
                    for threads in [1, 2] {
                        let (got, trace) = plan_run(&dynamic, threads, &knobs, feeds);
                        // The GEMM picks its micro-kernel by row count (GEMV for one
                        // row), so a compacted sub-batch may round differently in
                        // the last bit: compare to a few ulps.
                        for (i, (d, e)) in got.iter().zip(&expected).enumerate() {
                            d2nnc::compare::compare(d, e, 1e-6, 1e-5).map_err(|m| m.to_string()).unwrap_or_else(|m| panic!("{name} output {i} (knobs {knobs:?}, {threads} threads, batch {:?}): {m}", feeds.values().next().map(|t| t.shape().to_vec())));
                        }
                        if analysis.is_dynamic() {
                            assert_eq!(trace.as_ref(), Some(&interp_trace), "{name}: the plan and the interpreter ran different rows");
                        }
                    }
                }
            }
        }
    }
}

/// Runs the JIT-compiled program with knob values set.
fn jit_run(graph: &d2nnc::ir::Graph, program: &d2nnc::plan::Program, analysis: &Analysis, threads: usize, knobs: &Knobs, feeds: &HashMap<String, Tensor>) -> (Vec<Tensor>, d2nnc::dynamic::Trace) {
    let mut jit = d2nnc::back::clif::JitModel::compile(graph, program, analysis, threads).unwrap_or_else(|e| panic!("JIT compile: {e}"));
    for (name, &v) in knobs {
        jit.set_knob(name, v).unwrap();
    }
    let out = jit.run_tensors(feeds).unwrap_or_else(|e| panic!("JIT run: {e}"));
    (out, jit.trace().clone())
}

#[test]
fn jit_matches_the_plan_executor_and_the_interpreter_trace_on_every_fixture() {
    for name in fixture_names() {
        let (graph, analysis) = load(&name);
        let dynamic = std::sync::Arc::new(d2nnc::plan::lower_dynamic(&graph, &analysis).unwrap());
        for feeds in fixture_inputs(&name) {
            let mut batches = vec![feeds.clone()];
            for b in [1, 5, 33] {
                batches.extend(tiled(&graph, &feeds, b));
            }
            for feeds in &batches {
                for knobs in knob_settings(&analysis) {
                    let batch = feeds.values().next().map(|t| t.shape().to_vec());
                    // Dense: the JIT of the dense program against the dense plan.
                    let g = with_knobs(&graph, &analysis, &knobs);
                    let dense = d2nnc::plan::lower(&g).unwrap();
                    let (expected, _) = plan_run(&std::sync::Arc::new(d2nnc::plan::lower(&g).unwrap()), 1, &Knobs::new(), feeds);
                    let (got, _) = jit_run(&g, &dense, &analysis, 1, &Knobs::new(), feeds);
                    for (i, (d, e)) in got.iter().zip(&expected).enumerate() {
                        same(d, e).unwrap_or_else(|m| panic!("{name} dense output {i} (knobs {knobs:?}, batch {batch:?}): {m}"));
                    }
                    // Dynamic: the same kernels on the same rows as the plan, and the interpreter's trace.
                    let (plan_out, _) = plan_run(&dynamic, 1, &knobs, feeds);
                    let (_, interp_trace) = d2nnc::interp::run_dynamic(&graph, &analysis, feeds, &knobs).unwrap();
                    for threads in [1, 2] {
                        let (got, trace) = jit_run(&graph, &dynamic, &analysis, threads, &knobs, feeds);
                        for (i, (d, e)) in got.iter().zip(&plan_out).enumerate() {
                            d2nnc::compare::compare(d, e, 1e-6, 1e-5).unwrap_or_else(|m| panic!("{name} dynamic output {i} (knobs {knobs:?}, {threads} threads, batch {batch:?}): {m}"));
                        }
                        if analysis.is_dynamic() {
                            assert_eq!(trace, interp_trace, "{name}: the JIT and the interpreter ran different rows (knobs {knobs:?}, batch {batch:?})");
                        }
                    }
                }
            }
        }
    }
}
