//! The Cranelift back end: a lowered [`Program`] as native code, in
//! memory ([`JitModel`], what `d2nnc run` and `bench` use by default) or as
//! an object file with a C header ([`object`]).
//!
//! [`define_model`] is the one translation, generic over
//! `cranelift_module::Module`: it defines the function `<name>_run` (see
//! `emit.rs`: decisions, branches, routing and cheap elementwise loops
//! inline; heavy kernels called through the runtime's `d2nn_rt_kernel`),
//! the model's metadata and weights as data, and the exported record
//! `<name>_compiled` (`d2nn_runtime::abi::Compiled`) that ties them
//! together. The runtime's `abi::Model` loads that record the same way
//! whether it came from the JIT or from a linked object file.

mod emit;
pub mod header;
mod jit;
pub(crate) mod meta;
pub mod object;
mod simd;

pub use jit::{dims_text, JitModel};

use crate::dynamic::Analysis;
use crate::ir::Graph;
use crate::plan::Program;
use cranelift_codegen::ir::{types, AbiParam};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use d2nn_runtime::abi::{compiled_layout, ModelMeta, ABI_VERSION};

/// Why a program cannot be compiled to native code.
#[derive(Debug, thiserror::Error)]
pub enum ClifError {
    #[error("node `{node}` ({op}): the Cranelift back end cannot compile it: {reason}")]
    Unsupported { node: String, op: String, reason: String },
    #[error("{what} `{name}`: {reason}")]
    Value { what: &'static str, name: String, reason: String },
    #[error("model name `{0}`: use letters, digits and underscores, not starting with a digit")]
    Name(String),
    #[error("the host CPU is not supported by Cranelift: {0}")]
    Host(String),
    #[error("Cranelift: {0}; this is a d2nnc bug")]
    Codegen(String),
    #[error(transparent)]
    Runtime(#[from] d2nn_runtime::abi::ModelError),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

impl From<cranelift_module::ModuleError> for ClifError {
    fn from(e: cranelift_module::ModuleError) -> Self {
        ClifError::Codegen(e.to_string())
    }
}

/// The host's instruction set with the features cranelift-native detects
/// (never an instruction the host lacks). `pic`: position-independent code,
/// for object files linked into PIE executables.
pub fn host_isa(pic: bool) -> Result<OwnedTargetIsa, ClifError> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, k: &str, v: &str| flags.set(k, v).map_err(|e| ClifError::Codegen(e.to_string()));
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    let builder = cranelift_native::builder().map_err(|e| ClifError::Host(e.to_string()))?;
    builder.finish(settings::Flags::new(flags)).map_err(|e| ClifError::Codegen(e.to_string()))
}

/// What [`define_model`] put into the module.
pub struct Defined {
    /// The exported `<name>_compiled` record.
    pub compiled: DataId,
    pub run: FuncId,
    pub meta: ModelMeta,
    /// The steps compiled as external kernels (only with `allow_external`).
    pub external: Vec<meta::ExternalStep>,
}

/// Checks that `name` can prefix C symbols.
pub fn check_name(name: &str) -> Result<(), ClifError> {
    let ok = !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ClifError::Name(name.to_string()))
    }
}

/// Translates `program` (lowered from `graph`, whose constants hold the
/// weights packed into kernels) into `module` under the symbol prefix `name`.
/// With `allow_external`, steps only the interpreter covers become external
/// kernels the loader must host (the JIT); without, they are errors.
pub fn define_model<M: Module>(module: &mut M, graph: &Graph, program: &Program, analysis: &Analysis, name: &str, allow_external: bool) -> Result<Defined, ClifError> {
    check_name(name)?;
    let ptr = module.target_config().pointer_type();
    if ptr != types::I64 {
        return Err(ClifError::Host("d2nnc emits code for 64-bit targets only".into()));
    }
    let signature = |module: &M, params: &[types::Type], ret: types::Type| {
        let mut s = module.make_signature();
        s.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        s.returns.push(AbiParam::new(ret));
        s
    };
    let kernel_sig = signature(module, &[ptr, types::I32, types::I64, ptr, types::I32], types::I32);
    let trace_sig = signature(module, &[ptr, types::I32, ptr, types::I64, types::I64], types::I32);
    let run_sig = signature(module, &[ptr], types::I32);
    let kernel_id = module.declare_function("d2nn_rt_kernel", Linkage::Import, &kernel_sig)?;
    let trace_id = module.declare_function("d2nn_rt_trace_enter", Linkage::Import, &trace_sig)?;
    let run_id = module.declare_function(&format!("{name}_run"), Linkage::Local, &run_sig)?;

    let mut meta = meta::MetaBuilder::new(graph, program, allow_external);
    let mut ctx = module.make_context();
    ctx.func.signature = run_sig;
    let mut fbc = FunctionBuilderContext::new();
    {
        let mut fb = FunctionBuilder::new(&mut ctx.func, &mut fbc);
        let kernel_ref = module.declare_func_in_func(kernel_id, fb.func);
        let trace_ref = module.declare_func_in_func(trace_id, fb.func);
        let writer = emit::FunctionWriter::new(program, &mut meta, &mut fb, module.target_config(), kernel_ref, trace_ref)?;
        writer.finish(&mut fb)?;
        fb.finalize(module.target_config());
    }
    module.define_function(run_id, &mut ctx).map_err(|e| ClifError::Codegen(format!("{e:?}")))?;
    module.clear_context(&mut ctx);

    let model_meta = meta.meta(name, analysis)?;
    let weights = std::mem::take(&mut meta.weights).finish();
    let meta_bytes = model_meta.encode();
    let blob = |module: &mut M, symbol: String, bytes: Vec<u8>, align: u64| -> Result<DataId, ClifError> {
        let id = module.declare_data(&symbol, Linkage::Local, false, false)?;
        let mut d = DataDescription::new();
        d.define(bytes.into_boxed_slice());
        d.set_align(align);
        module.define_data(id, &d)?;
        Ok(id)
    };
    let (meta_len, weights_len) = (meta_bytes.len(), weights.len());
    let meta_id = blob(module, format!("{name}_meta"), meta_bytes, 8)?;
    let weights_id = blob(module, format!("{name}_weights"), weights, 64)?;

    let compiled = module.declare_data(&format!("{name}_compiled"), Linkage::Export, false, false)?;
    let mut record = vec![0u8; compiled_layout::SIZE as usize];
    let put = |record: &mut Vec<u8>, at: u32, bytes: &[u8]| record[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    put(&mut record, compiled_layout::ABI_VERSION, &ABI_VERSION.to_le_bytes());
    put(&mut record, compiled_layout::META_LEN, &(meta_len as u64).to_le_bytes());
    put(&mut record, compiled_layout::WEIGHTS_LEN, &(weights_len as u64).to_le_bytes());
    let mut d = DataDescription::new();
    d.define(record.into_boxed_slice());
    d.set_align(8);
    let meta_gv = module.declare_data_in_data(meta_id, &mut d);
    d.write_data_addr(compiled_layout::META, meta_gv, 0);
    let weights_gv = module.declare_data_in_data(weights_id, &mut d);
    d.write_data_addr(compiled_layout::WEIGHTS, weights_gv, 0);
    let run_ref = module.declare_func_in_data(run_id, &mut d);
    d.write_function_addr(compiled_layout::RUN, run_ref);
    module.define_data(compiled, &d)?;
    Ok(Defined { compiled, run: run_id, meta: model_meta, external: meta.external })
}

/// Loads, optimises and lowers the model at `path` with `fixes` baked in:
/// the graph (for the weights), the program and its analysis.
pub fn lower_file(path: &std::path::Path, fixes: &[(String, f32)]) -> Result<(Graph, Program, Analysis), crate::Error> {
    let mut graph = crate::load_and_optimize(path)?.graph;
    let fixed = crate::dynamic::fix_knobs(&mut graph, fixes)?;
    let analysis = crate::dynamic::analyze(&graph, &fixed);
    let program = if analysis.is_dynamic() { crate::plan::lower_dynamic(&graph, &analysis)? } else { crate::plan::lower(&graph)? };
    Ok((graph, program, analysis))
}
