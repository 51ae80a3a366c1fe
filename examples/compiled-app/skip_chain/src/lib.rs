//! The model `model.onnx`, compiled by d2nnc 0.1.0.
//!
//! Generated code: regenerate it rather than editing it. [`Model::run`] takes ndarray views
//! and checks their shapes; [`Model::run_into`] runs on caller buffers with a reusable [`Scratch`].
//!
//! - input `input`: f32 [batch, 3, 16, 16]
//! - output `logits`: f32 [batch, 6]
//!
//! Dynamic execution: each guarded region below runs only for the samples whose
//! decisions select it (see `run_into`'s body for the branches).
//!
//! - R0: where /Greater [routed]: /blocks.0/blocks.0.0/blocks.0.0.0/Conv, /blocks.0/blocks.0.0/blocks.0.0.1/Relu, /blocks.0/blocks.0.1/Conv
//! - R1: where /Greater_1 [routed]: /blocks.1/blocks.1.0/blocks.1.0.0/Conv, /blocks.1/blocks.1.0/blocks.1.0.1/Relu, /blocks.1/blocks.1.1/Conv
//! - R2: where /Greater_2 [routed]: /blocks.2/blocks.2.0/blocks.2.0.0/Conv, /blocks.2/blocks.2.0/blocks.2.0.1/Relu, /blocks.2/blocks.2.1/Conv
#![allow(unused_variables, unused_mut, unused_imports)]
use d2nn_runtime::compiled::{self, elems, elems_mut, as_bytes};
use d2nn_runtime::kernels::conv::{Conv2d, ConvEpilogue};
use d2nn_runtime::kernels::depthwise::{self, Depthwise};
use d2nn_runtime::kernels::elementwise::{self, Binary, Unary};
use d2nn_runtime::kernels::norm::{self, BatchNorm};
use d2nn_runtime::kernels::pool::{self, GlobalKind, Pool2d, PoolAxis, PoolKind};
use d2nn_runtime::kernels::reduce::{self, ReduceKind};
use d2nn_runtime::kernels::{cast, copy, logic, one_hot, softmax, KernelError};
use d2nn_runtime::kernels::conv_transpose::{self, ConvTranspose2d, ConvTransposeWeights};
use d2nn_runtime::kernels::logic::Compare;
use d2nn_runtime::kernels::norm::LayerNorm;
use d2nn_runtime::kernels::one_hot::OneHot;
use d2nn_runtime::kernels::reduce::ArgReduce;
use d2nn_runtime::gemm::Activation;
use d2nn_runtime::layers::{ConvWeights, DenseWeights};
use d2nn_runtime::pool::{for_units, ThreadPool, MIN_PARALLEL_OUTPUTS};
use d2nn_runtime::routing;
use d2nn_runtime::arena::Arena;
use d2nn_runtime::trace::RegionCost;
use d2nn_runtime::weights::Weights;
use d2nn_runtime::ndarray::{ArrayD, ArrayView, Dimension, IxDyn};
use std::sync::Mutex;
pub use d2nn_runtime::compiled::{Dim, Error};
pub use d2nn_runtime::trace::{Trace, TraceSpec};
/// The weights file: every constant of the model, read once by [`Model::new`].
static WEIGHTS: &[u8] = include_bytes!("../weights.bin");
///Name of input `input` in the ONNX model.
pub const INPUT_NAME: &str = "input";
///Shape of input `input`: f32 [batch, 3, 16, 16].
pub const INPUT_SHAPE: [Dim; 4] = [
    Dim::Batch(1),
    Dim::Known(3),
    Dim::Known(16),
    Dim::Known(16),
];
///Name of output `logits` in the ONNX model.
pub const LOGITS_NAME: &str = "logits";
///Shape of output `logits`: f32 [batch, 6].
pub const LOGITS_SHAPE: [Dim; 2] = [Dim::Batch(1), Dim::Known(6)];
/// Names of the inputs, in the ONNX model's order.
pub const INPUT_NAMES: [&str; 1] = [INPUT_NAME];
/// Names of the outputs, in the ONNX model's order.
pub const OUTPUT_NAMES: [&str; 1] = [LOGITS_NAME];
/// The guarded regions, by index (the region numbers of [`Trace`]): where each runs, how, and the ONNX nodes it covers.
pub const REGIONS: [&str; 3] = [
    "R0: where /Greater [routed]: /blocks.0/blocks.0.0/blocks.0.0.0/Conv, /blocks.0/blocks.0.0/blocks.0.0.1/Relu, /blocks.0/blocks.0.1/Conv",
    "R1: where /Greater_1 [routed]: /blocks.1/blocks.1.0/blocks.1.0.0/Conv, /blocks.1/blocks.1.0/blocks.1.0.1/Relu, /blocks.1/blocks.1.1/Conv",
    "R2: where /Greater_2 [routed]: /blocks.2/blocks.2.0/blocks.2.0.0/Conv, /blocks.2/blocks.2.0/blocks.2.0.1/Relu, /blocks.2/blocks.2.1/Conv",
];
/// The distinct paths a sample can take, by index (see [`Model::path_of`]): the decisions along each and its FLOPs.
pub const PATHS: [&str; 8] = [
    "/Greater=false, /Greater_1=false, /Greater_2=false -> regions [], 270639 FLOPs per sample",
    "/Greater=true, /Greater_1=false, /Greater_2=false -> regions [R0], 2642223 FLOPs per sample",
    "/Greater=false, /Greater_1=true, /Greater_2=false -> regions [R1], 2642223 FLOPs per sample",
    "/Greater=false, /Greater_1=false, /Greater_2=true -> regions [R2], 2642223 FLOPs per sample",
    "/Greater=true, /Greater_1=true, /Greater_2=false -> regions [R0, R1], 5013807 FLOPs per sample",
    "/Greater=true, /Greater_1=false, /Greater_2=true -> regions [R0, R2], 5013807 FLOPs per sample",
    "/Greater=false, /Greater_1=true, /Greater_2=true -> regions [R1, R2], 5013807 FLOPs per sample",
    "/Greater=true, /Greater_1=true, /Greater_2=true -> regions [R0, R1, R2], 7385391 FLOPs per sample",
];
/// FLOPs of the dense model per sample (every node computed), for comparing with [`Trace::flops_executed`].
pub const DENSE_FLOPS_PER_SAMPLE: u64 = 7385391u64;
/// FLOPs of the dense model independent of the batch.
pub const DENSE_FLOPS_FIXED: u64 = 0u64;
/// Scratch arena bytes per sample of the batch.
pub const ARENA_BYTES_PER_BATCH: usize = 49216;
/// Scratch arena bytes independent of the batch.
pub const ARENA_FIXED_BYTES: usize = 0;
const STEM_STEM_0_CONV: Conv2d = Conv2d {
    c_in: 3,
    h: 16,
    w: 16,
    c_out: 16,
    oh: 16,
    ow: 16,
    kh: 3,
    kw: 3,
    stride: (1, 1),
    dilation: (1, 1),
    pad: (1, 1),
    group: 1,
};
const BLOCKS_0_BLOCKS_0_0_BLOCKS_0_0_0_CONV: Conv2d = Conv2d {
    c_in: 16,
    h: 16,
    w: 16,
    c_out: 16,
    oh: 16,
    ow: 16,
    kh: 3,
    kw: 3,
    stride: (1, 1),
    dilation: (1, 1),
    pad: (1, 1),
    group: 1,
};
const BLOCKS_0_BLOCKS_0_1_CONV: Conv2d = Conv2d {
    c_in: 16,
    h: 16,
    w: 16,
    c_out: 16,
    oh: 16,
    ow: 16,
    kh: 3,
    kw: 3,
    stride: (1, 1),
    dilation: (1, 1),
    pad: (1, 1),
    group: 1,
};
const BLOCKS_1_BLOCKS_1_0_BLOCKS_1_0_0_CONV: Conv2d = Conv2d {
    c_in: 16,
    h: 16,
    w: 16,
    c_out: 16,
    oh: 16,
    ow: 16,
    kh: 3,
    kw: 3,
    stride: (1, 1),
    dilation: (1, 1),
    pad: (1, 1),
    group: 1,
};
const BLOCKS_1_BLOCKS_1_1_CONV: Conv2d = Conv2d {
    c_in: 16,
    h: 16,
    w: 16,
    c_out: 16,
    oh: 16,
    ow: 16,
    kh: 3,
    kw: 3,
    stride: (1, 1),
    dilation: (1, 1),
    pad: (1, 1),
    group: 1,
};
const BLOCKS_2_BLOCKS_2_0_BLOCKS_2_0_0_CONV: Conv2d = Conv2d {
    c_in: 16,
    h: 16,
    w: 16,
    c_out: 16,
    oh: 16,
    ow: 16,
    kh: 3,
    kw: 3,
    stride: (1, 1),
    dilation: (1, 1),
    pad: (1, 1),
    group: 1,
};
const BLOCKS_2_BLOCKS_2_1_CONV: Conv2d = Conv2d {
    c_in: 16,
    h: 16,
    w: 16,
    c_out: 16,
    oh: 16,
    ow: 16,
    kh: 3,
    kw: 3,
    stride: (1, 1),
    dilation: (1, 1),
    pad: (1, 1),
    group: 1,
};
///The model's run-time knobs: the thresholds its decisions compare against. `Knobs::default()` holds the model's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Knobs {
    ///Threshold `/Constant_4_output_0`, compared against by `/Greater_2` (the model's value: 0.5). Raising or lowering it moves samples between paths; see `REGIONS`.
    pub constant_4_output_0: f32,
    ///Threshold `/Constant_2_output_0`, compared against by `/Greater_1` (the model's value: 0.5). Raising or lowering it moves samples between paths; see `REGIONS`.
    pub constant_2_output_0: f32,
    ///Threshold `/Constant_output_0`, compared against by `/Greater` (the model's value: 0.5). Raising or lowering it moves samples between paths; see `REGIONS`.
    pub constant_output_0: f32,
}
impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            constant_4_output_0: 0.5f32,
            constant_2_output_0: 0.5f32,
            constant_output_0: 0.5f32,
        }
    }
}
/// The caller's input buffers for [`Model::run_into`].
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    ///`input`: f32 [batch, 3, 16, 16], row-major.
    pub input: &'a [f32],
}
/// The caller's output buffers for [`Model::run_into`], each sized for the batch.
#[derive(Debug)]
pub struct OutputsMut<'a> {
    ///`logits`: f32 [batch, 6], row-major.
    pub logits: &'a mut [f32],
}
/// The outputs of [`Model::run`].
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    ///`logits`: f32 [batch, 6], row-major.
    pub logits: ArrayD<f32>,
}
/// Reusable memory of [`Model::run_into`]: the scratch arena (grown to the largest batch seen) and the row lists of the guarded regions. A warmed-up run allocates nothing.
#[derive(Default)]
pub struct Scratch {
    arena: Arena,
    all_samples: Vec<usize>,
    rows_r0: Vec<usize>,
    samples_r0: Vec<usize>,
    rows_r1: Vec<usize>,
    samples_r1: Vec<usize>,
    rows_r2: Vec<usize>,
    samples_r2: Vec<usize>,
}
/// The compiled model. Build it once ([`Model::new`] reads and packs the weights); it is `Send + Sync`, and concurrent calls each use their own [`Scratch`].
pub struct Model {
    pool: ThreadPool,
    trace_spec: TraceSpec,
    scratch: Mutex<Vec<Scratch>>,
    stem_stem_0_conv: ConvWeights,
    stem_stem_0_conv_bias: Vec<f32>,
    gates_0_gemm: DenseWeights,
    gates_0_gemm_bias: Vec<f32>,
    blocks_0_blocks_0_0_blocks_0_0_0_conv: ConvWeights,
    blocks_0_blocks_0_0_blocks_0_0_0_conv_bias: Vec<f32>,
    blocks_0_blocks_0_1_conv: ConvWeights,
    blocks_0_blocks_0_1_conv_bias: Vec<f32>,
    gates_1_gemm: DenseWeights,
    gates_1_gemm_bias: Vec<f32>,
    blocks_1_blocks_1_0_blocks_1_0_0_conv: ConvWeights,
    blocks_1_blocks_1_0_blocks_1_0_0_conv_bias: Vec<f32>,
    blocks_1_blocks_1_1_conv: ConvWeights,
    blocks_1_blocks_1_1_conv_bias: Vec<f32>,
    gates_2_gemm: DenseWeights,
    gates_2_gemm_bias: Vec<f32>,
    blocks_2_blocks_2_0_blocks_2_0_0_conv: ConvWeights,
    blocks_2_blocks_2_0_blocks_2_0_0_conv_bias: Vec<f32>,
    blocks_2_blocks_2_1_conv: ConvWeights,
    blocks_2_blocks_2_1_conv_bias: Vec<f32>,
    head_fc_gemm: DenseWeights,
    head_fc_gemm_bias: Vec<f32>,
}
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
};
impl Model {
    /// The model running every kernel on the calling thread.
    pub fn new() -> Result<Model, Error> {
        Model::with_threads(1)
    }
    /// The model spreading each kernel over `threads` threads (the caller and `threads - 1` workers).
    pub fn with_threads(threads: usize) -> Result<Model, Error> {
        let weights = Weights::parse(WEIGHTS)?;
        Ok(Model {
            pool: ThreadPool::new(threads),
            trace_spec: TraceSpec {
                root: RegionCost {
                    flops_per_sample: 270639u64,
                    flops_fixed: 0u64,
                },
                regions: vec![
                    RegionCost { flops_per_sample : 2371584u64, flops_fixed : 0u64 },
                    RegionCost { flops_per_sample : 2371584u64, flops_fixed : 0u64 },
                    RegionCost { flops_per_sample : 2371584u64, flops_fixed : 0u64 }
                ],
                paths: Some(
                    vec![
                        [].to_vec(), [0].to_vec(), [1].to_vec(), [2].to_vec(), [0, 1]
                        .to_vec(), [0, 2].to_vec(), [1, 2].to_vec(), [0, 1, 2].to_vec()
                    ],
                ),
            },
            scratch: Mutex::new(Vec::new()),
            stem_stem_0_conv: ConvWeights::pack(
                    &STEM_STEM_0_CONV,
                    &weights.f32(0, "stem.0.weight", 432)?,
                )
                .map_err(Error::at("/stem/stem.0/Conv", "Conv"))?,
            stem_stem_0_conv_bias: weights.f32(1, "/stem/stem.0/Conv.bias", 16)?,
            gates_0_gemm: DenseWeights::pack(
                    &weights.f32(2, "gates.0.weight", 16)?,
                    16,
                    1,
                    true,
                )
                .map_err(Error::at("/gates.0/Gemm", "Gemm"))?,
            gates_0_gemm_bias: weights.f32(3, "/gates.0/Gemm.bias", 1)?,
            blocks_0_blocks_0_0_blocks_0_0_0_conv: ConvWeights::pack(
                    &BLOCKS_0_BLOCKS_0_0_BLOCKS_0_0_0_CONV,
                    &weights.f32(4, "blocks.0.0.0.weight", 2304)?,
                )
                .map_err(Error::at("/blocks.0/blocks.0.0/blocks.0.0.0/Conv", "Conv"))?,
            blocks_0_blocks_0_0_blocks_0_0_0_conv_bias: weights
                .f32(5, "/blocks.0/blocks.0.0/blocks.0.0.0/Conv.bias", 16)?,
            blocks_0_blocks_0_1_conv: ConvWeights::pack(
                    &BLOCKS_0_BLOCKS_0_1_CONV,
                    &weights.f32(6, "blocks.0.1.weight", 2304)?,
                )
                .map_err(Error::at("/blocks.0/blocks.0.1/Conv", "Conv"))?,
            blocks_0_blocks_0_1_conv_bias: weights
                .f32(7, "/blocks.0/blocks.0.1/Conv.bias", 16)?,
            gates_1_gemm: DenseWeights::pack(
                    &weights.f32(8, "gates.1.weight", 16)?,
                    16,
                    1,
                    true,
                )
                .map_err(Error::at("/gates.1/Gemm", "Gemm"))?,
            gates_1_gemm_bias: weights.f32(9, "/gates.1/Gemm.bias", 1)?,
            blocks_1_blocks_1_0_blocks_1_0_0_conv: ConvWeights::pack(
                    &BLOCKS_1_BLOCKS_1_0_BLOCKS_1_0_0_CONV,
                    &weights.f32(10, "blocks.1.0.0.weight", 2304)?,
                )
                .map_err(Error::at("/blocks.1/blocks.1.0/blocks.1.0.0/Conv", "Conv"))?,
            blocks_1_blocks_1_0_blocks_1_0_0_conv_bias: weights
                .f32(11, "/blocks.1/blocks.1.0/blocks.1.0.0/Conv.bias", 16)?,
            blocks_1_blocks_1_1_conv: ConvWeights::pack(
                    &BLOCKS_1_BLOCKS_1_1_CONV,
                    &weights.f32(12, "blocks.1.1.weight", 2304)?,
                )
                .map_err(Error::at("/blocks.1/blocks.1.1/Conv", "Conv"))?,
            blocks_1_blocks_1_1_conv_bias: weights
                .f32(13, "/blocks.1/blocks.1.1/Conv.bias", 16)?,
            gates_2_gemm: DenseWeights::pack(
                    &weights.f32(14, "gates.2.weight", 16)?,
                    16,
                    1,
                    true,
                )
                .map_err(Error::at("/gates.2/Gemm", "Gemm"))?,
            gates_2_gemm_bias: weights.f32(15, "/gates.2/Gemm.bias", 1)?,
            blocks_2_blocks_2_0_blocks_2_0_0_conv: ConvWeights::pack(
                    &BLOCKS_2_BLOCKS_2_0_BLOCKS_2_0_0_CONV,
                    &weights.f32(16, "blocks.2.0.0.weight", 2304)?,
                )
                .map_err(Error::at("/blocks.2/blocks.2.0/blocks.2.0.0/Conv", "Conv"))?,
            blocks_2_blocks_2_0_blocks_2_0_0_conv_bias: weights
                .f32(17, "/blocks.2/blocks.2.0/blocks.2.0.0/Conv.bias", 16)?,
            blocks_2_blocks_2_1_conv: ConvWeights::pack(
                    &BLOCKS_2_BLOCKS_2_1_CONV,
                    &weights.f32(18, "blocks.2.1.weight", 2304)?,
                )
                .map_err(Error::at("/blocks.2/blocks.2.1/Conv", "Conv"))?,
            blocks_2_blocks_2_1_conv_bias: weights
                .f32(19, "/blocks.2/blocks.2.1/Conv.bias", 16)?,
            head_fc_gemm: DenseWeights::pack(
                    &weights.f32(20, "head.fc.weight", 96)?,
                    16,
                    6,
                    true,
                )
                .map_err(Error::at("/head/fc/Gemm", "Gemm"))?,
            head_fc_gemm_bias: weights.f32(21, "/head/fc/Gemm.bias", 6)?,
        })
    }
    /// Threads the kernels run on, the caller included.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
    /// The region costs and paths [`Trace`]s are recorded against.
    pub fn trace_spec(&self) -> &TraceSpec {
        &self.trace_spec
    }
    /// The index in [`PATHS`] of the path sample `sample` took in the run `trace` records.
    pub fn path_of(&self, trace: &Trace, sample: usize) -> Option<usize> {
        trace.path_of(&self.trace_spec, sample)
    }
    /// Runs the model with the default knobs; checks every input's shape.
    pub fn run<D0: Dimension>(
        &self,
        input: ArrayView<'_, f32, D0>,
    ) -> Result<Outputs, Error> {
        self.run_with(input, &Knobs::default()).map(|(outputs, _)| outputs)
    }
    /// Runs the model with `knobs`; returns the outputs and what ran (the path of each sample, the rows of each region, the FLOPs executed).
    pub fn run_with<D0: Dimension>(
        &self,
        input: ArrayView<'_, f32, D0>,
        knobs: &Knobs,
    ) -> Result<(Outputs, Trace), Error> {
        let mut batch: Option<usize> = None;
        compiled::check_shape(INPUT_NAME, input.shape(), &INPUT_SHAPE, &mut batch)?;
        let input_std = input.as_standard_layout();
        let input = input_std
            .as_slice()
            .ok_or(Error::Input {
                name: INPUT_NAME,
                reason: "not contiguous".into(),
            })?;
        let batch = batch.unwrap_or(1);
        let mut logits_array = ArrayD::<
            f32,
        >::from_elem(
            IxDyn(&compiled::shape_at(&LOGITS_SHAPE, batch)),
            Default::default(),
        );
        let mut trace = Trace::default();
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let result = self
            .run_into(
                Inputs { input },
                OutputsMut {
                    logits: logits_array
                        .as_slice_mut()
                        .ok_or(Error::Output {
                            name: LOGITS_NAME,
                            reason: "not contiguous".into(),
                        })?,
                },
                knobs,
                &mut scratch,
                Some(&mut trace),
            );
        self.scratch.lock().unwrap_or_else(|e| e.into_inner()).push(scratch);
        result?;
        Ok((Outputs { logits: logits_array }, trace))
    }
    /// Runs the model on the caller's buffers without allocating once `scratch` (and `trace`) have seen a batch this large. The batch is the first batch-scaled input's length over its per-sample size; every other buffer must fit it.
    pub fn run_into(
        &self,
        inputs: Inputs<'_>,
        outputs: OutputsMut<'_>,
        knobs: &Knobs,
        scratch: &mut Scratch,
        mut trace: Option<&mut Trace>,
    ) -> Result<(), Error> {
        let batch = compiled::batch_of(INPUT_NAME, inputs.input.len(), 768)?;
        compiled::expect_output(LOGITS_NAME, outputs.logits.len(), 6 * batch)?;
        let knob_constant_4_output_0 = [compiled::check_knob(
            "/Constant_4_output_0",
            knobs.constant_4_output_0,
        )?; 1];
        let knob_constant_2_output_0 = [compiled::check_knob(
            "/Constant_2_output_0",
            knobs.constant_2_output_0,
        )?; 1];
        let knob_constant_output_0 = [compiled::check_knob(
            "/Constant_output_0",
            knobs.constant_output_0,
        )?; 1];
        compiled::reserve(
            &mut scratch.arena,
            ARENA_BYTES_PER_BATCH,
            ARENA_FIXED_BYTES,
            batch,
        )?;
        let Scratch {
            arena,
            all_samples,
            rows_r0,
            samples_r0,
            rows_r1,
            samples_r1,
            rows_r2,
            samples_r2,
        } = scratch;
        compiled::fill_iota(all_samples, batch);
        if let Some(t) = &mut trace {
            t.reset(&self.trace_spec, all_samples.len());
        }
        let nb = batch;
        let n = batch;
        let samples: &[usize] = all_samples;
        // /stem/stem.0/Conv (Conv): conv 3x3/1 group 1 3->16 im2col gemm + bias + relu -> /stem/stem.1/Relu_output_0 [batch, 16, 16, 16]
        {
            let ([], w) = arena.split_array([], (0, 16384 * n))?;
            let x0: &[f32] = inputs.input;
            let y: &mut [f32] = elems_mut(w)?;
            let epilogue = ConvEpilogue {
                bias: Some(&self.stem_stem_0_conv_bias[..]),
                residual: None,
                activation: Activation::Relu,
            };
            self.stem_stem_0_conv
                .run(&STEM_STEM_0_CONV, epilogue, x0, y, &self.pool)
                .map_err(Error::at("/stem/stem.0/Conv", "Conv"))?;
        }
        // /ReduceMean (ReduceMean): reduce Mean -> /ReduceMean_output_0 [batch, 16]
        {
            let ([r0], w) = arena.split_array([(0, 16384 * n)], (16384 * nb, 64 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            for_units(
                    &self.pool,
                    MIN_PARALLEL_OUTPUTS,
                    x0,
                    y,
                    (256, 1),
                    |x, y| reduce::reduce(ReduceKind::Mean, 256, 1, x, y),
                )
                .map_err(Error::at("/ReduceMean", "ReduceMean"))?;
        }
        // /gates.0/Gemm (Gemm): dense 16->1 + bias + sigmoid -> /Sigmoid_output_0 [batch, 1]
        {
            let ([r0], w) = arena
                .split_array([(16384 * nb, 64 * n)], (16448 * nb, 4 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            self.gates_0_gemm
                .run(
                    Some(&self.gates_0_gemm_bias[..]),
                    None,
                    Activation::Sigmoid,
                    x0,
                    y,
                    &self.pool,
                )
                .map_err(Error::at("/gates.0/Gemm", "Gemm"))?;
        }
        // /Greater (Greater): compare Greater -> /Greater_output_0 [batch, 1]
        {
            let ([r0], w) = arena.split_array([(16448 * nb, 4 * n)], (32768 * nb, n))?;
            let x0: &[f32] = elems(r0)?;
            let x1: &[f32] = &knob_constant_output_0[..];
            let y: &mut [u8] = elems_mut(w)?;
            logic::compare_strided(Compare::Greater, x0, x1, &[n], &[1], &[0], y)
                .map_err(Error::at("/Greater", "Greater"))?;
        }
        // /Cast (Cast): cast bool -> f32 -> /Cast_output_0 [batch, 1]
        {
            let ([r0], w) = arena.split_array([(32768 * nb, n)], (49152 * nb, 4 * n))?;
            let x0: &[u8] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            cast::cast(x0, y).map_err(Error::at("/Cast", "Cast"))?;
        }
        // /Reshape (Reshape): same bytes, nothing to do
        // Region R0: where /Greater (routed: runs on the rows whose guard holds only).
        // Nodes: /blocks.0/blocks.0.0/blocks.0.0.0/Conv, /blocks.0/blocks.0.0/blocks.0.0.1/Relu, /blocks.0/blocks.0.1/Conv
        rows_r0.clear();
        {
            let d0: &[u8] = elems(arena.view::<u8>(32768 * nb, n)?)?;
            for i in 0..samples.len() {
                if compiled::at(d0, i) != 0 {
                    rows_r0.push(i);
                }
            }
        }
        compiled::map_samples(samples_r0, samples, rows_r0);
        if rows_r0.is_empty() {
            if let Some(t) = &mut trace {
                t.enter(&self.trace_spec, 0, samples_r0, 0);
            }
            routing::scatter_rows(
                    arena.view_mut::<u8>(16384 * nb, 16384 * n)?,
                    16384,
                    &[],
                )
                .map_err(Error::at("R0", "region"))?;
        } else {
            if let Some(t) = &mut trace {
                t.enter(&self.trace_spec, 0, samples_r0, rows_r0.len());
            }
            {
                let ([r0], w) = arena
                    .split_array([(0, 16384 * n)], (16384 * nb, 16384 * n))?;
                let x0: &[u8] = elems(r0)?;
                let y: &mut [u8] = elems_mut(w)?;
                routing::gather_rows(x0, 16384, rows_r0, y)
                    .map_err(Error::at("R0", "region"))?;
            }
            {
                let n = rows_r0.len();
                let samples: &[usize] = samples_r0;
                // /blocks.0/blocks.0.0/blocks.0.0.0/Conv (Conv): conv 3x3/1 group 1 16->16 im2col gemm + bias + relu -> /blocks.0/blocks.0.0/blocks.0.0.1/Relu_output_0 [batch, 16, 16, 16]
                {
                    let ([r0], w) = arena
                        .split_array(
                            [(16384 * nb, 16384 * n)],
                            (32768 * nb, 16384 * n),
                        )?;
                    let x0: &[f32] = elems(r0)?;
                    let y: &mut [f32] = elems_mut(w)?;
                    let epilogue = ConvEpilogue {
                        bias: Some(&self.blocks_0_blocks_0_0_blocks_0_0_0_conv_bias[..]),
                        residual: None,
                        activation: Activation::Relu,
                    };
                    self.blocks_0_blocks_0_0_blocks_0_0_0_conv
                        .run(
                            &BLOCKS_0_BLOCKS_0_0_BLOCKS_0_0_0_CONV,
                            epilogue,
                            x0,
                            y,
                            &self.pool,
                        )
                        .map_err(
                            Error::at("/blocks.0/blocks.0.0/blocks.0.0.0/Conv", "Conv"),
                        )?;
                }
                // /blocks.0/blocks.0.1/Conv (Conv): conv 3x3/1 group 1 16->16 im2col gemm + bias -> /blocks.0/blocks.0.1/Conv_output_0 [batch, 16, 16, 16]
                {
                    let ([r0], w) = arena
                        .split_array(
                            [(32768 * nb, 16384 * n)],
                            (16384 * nb, 16384 * n),
                        )?;
                    let x0: &[f32] = elems(r0)?;
                    let y: &mut [f32] = elems_mut(w)?;
                    let epilogue = ConvEpilogue {
                        bias: Some(&self.blocks_0_blocks_0_1_conv_bias[..]),
                        residual: None,
                        activation: Activation::Identity,
                    };
                    self.blocks_0_blocks_0_1_conv
                        .run(&BLOCKS_0_BLOCKS_0_1_CONV, epilogue, x0, y, &self.pool)
                        .map_err(Error::at("/blocks.0/blocks.0.1/Conv", "Conv"))?;
                }
            }
            routing::scatter_rows(
                    arena.view_mut::<u8>(16384 * nb, 16384 * n)?,
                    16384,
                    rows_r0,
                )
                .map_err(Error::at("R0", "region"))?;
        }
        // /Mul (Mul): binary Mul -> /Mul_output_0 [batch, 16, 16, 16]
        {
            let ([r0, r1], w) = arena
                .split_array(
                    [(49152 * nb, 4 * n), (16384 * nb, 16384 * n)],
                    (32768 * nb, 16384 * n),
                )?;
            let x0: &[f32] = elems(r0)?;
            let x1: &[f32] = elems(r1)?;
            let y: &mut [f32] = elems_mut(w)?;
            elementwise::binary_strided(
                    Binary::Mul,
                    x0,
                    x1,
                    &[n, 4096],
                    &[1, 0],
                    &[4096, 1],
                    y,
                )
                .map_err(Error::at("/Mul", "Mul"))?;
        }
        // /Mul: rows whose gate is 0 become exactly 0
        {
            let ([r0], w) = arena
                .split_array([(49152 * nb, 4 * n)], (32768 * nb, 16384 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [u8] = elems_mut(w)?;
            let gate = x0;
            compiled::mask_rows(y, n, |r| compiled::at(gate, r) == 0.0)
                .map_err(Error::at("/Mul", "Mul"))?;
        }
        // /Add (Add): binary Add -> /Add_output_0 [batch, 16, 16, 16]
        {
            let ([r0, r1], w) = arena
                .split_array(
                    [(0, 16384 * n), (32768 * nb, 16384 * n)],
                    (16384 * nb, 16384 * n),
                )?;
            let x0: &[f32] = elems(r0)?;
            let x1: &[f32] = elems(r1)?;
            let y: &mut [f32] = elems_mut(w)?;
            elementwise::binary_strided(Binary::Add, x0, x1, &[4096 * n], &[1], &[1], y)
                .map_err(Error::at("/Add", "Add"))?;
        }
        // /ReduceMean_1 (ReduceMean): reduce Mean -> /ReduceMean_1_output_0 [batch, 16]
        {
            let ([r0], w) = arena.split_array([(16384 * nb, 16384 * n)], (0, 64 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            for_units(
                    &self.pool,
                    MIN_PARALLEL_OUTPUTS,
                    x0,
                    y,
                    (256, 1),
                    |x, y| reduce::reduce(ReduceKind::Mean, 256, 1, x, y),
                )
                .map_err(Error::at("/ReduceMean_1", "ReduceMean"))?;
        }
        // /gates.1/Gemm (Gemm): dense 16->1 + bias + sigmoid -> /Sigmoid_1_output_0 [batch, 1]
        {
            let ([r0], w) = arena.split_array([(0, 64 * n)], (64 * nb, 4 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            self.gates_1_gemm
                .run(
                    Some(&self.gates_1_gemm_bias[..]),
                    None,
                    Activation::Sigmoid,
                    x0,
                    y,
                    &self.pool,
                )
                .map_err(Error::at("/gates.1/Gemm", "Gemm"))?;
        }
        // /Greater_1 (Greater): compare Greater -> /Greater_1_output_0 [batch, 1]
        {
            let ([r0], w) = arena.split_array([(64 * nb, 4 * n)], (32768 * nb, n))?;
            let x0: &[f32] = elems(r0)?;
            let x1: &[f32] = &knob_constant_2_output_0[..];
            let y: &mut [u8] = elems_mut(w)?;
            logic::compare_strided(Compare::Greater, x0, x1, &[n], &[1], &[0], y)
                .map_err(Error::at("/Greater_1", "Greater"))?;
        }
        // /Cast_1 (Cast): cast bool -> f32 -> /Cast_1_output_0 [batch, 1]
        {
            let ([r0], w) = arena.split_array([(32768 * nb, n)], (49152 * nb, 4 * n))?;
            let x0: &[u8] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            cast::cast(x0, y).map_err(Error::at("/Cast_1", "Cast"))?;
        }
        // /Reshape_1 (Reshape): same bytes, nothing to do
        // Region R1: where /Greater_1 (routed: runs on the rows whose guard holds only).
        // Nodes: /blocks.1/blocks.1.0/blocks.1.0.0/Conv, /blocks.1/blocks.1.0/blocks.1.0.1/Relu, /blocks.1/blocks.1.1/Conv
        rows_r1.clear();
        {
            let d0: &[u8] = elems(arena.view::<u8>(32768 * nb, n)?)?;
            for i in 0..samples.len() {
                if compiled::at(d0, i) != 0 {
                    rows_r1.push(i);
                }
            }
        }
        compiled::map_samples(samples_r1, samples, rows_r1);
        if rows_r1.is_empty() {
            if let Some(t) = &mut trace {
                t.enter(&self.trace_spec, 1, samples_r1, 0);
            }
            routing::scatter_rows(arena.view_mut::<u8>(0, 16384 * n)?, 16384, &[])
                .map_err(Error::at("R1", "region"))?;
        } else {
            if let Some(t) = &mut trace {
                t.enter(&self.trace_spec, 1, samples_r1, rows_r1.len());
            }
            {
                let ([r0], w) = arena
                    .split_array([(16384 * nb, 16384 * n)], (0, 16384 * n))?;
                let x0: &[u8] = elems(r0)?;
                let y: &mut [u8] = elems_mut(w)?;
                routing::gather_rows(x0, 16384, rows_r1, y)
                    .map_err(Error::at("R1", "region"))?;
            }
            {
                let n = rows_r1.len();
                let samples: &[usize] = samples_r1;
                // /blocks.1/blocks.1.0/blocks.1.0.0/Conv (Conv): conv 3x3/1 group 1 16->16 im2col gemm + bias + relu -> /blocks.1/blocks.1.0/blocks.1.0.1/Relu_output_0 [batch, 16, 16, 16]
                {
                    let ([r0], w) = arena
                        .split_array([(0, 16384 * n)], (32768 * nb, 16384 * n))?;
                    let x0: &[f32] = elems(r0)?;
                    let y: &mut [f32] = elems_mut(w)?;
                    let epilogue = ConvEpilogue {
                        bias: Some(&self.blocks_1_blocks_1_0_blocks_1_0_0_conv_bias[..]),
                        residual: None,
                        activation: Activation::Relu,
                    };
                    self.blocks_1_blocks_1_0_blocks_1_0_0_conv
                        .run(
                            &BLOCKS_1_BLOCKS_1_0_BLOCKS_1_0_0_CONV,
                            epilogue,
                            x0,
                            y,
                            &self.pool,
                        )
                        .map_err(
                            Error::at("/blocks.1/blocks.1.0/blocks.1.0.0/Conv", "Conv"),
                        )?;
                }
                // /blocks.1/blocks.1.1/Conv (Conv): conv 3x3/1 group 1 16->16 im2col gemm + bias -> /blocks.1/blocks.1.1/Conv_output_0 [batch, 16, 16, 16]
                {
                    let ([r0], w) = arena
                        .split_array([(32768 * nb, 16384 * n)], (0, 16384 * n))?;
                    let x0: &[f32] = elems(r0)?;
                    let y: &mut [f32] = elems_mut(w)?;
                    let epilogue = ConvEpilogue {
                        bias: Some(&self.blocks_1_blocks_1_1_conv_bias[..]),
                        residual: None,
                        activation: Activation::Identity,
                    };
                    self.blocks_1_blocks_1_1_conv
                        .run(&BLOCKS_1_BLOCKS_1_1_CONV, epilogue, x0, y, &self.pool)
                        .map_err(Error::at("/blocks.1/blocks.1.1/Conv", "Conv"))?;
                }
            }
            routing::scatter_rows(arena.view_mut::<u8>(0, 16384 * n)?, 16384, rows_r1)
                .map_err(Error::at("R1", "region"))?;
        }
        // /Mul_1 (Mul): binary Mul -> /Mul_1_output_0 [batch, 16, 16, 16]
        {
            let ([r0, r1], w) = arena
                .split_array(
                    [(49152 * nb, 4 * n), (0, 16384 * n)],
                    (32768 * nb, 16384 * n),
                )?;
            let x0: &[f32] = elems(r0)?;
            let x1: &[f32] = elems(r1)?;
            let y: &mut [f32] = elems_mut(w)?;
            elementwise::binary_strided(
                    Binary::Mul,
                    x0,
                    x1,
                    &[n, 4096],
                    &[1, 0],
                    &[4096, 1],
                    y,
                )
                .map_err(Error::at("/Mul_1", "Mul"))?;
        }
        // /Mul_1: rows whose gate is 0 become exactly 0
        {
            let ([r0], w) = arena
                .split_array([(49152 * nb, 4 * n)], (32768 * nb, 16384 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [u8] = elems_mut(w)?;
            let gate = x0;
            compiled::mask_rows(y, n, |r| compiled::at(gate, r) == 0.0)
                .map_err(Error::at("/Mul_1", "Mul"))?;
        }
        // /Add_1 (Add): binary Add -> /Add_1_output_0 [batch, 16, 16, 16]
        {
            let ([r0, r1], w) = arena
                .split_array(
                    [(16384 * nb, 16384 * n), (32768 * nb, 16384 * n)],
                    (0, 16384 * n),
                )?;
            let x0: &[f32] = elems(r0)?;
            let x1: &[f32] = elems(r1)?;
            let y: &mut [f32] = elems_mut(w)?;
            elementwise::binary_strided(Binary::Add, x0, x1, &[4096 * n], &[1], &[1], y)
                .map_err(Error::at("/Add_1", "Add"))?;
        }
        // /ReduceMean_2 (ReduceMean): reduce Mean -> /ReduceMean_2_output_0 [batch, 16]
        {
            let ([r0], w) = arena.split_array([(0, 16384 * n)], (16384 * nb, 64 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            for_units(
                    &self.pool,
                    MIN_PARALLEL_OUTPUTS,
                    x0,
                    y,
                    (256, 1),
                    |x, y| reduce::reduce(ReduceKind::Mean, 256, 1, x, y),
                )
                .map_err(Error::at("/ReduceMean_2", "ReduceMean"))?;
        }
        // /gates.2/Gemm (Gemm): dense 16->1 + bias + sigmoid -> /Sigmoid_2_output_0 [batch, 1]
        {
            let ([r0], w) = arena
                .split_array([(16384 * nb, 64 * n)], (16448 * nb, 4 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            self.gates_2_gemm
                .run(
                    Some(&self.gates_2_gemm_bias[..]),
                    None,
                    Activation::Sigmoid,
                    x0,
                    y,
                    &self.pool,
                )
                .map_err(Error::at("/gates.2/Gemm", "Gemm"))?;
        }
        // /Greater_2 (Greater): compare Greater -> /Greater_2_output_0 [batch, 1]
        {
            let ([r0], w) = arena.split_array([(16448 * nb, 4 * n)], (32768 * nb, n))?;
            let x0: &[f32] = elems(r0)?;
            let x1: &[f32] = &knob_constant_4_output_0[..];
            let y: &mut [u8] = elems_mut(w)?;
            logic::compare_strided(Compare::Greater, x0, x1, &[n], &[1], &[0], y)
                .map_err(Error::at("/Greater_2", "Greater"))?;
        }
        // /Cast_2 (Cast): cast bool -> f32 -> /Cast_2_output_0 [batch, 1]
        {
            let ([r0], w) = arena.split_array([(32768 * nb, n)], (49152 * nb, 4 * n))?;
            let x0: &[u8] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            cast::cast(x0, y).map_err(Error::at("/Cast_2", "Cast"))?;
        }
        // /Reshape_2 (Reshape): same bytes, nothing to do
        // Region R2: where /Greater_2 (routed: runs on the rows whose guard holds only).
        // Nodes: /blocks.2/blocks.2.0/blocks.2.0.0/Conv, /blocks.2/blocks.2.0/blocks.2.0.1/Relu, /blocks.2/blocks.2.1/Conv
        rows_r2.clear();
        {
            let d0: &[u8] = elems(arena.view::<u8>(32768 * nb, n)?)?;
            for i in 0..samples.len() {
                if compiled::at(d0, i) != 0 {
                    rows_r2.push(i);
                }
            }
        }
        compiled::map_samples(samples_r2, samples, rows_r2);
        if rows_r2.is_empty() {
            if let Some(t) = &mut trace {
                t.enter(&self.trace_spec, 2, samples_r2, 0);
            }
            routing::scatter_rows(
                    arena.view_mut::<u8>(16384 * nb, 16384 * n)?,
                    16384,
                    &[],
                )
                .map_err(Error::at("R2", "region"))?;
        } else {
            if let Some(t) = &mut trace {
                t.enter(&self.trace_spec, 2, samples_r2, rows_r2.len());
            }
            {
                let ([r0], w) = arena
                    .split_array([(0, 16384 * n)], (16384 * nb, 16384 * n))?;
                let x0: &[u8] = elems(r0)?;
                let y: &mut [u8] = elems_mut(w)?;
                routing::gather_rows(x0, 16384, rows_r2, y)
                    .map_err(Error::at("R2", "region"))?;
            }
            {
                let n = rows_r2.len();
                let samples: &[usize] = samples_r2;
                // /blocks.2/blocks.2.0/blocks.2.0.0/Conv (Conv): conv 3x3/1 group 1 16->16 im2col gemm + bias + relu -> /blocks.2/blocks.2.0/blocks.2.0.1/Relu_output_0 [batch, 16, 16, 16]
                {
                    let ([r0], w) = arena
                        .split_array(
                            [(16384 * nb, 16384 * n)],
                            (32768 * nb, 16384 * n),
                        )?;
                    let x0: &[f32] = elems(r0)?;
                    let y: &mut [f32] = elems_mut(w)?;
                    let epilogue = ConvEpilogue {
                        bias: Some(&self.blocks_2_blocks_2_0_blocks_2_0_0_conv_bias[..]),
                        residual: None,
                        activation: Activation::Relu,
                    };
                    self.blocks_2_blocks_2_0_blocks_2_0_0_conv
                        .run(
                            &BLOCKS_2_BLOCKS_2_0_BLOCKS_2_0_0_CONV,
                            epilogue,
                            x0,
                            y,
                            &self.pool,
                        )
                        .map_err(
                            Error::at("/blocks.2/blocks.2.0/blocks.2.0.0/Conv", "Conv"),
                        )?;
                }
                // /blocks.2/blocks.2.1/Conv (Conv): conv 3x3/1 group 1 16->16 im2col gemm + bias -> /blocks.2/blocks.2.1/Conv_output_0 [batch, 16, 16, 16]
                {
                    let ([r0], w) = arena
                        .split_array(
                            [(32768 * nb, 16384 * n)],
                            (16384 * nb, 16384 * n),
                        )?;
                    let x0: &[f32] = elems(r0)?;
                    let y: &mut [f32] = elems_mut(w)?;
                    let epilogue = ConvEpilogue {
                        bias: Some(&self.blocks_2_blocks_2_1_conv_bias[..]),
                        residual: None,
                        activation: Activation::Identity,
                    };
                    self.blocks_2_blocks_2_1_conv
                        .run(&BLOCKS_2_BLOCKS_2_1_CONV, epilogue, x0, y, &self.pool)
                        .map_err(Error::at("/blocks.2/blocks.2.1/Conv", "Conv"))?;
                }
            }
            routing::scatter_rows(
                    arena.view_mut::<u8>(16384 * nb, 16384 * n)?,
                    16384,
                    rows_r2,
                )
                .map_err(Error::at("R2", "region"))?;
        }
        // /Mul_2 (Mul): binary Mul -> /Mul_2_output_0 [batch, 16, 16, 16]
        {
            let ([r0, r1], w) = arena
                .split_array(
                    [(49152 * nb, 4 * n), (16384 * nb, 16384 * n)],
                    (32768 * nb, 16384 * n),
                )?;
            let x0: &[f32] = elems(r0)?;
            let x1: &[f32] = elems(r1)?;
            let y: &mut [f32] = elems_mut(w)?;
            elementwise::binary_strided(
                    Binary::Mul,
                    x0,
                    x1,
                    &[n, 4096],
                    &[1, 0],
                    &[4096, 1],
                    y,
                )
                .map_err(Error::at("/Mul_2", "Mul"))?;
        }
        // /Mul_2: rows whose gate is 0 become exactly 0
        {
            let ([r0], w) = arena
                .split_array([(49152 * nb, 4 * n)], (32768 * nb, 16384 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [u8] = elems_mut(w)?;
            let gate = x0;
            compiled::mask_rows(y, n, |r| compiled::at(gate, r) == 0.0)
                .map_err(Error::at("/Mul_2", "Mul"))?;
        }
        // /Add_2 (Add): binary Add -> /Add_2_output_0 [batch, 16, 16, 16]
        {
            let ([r0, r1], w) = arena
                .split_array(
                    [(0, 16384 * n), (32768 * nb, 16384 * n)],
                    (16384 * nb, 16384 * n),
                )?;
            let x0: &[f32] = elems(r0)?;
            let x1: &[f32] = elems(r1)?;
            let y: &mut [f32] = elems_mut(w)?;
            elementwise::binary_strided(Binary::Add, x0, x1, &[4096 * n], &[1], &[1], y)
                .map_err(Error::at("/Add_2", "Add"))?;
        }
        // /head/ReduceMean (ReduceMean): reduce Mean -> /head/ReduceMean_output_0 [batch, 16]
        {
            let ([r0], w) = arena.split_array([(16384 * nb, 16384 * n)], (0, 64 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            for_units(
                    &self.pool,
                    MIN_PARALLEL_OUTPUTS,
                    x0,
                    y,
                    (256, 1),
                    |x, y| reduce::reduce(ReduceKind::Mean, 256, 1, x, y),
                )
                .map_err(Error::at("/head/ReduceMean", "ReduceMean"))?;
        }
        // /head/fc/Gemm (Gemm): dense 16->6 + bias -> logits [batch, 6]
        {
            let ([r0], w) = arena.split_array([(0, 64 * n)], (64 * nb, 24 * n))?;
            let x0: &[f32] = elems(r0)?;
            let y: &mut [f32] = elems_mut(w)?;
            self.head_fc_gemm
                .run(
                    Some(&self.head_fc_gemm_bias[..]),
                    None,
                    Activation::Identity,
                    x0,
                    y,
                    &self.pool,
                )
                .map_err(Error::at("/head/fc/Gemm", "Gemm"))?;
        }
        compiled::copy(elems(arena.view::<u8>(64 * nb, 24 * n)?)?, outputs.logits)
            .map_err(|source| Error::Output {
                name: LOGITS_NAME,
                reason: source.to_string(),
            })?;
        Ok(())
    }
}
