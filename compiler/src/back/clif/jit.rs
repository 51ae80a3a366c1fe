//! [`JitModel`]: a model compiled to machine code in this process and
//! loaded into the runtime — the library API behind `d2nnc run` and
//! `bench` (`--backend jit`).

use super::{define_model, host_isa, ClifError};
use crate::dynamic::Analysis;
use crate::ir::Graph;
use crate::plan::Program;
use cranelift_jit::{JITBuilder, JITModule};
use super::meta::ExternalStep;
use crate::ir::{Dim, NodeId, Symbol};
use crate::plan::BufferId;
use d2nn_runtime::abi::{Compiled, External, Model, ModelMeta};
use d2nn_runtime::kernels::KernelError;
use std::sync::Arc;
use d2nn_runtime::ndarray::{ArrayD, ArrayViewD, IxDyn};
use d2nn_runtime::trace::Trace;
use d2nn_runtime::{DType, Tensor};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A JIT-compiled model: call it with ndarray views, set knobs, read the trace.
pub struct JitModel {
    /// Declared before the module: dropped first, as it points into the module's memory.
    model: Model,
    module: Option<JITModule>,
    compile_time: Duration,
}

impl JitModel {
    /// JIT-compiles a lowered program; its kernels run on `threads` threads.
    pub fn compile(graph: &Graph, program: &Program, analysis: &Analysis, threads: usize) -> Result<JitModel, ClifError> {
        let start = Instant::now();
        let mut builder = JITBuilder::with_isa(host_isa(false)?, cranelift_module::default_libcall_names());
        for (name, address) in d2nn_runtime::abi::hook_symbols() {
            builder.symbol(name, address);
        }
        let mut module = JITModule::new(builder);
        let defined = define_model(&mut module, graph, program, analysis, "model", true)?;
        module.finalize_definitions()?;
        let compile_time = start.elapsed();
        let (record, _) = module.get_finalized_data(defined.compiled);
        // SAFETY: `record` is the `Compiled` record `define_model` laid out
        // (ABI-version checked by `from_compiled`), its pointers relocated by
        // `finalize_definitions` to the meta, weights and code in `module`,
        // which lives as long as the model (see `Drop`).
        let host: Option<Arc<dyn External>> = if defined.external.is_empty() { None } else { Some(Arc::new(Interpreter::new(program, &defined.external))) };
        let model = unsafe { Model::from_compiled_with(record as *const Compiled, threads.max(1), host) }?;
        Ok(JitModel { model, module: Some(module), compile_time })
    }

    /// Loads, optimises, lowers and JIT-compiles the model at `path`
    /// (`fixes`: knobs baked in at compile time).
    pub fn load(path: &std::path::Path, fixes: &[(String, f32)], threads: usize) -> Result<JitModel, crate::Error> {
        let (graph, program, analysis) = super::lower_file(path, fixes)?;
        Ok(JitModel::compile(&graph, &program, &analysis, threads)?)
    }

    /// Time spent generating and finalising machine code (not loading the
    /// ONNX file, not packing weights).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Threads the kernels run on, the caller included.
    pub fn threads(&self) -> usize {
        self.model.threads()
    }

    /// Ports, knobs, regions and paths.
    pub fn meta(&self) -> &ModelMeta {
        self.model.meta()
    }

    pub fn set_knob(&mut self, name: &str, value: f32) -> Result<(), ClifError> {
        Ok(self.model.set_knob(name, value)?)
    }

    pub fn knob(&self, name: &str) -> Result<f32, ClifError> {
        Ok(self.model.knob(name)?)
    }

    /// What the last run did.
    pub fn trace(&self) -> &Trace {
        self.model.trace()
    }

    /// The index in the model's paths of the path sample `sample` took in the last run.
    pub fn path_of(&self, sample: usize) -> Option<usize> {
        self.model.path_of(sample)
    }

    /// Runs a model whose ports are all f32, on views of its inputs in order.
    pub fn run(&mut self, inputs: &[ArrayViewD<'_, f32>]) -> Result<Vec<ArrayD<f32>>, ClifError> {
        let meta = self.model.meta();
        if let Some(p) = meta.inputs.iter().chain(&meta.outputs).find(|p| p.dtype != DType::F32) {
            return Err(ClifError::Value { what: "port", name: p.name.clone(), reason: format!("holds {} elements; use `run_tensors`", p.dtype.name()) });
        }
        let contiguous: Vec<std::borrow::Cow<[f32]>> = inputs.iter().map(|v| v.as_slice().map(std::borrow::Cow::Borrowed).unwrap_or_else(|| std::borrow::Cow::Owned(v.iter().copied().collect()))).collect();
        for ((view, port), _) in inputs.iter().zip(&meta.inputs).zip(&contiguous) {
            if view.ndim() != port.dims.len() {
                return Err(ClifError::Runtime(d2nn_runtime::abi::ModelError::Input { name: port.name.clone(), reason: format!("has {} dims, the model expects {}", view.ndim(), port.dims.len()) }));
            }
        }
        let bytes: Vec<&[u8]> = contiguous.iter().map(|c| bytemuck::cast_slice::<f32, u8>(c)).collect();
        let sizes: Vec<usize> = bytes.iter().map(|b| b.len()).collect();
        let batch = self.model.batch_of(&sizes)?;
        let meta = self.model.meta();
        for (view, port) in inputs.iter().zip(&meta.inputs) {
            let expected: Vec<usize> = port.dims.iter().map(|d| d.at(batch)).collect();
            if view.shape() != expected.as_slice() {
                return Err(ClifError::Runtime(d2nn_runtime::abi::ModelError::Input { name: port.name.clone(), reason: format!("shape {:?}, the model expects {expected:?} at batch {batch}", view.shape()) }));
            }
        }
        let mut outputs: Vec<ArrayD<f32>> = meta.outputs.iter().map(|p| ArrayD::zeros(IxDyn(&p.dims.iter().map(|d| d.at(batch)).collect::<Vec<_>>()))).collect();
        let mut out_bytes: Vec<&mut [u8]> = outputs.iter_mut().map(|a| bytemuck::cast_slice_mut::<f32, u8>(a.as_slice_mut().expect("a fresh array is contiguous"))).collect();
        self.model.run(&bytes, &mut out_bytes)?;
        Ok(outputs)
    }

    /// Runs the model on named tensors of any dtype; returns the outputs in
    /// graph order. Contiguous numeric inputs are read in place.
    pub fn run_tensors(&mut self, inputs: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, ClifError> {
        let input_err = |name: &str, reason: String| ClifError::Runtime(d2nn_runtime::abi::ModelError::Input { name: name.to_string(), reason });
        let meta = self.model.meta();
        let mut views: Vec<InputBytes> = Vec::with_capacity(meta.inputs.len());
        for port in &meta.inputs {
            let t = inputs.get(&port.name).ok_or_else(|| input_err(&port.name, "is missing".into()))?;
            if t.dtype() != port.dtype {
                return Err(input_err(&port.name, format!("is {}, the model expects {}", t.dtype(), port.dtype)));
            }
            views.push(InputBytes::of(t));
        }
        // The batch: from the first batch-scaled dim; every shape must fit it.
        let mut batch = None;
        for (port, v) in meta.inputs.iter().zip(&views) {
            let fits = v.shape().len() == port.dims.len()
                && port.dims.iter().zip(v.shape()).all(|(d, &n)| match *d {
                    d2nn_runtime::compiled::Dim::Known(k) => k == n,
                    d2nn_runtime::compiled::Dim::Batch(f) => f > 0 && n % f == 0 && *batch.get_or_insert(n / f) == n / f,
                });
            if !fits {
                return Err(input_err(&port.name, format!("expected {}{}, got {}{:?}", port.dtype, dims_text(&port.dims), port.dtype, v.shape())));
            }
        }
        let batch = batch.unwrap_or(1);
        let mut outputs: Vec<(Vec<usize>, OutputBuf)> = meta
            .outputs
            .iter()
            .map(|p| {
                let shape: Vec<usize> = p.dims.iter().map(|d| d.at(batch)).collect();
                let n = shape.iter().product();
                let buf = match p.dtype {
                    DType::F32 => OutputBuf::F32(vec![0.0; n]),
                    DType::I64 => OutputBuf::I64(vec![0; n]),
                    DType::I32 => OutputBuf::I32(vec![0; n]),
                    DType::Bool => OutputBuf::Bool(vec![0; n]),
                };
                (shape, buf)
            })
            .collect();
        {
            let ins: Vec<&[u8]> = views.iter().map(InputBytes::bytes).collect();
            let mut outs: Vec<&mut [u8]> = outputs.iter_mut().map(|(_, b)| b.bytes_mut()).collect();
            self.model.run(&ins, &mut outs)?;
        }
        let names: Vec<String> = self.model.meta().outputs.iter().map(|p| p.name.clone()).collect();
        outputs
            .into_iter()
            .zip(names)
            .map(|((shape, buf), name)| {
                let t = match buf {
                    OutputBuf::F32(v) => Tensor::from_f32(&shape, v),
                    OutputBuf::I64(v) => Tensor::from_i64(&shape, v),
                    OutputBuf::I32(v) => Tensor::from_i32(&shape, v),
                    OutputBuf::Bool(v) => Tensor::from_bool(&shape, v.into_iter().map(|b| b != 0).collect()),
                };
                t.map_err(|e| ClifError::Value { what: "output", name, reason: e.to_string() })
            })
            .collect()
    }
}

/// `[N, 3, 32, 32]`: `N` for the batch (`2N` for twice it).
pub fn dims_text(dims: &[d2nn_runtime::compiled::Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            d2nn_runtime::compiled::Dim::Known(k) => k.to_string(),
            d2nn_runtime::compiled::Dim::Batch(1) => "N".into(),
            d2nn_runtime::compiled::Dim::Batch(f) => format!("{f}N"),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// An input's elements as bytes: borrowed from a contiguous numeric
/// tensor, or copied (bool, or a non-standard layout).
enum InputBytes<'a> {
    Borrowed(&'a [u8], &'a [usize]),
    Owned(Vec<u64>, usize, &'a [usize]),
}

impl<'a> InputBytes<'a> {
    fn of(t: &'a Tensor) -> InputBytes<'a> {
        let borrowed = match t {
            Tensor::F32(a) => a.as_slice().map(bytemuck::cast_slice::<f32, u8>),
            Tensor::I64(a) => a.as_slice().map(bytemuck::cast_slice::<i64, u8>),
            Tensor::I32(a) => a.as_slice().map(bytemuck::cast_slice::<i32, u8>),
            Tensor::Bool(_) => None,
        };
        match borrowed {
            Some(b) => InputBytes::Borrowed(b, t.shape()),
            None => {
                let bytes = super::meta::bytes_of(t);
                // u64 words: aligned for every element type.
                let mut words = vec![0u64; bytes.len().div_ceil(8).max(1)];
                bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
                InputBytes::Owned(words, bytes.len(), t.shape())
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            InputBytes::Borrowed(b, _) => b,
            InputBytes::Owned(w, n, _) => &bytemuck::cast_slice::<u64, u8>(w)[..*n],
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            InputBytes::Borrowed(_, s) | InputBytes::Owned(_, _, s) => s,
        }
    }
}

/// An output's elements, written by the compiled code as bytes.
enum OutputBuf {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<u8>),
}

impl OutputBuf {
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            OutputBuf::F32(v) => bytemuck::cast_slice_mut(v),
            OutputBuf::I64(v) => bytemuck::cast_slice_mut(v),
            OutputBuf::I32(v) => bytemuck::cast_slice_mut(v),
            OutputBuf::Bool(v) => v,
        }
    }
}

/// Elements of `T` read from (possibly unaligned) bytes.
fn elements<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect()
}


/// The host of the JIT's external kernels: steps no runtime kernel covers,
/// run by the interpreter on tensors made from the operands' bytes.
struct Interpreter {
    /// The program's graph (the nodes' ops and attributes).
    graph: crate::ir::Graph,
    /// The batch symbol, bound to the frame's rows.
    batch: Option<Symbol>,
    steps: HashMap<u32, Step>,
}

/// An external step with its operands' types and shapes.
struct Step {
    node: NodeId,
    /// Per node input: absent, or its buffer's dtype and dims.
    inputs: Vec<Option<(DType, Vec<Dim>)>>,
    outputs: Vec<(String, DType, Vec<Dim>)>,
}

impl Interpreter {
    fn new(program: &Program, external: &[ExternalStep]) -> Interpreter {
        let buffer = |b: BufferId| (program.buffers[b].dtype, program.buffers[b].shape.clone());
        let batch = program.buffers.iter().flat_map(|b| &b.shape).find_map(|d| match d {
            Dim::Sym { sym, .. } => Some(*sym),
            _ => None,
        });
        let steps = external
            .iter()
            .map(|e| {
                let inputs = e.inputs.iter().map(|i| i.map(buffer)).collect();
                let outputs = e.outputs.iter().map(|&b| (program.buffers[b].name.clone(), program.buffers[b].dtype, program.buffers[b].shape.clone())).collect();
                (e.index, Step { node: e.node, inputs, outputs })
            })
            .collect();
        Interpreter { graph: program.graph.clone(), batch, steps }
    }
}

fn shape_at(dims: &[Dim], rows: usize) -> Vec<usize> {
    dims.iter().map(|d| d.resolve(&|_| Some(rows)).unwrap_or(0)).collect()
}

impl External for Interpreter {
    fn run(&self, kernel: u32, rows: usize, inputs: &[(DType, &[u8])], outputs: &mut [(DType, &mut [u8])]) -> Result<(), KernelError> {
        let fail = |reason: String| KernelError::Geometry(reason);
        let step = self.steps.get(&kernel).ok_or_else(|| fail(format!("kernel {kernel} is not an interpreter step")))?;
        let mut given = inputs.iter();
        let mut tensors: Vec<Option<Tensor>> = Vec::with_capacity(step.inputs.len());
        for input in &step.inputs {
            let Some((dtype, dims)) = input else {
                tensors.push(None);
                continue;
            };
            let (_, bytes) = given.next().ok_or_else(|| fail("fewer operands than the node's inputs".into()))?;
            let shape = shape_at(dims, rows);
            let t = match dtype {
                DType::F32 => Tensor::from_f32(&shape, elements(bytes)),
                DType::I64 => Tensor::from_i64(&shape, elements(bytes)),
                DType::I32 => Tensor::from_i32(&shape, elements(bytes)),
                DType::Bool => Tensor::from_bool(&shape, bytes.iter().map(|&b| b != 0).collect()),
            };
            tensors.push(Some(t.map_err(|e| fail(e.to_string()))?));
        }
        let bindings: HashMap<Symbol, usize> = self.batch.map(|s| (s, rows)).into_iter().collect();
        let results = crate::interp::eval_node(&self.graph, step.node, tensors.iter().map(Option::as_ref).collect(), &bindings).map_err(fail)?;
        for ((t, (name, dtype, dims)), (_, out)) in results.iter().zip(&step.outputs).zip(outputs.iter_mut()) {
            let shape = shape_at(dims, rows);
            if t.dtype() != *dtype || t.shape() != shape.as_slice() {
                return Err(fail(format!("computed {}{:?} for `{name}`, the plan expects {dtype}{shape:?}", t.dtype(), t.shape())));
            }
            let bytes = super::meta::bytes_of(t);
            if bytes.len() != out.len() {
                return Err(fail(format!("`{name}` needs {} bytes, its buffer holds {}", bytes.len(), out.len())));
            }
            out.copy_from_slice(&bytes);
        }
        Ok(())
    }
}

impl Drop for JitModel {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: nothing refers to the module's code or data any more:
            // the runtime model copied the metadata and weights when it was
            // created, and its `run` pointer is never called after `self` is
            // dropped (the model field is unusable from here on).
            unsafe { module.free_memory() };
        }
    }
}
