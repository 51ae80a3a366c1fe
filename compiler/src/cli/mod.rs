//! Command-line parsing (clap) and dispatch to the subcommands.

mod bench;
mod inputs;
mod inspect;
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
        #[arg(long, value_enum, default_value_t = Backend::Plan)]
        backend: Backend,
        /// Threads for the plan backend [default: physical cores].
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
        threads: Option<usize>,
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
    },
    /// Time a model on .npy inputs: latency, throughput, GFLOP/s, and optionally a per-node profile.
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The reference interpreter.
    Interp,
    /// The plan executor: the lowered program over one planned scratch
    /// arena, on the runtime's fast kernels (the default).
    Plan,
}

impl Backend {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
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
        Command::Run { model, inputs, output_dir, backend, threads } => {
            run::run(&model, &inputs, &output_dir, backend, threads.unwrap_or_else(default_threads))
        }
        Command::Inspect { model, batch, ir, plan } => inspect::inspect(&model, batch, ir, plan),
        Command::Bench(args) => bench::bench(&args),
    }
}
