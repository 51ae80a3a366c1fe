//! Command-line parsing (clap) and dispatch to the subcommands.

mod bench;
mod calibrate;
mod compile;
mod inputs;
mod inspect;
mod knobs;
mod report;
mod run;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "d2nnc", version, about = "Ahead-of-time compiler for dynamic neural networks (ONNX in, specialised code out)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a model on .npy inputs and write each output to DIR/<output name>.npy.
    Run {
        model: PathBuf,
        /// An input as NAME=FILE.npy (repeat for several inputs).
        #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy", value_parser = inputs::parse_input_spec)]
        inputs: Vec<inputs::InputSpec>,
        /// Where to write the outputs.
        #[arg(long, short = 'o', default_value = ".")]
        output_dir: PathBuf,
        /// Execution engine.
        #[arg(long, value_enum, default_value_t = Backend::Jit)]
        backend: Backend,
        /// Threads for the jit and plan backends [default: physical cores].
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
        threads: Option<usize>,
        /// Set a knob (a decision threshold; see `inspect`) for this run.
        #[arg(long = "knob", value_name = "NAME=VALUE", value_parser = knobs::parse_knob)]
        knobs: Vec<(String, f32)>,
        /// Set the knobs from a TOML file (`d2nnc calibrate -o`); `--knob` overrides it.
        #[arg(long, value_name = "FILE.toml")]
        knobs_file: Option<PathBuf>,
        /// Bake a knob's value into the model, letting static pruning act.
        #[arg(long = "fix", value_name = "NAME=VALUE", value_parser = knobs::parse_knob)]
        fixes: Vec<(String, f32)>,
        /// Compute every node (the ONNX semantics) instead of following the decisions.
        #[arg(long)]
        dense: bool,
        /// Write a JSON report of what ran (regions, rows, paths, FLOPs; fields in the README).
        #[arg(long, value_name = "FILE.json")]
        report: Option<PathBuf>,
    },
    /// Show a model's inputs, outputs, op counts, parameters and FLOPs.
    Inspect {
        model: PathBuf,
        /// Value bound to every symbolic dimension when counting FLOPs.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Also print the IR after optimisation.
        #[arg(long)]
        ir: bool,
        /// Also print the execution plan: each step's kernel (with what was
        /// fused into it), operands, arena slots and the arena's size.
        #[arg(long)]
        plan: bool,
        /// Bake a knob's value into the model first (shows what static pruning removes).
        #[arg(long = "fix", value_name = "NAME=VALUE", value_parser = knobs::parse_knob)]
        fixes: Vec<(String, f32)>,
    },
    /// Compile a model into a Rust crate (Cargo.toml, src/lib.rs, weights.bin, README,
    /// examples/run_npy.rs), or with `--emit object` into an object file and C header.
    Compile {
        model: PathBuf,
        /// What to write: a Rust crate, or (Cranelift) NAME.o with the
        /// weights inside, NAME.h (the C API) and a README on linking them
        /// with the runtime's static library.
        #[arg(long, value_enum, default_value_t = compile::Emit::Crate)]
        emit: compile::Emit,
        /// Directory to write the crate to [default: ./NAME].
        #[arg(long, short = 'o', value_name = "DIR")]
        output: Option<PathBuf>,
        /// Crate name, or the C symbol prefix with `--emit object` [default: from the model's file name].
        #[arg(long)]
        name: Option<String>,
        /// Bake a knob's value into the model, letting static pruning act.
        #[arg(long = "fix", value_name = "NAME=VALUE", value_parser = knobs::parse_knob)]
        fixes: Vec<(String, f32)>,
        /// Start the compiled model's knobs at the values in this TOML file
        /// (`d2nnc calibrate -o`); they stay adjustable at run time.
        #[arg(long, value_name = "FILE.toml")]
        knobs_file: Option<PathBuf>,
        /// Depend on the d2nn-runtime crate at this path [default: this workspace's, when d2nnc runs from it].
        #[arg(long, value_name = "DIR", conflicts_with = "runtime_version")]
        runtime_path: Option<PathBuf>,
        /// Depend on this crates.io version of d2nn-runtime.
        #[arg(long, value_name = "VERSION")]
        runtime_version: Option<String>,
        /// Let the crate join the enclosing Cargo workspace (add it to its
        /// members) instead of declaring a workspace of its own.
        #[arg(long)]
        member: bool,
    },
    /// Time a model on .npy inputs: latency, throughput, GFLOP/s, and optionally a per-node profile.
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
    /// Sweep the knobs on labelled validation data: accuracy vs executed FLOPs,
    /// the Pareto frontier, and a knob file for the chosen setting.
    #[command(long_about = calibrate::LONG_ABOUT)]
    Calibrate(calibrate::CalibrateArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Native code JIT-compiled with Cranelift: decisions, routing and cheap
    /// elementwise loops inline, the runtime's kernels for the rest (the default).
    Jit,
    /// The plan executor: the lowered program over one planned scratch
    /// arena, on the runtime's fast kernels.
    Plan,
    /// The reference interpreter.
    Interp,
}

impl Backend {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Jit => "jit",
            Backend::Interp => "interp",
            Backend::Plan => "plan",
        }
    }
}

/// Physical cores, at most the CPUs this process may run on.
fn default_threads() -> usize {
    let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
    d2nn_runtime::pool::physical_cores().min(usable)
}

pub fn dispatch(cli: Cli) -> Result<(), d2nnc::Error> {
    match cli.command {
        Command::Run { model, inputs, output_dir, backend, threads, knobs, knobs_file, fixes, dense, report } => {
            let knobs = knobs::with_file(knobs_file.as_deref(), knobs)?;
            let options = run::RunOptions { backend, threads: threads.unwrap_or_else(default_threads), knobs, fixes, dense, report };
            run::run(&model, &inputs, &output_dir, &options)
        }
        Command::Inspect { model, batch, ir, plan, fixes } => inspect::inspect(&model, batch, ir, plan, &fixes),
        Command::Bench(mut args) => {
            args.knobs = knobs::with_file(args.knobs_file.as_deref(), std::mem::take(&mut args.knobs))?;
            bench::bench(&args)
        }
        Command::Calibrate(args) => calibrate::calibrate(&args, args.threads.unwrap_or_else(default_threads)),
        Command::Compile { model, emit, output, name, fixes, knobs_file, runtime_path, runtime_version, member } => {
            let knob_defaults = knobs::with_file(knobs_file.as_deref(), Vec::new())?;
            let options = compile::CompileOptions { output, name, fixes, knob_defaults, runtime_path, runtime_version, member };
            match emit {
                compile::Emit::Crate => compile::compile(&model, &options),
                compile::Emit::Object => compile::compile_object(&model, &options),
            }
        }
    }
}
