//! `d2nnc bench`: per-call latency (min / median / p90), throughput and dense
//! GFLOP/s of a model on one backend, with an optional per-node profile.
//!
//! Everything that is not the model call happens outside the timed region:
//! the model is loaded and optimised and the inputs read and batched first,
//! the sample buffer is reserved before the timed loop, a call's outputs are
//! dropped after its clock stops, and the report is printed at the end. A
//! backend joins by implementing [`Runner`] and getting a `--backend` value.

use super::inputs::{parse_input_spec, read_inputs, InputSpec};
use super::inspect::group;
use super::{default_threads, Backend};
use clap::builder::RangedU64ValueParser;
use d2nn_runtime::Tensor;
use d2nnc::flops::{dense_flops, node_flops};
use d2nnc::interp::{self, InterpError, Profile};
use d2nnc::ir::types::TypeDisplay;
use d2nnc::ir::{Dim, Graph, Symbol};
use d2nnc::Error;
use ndarray::Axis;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Default warm-up: stop after this many calls…
const WARMUP_MAX_CALLS: usize = 3;
/// …or once this much time is spent, whichever comes first.
const WARMUP_TIME: Duration = Duration::from_millis(500);
/// Default timed phase: about this long…
const TARGET_TIME: Duration = Duration::from_secs(3);
/// …but at least this many calls…
const MIN_ITERS: usize = 5;
/// …and at most this many (a sub-microsecond call would otherwise ask for millions).
const MAX_ITERS: usize = 1_000_000;
/// Largest `--batch` accepted (the tiled inputs are materialised in memory).
const MAX_BATCH: u64 = 1 << 20;

pub const LONG_ABOUT: &str = "\
Time a model on .npy inputs with one backend.

The model is loaded and optimised once and the inputs are read and batched \
before any timing. Then come the warm-up calls (default: up to 3, stopping \
early once 0.5 s is spent; --warmup W runs exactly W) and the timed calls \
(default: enough for about 3 s, estimated from the median warm-up call, at \
least 5; --iters K runs K), each timed on its own with a monotonic clock. \
--max-seconds S stops the timed calls, and the --profile runs, once S seconds \
are spent (after at least one call); the report gives the count that ran.

Reported: min, median and p90 latency per call in ms (the median of an even \
count is the mean of the middle two; p90 is the nearest-rank 90th \
percentile); throughput = batch / median, in samples/s; and GFLOP/s = the \
dense FLOPs of the model at that batch (counted as `inspect` counts them, \
both branches of every If) / median. --json adds one JSON object as the last \
line of stdout: model, backend, batch, threads, threads_used, warmup, iters, \
min_ms, median_ms, p90_ms, mean_ms, samples_per_s, flops, gflops (null when \
some dim is unknown), inputs (name -> shape as run), and profile with --profile.

Batching (--batch N). The batch dimension is axis 0 of the model's inputs.
  - An input whose axis 0 is symbolic (e.g. `batch`) is tiled to N samples: \
sample i is sample (i mod G) of the given array, G being its axis-0 size. \
So G = 1 replicates one sample, G < N repeats the samples cyclically and \
G > N keeps the first N. An empty input (G = 0) is an error.
  - --cycle instead cuts the G samples into ceil(G/N) windows of N (the last \
wrapping around to the first samples) and the calls take them in turn, so the \
figures cover every sample (e.g. the mean latency over a test set at batch 1); \
the FLOPs reported are the mean per window.
  - An input whose axis 0 is a fixed size is left as given (it is not batched).
  - If no input has a symbolic axis 0, the model's batch is fixed: N must \
equal the first input's axis 0, otherwise the error names that input.
  - An input whose axis 0 is a multiple of a symbol (k*batch) is an error.
Without --batch the inputs are run as given; the batch reported is the axis-0 \
size of the first input with a symbolic axis 0 (else of the first input).

Threads. --threads N (default: the physical cores, at most the CPUs this \
process may use) is handed to the backend and reported; the report and the \
JSON `threads_used` say how many the backend really uses. The interp backend \
is single-threaded and ignores --threads.

--profile then runs the same number of calls again with per-node timing \
(exclusive time: an If is not charged for its branch) and prints the time per \
op type and the slowest nodes. Those runs are separate from the timed calls, \
whose figures never include profiling overhead.";

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// An input as NAME=FILE.npy (repeat for several inputs).
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy", value_parser = parse_input_spec)]
    pub inputs: Vec<InputSpec>,
    /// Tile inputs with a symbolic axis 0 to N samples (rules in --help).
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_BATCH))]
    pub batch: Option<usize>,
    /// Threads for the backend [default: physical cores].
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..=4096))]
    pub threads: Option<usize>,
    /// Timed calls [default: enough for ~3 s, at least 5].
    #[arg(long, value_name = "K", value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_ITERS as u64))]
    pub iters: Option<usize>,
    /// Warm-up calls [default: up to 3, fewer if 0.5 s is spent first].
    #[arg(long, value_name = "W", value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_ITERS as u64))]
    pub warmup: Option<usize>,
    /// Stop the timed calls once this many seconds are spent (at least one call runs).
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub max_seconds: Option<f64>,
    /// Execution engine.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
    /// Also print the results as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Time every node in separate runs; print time per op type and the slowest nodes.
    #[arg(long)]
    pub profile: bool,
    /// Nodes listed by --profile.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// Set a knob (a decision threshold; see `inspect`).
    #[arg(long = "knob", value_name = "NAME=VALUE", value_parser = super::knobs::parse_knob)]
    pub knobs: Vec<(String, f32)>,
    /// Set the knobs from a TOML file (`d2nnc calibrate -o`); `--knob` overrides it.
    #[arg(long, value_name = "FILE.toml")]
    pub knobs_file: Option<PathBuf>,
    /// Bake a knob's value into the model, letting static pruning act.
    #[arg(long = "fix", value_name = "NAME=VALUE", value_parser = super::knobs::parse_knob)]
    pub fixes: Vec<(String, f32)>,
    /// Time dense execution only (every node, the ONNX semantics).
    #[arg(long)]
    pub dense: bool,
    /// With --batch N: successive calls take successive windows of N of the
    /// given samples (the timings cover them all; FLOPs are the mean per window).
    #[arg(long, requires = "batch")]
    pub cycle: bool,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err("must be a positive number of seconds".to_string()),
    }
}

/// A backend prepared to run one model repeatedly on fixed inputs.
trait Runner {
    /// Threads one call really uses.
    /// The graph the profile's node ids refer to.
    fn graph(&self) -> &Graph;
    fn threads_used(&self) -> usize;
    /// How the backend treats `--threads`, when that needs saying.
    fn threads_note(&self) -> Option<&'static str>;
    /// One inference. The outputs are handed back, not dropped, so that
    /// freeing them stays outside the timed region.
    fn call(&mut self) -> Result<Vec<Tensor>, Error>;
    /// One inference that adds each node's time to `profile`.
    fn call_profiled(&mut self, profile: &mut Profile) -> Result<Vec<Tensor>, Error>;
    /// FLOPs the last call executed, for a dynamic run.
    fn flops_executed(&self) -> Option<u64> {
        None
    }
    /// A line about how the backend was prepared (the JIT's compile time).
    fn prepared(&self) -> Option<String> {
        None
    }
}

/// The inputs of successive calls: one set, or with `--cycle` the windows
/// of the given samples in turn.
#[derive(Clone)]
struct Feeds {
    windows: Vec<HashMap<String, Tensor>>,
    next: usize,
}

impl Feeds {
    fn new(windows: Vec<HashMap<String, Tensor>>) -> Feeds {
        Feeds { windows, next: 0 }
    }

    /// The next call's inputs.
    fn next(&mut self) -> &HashMap<String, Tensor> {
        let i = self.next;
        self.next = (i + 1) % self.windows.len();
        &self.windows[i]
    }
}

struct PlanRunner {
    executor: d2nnc::plan::Executor,
    feeds: Feeds,
}

impl Runner for PlanRunner {
    fn graph(&self) -> &Graph {
        &self.executor.program().graph
    }

    fn threads_used(&self) -> usize {
        self.executor.threads()
    }

    fn threads_note(&self) -> Option<&'static str> {
        None
    }

    fn call(&mut self) -> Result<Vec<Tensor>, Error> {
        Ok(self.executor.run(self.feeds.next())?)
    }

    fn call_profiled(&mut self, profile: &mut Profile) -> Result<Vec<Tensor>, Error> {
        Ok(self.executor.run_with_profile(self.feeds.next(), profile)?)
    }

    fn flops_executed(&self) -> Option<u64> {
        self.executor.trace().map(|t| t.flops_executed)
    }
}

struct JitRunner {
    model: d2nnc::back::clif::JitModel,
    graph: Graph,
    feeds: Feeds,
    dynamic: bool,
}

impl Runner for JitRunner {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn threads_used(&self) -> usize {
        self.model.threads()
    }

    fn threads_note(&self) -> Option<&'static str> {
        None
    }

    fn call(&mut self) -> Result<Vec<Tensor>, Error> {
        Ok(self.model.run_tensors(self.feeds.next())?)
    }

    fn call_profiled(&mut self, _profile: &mut Profile) -> Result<Vec<Tensor>, Error> {
        Err(Error::Usage("--profile times each node of the plan executor or the interpreter; use --backend plan (the jit backend runs one native function)".into()))
    }

    fn flops_executed(&self) -> Option<u64> {
        self.dynamic.then(|| self.model.trace().flops_executed)
    }

    fn prepared(&self) -> Option<String> {
        Some(format!("jit: Cranelift code generation {:.1} ms (weights packed separately)", self.model.compile_time().as_secs_f64() * 1e3))
    }
}

struct InterpRunner {
    graph: Graph,
    feeds: Feeds,
    /// Dynamic mode: the schedule, the knobs, and the last call's FLOPs.
    dynamic: Option<(d2nnc::dynamic::Analysis, interp::Knobs, Option<u64>)>,
}

impl Runner for InterpRunner {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn threads_used(&self) -> usize {
        1
    }

    fn threads_note(&self) -> Option<&'static str> {
        Some("the reference interpreter is single-threaded: interp ignores --threads")
    }

    fn call(&mut self) -> Result<Vec<Tensor>, Error> {
        match &mut self.dynamic {
            Some((analysis, knobs, flops)) => {
                let (out, trace) = interp::run_dynamic(&self.graph, analysis, self.feeds.next(), knobs)?;
                *flops = Some(trace.flops_executed);
                Ok(out)
            }
            None => Ok(interp::run(&self.graph, self.feeds.next())?),
        }
    }

    fn flops_executed(&self) -> Option<u64> {
        self.dynamic.as_ref().and_then(|d| d.2)
    }

    fn call_profiled(&mut self, profile: &mut Profile) -> Result<Vec<Tensor>, Error> {
        Ok(interp::run_with_profile(&self.graph, self.feeds.next(), profile)?)
    }
}

pub fn bench(args: &BenchArgs) -> Result<(), Error> {
    let load_start = Instant::now();
    let (graph, analysis) = super::knobs::load(&args.model, &args.fixes)?;
    super::knobs::check_knobs(&analysis, &args.knobs)?;
    let load_time = load_start.elapsed();
    let given = read_inputs(&args.inputs)?;
    let windows = if args.cycle { cycle_windows(&graph, &given, args.batch)? } else { Vec::new() };
    let batched = apply_batch(&graph, given, args.batch)?;
    let feeds = Feeds::new(if windows.is_empty() { vec![batched.feeds.clone()] } else { windows });
    let bindings = symbol_bindings(&graph, &batched.feeds);
    let bind = |s: Symbol| bindings.get(&s).copied().or(Some(batched.batch));
    let flops = dense_flops(&graph, &bind);
    let threads = args.threads.unwrap_or_else(default_threads);
    let budget = args.max_seconds.map(Duration::from_secs_f64);
    let inputs: BTreeMap<String, Vec<usize>> =
        batched.feeds.iter().map(|(name, t)| (name.clone(), t.shape().to_vec())).collect();
    let dynamic = !args.dense && analysis.is_dynamic();
    let dense_graph = super::run::with_knob_values(&graph, &analysis, &args.knobs);
    let make_runner = |dynamic: bool| -> Result<Box<dyn Runner>, Error> {
        Ok(match args.backend {
            Backend::Interp if dynamic => {
                let knobs: interp::Knobs = args.knobs.iter().cloned().collect();
                Box::new(InterpRunner { graph: graph.clone(), feeds: feeds.clone(), dynamic: Some((analysis.clone(), knobs, None)) })
            }
            Backend::Interp => Box::new(InterpRunner { graph: dense_graph.clone(), feeds: feeds.clone(), dynamic: None }),
            Backend::Jit => {
                let source = if dynamic { &graph } else { &dense_graph };
                let program = if dynamic { d2nnc::plan::lower_dynamic(&graph, &analysis)? } else { d2nnc::plan::lower(&dense_graph)? };
                let mut model = d2nnc::back::clif::JitModel::compile(source, &program, &analysis, threads)?;
                if dynamic {
                    for (name, value) in &args.knobs {
                        model.set_knob(name, *value)?;
                    }
                }
                Box::new(JitRunner { model, graph: source.clone(), feeds: feeds.clone(), dynamic })
            }
            Backend::Plan => {
                let program = if dynamic { d2nnc::plan::lower_dynamic(&graph, &analysis)? } else { d2nnc::plan::lower(&dense_graph)? };
                let mut executor = d2nnc::plan::Executor::with_threads(std::sync::Arc::new(program), threads);
                if dynamic {
                    for (name, value) in &args.knobs {
                        executor.set_knob(name, *value)?;
                    }
                }
                Box::new(PlanRunner { executor, feeds: feeds.clone() })
            }
        })
    };
    let mut runner = make_runner(dynamic)?;
    if let Some(line) = runner.prepared() {
        eprintln!("{line}");
    }
    // The dense twin of a dynamic model, timed in the same run for the ratio.
    let mut dense_runner = if dynamic { Some(make_runner(false)?) } else { None };
    drop(dense_graph);
    let mut warmup = Vec::new();
    match args.warmup {
        Some(w) => timed_calls(runner.as_mut(), w, None, &mut warmup)?,
        None => timed_calls(runner.as_mut(), WARMUP_MAX_CALLS, Some(WARMUP_TIME), &mut warmup)?,
    }
    let mut iters = args.iters.unwrap_or_else(|| default_iters(&warmup));
    if args.iters.is_none() {
        // Every window timed equally often.
        iters = iters.div_ceil(feeds.windows.len()) * feeds.windows.len();
    }
    let mut samples = Vec::new();
    timed_calls(runner.as_mut(), iters, budget, &mut samples)?;
    let stats = Stats::of(&samples);
    let profiled = if args.profile { Some(profile_calls(runner.as_mut(), samples.len(), budget)?) } else { None };
    let flops_executed = if feeds.windows.len() > 1 { mean_flops_over_windows(runner.as_mut(), feeds.windows.len())? } else { runner.flops_executed() };
    let dense_stats = match dense_runner.as_mut() {
        Some(dense) => {
            let mut warm = Vec::new();
            timed_calls(dense.as_mut(), warmup.len().max(1), None, &mut warm)?;
            let mut dense_samples = Vec::new();
            timed_calls(dense.as_mut(), samples.len(), budget, &mut dense_samples)?;
            Some(Stats::of(&dense_samples))
        }
        None => None,
    };

    let median_s = stats.median_ms / 1e3;
    let gflops = flops.map(|f| f as f64 / median_s / 1e9);
    let report = JsonReport {
        model: args.model.display().to_string(),
        backend: args.backend.name(),
        batch: batched.batch,
        threads,
        threads_used: runner.threads_used(),
        warmup: warmup.len(),
        iters: samples.len(),
        min_ms: stats.min_ms,
        median_ms: stats.median_ms,
        p90_ms: stats.p90_ms,
        mean_ms: stats.mean_ms,
        samples_per_s: batched.batch as f64 / median_s,
        flops,
        gflops,
        inputs,
        profile: profiled.as_ref().map(|(p, wall)| profile_report(runner.graph(), p, *wall, &bind, args.top)),
        mode: if dynamic { "dynamic" } else { "dense" },
        flops_dense: flops,
        flops_executed: flops_executed.or(flops),
        flops_ratio: flops_executed.zip(flops).map(|(e, d)| e as f64 / d.max(1) as f64),
        dense_median_ms: dense_stats.as_ref().map(|s| s.median_ms),
        dense_mean_ms: dense_stats.as_ref().map(|s| s.mean_ms),
        windows: feeds.windows.len(),
        time_ratio: dense_stats.as_ref().map(|s| stats.median_ms / s.median_ms),
    };

    println!("model: {} (loaded and optimised in {:.2} s, not timed)", args.model.display(), load_time.as_secs_f64());
    print!("backend: {}; threads: {threads} requested, {} used", report.backend, report.threads_used);
    match runner.threads_note() {
        Some(note) => println!(" ({note})"),
        None => println!(),
    }
    for note in &batched.notes {
        println!("{note}");
    }
    println!("batch: {}", report.batch);
    if report.windows > 1 {
        println!("cycling through {} windows of the given samples (--cycle); times and FLOPs cover them all", report.windows);
    }
    println!(
        "warm-up: {} calls in {:.3} s; timed: {} calls in {:.3} s",
        warmup.len(),
        warmup.iter().sum::<Duration>().as_secs_f64(),
        samples.len(),
        samples.iter().sum::<Duration>().as_secs_f64()
    );
    println!(
        "latency per call (ms): min {:.4}  median {:.4}  p90 {:.4}  mean {:.4}",
        stats.min_ms, stats.median_ms, stats.p90_ms, stats.mean_ms
    );
    println!("throughput: {:.1} samples/s (batch / median)", report.samples_per_s);
    match (flops, gflops) {
        (Some(f), Some(g)) => println!("dense FLOPs per call: {} ({:.6} GFLOP); {g:.3} GFLOP/s at the median", group(f), f as f64 / 1e9),
        _ => println!("dense FLOPs per call: unknown (some dims depend on runtime data); no GFLOP/s"),
    }
    if let (Some(dense), Some(executed), Some(total)) = (&dense_stats, flops_executed, flops) {
        let flop_ratio = executed as f64 / total.max(1) as f64;
        println!("dynamic: {} of {} FLOPs executed per call ({:.1}%)", group(executed), group(total), 100.0 * flop_ratio);
        println!(
            "dense (every node, same run, {} calls): median {:.4} ms; dynamic / dense time {:.3} vs FLOPs {:.3} (time ratio / FLOP ratio {:.3})",
            samples.len(),
            dense.median_ms,
            stats.median_ms / dense.median_ms,
            flop_ratio,
            stats.median_ms / dense.median_ms / flop_ratio.max(1e-12)
        );
    }
    if let Some(p) = &report.profile {
        print_profile(p);
    }
    if args.json {
        let line = serde_json::to_string(&report).map_err(|e| Error::Usage(format!("cannot encode the JSON report: {e}")))?;
        println!("{line}");
    }
    Ok(())
}

/// FLOPs per call executed, averaged over one call per window (untimed).
fn mean_flops_over_windows(runner: &mut dyn Runner, windows: usize) -> Result<Option<u64>, Error> {
    let mut total = 0u64;
    for _ in 0..windows {
        drop(black_box(runner.call()?));
        match runner.flops_executed() {
            Some(f) => total += f,
            None => return Ok(None),
        }
    }
    Ok(Some(total / windows as u64))
}

/// `--cycle`: the given samples cut into windows of `--batch` rows (the last
/// one wrapping around to the first samples), one input set per window.
/// Inputs without a symbolic axis 0 are the same in every window.
fn cycle_windows(graph: &Graph, given: &HashMap<String, Tensor>, batch: Option<usize>) -> Result<Vec<HashMap<String, Tensor>>, Error> {
    let n = batch.ok_or_else(|| Error::Usage("--cycle needs --batch N: the size of each window of samples".into()))?;
    // The batch axes: symbolic ones, else (a fixed-batch model) axes 0 of size N.
    let inputs_where = |keep: &dyn Fn(Option<&Dim>) -> bool| -> Vec<&str> {
        graph.inputs.iter().filter(|&&v| keep(graph.values[v].ty.shape.first())).map(|&v| graph.values[v].name.as_str()).filter(|name| given.contains_key(*name)).collect()
    };
    let mut batched = inputs_where(&|d| matches!(d, Some(Dim::Sym { factor: 1, .. })));
    if batched.is_empty() {
        batched = inputs_where(&|d| d == Some(&Dim::Known(n)));
    }
    let Some(&first) = batched.first() else {
        return Err(Error::Usage(format!("--cycle: no input has a symbolic batch axis 0, or a fixed one of size {n}, to take windows from")));
    };
    let samples = given[first].shape().first().copied().unwrap_or(0);
    if samples == 0 {
        return Err(Error::Usage(format!("--cycle: input `{first}` has no samples")));
    }
    if let Some(other) = batched.iter().find(|name| given[**name].shape().first() != Some(&samples)) {
        return Err(Error::Usage(format!("--cycle: inputs `{first}` and `{other}` hold different numbers of samples ({samples} and {:?})", given[*other].shape().first())));
    }
    Ok((0..samples.div_ceil(n))
        .map(|w| {
            let rows: Vec<usize> = (0..n).map(|i| (w * n + i) % samples).collect();
            given
                .iter()
                .map(|(name, t)| {
                    let window = if batched.contains(&name.as_str()) { d2nn_runtime::map_tensor_same!(t, a => a.select(Axis(0), &rows)) } else { t.clone() };
                    (name.clone(), window)
                })
                .collect()
        })
        .collect())
}

/// Calls `runner` up to `count` times, stopping early once the calls have
/// taken `budget` (after at least one call), and puts each call's time in
/// `samples`. The buffer is reserved first, so the loop itself allocates
/// nothing; outputs are dropped after the clock stops.
fn timed_calls(runner: &mut dyn Runner, count: usize, budget: Option<Duration>, samples: &mut Vec<Duration>) -> Result<(), Error> {
    samples.clear();
    samples.reserve_exact(count);
    let mut spent = Duration::ZERO;
    for _ in 0..count {
        let start = Instant::now();
        let outputs = runner.call();
        let elapsed = start.elapsed();
        drop(black_box(outputs?));
        samples.push(elapsed);
        spent += elapsed;
        if budget.is_some_and(|b| spent >= b) {
            break;
        }
    }
    Ok(())
}

/// `count` profiled calls (fewer if `budget` runs out); returns the profile and the calls' total time.
fn profile_calls(runner: &mut dyn Runner, count: usize, budget: Option<Duration>) -> Result<(Profile, Duration), Error> {
    let mut profile = Profile::new();
    let mut spent = Duration::ZERO;
    for _ in 0..count {
        let start = Instant::now();
        let outputs = runner.call_profiled(&mut profile);
        spent += start.elapsed();
        drop(black_box(outputs?));
        if budget.is_some_and(|b| spent >= b) {
            break;
        }
    }
    Ok((profile, spent))
}

/// Timed calls for about [`TARGET_TIME`], judged by the median warm-up call.
fn default_iters(warmup: &[Duration]) -> usize {
    if warmup.is_empty() {
        return MIN_ITERS;
    }
    let per_call = Stats::of(warmup).median_ms / 1e3;
    if per_call <= 0.0 {
        return MAX_ITERS;
    }
    let want = (TARGET_TIME.as_secs_f64() / per_call).ceil();
    if want >= MAX_ITERS as f64 {
        MAX_ITERS
    } else {
        (want as usize).max(MIN_ITERS)
    }
}

/// Summary of per-call times, in milliseconds.
#[derive(Debug, PartialEq)]
struct Stats {
    min_ms: f64,
    median_ms: f64,
    p90_ms: f64,
    mean_ms: f64,
}

impl Stats {
    /// `samples` must not be empty (every timed phase runs at least one call).
    fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median_ms = if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
        // Nearest rank: the smallest sample with at least 90% of samples at or below it.
        let p90_ms = ms[(n * 9).div_ceil(10).max(1) - 1];
        Stats { min_ms: ms[0], median_ms, p90_ms, mean_ms: ms.iter().sum::<f64>() / n as f64 }
    }
}

/// The inputs as they will run, the batch size, and one line per input for the report.
struct Batched {
    feeds: HashMap<String, Tensor>,
    batch: usize,
    notes: Vec<String>,
}

/// Applies the `--batch` rules of [`LONG_ABOUT`] to the given inputs. Also
/// rejects unknown and missing input names up front, with the interpreter's
/// messages.
fn apply_batch(graph: &Graph, mut feeds: HashMap<String, Tensor>, batch: Option<usize>) -> Result<Batched, Error> {
    let name_of = |v: d2nnc::ir::ValueId| graph.values[v].name.as_str();
    let type_of = |v: d2nnc::ir::ValueId| TypeDisplay { ty: &graph.values[v].ty, symbols: &graph.symbols }.to_string();
    let mut unknown: Vec<&String> = feeds.keys().filter(|k| !graph.inputs.iter().any(|&v| name_of(v) == k.as_str())).collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        let all: Vec<&str> = graph.inputs.iter().map(|&v| name_of(v)).collect();
        return Err(InterpError::UnknownInput(name.to_string(), all.join(", ")).into());
    }
    if let Some(&v) = graph.inputs.iter().find(|&&v| !feeds.contains_key(name_of(v))) {
        return Err(InterpError::MissingInput(name_of(v).to_string()).into());
    }
    let axis0 = |v: d2nnc::ir::ValueId| graph.values[v].ty.shape.first().copied();
    let given0 = |name: &str| feeds[name].shape().first().copied();
    let batched: Vec<_> = graph.inputs.iter().copied().filter(|&v| matches!(axis0(v), Some(Dim::Sym { .. }))).collect();
    let mut notes = Vec::new();
    for &v in &graph.inputs {
        let t = &feeds[name_of(v)];
        notes.push(format!("input `{}`: {}{:?} (model: {})", name_of(v), t.dtype(), t.shape(), type_of(v)));
    }

    let Some(n) = batch else {
        let batch = match batched.first() {
            Some(&v) => match axis0(v) {
                Some(Dim::Sym { factor, .. }) if factor > 0 => given0(name_of(v)).map_or(1, |g| g / factor),
                _ => 1,
            },
            None => graph.inputs.iter().find_map(|&v| given0(name_of(v))).unwrap_or(1),
        };
        return Ok(Batched { feeds, batch, notes });
    };

    if batched.is_empty() {
        let Some(&first) = graph.inputs.iter().find(|&&v| graph.values[v].ty.rank() > 0) else {
            return Err(Error::Usage(format!("--batch {n}: the model's inputs have no axis 0 to batch")));
        };
        return match axis0(first) {
            Some(Dim::Known(k)) if k == n => Ok(Batched { feeds, batch: n, notes }),
            Some(Dim::Known(k)) => Err(Error::Usage(format!(
                "--batch {n}: input `{}` has a fixed batch dimension ({}), so this model only runs at batch {k}; \
                 export it with a symbolic batch dimension to vary the batch",
                name_of(first),
                type_of(first)
            ))),
            _ => Err(Error::Usage(format!(
                "--batch {n}: axis 0 of input `{}` ({}) is not a named batch dimension",
                name_of(first),
                type_of(first)
            ))),
        };
    }

    for (i, &v) in graph.inputs.iter().enumerate() {
        let Some(Dim::Sym { factor, .. }) = axis0(v) else { continue };
        let name = name_of(v);
        if factor != 1 {
            return Err(Error::Usage(format!(
                "--batch {n}: axis 0 of input `{name}` is a multiple of a symbol ({}), which --batch does not tile",
                type_of(v)
            )));
        }
        let t = &feeds[name];
        if t.rank() != graph.values[v].ty.rank() {
            continue; // the backend reports the wrong rank, with the input's name
        }
        let g = t.shape()[0];
        if g == 0 {
            return Err(Error::Usage(format!("--batch {n}: input `{name}` is empty along axis 0, so there is nothing to tile")));
        }
        if g != n {
            let tiled = tile_axis0(t, n);
            notes[i] = format!(
                "input `{name}`: {}{:?} tiled to {:?} (sample i = given sample i mod {g}) (model: {})",
                t.dtype(),
                t.shape(),
                tiled.shape(),
                type_of(v)
            );
            feeds.insert(name.to_string(), tiled);
        }
    }
    Ok(Batched { feeds, batch: n, notes })
}

/// Rows `i mod G` for `i` in `0..n`, G being `t`'s axis-0 size (at least 1).
fn tile_axis0(t: &Tensor, n: usize) -> Tensor {
    let g = t.shape()[0];
    let rows: Vec<usize> = (0..n).map(|i| i % g).collect();
    d2nn_runtime::map_tensor_same!(t, a => a.select(Axis(0), &rows))
}

/// Symbol values implied by the inputs' shapes (the first input to bind a symbol wins, as in the interpreter).
fn symbol_bindings(graph: &Graph, feeds: &HashMap<String, Tensor>) -> HashMap<Symbol, usize> {
    let mut bindings = HashMap::new();
    for &v in &graph.inputs {
        let Some(t) = feeds.get(&graph.values[v].name) else { continue };
        for (&dim, &size) in graph.values[v].ty.shape.iter().zip(t.shape()) {
            if let Dim::Sym { sym, factor } = dim {
                if factor > 0 && size % factor == 0 {
                    bindings.entry(sym).or_insert(size / factor);
                }
            }
        }
    }
    bindings
}


#[derive(Serialize)]
struct JsonReport {
    model: String,
    backend: &'static str,
    batch: usize,
    threads: usize,
    threads_used: usize,
    warmup: usize,
    iters: usize,
    min_ms: f64,
    median_ms: f64,
    p90_ms: f64,
    mean_ms: f64,
    samples_per_s: f64,
    flops: Option<u64>,
    gflops: Option<f64>,
    inputs: BTreeMap<String, Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<ProfileReport>,
    /// "dynamic" (following the decisions) or "dense" (every node).
    mode: &'static str,
    flops_dense: Option<u64>,
    /// FLOPs a call executed (the dense count in dense mode).
    flops_executed: Option<u64>,
    flops_ratio: Option<f64>,
    /// The dense twin's median, timed in the same run (dynamic mode only).
    dense_median_ms: Option<f64>,
    dense_mean_ms: Option<f64>,
    /// median_ms / dense_median_ms.
    time_ratio: Option<f64>,
    /// Input windows the calls cycled through (`--cycle`; 1 otherwise).
    windows: usize,
}

#[derive(Serialize)]
struct ProfileReport {
    runs: u64,
    /// Time per run spent in nodes, and outside them (binding inputs, copying outputs).
    nodes_ms_per_run: f64,
    other_ms_per_run: f64,
    ops: Vec<OpRow>,
    top_nodes: Vec<NodeRow>,
}

#[derive(Serialize)]
struct OpRow {
    op: &'static str,
    nodes: usize,
    calls_per_run: f64,
    ms_per_run: f64,
    /// Fraction of the time spent in nodes.
    share: f64,
}

#[derive(Serialize)]
struct NodeRow {
    name: String,
    op: &'static str,
    ms_per_run: f64,
    share: f64,
    gflops: Option<f64>,
}

fn profile_report(graph: &Graph, p: &Profile, wall: Duration, bind: &dyn Fn(Symbol) -> Option<usize>, top: usize) -> ProfileReport {
    let runs = p.runs().max(1) as f64;
    let total = p.total().as_secs_f64();
    let share = |t: Duration| if total > 0.0 { t.as_secs_f64() / total } else { 0.0 };
    let ms_per_run = |t: Duration| t.as_secs_f64() * 1e3 / runs;
    let ops = p
        .by_op(graph)
        .into_iter()
        .map(|o| OpRow { op: o.op, nodes: o.nodes, calls_per_run: o.calls as f64 / runs, ms_per_run: ms_per_run(o.time), share: share(o.time) })
        .collect();
    let top_nodes = p
        .nodes_by_time()
        .into_iter()
        .take(top)
        .map(|(n, t)| {
            let secs = t.time.as_secs_f64();
            let gflops = node_flops(graph, n, bind)
                .filter(|_| secs > 0.0)
                .map(|f| f as f64 * t.calls as f64 / secs / 1e9);
            NodeRow { name: graph.nodes[n].name.clone(), op: graph.nodes[n].op.name(), ms_per_run: ms_per_run(t.time), share: share(t.time), gflops }
        })
        .collect();
    ProfileReport {
        runs: p.runs(),
        nodes_ms_per_run: ms_per_run(p.total()),
        other_ms_per_run: ms_per_run(wall.saturating_sub(p.total())),
        ops,
        top_nodes,
    }
}

fn print_profile(p: &ProfileReport) {
    println!(
        "profile: {} separate runs with per-node timing; per run {:.4} ms in nodes, {:.4} ms outside them (inputs, outputs)",
        p.runs, p.nodes_ms_per_run, p.other_ms_per_run
    );
    println!("  {:<24} {:>6} {:>10} {:>12} {:>7}", "op", "nodes", "calls/run", "ms/run", "share");
    for o in &p.ops {
        println!("  {:<24} {:>6} {:>10.2} {:>12.4} {:>6.1}%", o.op, o.nodes, o.calls_per_run, o.ms_per_run, o.share * 100.0);
    }
    println!("slowest {} nodes:", p.top_nodes.len());
    println!("  {:<40} {:<20} {:>12} {:>7} {:>9}", "node", "op", "ms/run", "share", "GFLOP/s");
    for n in &p.top_nodes {
        let gflops = n.gflops.map_or("-".to_string(), |g| format!("{g:.3}"));
        println!("  {:<40} {:<20} {:>12.4} {:>6.1}% {:>9}", n.name, n.op, n.ms_per_run, n.share * 100.0, gflops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d2nn_runtime::DType;
    use d2nnc::ir::TensorType;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn stats_use_the_middle_pair_and_nearest_rank() {
        let s = Stats::of(&ms(&[4, 1, 3, 2]));
        assert_eq!(s, Stats { min_ms: 1.0, median_ms: 2.5, p90_ms: 4.0, mean_ms: 2.5 });
        let s = Stats::of(&ms(&[7]));
        assert_eq!((s.min_ms, s.median_ms, s.p90_ms), (7.0, 7.0, 7.0));
        // 20 samples 1..=20: p90 is the 18th.
        let s = Stats::of(&ms(&(1..=20).rev().collect::<Vec<_>>()));
        assert_eq!((s.median_ms, s.p90_ms), (10.5, 18.0));
    }

    #[test]
    fn default_iters_aim_at_three_seconds_within_bounds() {
        assert_eq!(default_iters(&[]), MIN_ITERS);
        assert_eq!(default_iters(&ms(&[10, 10, 10])), 300);
        assert_eq!(default_iters(&ms(&[2000])), MIN_ITERS);
        assert_eq!(default_iters(&[Duration::from_nanos(1)]), MAX_ITERS);
        assert_eq!(default_iters(&[Duration::ZERO]), MAX_ITERS);
    }

    fn graph(inputs: &[(&str, Vec<Dim>)]) -> Graph {
        let mut g = Graph::new("t");
        for (name, shape) in inputs {
            g.add_input(name, TensorType::new(DType::F32, shape.clone()));
        }
        g
    }

    fn rows(n: usize, width: usize) -> Tensor {
        Tensor::from_f32(&[n, width], (0..n * width).map(|i| (i / width) as f32).collect()).unwrap()
    }

    #[test]
    fn batch_tiles_symbolic_inputs_cyclically_and_leaves_fixed_ones() {
        let mut g = graph(&[]);
        let n = Dim::sym(g.symbol("N"));
        g.add_input("x", TensorType::new(DType::F32, vec![n, Dim::Known(2)]));
        g.add_input("table", TensorType::new(DType::F32, vec![Dim::Known(3), Dim::Known(2)]));
        let feeds = HashMap::from([("x".to_string(), rows(3, 2)), ("table".to_string(), rows(3, 2))]);
        let b = apply_batch(&g, feeds.clone(), Some(7)).unwrap();
        assert_eq!(b.batch, 7);
        assert_eq!(b.feeds["x"].to_f32_vec().iter().step_by(2).copied().collect::<Vec<_>>(), [0., 1., 2., 0., 1., 2., 0.]);
        assert_eq!(b.feeds["table"], feeds["table"]);
        // Fewer than given: the first N samples.
        assert_eq!(apply_batch(&g, feeds.clone(), Some(2)).unwrap().feeds["x"].shape(), [2, 2]);
        // No --batch: as given, batch read from the symbolic input.
        let b = apply_batch(&g, feeds, None).unwrap();
        assert_eq!((b.batch, b.feeds["x"].shape()), (3, &[3usize, 2][..]));
    }

    #[test]
    fn batch_errors_name_the_input() {
        let fixed = graph(&[("img", vec![Dim::Known(1), Dim::Known(2)])]);
        let feeds = HashMap::from([("img".to_string(), rows(1, 2))]);
        let e = apply_batch(&fixed, feeds.clone(), Some(7)).err().unwrap().to_string();
        assert!(e.contains("input `img` has a fixed batch dimension (f32[1,2])") && e.contains("only runs at batch 1"), "{e}");
        assert_eq!(apply_batch(&fixed, feeds, Some(1)).unwrap().batch, 1);

        let mut g = graph(&[]);
        let n = g.symbol("N");
        g.add_input("x", TensorType::new(DType::F32, vec![Dim::Sym { sym: n, factor: 2 }, Dim::Known(2)]));
        let e = apply_batch(&g, HashMap::from([("x".to_string(), rows(2, 2))]), Some(3)).err().unwrap().to_string();
        assert!(e.contains("input `x` is a multiple of a symbol (f32[2*N,2])"), "{e}");

        let mut g = graph(&[]);
        let n = Dim::sym(g.symbol("N"));
        g.add_input("x", TensorType::new(DType::F32, vec![n, Dim::Known(2)]));
        let e = apply_batch(&g, HashMap::from([("x".to_string(), rows(0, 2))]), Some(3)).err().unwrap().to_string();
        assert!(e.contains("input `x` is empty along axis 0"), "{e}");
        let e = apply_batch(&g, HashMap::from([("y".to_string(), rows(1, 2))]), Some(3)).err().unwrap().to_string();
        assert!(e.contains("`y` is not an input of the model (inputs: x)"), "{e}");
        let e = apply_batch(&g, HashMap::new(), None).err().unwrap().to_string();
        assert!(e.contains("input `x` was not provided"), "{e}");
    }

    #[test]
    fn default_thread_count_is_sane() {
        let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
        let t = default_threads();
        assert!(t >= 1 && t <= usable);
    }
}
