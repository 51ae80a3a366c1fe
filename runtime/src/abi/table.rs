//! The kernel table of a natively compiled model: each [`KernelDesc`] made
//! ready to run once, when the model is created (weights packed, constants
//! copied out of the weights table), and run on operand bytes when compiled
//! code calls `d2nn_rt_kernel`. Everything here is safe code over slices;
//! the raw pointers are turned into slices by the caller ([`super::hooks`]).

use super::meta::{IterDim, KernelDesc, KernelEntry};
use crate::gemm::Activation;
use crate::kernels::conv::{Conv2d, ConvEpilogue};
use crate::kernels::conv_transpose::{conv_transpose2d, ConvTranspose2d, ConvTransposeWeights};
use crate::kernels::copy::{self, CopyArgs};
use crate::kernels::depthwise::{depthwise, Depthwise};
use crate::kernels::elementwise::{self, Binary, Unary};
use crate::kernels::logic::Compare;
use crate::kernels::norm::{self, BatchNorm, LayerNorm};
use crate::kernels::one_hot::OneHot;
use crate::kernels::pool::{self as pools, GlobalKind, Pool2d};
use crate::kernels::reduce::{self, ArgReduce, ReduceKind};
use crate::kernels::typed::{self, Elems, ElemsMut};
use crate::kernels::{softmax, KernelError};
use crate::layers::{ConvWeights, DenseWeights};
use crate::pool::{for_units, ThreadPool, MIN_PARALLEL_OUTPUTS};
use crate::weights::{Weights, WeightsError};
use crate::DType;
use smallvec::SmallVec;

/// A kernel ready to run.
pub(super) enum Prepared {
    Unary(Unary),
    Binary { op: Binary, dims: Vec<IterDim>, a_strides: Vec<usize>, b_strides: Vec<usize> },
    Pool(Pool2d),
    GlobalPool { kind: GlobalKind, plane: usize },
    Softmax { log: bool, len: usize, inner: usize },
    Reduce { kind: ReduceKind, len: IterDim, inner: usize },
    BatchNorm { bn: BatchNorm, plane: usize },
    Conv { geometry: Conv2d, weights: ConvWeights, bias: Option<Vec<f32>>, residual: bool, activation: Activation },
    Depthwise { geometry: Depthwise, weights: Vec<f32>, bias: Option<Vec<f32>>, activation: Activation },
    Dense { weights: DenseWeights, bias: Option<Vec<f32>>, residual: bool, activation: Activation },
    ConvTranspose { geometry: ConvTranspose2d, weights: ConvTransposeWeights, bias: Option<Vec<f32>> },
    LayerNorm { geometry: LayerNorm, scale: Vec<f32>, bias: Option<Vec<f32>> },
    Transpose { dtype: DType, t: copy::Transpose },
    Slice { dtype: DType, s: copy::Slice },
    Pad { dtype: DType, p: copy::Pad, fill: [u8; 8] },
    Gather { dtype: DType, g: copy::Gather },
    Concat { dtype: DType, rows: Vec<usize> },
    Split { dtype: DType, rows: Vec<usize>, piece: usize },
    Compare { op: Compare, dims: Vec<IterDim>, a_strides: Vec<usize>, b_strides: Vec<usize> },
    Where { dims: Vec<IterDim>, strides: [Vec<usize>; 3] },
    Cast,
    ArgReduce(ArgReduce),
    OneHot { geometry: OneHot, dtype: DType, off_on: [u8; 16] },
    Logic { op: crate::kernels::logic::BoolOp, dims: Vec<IterDim>, a_strides: Vec<usize>, b_strides: Vec<usize> },
    Not,
    /// Run by the model's [`super::External`] host.
    External { outputs: usize },
}

/// Why a kernel of the table cannot be prepared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Tensor `index` of the weights table as f32s (the index is what the code
/// was compiled against; the file's checksum vouches for the rest).
fn f32s(w: &Weights, index: u32) -> Result<Vec<f32>, WeightsError> {
    let i = index as usize;
    let entry = w.entries().get(i).ok_or(WeightsError::Missing { index: i, count: w.entries().len() })?;
    w.f32(i, &entry.name.clone(), entry.elements)
}

fn bias(w: &Weights, index: Option<u32>) -> Result<Option<Vec<f32>>, WeightsError> {
    index.map(|i| f32s(w, i)).transpose()
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], KernelError> {
    let mut out = [0u8; N];
    if bytes.len() > N {
        return Err(KernelError::Geometry(format!("a constant of {} bytes where at most {N} fit", bytes.len())));
    }
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

impl Prepared {
    /// Packs the weights `entry` names and checks its geometry.
    pub(super) fn new(entry: &KernelEntry, w: &Weights) -> Result<Prepared, PrepareError> {
        Ok(match &entry.kernel {
            KernelDesc::Unary(op) => Prepared::Unary(*op),
            KernelDesc::Binary { op, dims, a_strides, b_strides } => Prepared::Binary { op: *op, dims: dims.clone(), a_strides: a_strides.clone(), b_strides: b_strides.clone() },
            KernelDesc::Pool(p) => Prepared::Pool(*p),
            KernelDesc::GlobalPool { kind, plane } => Prepared::GlobalPool { kind: *kind, plane: *plane },
            KernelDesc::Softmax { log, len, inner } => Prepared::Softmax { log: *log, len: *len, inner: *inner },
            KernelDesc::Reduce { kind, len, inner } => Prepared::Reduce { kind: *kind, len: *len, inner: *inner },
            KernelDesc::BatchNorm { mean, factor, bias, plane } => Prepared::BatchNorm { bn: BatchNorm::from_folded(mean.clone(), factor.clone(), bias.clone())?, plane: *plane },
            KernelDesc::Conv { geometry, weights, bias: b, residual, activation } => {
                let raw = f32s(w, *weights)?;
                Prepared::Conv { weights: ConvWeights::pack(geometry, &raw)?, geometry: geometry.clone(), bias: bias(w, *b)?, residual: *residual, activation: *activation }
            }
            KernelDesc::Depthwise { geometry, weights, bias: b, activation } => {
                Prepared::Depthwise { geometry: geometry.clone(), weights: f32s(w, *weights)?, bias: bias(w, *b)?, activation: *activation }
            }
            KernelDesc::Dense { k, n, transposed, weights, bias: b, residual, activation } => {
                let raw = f32s(w, *weights)?;
                Prepared::Dense { weights: DenseWeights::pack(&raw, *k, *n, *transposed)?, bias: bias(w, *b)?, residual: *residual, activation: *activation }
            }
            KernelDesc::ConvTranspose { geometry, weights, bias: b } => {
                let raw = f32s(w, *weights)?;
                Prepared::ConvTranspose { weights: ConvTransposeWeights::pack(geometry, &raw)?, geometry: geometry.clone(), bias: bias(w, *b)? }
            }
            KernelDesc::LayerNorm { geometry, scale, bias: b } => Prepared::LayerNorm { geometry: *geometry, scale: f32s(w, *scale)?, bias: bias(w, *b)? },
            KernelDesc::Copy { dtype, args, fill } => match args {
                CopyArgs::Transpose { dims, perm } => Prepared::Transpose { dtype: *dtype, t: copy::Transpose::new(dims, perm)? },
                CopyArgs::Slice { dims, start, step, len } => Prepared::Slice { dtype: *dtype, s: copy::Slice::new(dims, start, step, len)? },
                CopyArgs::Pad { dims, begins, ends } => Prepared::Pad { dtype: *dtype, p: copy::Pad::new(dims, begins, ends)?, fill: fixed(fill)? },
            },
            KernelDesc::Gather { dtype, axis, inner, indices } => Prepared::Gather { dtype: *dtype, g: copy::Gather::new(*axis, *inner, indices)? },
            KernelDesc::Concat { dtype, rows } => Prepared::Concat { dtype: *dtype, rows: rows.clone() },
            KernelDesc::Split { dtype, rows, piece } => Prepared::Split { dtype: *dtype, rows: rows.clone(), piece: *piece },
            KernelDesc::Compare { op, dims, a_strides, b_strides, .. } => Prepared::Compare { op: *op, dims: dims.clone(), a_strides: a_strides.clone(), b_strides: b_strides.clone() },
            KernelDesc::Where { dims, cond_strides, x_strides, y_strides, .. } => Prepared::Where { dims: dims.clone(), strides: [cond_strides.clone(), x_strides.clone(), y_strides.clone()] },
            KernelDesc::Cast { .. } => Prepared::Cast,
            KernelDesc::ArgReduce { geometry, .. } => Prepared::ArgReduce(*geometry),
            KernelDesc::OneHot { geometry, dtype, off_on, .. } => Prepared::OneHot { geometry: *geometry, dtype: *dtype, off_on: fixed(off_on)? },
            KernelDesc::Logic { op, dims, a_strides, b_strides } => Prepared::Logic { op: *op, dims: dims.clone(), a_strides: a_strides.clone(), b_strides: b_strides.clone() },
            KernelDesc::Not => Prepared::Not,
            KernelDesc::External { outputs } => Prepared::External { outputs: *outputs as usize },
        })
    }

    /// Whether the kernel may write its output over its (single) input.
    pub(super) fn in_place(&self) -> bool {
        matches!(self, Prepared::Unary(_))
    }

    /// Runs an in-place kernel on `data`.
    pub(super) fn run_in_place(&self, pool: &ThreadPool, data: &mut [u8]) -> Result<(), KernelError> {
        match self {
            Prepared::Unary(op) => {
                elementwise::unary_in_place_par(pool, MIN_PARALLEL_OUTPUTS, *op, f32_mut(data)?);
                Ok(())
            }
            _ => Err(KernelError::Geometry("the kernel cannot run in place".into())),
        }
    }

    /// Runs the kernel on a frame of `rows` rows: `inputs` are the node's
    /// operands (as `dtypes`), `out` its output, all as bytes.
    pub(super) fn run(&self, pool: &ThreadPool, rows: usize, inputs: &[(DType, &[u8])], out: (DType, &mut [u8])) -> Result<(), KernelError> {
        let x = |i: usize| -> Result<&[f32], KernelError> { f32_of(inputs.get(i).map(|o| o.1).ok_or_else(|| missing(i))?) };
        let elems = |i: usize| -> Result<Elems, KernelError> {
            let (dtype, bytes) = *inputs.get(i).ok_or_else(|| missing(i))?;
            Elems::from_bytes(dtype, bytes).ok_or_else(|| misaligned("operand"))
        };
        let resolve = |dims: &[IterDim]| -> SmallVec<[usize; 8]> { dims.iter().map(|d| d.at(rows)).collect() };
        let (out_dtype, out) = out;
        let min = MIN_PARALLEL_OUTPUTS;
        match self {
            Prepared::Unary(op) => for_units(pool, min, x(0)?, f32_mut(out)?, (1, 1), |x, y| elementwise::unary(*op, x, y)),
            Prepared::Binary { op, dims, a_strides, b_strides } => elementwise::binary_strided(*op, x(0)?, x(1)?, &resolve(dims), a_strides, b_strides, f32_mut(out)?),
            Prepared::Pool(g) => {
                let unit = (g.h.input * g.w.input, g.h.output * g.w.output);
                for_units(pool, min, x(0)?, f32_mut(out)?, unit, |x, y| pools::pool2d(g, x, y))
            }
            Prepared::GlobalPool { kind, plane } => for_units(pool, min, x(0)?, f32_mut(out)?, (*plane, 1), |x, y| pools::global_pool(*kind, *plane, x, y)),
            Prepared::Softmax { log, len, inner } => {
                let unit = len * inner;
                for_units(pool, min, x(0)?, f32_mut(out)?, (unit, unit), |x, y| softmax::softmax(*log, *len, *inner, x, y))
            }
            Prepared::Reduce { kind, len, inner } => {
                let len = len.at(rows);
                for_units(pool, min, x(0)?, f32_mut(out)?, (len * inner, *inner), |x, y| reduce::reduce(*kind, len, *inner, x, y))
            }
            Prepared::BatchNorm { bn, plane } => norm::batch_norm(bn, *plane, x(0)?, f32_mut(out)?),
            Prepared::Conv { geometry, weights, bias, residual, activation } => {
                let residual = if *residual { Some(x(1)?) } else { None };
                let epilogue = ConvEpilogue { bias: bias.as_deref(), residual, activation: *activation };
                weights.run(geometry, epilogue, x(0)?, f32_mut(out)?, pool)
            }
            Prepared::Depthwise { geometry, weights, bias, activation } => depthwise(geometry, weights, bias.as_deref(), *activation, x(0)?, f32_mut(out)?, pool),
            Prepared::Dense { weights, bias, residual, activation } => {
                let residual = if *residual { Some(x(1)?) } else { None };
                weights.run(bias.as_deref(), residual, *activation, x(0)?, f32_mut(out)?, pool)
            }
            Prepared::ConvTranspose { geometry, weights, bias } => conv_transpose2d(geometry, weights, bias.as_deref(), x(0)?, f32_mut(out)?, pool),
            Prepared::LayerNorm { geometry, scale, bias } => {
                for_units(pool, min, x(0)?, f32_mut(out)?, (geometry.row, geometry.row), |x, y| norm::layer_norm(geometry, scale, bias.as_deref(), x, y))
            }
            Prepared::Transpose { dtype, t } => movement!(*dtype, inputs, out, |x, y| copy::transpose(t, first(x)?, y)),
            Prepared::Slice { dtype, s } => movement!(*dtype, inputs, out, |x, y| copy::slice(s, first(x)?, y)),
            Prepared::Gather { dtype, g } => movement!(*dtype, inputs, out, |x, y| copy::gather(g, first(x)?, y)),
            Prepared::Concat { dtype, rows } => movement!(*dtype, inputs, out, |x, y| copy::concat(rows, x, y)),
            Prepared::Split { dtype, rows, piece } => movement!(*dtype, inputs, out, |x, y| copy::split(rows, *piece, first(x)?, y)),
            Prepared::Pad { dtype, p, fill } => movement!(*dtype, inputs, out, |x, y| copy::pad(p, elem_from(fill, y), first(x)?, y)),
            Prepared::Compare { op, dims, a_strides, b_strides } => typed::compare(*op, elems(0)?, elems(1)?, &resolve(dims), a_strides, b_strides, out_elems(out_dtype, out)?),
            Prepared::Where { dims, strides } => typed::select(elems(0)?, elems(1)?, elems(2)?, &resolve(dims), [&strides[0], &strides[1], &strides[2]], out_elems(out_dtype, out)?),
            Prepared::Cast => typed::cast(elems(0)?, out_elems(out_dtype, out)?),
            Prepared::ArgReduce(g) => typed::arg_reduce(g, elems(0)?, out_elems(out_dtype, out)?),
            Prepared::OneHot { geometry, dtype, off_on } => {
                let pair = &off_on[..2 * dtype.size_of()];
                let values = Elems::from_bytes(*dtype, pair).ok_or_else(|| misaligned("one-hot values"))?;
                typed::one_hot(geometry, elems(0)?, values, out_elems(out_dtype, out)?)
            }
            Prepared::Logic { op, dims, a_strides, b_strides } => typed::logic(*op, elems(0)?, elems(1)?, &resolve(dims), a_strides, b_strides, out_elems(out_dtype, out)?),
            Prepared::Not => typed::not(elems(0)?, out_elems(out_dtype, out)?),
            Prepared::External { .. } => Err(KernelError::Geometry("an external kernel is run by the model's host".into())),
        }
    }
}

/// The element of `like`'s type stored at the start of `bytes` (little endian).
fn elem_from<T: bytemuck::Pod>(bytes: &[u8; 8], like: &[T]) -> T {
    let _ = like;
    bytemuck::pod_read_unaligned(&bytes[..std::mem::size_of::<T>()])
}

fn first<'a, T>(x: &[&'a [T]]) -> Result<&'a [T], KernelError> {
    x.first().copied().ok_or_else(|| missing(0))
}

fn missing(i: usize) -> KernelError {
    KernelError::Geometry(format!("operand {i} is missing"))
}

fn misaligned(what: &str) -> KernelError {
    KernelError::Geometry(format!("the {what} is misaligned for its element type"))
}

fn f32_of(bytes: &[u8]) -> Result<&[f32], KernelError> {
    if bytes.is_empty() {
        return Ok(&[]);
    }
    bytemuck::try_cast_slice(bytes).map_err(|_| misaligned("operand"))
}

fn f32_mut(bytes: &mut [u8]) -> Result<&mut [f32], KernelError> {
    if bytes.is_empty() {
        return Ok(&mut []);
    }
    bytemuck::try_cast_slice_mut(bytes).map_err(|_| misaligned("output"))
}

fn out_elems(dtype: DType, bytes: &mut [u8]) -> Result<ElemsMut<'_>, KernelError> {
    ElemsMut::from_bytes(dtype, bytes).ok_or_else(|| misaligned("output"))
}

/// Runs a data-movement kernel (generic over the element) with the Rust
/// type of `dtype`: `$x` is the inputs as slices, `$y` the output.
macro_rules! movement {
    ($dtype:expr, $inputs:expr, $out:expr, |$x:ident, $y:ident| $body:expr) => {
        match $dtype {
            DType::F32 => moved::<f32>($inputs, $out, &|$x, $y| $body),
            DType::I64 => moved::<i64>($inputs, $out, &|$x, $y| $body),
            DType::I32 => moved::<i32>($inputs, $out, &|$x, $y| $body),
            DType::Bool => moved::<u8>($inputs, $out, &|$x, $y| $body),
        }
    };
}
use movement;

type Move<'f, T> = &'f dyn Fn(&[&[T]], &mut [T]) -> Result<(), KernelError>;

fn moved<T: bytemuck::Pod>(inputs: &[(DType, &[u8])], out: &mut [u8], op: Move<'_, T>) -> Result<(), KernelError> {
    let xs: SmallVec<[&[T]; 8]> = inputs.iter().map(|(_, b)| if b.is_empty() { Ok(&[][..]) } else { bytemuck::try_cast_slice(b).map_err(|_| misaligned("operand")) }).collect::<Result<_, _>>()?;
    let out: &mut [T] = if out.is_empty() { &mut [] } else { bytemuck::try_cast_slice_mut(out).map_err(|_| misaligned("output"))? };
    op(&xs, out)
}
