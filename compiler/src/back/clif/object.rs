//! `d2nnc compile --emit object`: the model as a relocatable object file
//! (code, metadata and weights; exports `<name>_compiled`), its C header
//! and a README on linking it with the runtime's static library.

use super::{define_model, host_isa, ClifError};
use crate::dynamic::Analysis;
use crate::ir::Graph;
use crate::plan::Program;
use cranelift_object::{ObjectBuilder, ObjectModule};
use d2nn_runtime::abi::ModelMeta;
use std::path::{Path, PathBuf};

/// An object file's bytes and the description of what it holds.
pub struct Object {
    pub bytes: Vec<u8>,
    pub meta: ModelMeta,
}

/// Compiles `program` into an object file exporting `<name>_compiled`.
pub fn emit(graph: &Graph, program: &Program, analysis: &Analysis, name: &str) -> Result<Object, ClifError> {
    super::check_name(name)?;
    let builder = ObjectBuilder::new(host_isa(true)?, name.to_string(), cranelift_module::default_libcall_names())?;
    let mut module = ObjectModule::new(builder);
    let defined = define_model(&mut module, graph, program, analysis, name, false)?;
    let product = module.finish();
    let bytes = product.emit().map_err(|e| ClifError::Codegen(e.to_string()))?;
    Ok(Object { bytes, meta: defined.meta })
}

/// Writes `NAME.o`, `NAME.h` and `README.md` into `dir`; returns their paths.
pub fn write(dir: &Path, name: &str, source: &str, object: &Object) -> Result<Vec<PathBuf>, ClifError> {
    std::fs::create_dir_all(dir).map_err(|source| ClifError::Io { path: dir.to_path_buf(), source })?;
    let files = [
        (dir.join(format!("{name}.o")), object.bytes.clone()),
        (dir.join(format!("{name}.h")), super::header::header(&object.meta, name, source).into_bytes()),
        (dir.join("README.md"), super::header::readme(&object.meta, name, source).into_bytes()),
    ];
    let mut written = Vec::new();
    for (path, bytes) in files {
        std::fs::write(&path, bytes).map_err(|source| ClifError::Io { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}
