//! `d2nnc compile`: write a model as a Rust crate (the Rust back end), or as
//! an object file with a C header (the Cranelift back end).

use d2nnc::back::rust::krate::{crate_name, write_crate, RuntimeDep};
use d2nnc::back::rust::{format_module, generate as generate_crate, Options, WeightsPath};
use d2nnc::dynamic::Analysis;
use d2nnc::ir::Graph;
use d2nnc::plan::Program;
use d2nnc::Error;
use std::path::{Path, PathBuf};

/// What `d2nnc compile` was asked to do.
pub struct CompileOptions {
    pub output: Option<PathBuf>,
    pub name: Option<String>,
    pub fixes: Vec<(String, f32)>,
    /// Knob values the compiled model starts with (`--knobs-file`).
    pub knob_defaults: Vec<(String, f32)>,
    pub runtime_path: Option<PathBuf>,
    pub runtime_version: Option<String>,
    /// Join the enclosing Cargo workspace instead of declaring one.
    pub member: bool,
}

/// The form `d2nnc compile` writes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// A Rust crate depending on d2nn-runtime.
    Crate,
    /// NAME.o, NAME.h and README.md, for C and C++ programs.
    Object,
}

/// The model's name from its file (`…/resnet/model.onnx` → `resnet`).
fn model_stem(model: &Path) -> Option<String> {
    model.file_stem().and_then(|s| s.to_str()).filter(|s| *s != "model").map(str::to_string).or_else(|| model.canonicalize().ok()?.parent()?.file_name()?.to_str().map(str::to_string))
}

/// Loads and lowers `model` with the knob defaults moved and the fixes baked in.
fn lower_model(model: &Path, options: &CompileOptions) -> Result<(Graph, Program, Analysis), Error> {
    let mut graph = d2nnc::load_and_optimize(model)?.graph;
    // Replacing a knob's constant moves its default; only the names passed
    // to `analyze` as fixed stop being adjustable.
    d2nnc::dynamic::fix_knobs(&mut graph, &options.knob_defaults)?;
    let fixed = d2nnc::dynamic::fix_knobs(&mut graph, &options.fixes)?;
    let analysis = d2nnc::dynamic::analyze(&graph, &fixed);
    let program = if analysis.is_dynamic() { d2nnc::plan::lower_dynamic(&graph, &analysis)? } else { d2nnc::plan::lower(&graph)? };
    Ok((graph, program, analysis))
}

/// `--emit object`: compiles with Cranelift into `DIR/NAME.o`, `NAME.h`, `README.md`.
pub fn compile_object(model: &Path, options: &CompileOptions) -> Result<(), Error> {
    if options.runtime_path.is_some() || options.runtime_version.is_some() || options.member {
        return Err(Error::Usage("--runtime-path, --runtime-version and --member describe a Rust crate; an object file links the runtime's static library (see the README it comes with)".into()));
    }
    let name = match &options.name {
        Some(n) => {
            d2nnc::back::clif::check_name(n)?;
            n.clone()
        }
        None => crate_name(model_stem(model).as_deref().unwrap_or("model")).replace('-', "_"),
    };
    let dir = options.output.clone().unwrap_or_else(|| PathBuf::from(&name));
    let (graph, program, analysis) = lower_model(model, options)?;
    let object = d2nnc::back::clif::object::emit(&graph, &program, &analysis, &name)?;
    let source = model.file_name().and_then(|s| s.to_str()).unwrap_or("model.onnx").to_string();
    let written = d2nnc::back::clif::object::write(&dir, &name, &source, &object)?;
    println!("wrote {} ({:.1} MB, weights inside) and its C header to {}", written[0].file_name().and_then(|f| f.to_str()).unwrap_or("?"), object.bytes.len() as f64 / 1e6, dir.display());
    let meta = &object.meta;
    for p in &meta.inputs {
        println!("  input  {}: {} {}", p.name, p.dtype, d2nnc::back::clif::dims_text(&p.dims));
    }
    for p in &meta.outputs {
        println!("  output {}: {} {}", p.name, p.dtype, d2nnc::back::clif::dims_text(&p.dims));
    }
    if !meta.trace.regions.is_empty() {
        println!("  {} guarded regions, knobs: {}", meta.trace.regions.len(), if meta.knobs.is_empty() { "none".to_string() } else { meta.knobs.iter().map(|k| k.name.clone()).collect::<Vec<_>>().join(", ") });
    }
    println!("see {} for the link line", dir.join("README.md").display());
    Ok(())
}

pub fn compile(model: &Path, options: &CompileOptions) -> Result<(), Error> {
    let stem = model.file_stem().and_then(|s| s.to_str()).filter(|s| *s != "model").map(str::to_string).or_else(|| {
        // `…/resnet/model.onnx` → `resnet`.
        model.canonicalize().ok()?.parent()?.file_name()?.to_str().map(str::to_string)
    });
    let name = match &options.name {
        Some(n) => {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || n.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(Error::Usage(format!("--name {n:?} is not a valid crate name (ASCII letters, digits, `_` and `-`, not starting with a digit)")));
            }
            n.clone()
        }
        None => crate_name(stem.as_deref().unwrap_or("model")),
    };
    let dir = options.output.clone().unwrap_or_else(|| PathBuf::from(&name));
    let runtime = match (&options.runtime_path, &options.runtime_version) {
        (Some(p), _) => RuntimeDep::Path(p.canonicalize().map_err(|source| Error::Io { path: p.clone(), source })?),
        (None, Some(v)) => RuntimeDep::Version(v.clone()),
        (None, None) => RuntimeDep::default_for_this_build(),
    };
    let source = model.file_name().and_then(|s| s.to_str()).unwrap_or("model.onnx").to_string();
    let generate = Options { source: source.clone(), weights: WeightsPath::Relative("../weights.bin".into()), comments: true, track: Vec::new(), fixed: options.fixes.clone() };
    let (graph, program, analysis) = lower_model(model, options)?;
    let generated = generate_crate(&graph, &program, &analysis, &generate)?;
    let lib_rs = format_module(&generated.tokens)?;
    write_crate(&dir, &name, &generated, &lib_rs, &runtime, &source, !options.member)?;
    let api = &generated.api;
    println!("wrote crate `{name}` to {}", dir.display());
    println!("  src/lib.rs: {} lines; weights.bin: {:.1} MB", lib_rs.lines().count(), generated.weights.len() as f64 / 1e6);
    for p in &api.inputs {
        println!("  input  {}: {} {}", p.name, p.elem, p.shape);
    }
    for p in &api.outputs {
        println!("  output {}: {} {}", p.name, p.elem, p.shape);
    }
    if api.dynamic {
        println!("  {} guarded regions, knobs: {}", api.regions.len(), if api.knobs.is_empty() { "none".to_string() } else { api.knobs.iter().map(|k| k.0.clone()).collect::<Vec<_>>().join(", ") });
    }
    let inputs: Vec<String> = api.inputs.iter().map(|p| format!("--input {}=FILE.npy", p.name)).collect();
    println!("try: cd {} && cargo run --release --example run_npy -- {} --output-dir out/", dir.display(), inputs.join(" "));
    Ok(())
}
