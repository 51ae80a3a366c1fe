//! `d2nnc compile`: write a model as a Rust crate (the Rust back end).

use d2nnc::back::rust::krate::{crate_name, write_crate, RuntimeDep};
use d2nnc::back::rust::{compile_file, format_module, Options, WeightsPath};
use d2nnc::Error;
use std::path::{Path, PathBuf};

/// What `d2nnc compile` was asked to do.
pub struct CompileOptions {
    pub output: Option<PathBuf>,
    pub name: Option<String>,
    pub fixes: Vec<(String, f32)>,
    pub runtime_path: Option<PathBuf>,
    pub runtime_version: Option<String>,
    /// Join the enclosing Cargo workspace instead of declaring one.
    pub member: bool,
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
    let generated = compile_file(model, &options.fixes, &generate)?;
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
