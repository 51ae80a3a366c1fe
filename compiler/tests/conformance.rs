//! ONNX backend conformance: every node test case of the `onnx` package (plus
//! its `simple`, `pytorch-operator` and `pytorch-converted` folders) is loaded
//! and run through the reference interpreter — as loaded and after the pass
//! pipeline — and through the plan executor, and compared with the stored
//! outputs.
//!
//! The cases are extracted once by `tests/conformance/extract.py` into
//! `target/onnx-conformance` (or `$D2NNC_CONFORMANCE_DIR`). Integer graph
//! inputs (axes, shapes, pads, indices) are bound as constants before
//! loading, as an exporter would store them. The committed
//! Cases with `If` or `Where` also run through the dynamic engines (guard
//! analysis, then the interpreter's dynamic mode and the dynamic plan): their
//! outputs must match the stored ones, and the dynamic interpreter's must
//! equal the dense interpreter's bit for bit.
//! `tests/conformance/expected.txt` lists each case's status; any case listed
//! as `pass` that no longer passes fails the run. `D2NNC_BLESS=1` rewrites it.
//! `D2NNC_CONFORMANCE_FILTER=substr` runs only matching cases and prints each.

use d2nnc::compare::compare;
use d2nnc::front::onnx::{load_bytes, tensor::tensor_from_proto, LoadError};
use d2nnc::plan::LowerError;
use d2nn_runtime::Tensor;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{Message, ModelProto, TensorProto};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const SUITES: &[&str] = &["node", "simple", "pytorch-operator", "pytorch-converted"];
/// Data sets whose model the plan refuses for runtime-dependent shapes.
static DYNAMIC_SHAPE_CASES: AtomicUsize = AtomicUsize::new(0);
/// Programs the JIT compiled and ran, and how many of them have a step
/// that calls back into the interpreter.
static JIT_RUNS: AtomicUsize = AtomicUsize::new(0);
static JIT_NEEDS_INTERPRETER: AtomicUsize = AtomicUsize::new(0);
/// Data sets with `If`/`Where` run through the dynamic engines, and how many
/// of them the guard analysis found a decision in.
static DYNAMIC_RUNS: AtomicUsize = AtomicUsize::new(0);
static DYNAMIC_WITH_DECISIONS: AtomicUsize = AtomicUsize::new(0);

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

#[derive(Clone, Debug, PartialEq)]
enum Status {
    Pass,
    Fail(String),
    Unsupported(String),
}

impl Status {
    fn word(&self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail(_) => "fail",
            Status::Unsupported(_) => "unsupported",
        }
    }
    fn reason(&self) -> &str {
        match self {
            Status::Pass => "",
            Status::Fail(r) | Status::Unsupported(r) => r,
        }
    }
}

struct Case {
    id: String,
    dir: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("compiler/ has a parent").to_path_buf()
}

fn main() {
    let root = workspace_root();
    let dir = std::env::var_os("D2NNC_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/onnx-conformance"));
    if !dir.join(".complete").exists() {
        let msg = format!(
            "conformance cases not found in {}; extract them with `bash tests/run-all.sh` \
             (or `python tests/conformance/extract.py {}` with onnx==1.23.2)",
            dir.display(),
            dir.display()
        );
        if std::env::var_os("CI").is_some() {
            eprintln!("error: {msg}");
            std::process::exit(1);
        }
        eprintln!("warning: {msg}; skipping");
        return;
    }
    let filter = std::env::var("D2NNC_CONFORMANCE_FILTER").ok();
    let cases = discover(&dir, filter.as_deref());
    let results = run_all(&cases, filter.is_some());
    let expected_path = root.join("tests/conformance/expected.txt");
    report(&cases, &results, &expected_path, filter.is_some(), &root);
}

fn discover(dir: &Path, filter: Option<&str>) -> Vec<Case> {
    let mut cases = Vec::new();
    for suite in SUITES {
        let Ok(entries) = std::fs::read_dir(dir.join(suite)) else { continue };
        let mut names: Vec<_> = entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let id = format!("{suite}/{}", name.to_string_lossy());
            if filter.is_none_or(|f| id.contains(f)) {
                cases.push(Case { dir: dir.join(suite).join(&name), id });
            }
        }
    }
    cases
}

/// A case's status and the op types its model uses.
type Outcome = (Status, Vec<String>);

fn run_all(cases: &[Case], verbose: bool) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; cases.len()]);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let outcome = std::panic::catch_unwind(|| run_case(&case.dir))
                    .unwrap_or_else(|p| (Status::Fail(format!("PANIC: {}", panic_text(&p))), Vec::new()));
                if verbose {
                    println!("{:<11} {}  {}", outcome.0.word(), case.id, outcome.0.reason());
                }
                results.lock().unwrap()[i] = Some(outcome);
            });
        }
    });
    results.into_inner().unwrap().into_iter().map(|r| r.expect("every case ran")).collect()
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

fn read_tensor(path: &Path) -> Result<(String, Tensor), Status> {
    let bytes = std::fs::read(path).map_err(|e| Status::Fail(format!("{}: {e}", path.display())))?;
    let proto = TensorProto::parse_from_bytes(&bytes).map_err(|e| Status::Fail(format!("{}: {e}", path.display())))?;
    let t = tensor_from_proto(&proto, None).map_err(|e| Status::Unsupported(format!("test data: {e}")))?;
    Ok((proto.name.clone(), t))
}

fn is_integer(code: i32) -> bool {
    code == DataType::INT64 as i32 || code == DataType::INT32 as i32
}

/// Runs one case; also returns the op types it uses, for the per-op report.
fn run_case(dir: &Path) -> Outcome {
    if let Ok(reason) = std::fs::read_to_string(dir.join("SKIP")) {
        return (Status::Unsupported(format!("test data: {}", reason.trim())), Vec::new());
    }
    let bytes = match std::fs::read(dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => return (Status::Fail(format!("model.onnx: {e}")), Vec::new()),
    };
    let model = match ModelProto::parse_from_bytes(&bytes) {
        Ok(m) => m,
        Err(e) => return (Status::Fail(format!("model.onnx does not parse: {e}")), Vec::new()),
    };
    let ops: Vec<String> = model.graph.node.iter().map(|n| n.op_type.clone()).collect();
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test_data_set"))).collect())
        .unwrap_or_default();
    sets.sort();
    if sets.is_empty() {
        return (Status::Fail("no test_data_set folders".into()), ops);
    }
    for set in sets {
        if let Err(status) = run_data_set(&model, dir, &set) {
            return (status, ops);
        }
    }
    (Status::Pass, ops)
}

fn numbered(set: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(set)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let n = name.strip_prefix(prefix)?.strip_suffix(".pb")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

fn run_data_set(model: &ModelProto, dir: &Path, set: &Path) -> Result<(), Status> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or_else(|| Status::Fail("no graph".into()))?;
    let init_names: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let real_inputs: Vec<String> =
        graph.input.iter().map(|i| i.name.clone()).filter(|n| !init_names.contains(n)).collect();
    let mut feeds = HashMap::new();
    for (k, path) in numbered(set, "input_").into_iter().enumerate() {
        let bytes = std::fs::read(&path).map_err(|e| Status::Fail(e.to_string()))?;
        let proto = TensorProto::parse_from_bytes(&bytes).map_err(|e| Status::Fail(e.to_string()))?;
        let name = if proto.name.is_empty() { real_inputs.get(k).cloned().unwrap_or_default() } else { proto.name.clone() };
        if is_integer(proto.data_type) {
            // Bind integer operands as constants, as an exporter would store them.
            let mut init = proto.clone();
            init.name = name.clone();
            graph.initializer.push(init);
            graph.input.retain(|i| i.name != name);
            continue;
        }
        let t = tensor_from_proto(&proto, None).map_err(|e| Status::Unsupported(format!("test input: {e}")))?;
        feeds.insert(name, t);
    }
    let bytes = model.write_to_bytes().map_err(|e| Status::Fail(e.to_string()))?;
    let loaded = load_bytes(&bytes, Some(dir), "model.onnx").map_err(classify)?;
    // The pass pipeline must not change results: run the graph as loaded and optimised.
    let mut optimized = loaded.graph.clone();
    d2nnc::passes::optimize(&mut optimized).map_err(|e| Status::Fail(format!("optimize: {e}")))?;
    let expected = numbered(set, "output_")
        .iter()
        .map(|p| read_tensor(p).map(|(_, t)| t))
        .collect::<Result<Vec<_>, _>>()?;
    // Every engine must give the stored outputs: the interpreter on the graph
    // as loaded and optimised, and the plan executor.
    // A plan needs static shapes; a model whose shapes follow from runtime
    // data (a float `scales` input, say) is refused with a clear error and
    // runs through the interpreter only.
    let analysis = d2nnc::dynamic::analyze(&optimized, &[]);
    // The JIT compiles every program; a step no runtime kernel covers
    // (`Kernel::Reference`) calls back into the interpreter, as the plan
    // executor does. Such programs are counted.
    let jit = |program: &d2nnc::plan::Program| -> Option<Result<Vec<Tensor>, String>> {
        if program.node_kernels().iter().any(|(_, k)| matches!(k, d2nnc::plan::Kernel::Reference)) {
            JIT_NEEDS_INTERPRETER.fetch_add(1, Ordering::Relaxed);
        }
        JIT_RUNS.fetch_add(1, Ordering::Relaxed);
        Some(d2nnc::back::clif::JitModel::compile(&optimized, program, &analysis, 1).and_then(|mut m| m.run_tensors(&feeds)).map_err(|e| e.to_string()))
    };
    let mut native = Vec::new();
    let plan = match d2nnc::plan::lower(&optimized) {
        Ok(program) => {
            native.extend(jit(&program).map(|r| ("jit", r)));
            Some(d2nnc::plan::Executor::new(std::sync::Arc::new(program)).run(&feeds).map_err(|e| e.to_string()))
        }
        Err(LowerError::DynamicShape { .. }) => {
            DYNAMIC_SHAPE_CASES.fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(e) => Some(Err(e.to_string())),
    };
    let mut runs = vec![
        ("interp, as loaded", d2nnc::interp::run(&loaded.graph, &feeds).map_err(|e| e.to_string())),
        ("interp, optimized", d2nnc::interp::run(&optimized, &feeds).map_err(|e| e.to_string())),
    ];
    runs.extend(plan.map(|p| ("plan", p)));
    runs.extend(native);
    let dense = runs[1].1.clone();
    if has_branching_op(&optimized) {
        DYNAMIC_RUNS.fetch_add(1, Ordering::Relaxed);
        if analysis.is_dynamic() {
            DYNAMIC_WITH_DECISIONS.fetch_add(1, Ordering::Relaxed);
        }
        let dynamic = d2nnc::interp::run_dynamic(&optimized, &analysis, &feeds, &Default::default()).map(|(outputs, _)| outputs).map_err(|e| e.to_string());
        if let (Ok(dense), Ok(dynamic)) = (&dense, &dynamic) {
            if let Some(k) = (0..dense.len()).find(|&k| !bitwise_equal(&dense[k], &dynamic[k])) {
                return Err(Status::Fail(format!("interp, dynamic: output {k} differs from the dense interpreter's")));
            }
        }
        runs.push(("interp, dynamic", dynamic));
        match d2nnc::plan::lower_dynamic(&optimized, &analysis) {
            Ok(program) => {
                runs.extend(jit(&program).map(|r| ("jit, dynamic", r)));
                runs.push(("plan, dynamic", d2nnc::plan::Executor::new(std::sync::Arc::new(program)).run(&feeds).map_err(|e| e.to_string())));
            }
            Err(LowerError::DynamicShape { .. }) => {}
            Err(e) => runs.push(("plan, dynamic", Err(e.to_string()))),
        }
    }
    for (label, outputs) in runs {
        let outputs = outputs.map_err(|e| Status::Fail(format!("{label}: {e}")))?;
        if expected.len() != outputs.len() {
            return Err(Status::Fail(format!("{label}: {} outputs, {} expected", outputs.len(), expected.len())));
        }
        for (k, (want, got)) in expected.iter().zip(&outputs).enumerate() {
            compare(got, want, ATOL, RTOL).map_err(|m| Status::Fail(format!("{label}, output {k}: {m}")))?;
        }
    }
    Ok(())
}

/// Whether the graph (or a branch of an `If` in it) holds an `If` or a `Where`.
fn has_branching_op(graph: &d2nnc::ir::Graph) -> bool {
    graph.nodes.iter().any(|(_, n)| matches!(n.op.name(), "If" | "Where"))
}

/// Same shape, element type and values, floats compared by their bits.
fn bitwise_equal(a: &Tensor, b: &Tensor) -> bool {
    let bits = |t: &Tensor| t.to_f32_vec().into_iter().map(f32::to_bits).collect::<Vec<_>>();
    a.shape() == b.shape() && a.dtype() == b.dtype() && if a.dtype().is_float() { bits(a) == bits(b) } else { a.to_i64_vec() == b.to_i64_vec() }
}

/// Valid models that use what d2nnc does not support are `unsupported`; anything else is a failure.
/// A model with one unsupported node is out of scope as a whole, whatever else it holds.
fn classify(e: LoadError) -> Status {
    let unsupported = match &e {
        LoadError::Nodes(issues) => issues.iter().any(|i| {
            i.reason.starts_with("unsupported")
                || i.reason.starts_with("operator not supported")
                || i.reason.starts_with("operators of domain")
                || i.reason.starts_with("supported for opsets")
                || i.reason.contains("is not supported")
        }),
        LoadError::Input { reason, .. } | LoadError::Tensor { reason, .. } => reason.contains("not supported"),
        LoadError::Output { .. } => false,
        LoadError::Model(m) => m.contains("outside the") || m.contains("not supported"),
        _ => false,
    };
    let text = e.to_string().replace('\n', " ");
    if unsupported {
        Status::Unsupported(text)
    } else {
        Status::Fail(text)
    }
}

/// The operator a node case tests: the op of a one-node model, or for an
/// `_expanded` case (the op's function body) the op of the case it expands.
fn primary_op(id: &str, ops: &[String], single_node_ops: &HashMap<&str, &str>) -> String {
    if let [only] = ops {
        return only.clone();
    }
    let base = match id.find("_expanded") {
        Some(i) => &id[..i],
        None => id,
    };
    single_node_ops.get(base).map_or_else(|| "(multi-node)".to_string(), |op| op.to_string())
}

fn read_expected(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let status = parts.next()?.to_string();
            let id = parts.next()?.to_string();
            Some((id, status))
        })
        .collect()
}

fn report(cases: &[Case], results: &[Outcome], expected_path: &Path, filtered: bool, root: &Path) {
    let mut per_op: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let single_node_ops: HashMap<&str, &str> = cases
        .iter()
        .zip(results)
        .filter_map(|(c, (_, ops))| match &ops[..] {
            [only] => Some((c.id.as_str(), only.as_str())),
            _ => None,
        })
        .collect();
    let mut totals = [0usize; 3];
    for (case, (status, ops)) in cases.iter().zip(results) {
        let slot = match status {
            Status::Pass => 0,
            Status::Fail(_) => 1,
            Status::Unsupported(_) => 2,
        };
        let op = if case.id.starts_with("node/") {
            primary_op(&case.id, ops, &single_node_ops)
        } else {
            case.id.split('/').next().unwrap().to_string()
        };
        per_op.entry(op).or_default()[slot] += 1;
        totals[slot] += 1;
    }
    let mut table = String::new();
    let _ = writeln!(table, "{:<28} {:>6} {:>6} {:>12}", "op", "pass", "fail", "unsupported");
    for (op, [p, f, u]) in &per_op {
        let _ = writeln!(table, "{op:<28} {p:>6} {f:>6} {u:>12}");
    }
    let _ = writeln!(table, "{:<28} {:>6} {:>6} {:>12}", "TOTAL", totals[0], totals[1], totals[2]);
    println!("{table}");
    let _ = std::fs::write(root.join("target/conformance-report.txt"), &table);

    let expected = read_expected(expected_path);
    let mut regressions = Vec::new();
    let mut newly_passing = 0;
    for (case, (status, _)) in cases.iter().zip(results) {
        match (expected.get(&case.id).map(String::as_str), status) {
            (Some("pass"), Status::Pass) => {}
            (Some("pass"), s) => regressions.push(format!("{}: {}", case.id, s.reason())),
            (_, Status::Pass) => newly_passing += 1,
            _ => {}
        }
    }
    let bless = std::env::var_os("D2NNC_BLESS").is_some();
    if bless && !filtered {
        let mut out = String::from(
            "# Expected status of every ONNX conformance case (status, case, reason).\n\
             # Any `pass` that stops passing fails the run. Regenerate with D2NNC_BLESS=1.\n",
        );
        for (case, (status, _)) in cases.iter().zip(results) {
            let reason = status.reason().chars().take(200).collect::<String>();
            let _ = writeln!(out, "{} {}{}", status.word(), case.id, if reason.is_empty() { String::new() } else { format!("  # {reason}") });
        }
        std::fs::write(expected_path, out).expect("write expected.txt");
        println!("blessed {}", expected_path.display());
    }
    for r in &regressions {
        println!("REGRESSION {r}");
    }
    if newly_passing > 0 && !bless {
        println!("{newly_passing} cases pass that expected.txt does not list as passing; run with D2NNC_BLESS=1 to update");
    }
    println!(
        "jit: compiled and ran {} programs; {} of them call back into the interpreter for a step no runtime kernel covers",
        JIT_RUNS.load(Ordering::Relaxed),
        JIT_NEEDS_INTERPRETER.load(Ordering::Relaxed)
    );
    println!(
        "plan executor: ran every passing case except {} data sets whose shapes depend on runtime data (refused by lowering)",
        DYNAMIC_SHAPE_CASES.load(Ordering::Relaxed)
    );
    println!(
        "dynamic engines: {} data sets with If/Where ran through the dynamic interpreter and plan ({} with guarded regions)",
        DYNAMIC_RUNS.load(Ordering::Relaxed),
        DYNAMIC_WITH_DECISIONS.load(Ordering::Relaxed)
    );
    let skipped = cases.len() - totals[0] - regressions.len();
    println!("conformance: {} passed, {} failed, {} skipped", totals[0], regressions.len(), skipped);
    if !regressions.is_empty() && !bless {
        std::process::exit(1);
    }
}
