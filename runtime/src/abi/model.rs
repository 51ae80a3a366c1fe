//! [`Model`]: a natively compiled model loaded for running — its kernel
//! table, scratch arena, knobs and trace — behind a safe Rust API that the
//! JIT and the C API share.

use super::meta::{MetaError, ModelMeta};
use super::table::{PrepareError, Prepared};
use super::{Compiled, Frame, RunFn, Status, ABI_VERSION};
use crate::arena::Arena;
use crate::kernels::KernelError;
use crate::pool::ThreadPool;
use crate::trace::Trace;
use crate::weights::Weights;
use smallvec::SmallVec;

/// Why a compiled model cannot be loaded or run; names the port, knob or
/// node at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("the compiled model has no code")]
    NoCode,
    #[error("weights file: {0}")]
    Weights(#[from] crate::weights::WeightsError),
    #[error("node `{node}` ({op}): {source}")]
    Prepare { node: String, op: String, source: Box<PrepareError> },
    #[error("the model has {expected} inputs, got {actual}")]
    InputCount { expected: usize, actual: usize },
    #[error("the model has {expected} outputs, got {actual} buffers")]
    OutputCount { expected: usize, actual: usize },
    #[error("input `{name}`: {reason}")]
    Input { name: String, reason: String },
    #[error("output `{name}`: {reason}")]
    Output { name: String, reason: String },
    #[error("knob `{name}`: {reason}")]
    Knob { name: String, reason: String },
    #[error("node `{node}` ({op}): {source}")]
    Node { node: String, op: String, source: KernelError },
    #[error("batch size {0} makes the scratch arena larger than the address space")]
    TooLarge(usize),
    #[error("the compiled code stopped with status {0} without saying why")]
    Code(i32),
    #[error("the runtime panicked: {0}")]
    Panic(String),
}

impl ModelError {
    /// The C API's code for this error.
    pub fn status(&self) -> Status {
        match self {
            ModelError::Meta(_) | ModelError::NoCode | ModelError::Weights(_) | ModelError::Prepare { .. } => Status::BadModel,
            ModelError::InputCount { .. } | ModelError::OutputCount { .. } | ModelError::Input { .. } | ModelError::Output { .. } | ModelError::TooLarge(_) => Status::BadSize,
            ModelError::Knob { .. } => Status::BadKnob,
            ModelError::Node { .. } | ModelError::Code(_) => Status::Kernel,
            ModelError::Panic(_) => Status::Panic,
        }
    }
}

/// What the hooks read: fixed once the model is loaded.
pub(super) struct Loaded {
    pub(super) meta: ModelMeta,
    pub(super) table: Vec<Prepared>,
    pub(super) pool: ThreadPool,
    /// Runs the table's external kernels.
    pub(super) external: Option<std::sync::Arc<dyn super::External>>,
}

/// What the hooks write during one call.
pub(super) struct CallState {
    pub(super) trace: Trace,
    pub(super) error: Option<ModelError>,
}

/// A compiled model ready to run (see the module docs).
pub struct Model {
    loaded: Loaded,
    run: RunFn,
    /// Constant operands, 8-byte aligned, and their addresses (the frame's table).
    consts: Vec<Vec<u64>>,
    const_addrs: Vec<usize>,
    knobs: Vec<f32>,
    arena: Arena,
    lists: Vec<usize>,
    state: CallState,
    /// Batch of the last successful run.
    last_batch: Option<usize>,
}

impl Model {
    /// Loads the model `compiled` describes, its kernels running on
    /// `threads` threads (the caller and `threads - 1` workers).
    ///
    /// # Safety
    /// `compiled` must point to a valid [`Compiled`] whose `meta` and
    /// `weights` pointers hold `meta_len` and `weights_len` readable bytes,
    /// and whose `run` is code compiled against this ABI for that metadata.
    pub unsafe fn from_compiled(compiled: *const Compiled, threads: usize) -> Result<Model, ModelError> {
        // SAFETY: the caller's contract, passed on.
        unsafe { Model::from_compiled_with(compiled, threads, None) }
    }

    /// [`Model::from_compiled`] with a host for the table's
    /// [`super::KernelDesc::External`] kernels.
    ///
    /// # Safety
    /// As for [`Model::from_compiled`].
    pub unsafe fn from_compiled_with(compiled: *const Compiled, threads: usize, external: Option<std::sync::Arc<dyn super::External>>) -> Result<Model, ModelError> {
        // SAFETY: the caller vouches for `compiled` and the byte ranges it names.
        let (meta, weights, run, version) = unsafe {
            let c = &*compiled;
            let meta = std::slice::from_raw_parts(c.meta, c.meta_len);
            let weights = std::slice::from_raw_parts(c.weights, c.weights_len);
            (meta, weights, c.run, c.abi_version)
        };
        if version != ABI_VERSION {
            return Err(MetaError::Version { found: version, expected: ABI_VERSION }.into());
        }
        let run = run.ok_or(ModelError::NoCode)?;
        Model::new(ModelMeta::decode(meta)?, weights, run, threads, external)
    }

    /// Loads a model from its parts: metadata, weights file and code.
    fn new(meta: ModelMeta, weights: &[u8], run: RunFn, threads: usize, external: Option<std::sync::Arc<dyn super::External>>) -> Result<Model, ModelError> {
        if let Some(e) = meta.kernels.iter().find(|e| matches!(e.kernel, super::KernelDesc::External { .. })).filter(|_| external.is_none()) {
            return Err(ModelError::Prepare { node: e.node.clone(), op: e.op.clone(), source: Box::new(PrepareError::Kernel(KernelError::Geometry("the step runs the compiler's interpreter, which only the JIT provides".into()))) });
        }
        let w = Weights::parse(weights)?;
        let table = meta
            .kernels
            .iter()
            .map(|e| Prepared::new(e, &w).map_err(|source| ModelError::Prepare { node: e.node.clone(), op: e.op.clone(), source: Box::new(source) }))
            .collect::<Result<Vec<_>, _>>()?;
        let mut consts = Vec::with_capacity(meta.consts.len());
        for &index in &meta.consts {
            let i = index as usize;
            let entry = w.entries().get(i).ok_or(crate::weights::WeightsError::Missing { index: i, count: w.entries().len() })?;
            let bytes = w.data(i, &entry.name.clone(), entry.dtype, entry.elements)?;
            let mut words = vec![0u64; bytes.len().div_ceil(8).max(1)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
            consts.push(words);
        }
        let const_addrs = consts.iter().map(|c| c.as_ptr() as usize).collect();
        let knobs = meta.knobs.iter().flat_map(|k| std::iter::repeat_n(k.default, k.elements)).collect();
        let state = CallState { trace: Trace::new(&meta.trace, 0), error: None };
        Ok(Model { loaded: Loaded { meta, table, pool: ThreadPool::new(threads), external }, run, consts, const_addrs, knobs, arena: Arena::new(), lists: Vec::new(), state, last_batch: None })
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.loaded.meta
    }

    /// Threads the kernels run on, the caller included.
    pub fn threads(&self) -> usize {
        self.loaded.pool.threads()
    }

    /// Sets knob `name` for the following runs.
    pub fn set_knob(&mut self, name: &str, value: f32) -> Result<(), ModelError> {
        let (start, len) = self.knob_span(name)?;
        if !value.is_finite() {
            return Err(ModelError::Knob { name: name.into(), reason: format!("must be finite, got {value}") });
        }
        self.knobs[start..start + len].fill(value);
        Ok(())
    }

    /// The current value of knob `name`.
    pub fn knob(&self, name: &str) -> Result<f32, ModelError> {
        let (start, _) = self.knob_span(name)?;
        Ok(self.knobs.get(start).copied().unwrap_or(f32::NAN))
    }

    fn knob_span(&self, name: &str) -> Result<(usize, usize), ModelError> {
        let mut start = 0;
        for k in &self.loaded.meta.knobs {
            if k.name == name {
                return Ok((start, k.elements));
            }
            start += k.elements;
        }
        let known: Vec<&str> = self.loaded.meta.knobs.iter().map(|k| k.name.as_str()).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        Err(ModelError::Knob { name: name.into(), reason: format!("no such knob (the model's knobs: {known})") })
    }

    /// What the last run did.
    pub fn trace(&self) -> &Trace {
        &self.state.trace
    }

    /// Batch of the last successful run.
    pub fn last_batch(&self) -> Option<usize> {
        self.last_batch
    }

    /// The index in the trace spec's paths of the path sample `sample` took
    /// in the last run.
    pub fn path_of(&self, sample: usize) -> Option<usize> {
        self.state.trace.path_of(&self.loaded.meta.trace, sample)
    }

    /// The batch the inputs' sizes (in bytes) imply: from the first
    /// batch-scaled input; 1 when none is.
    pub fn batch_of(&self, input_bytes: &[usize]) -> Result<usize, ModelError> {
        let meta = &self.loaded.meta;
        if input_bytes.len() != meta.inputs.len() {
            return Err(ModelError::InputCount { expected: meta.inputs.len(), actual: input_bytes.len() });
        }
        for (port, &bytes) in meta.inputs.iter().zip(input_bytes) {
            if !port.is_batched() {
                continue;
            }
            let per_sample = port.elements(1).unwrap_or(0) * port.dtype.size_of();
            if per_sample == 0 || !bytes.is_multiple_of(per_sample) {
                return Err(ModelError::Input { name: port.name.clone(), reason: format!("{} elements is not a whole number of samples of {}", bytes / port.dtype.size_of(), per_sample / port.dtype.size_of()) });
            }
            return Ok(bytes / per_sample);
        }
        Ok(1)
    }

    /// Runs the model: `inputs` and `outputs` are the graph's ports in
    /// order, as bytes of their element types; every size must be the
    /// port's at the batch the inputs imply. Returns that batch.
    pub fn run(&mut self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) -> Result<usize, ModelError> {
        let sizes: SmallVec<[usize; 8]> = inputs.iter().map(|b| b.len()).collect();
        let batch = self.batch_of(&sizes)?;
        let meta = &self.loaded.meta;
        let check = |port: &super::Port, len: usize, input: bool| -> Result<(), ModelError> {
            let expected = port.elements(batch).and_then(|e| e.checked_mul(port.dtype.size_of())).ok_or(ModelError::TooLarge(batch))?;
            let align = port.dtype.size_of();
            let reason = if len != expected {
                format!("holds {} {} elements, the model expects {} at batch {batch}", len / align, port.dtype.name(), expected / align)
            } else {
                return Ok(());
            };
            Err(if input { ModelError::Input { name: port.name.clone(), reason } } else { ModelError::Output { name: port.name.clone(), reason } })
        };
        for (port, data) in meta.inputs.iter().zip(inputs) {
            check(port, data.len(), true)?;
        }
        if outputs.len() != meta.outputs.len() {
            return Err(ModelError::OutputCount { expected: meta.outputs.len(), actual: outputs.len() });
        }
        for (port, data) in meta.outputs.iter().zip(outputs.iter()) {
            check(port, data.len(), false)?;
        }
        for (port, data) in meta.inputs.iter().zip(inputs).map(|(p, d)| (p, d.as_ptr() as usize)).chain(meta.outputs.iter().zip(outputs.iter()).map(|(p, d)| (p, d.as_ptr() as usize))) {
            if data % port.dtype.size_of() != 0 {
                return Err(ModelError::Input { name: port.name.clone(), reason: format!("the buffer is not aligned for {}", port.dtype.name()) });
            }
        }
        let arena_bytes = meta.arena_bytes(batch).ok_or(ModelError::TooLarge(batch))?;
        let samples = meta.samples.at(batch);
        let lists = (1 + 2 * meta.blocks).checked_mul(samples).ok_or(ModelError::TooLarge(batch))?;
        self.arena.reserve(arena_bytes.max(64));
        self.lists.clear();
        self.lists.resize(lists.max(1), 0);
        for (i, s) in self.lists[..samples].iter_mut().enumerate() {
            *s = i;
        }
        self.state.trace.reset(&meta.trace, samples);
        self.state.error = None;
        let input_ptrs: SmallVec<[*const u8; 8]> = inputs.iter().map(|b| b.as_ptr()).collect();
        let output_ptrs: SmallVec<[*mut u8; 8]> = outputs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let arena = self.arena.view_mut::<u8>(0, self.arena.len()).map_err(|_| ModelError::TooLarge(batch))?.as_mut_ptr();
        let frame = Frame {
            model: &self.loaded as *const Loaded as *const std::ffi::c_void,
            arena,
            inputs: input_ptrs.as_ptr(),
            outputs: output_ptrs.as_ptr(),
            consts: self.const_addrs.as_ptr() as *const *const u8,
            knobs: self.knobs.as_ptr(),
            lists: self.lists.as_mut_ptr(),
            batch,
            samples,
            state: &mut self.state as *mut CallState as *mut std::ffi::c_void,
        };
        debug_assert_eq!(self.consts.len(), self.const_addrs.len());
        // SAFETY: `run` was compiled against this ABI for `meta` (the
        // `from_compiled` contract); every pointer in the frame is valid for
        // the sizes the metadata gives at `batch`: the inputs and outputs were
        // checked above, the arena and the lists were sized above, the
        // constants and knobs are owned by `self` and outlive the call.
        let status = unsafe { (self.run)(&frame) };
        if status != 0 {
            self.last_batch = None;
            return Err(self.state.error.take().unwrap_or(ModelError::Code(status)));
        }
        self.last_batch = Some(batch);
        Ok(batch)
    }
}
