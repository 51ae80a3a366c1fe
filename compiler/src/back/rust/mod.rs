//! The Rust back end: turns a lowered [`Program`] into the source of a Rust
//! module — a `Model` type whose `run_into` is the program's steps written
//! out one statement each, calling the runtime's kernels on arena slices at
//! constant offsets. Guarded blocks become `if`s and routing blocks whose
//! comments name the ONNX nodes they cover; nothing interprets a plan at
//! run time.
//!
//! [`generate`] gives the module's tokens and its weights file; `d2nnc
//! compile` formats them into a crate ([`krate`]) and `dynamic_net!`
//! expands to the same tokens inline.

mod emit;
pub mod krate;
pub mod names;
mod tokens;

use crate::dynamic::Analysis;
use crate::ir::Graph;
use crate::plan::Program;
use proc_macro2::TokenStream;

/// Why a program cannot be written as Rust.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("node `{node}` ({op}): the Rust back end cannot compile it: {reason}")]
    Unsupported { node: String, op: String, reason: String },
    #[error("{what} `{name}`: {reason}")]
    Value { what: &'static str, name: String, reason: String },
    #[error("the generated code does not parse ({0}); this is a d2nnc bug")]
    Syntax(String),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

/// Where the generated module finds its weights file.
#[derive(Clone, Debug)]
pub enum WeightsPath {
    /// A path relative to the file holding the module (`include_bytes!`'s rule).
    Relative(String),
    /// An absolute path.
    Absolute(std::path::PathBuf),
    /// Whoever embeds the module defines `static WEIGHTS: &[u8]` in it
    /// (`dynamic_net!`, which learns the file's path only after generating).
    Provided,
}

/// How to write the module.
#[derive(Clone, Debug)]
pub struct Options {
    /// The model file the module was compiled from, for its docs.
    pub source: String,
    pub weights: WeightsPath,
    /// Emit `//` comments naming the ONNX nodes of each statement (they
    /// survive only through [`format_module`]; the macro leaves them out).
    pub comments: bool,
    /// Extra `include_bytes!` paths whose changes must rebuild the code
    /// (the model file, for `dynamic_net!`).
    pub track: Vec<std::path::PathBuf>,
    /// Knobs fixed at compile time, for the docs.
    pub fixed: Vec<(String, f32)>,
}

/// A generated module.
pub struct Generated {
    /// The module's items (inner attributes first).
    pub tokens: TokenStream,
    /// The weights file the module embeds.
    pub weights: Vec<u8>,
    /// The identifiers and shapes of the public API, for READMEs and examples.
    pub api: Api,
}

/// The generated API's names, for the files written around the module.
#[derive(Clone, Debug, Default)]
pub struct Api {
    /// Per graph input: ONNX name, Rust field, element type, shape text.
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    /// Per knob: ONNX name, Rust field, default.
    pub knobs: Vec<(String, String, f32)>,
    pub regions: Vec<String>,
    pub dynamic: bool,
}

#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    pub field: String,
    pub elem: &'static str,
    pub shape: String,
}

/// Writes `program` (lowered from `graph`, whose constants it still needs
/// for the weights packed into kernels) as a Rust module.
pub fn generate(graph: &Graph, program: &Program, analysis: &Analysis, options: &Options) -> Result<Generated, BackendError> {
    emit::Writer::new(graph, program, analysis, options)?.module()
}

/// Loads, optimises and lowers the model at `path` (with `fixes` baked in:
/// static pruning), then writes it as a module: the whole pipeline behind
/// `d2nnc compile` and `dynamic_net!`.
pub fn compile_file(path: &std::path::Path, fixes: &[(String, f32)], options: &Options) -> Result<Generated, crate::Error> {
    let mut graph = crate::load_and_optimize(path)?.graph;
    let fixed = crate::dynamic::fix_knobs(&mut graph, fixes)?;
    let analysis = crate::dynamic::analyze(&graph, &fixed);
    let program = if analysis.is_dynamic() { crate::plan::lower_dynamic(&graph, &analysis)? } else { crate::plan::lower(&graph)? };
    Ok(generate(&graph, &program, &analysis, options)?)
}

/// Formats a module with prettyplease and turns its comment markers into `//` comments.
pub fn format_module(tokens: &TokenStream) -> Result<String, BackendError> {
    let file: syn::File = syn::parse2(tokens.clone()).map_err(|e| BackendError::Syntax(e.to_string()))?;
    let text = prettyplease::unparse(&file);
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix(emit::COMMENT_MARKER) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        // prettyplease may break a long marker call over several lines.
        let mut call = rest.trim().to_string();
        while !call.ends_with(");") {
            match lines.next() {
                Some(more) => call.push_str(more.trim()),
                None => break,
            }
        }
        let literal = call.trim_start_matches('(').trim_end_matches(");").trim().trim_end_matches(',');
        let indent = &line[..line.len() - trimmed.len()];
        let comment = syn::parse_str::<syn::LitStr>(literal).map(|l| l.value()).map_err(|e| BackendError::Syntax(format!("comment marker {literal:?}: {e}")))?;
        for piece in comment.lines() {
            out.push_str(indent);
            out.push_str("// ");
            out.push_str(piece);
            out.push('\n');
        }
    }
    Ok(out)
}
