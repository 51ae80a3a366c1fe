//! Direct depthwise convolution (`group = C_in`, `C_out = multiplier × C_in`)
//! with a fused bias and activation: the MobileNet layer a GEMM handles
//! badly, since each output channel reads one input plane with a handful of
//! taps per output.
//!
//! # Design
//!
//! The unit of work is one output channel's plane, cut into strips of output
//! rows sized so that a strip's input stays in L1 (`plane::STRIP_FLOATS`).
//! Each strip's input rows are copied into a zero-padded scratch (per
//! thread, reused across calls), so the inner loop has no bounds checks:
//! padding is zeros in the scratch. The copy splits the rows into
//! `sh · sw` *phase planes* (row `j`, column `c` of the padded input go to
//! plane `(j mod sh, c mod sw)` at `(⌊j / sh⌋, ⌊c / sw⌋)`; for stride 2 the
//! columns are deinterleaved with two permutes per 32 floats). Then the
//! input of output `(r, ox)` under tap `(ki, kj)` sits at flat index
//! `r·pitch + ox` of one plane plus a per-tap constant, for any stride,
//! dilation and padding: every tap is a contiguous vector load, and a strip
//! is a 1-D convolution over flat indices. With a multiplier, the output
//! channels of one input plane share each strip's copy.
//!
//! Output vectors are computed in blocks of up to 8 (AVX-512) or 4: the
//! accumulators start at the bias, each tap adds a broadcast weight times
//! one load per vector (3 × 3 and 5 × 5 kernels are unrolled with the
//! weights in registers), and each vector is stored once with the
//! activation applied. How blocks map onto rows (`plane::Mode`): when
//! padding each phase row to whole vectors costs no extra vector, blocks run
//! across rows and every vector lands in one output row (56 × 56 down to
//! 7 × 7 on AVX-512); otherwise wide rows (112 × 112) are computed row by
//! row, and other narrow ones into a flat buffer copied out row by row.
//!
//! The kernels are written once over the GEMM's `Simd` abstraction and
//! instantiated for AVX-512F, AVX2 + FMA and the portable fallback, chosen at
//! run time ([`Isa::detect`]).
//!
//! Threads split the `(sample, output channel)` planes: each task writes a
//! run of whole output planes (a disjoint piece of `y`) and reads the shared
//! input. A one-thread pool runs everything as one task.
//!
//! # Measured
//!
//! `cargo bench -p d2nn-runtime --bench depthwise`, MobileNetV2's ten
//! depthwise shapes with ReLU6 fused, one thread, on the target (Zen 4,
//! AVX-512; an FMA loop peaks at ~114 GFLOP/s): 34–36 GFLOP/s on the
//! 112 × 112 and 56 × 56 stride-1 layers, 24 on 28 × 28 and 14 × 14, 11 on
//! 7 × 7, 13–22 on the stride-2 ones (6 for 14 × 14 → 7 × 7) — 2.8–7× the
//! previous row-axpy kernel, the ten layers 6.2 → 1.3 ms (medians, shared
//! machine). Where the time goes, from profiles: the FMA loop runs at ~1.8
//! cycles per vector FMA (its loads are unaligned, most split across cache
//! lines), the strip copy (the first read of the input) takes ~20–25%, and
//! small planes pay a few hundred cycles of per-plane work (row copies of
//! 7–14 floats). Reading the input directly for stride 1 (no copy),
//! sharing loads between neighbouring output rows and copying tiny planes
//! whole are the known next steps. Two threads: 1.5–2×.

mod kernel;
mod plane;
#[cfg(test)]
mod tests;

use super::{blocks, expect_len, KernelError};
use crate::gemm::simd::Portable;
use crate::gemm::{Activation, Isa};
use crate::pool::ThreadPool;
use kernel::Lanes;
use plane::{Call, Plan, Scratch};
use std::cell::RefCell;

/// The geometry of a 2-D depthwise convolution over NCHW data (a 1-D one has
/// `h = oh = kh = 1`).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct Depthwise {
    pub channels: usize,
    /// Output channels per input channel.
    pub multiplier: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    /// Padding before the first row and column.
    pub pad: (usize, usize),
}

/// `y = activation(depthwise_conv(x, weights) + bias)` for a batch of
/// samples (the batch is `x.len()` over one sample), spread over `pool`.
/// `weights` is `[C_out, kh, kw]`, `bias` has one value per output channel.
/// Taps that fall outside the input read zeros, whatever `oh` and `ow` are.
pub fn depthwise(
    d: &Depthwise,
    weights: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    x: &[f32],
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<(), KernelError> {
    depthwise_on(Isa::detect(), d, weights, bias, activation, x, y, pool)
}

/// [`depthwise`] on a given instruction set (tests and benchmarks); one this
/// CPU lacks falls back to the portable kernels.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_on(
    isa: Isa,
    d: &Depthwise,
    weights: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    x: &[f32],
    y: &mut [f32],
    pool: &ThreadPool,
) -> Result<(), KernelError> {
    convolve(isa, plane::STRIP_FLOATS, &Call { d, weights, bias, activation, x }, y, pool)
}

/// [`depthwise_on`] with strips of about `budget` floats.
fn convolve(isa: Isa, budget: usize, call: &Call<'_>, y: &mut [f32], pool: &ThreadPool) -> Result<(), KernelError> {
    let d = call.d;
    let c_out = product(d.channels, d.multiplier)?;
    let (plane_in, plane_out, taps) = (product(d.h, d.w)?, product(d.oh, d.ow)?, product(d.kh, d.kw)?);
    expect_len("weights", call.weights.len(), product(c_out, taps)?)?;
    if let Some(b) = call.bias {
        expect_len("bias", b.len(), c_out)?;
    }
    let batch = blocks("input", call.x.len(), product(d.channels, plane_in)?)?;
    expect_len("output", y.len(), product(batch, product(c_out, plane_out)?)?)?;
    if d.stride.0 == 0 || d.stride.1 == 0 {
        return Err(KernelError::Geometry("strides must be positive".into()));
    }
    if y.is_empty() {
        return Ok(());
    }
    if taps == 0 {
        // No taps: every output is the activated bias.
        for (c, plane) in y.chunks_exact_mut(plane_out).enumerate() {
            plane.fill(call.activation.apply(call.bias.map_or(0.0, |b| b[c % c_out])));
        }
        return Ok(());
    }
    // y is not empty, so neither is an input plane, an output plane nor the kernel.
    let isa = if isa.is_available() { isa } else { Isa::Portable };
    // The vector width of each instruction set's `Simd` implementation.
    let lanes = match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Portable => 4,
    };
    let plan = Plan::new(d, lanes, budget)?;
    let planes = batch * c_out;
    let per_task = match pool.threads() {
        1 => planes,
        // A few tasks per thread even out uneven progress; whole multiplier
        // groups let a task's output channels share their input strip.
        t => planes.div_ceil(4 * t).div_ceil(d.multiplier) * d.multiplier,
    };
    pool.parallel_chunks_mut(y, per_task * plane_out, &|task, out| {
        with_scratch(|scratch| run(isa, &plan, call, task * per_task, out, scratch))
    });
    Ok(())
}

/// `a × b`, or an error when the geometry is too large to index.
fn product(a: usize, b: usize) -> Result<usize, KernelError> {
    a.checked_mul(b).ok_or_else(|| KernelError::Geometry(format!("{a} × {b} elements overflow")))
}

/// Runs `f` with this thread's scratch (a fresh one if it is already in use,
/// which no caller does today).
fn with_scratch(f: impl FnOnce(&mut Scratch)) {
    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Computes output planes `first..` into `out` (whole planes) on `isa`.
fn run(isa: Isa, plan: &Plan, call: &Call<'_>, first: usize, out: &mut [f32], scratch: &mut Scratch) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `depthwise_on` only passes an ISA that `is_available()`.
        Isa::Avx512 => unsafe { x86::run_avx512(plan, call, first, out, scratch) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::run_avx2(plan, call, first, out, scratch) },
        // SAFETY: the portable kernels run on any CPU.
        _ => unsafe { plane::run::<Portable, { Portable::BLOCK }>(plan, call, first, out, scratch) },
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::kernel::Lanes;
    use super::plane::{self, Call, Plan, Scratch};
    use crate::gemm::simd::{Avx2, Avx512};

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_avx512(plan: &Plan, call: &Call<'_>, first: usize, out: &mut [f32], scratch: &mut Scratch) {
        // SAFETY: AVX-512F is available (this function's contract).
        unsafe { plane::run::<Avx512, { Avx512::BLOCK }>(plan, call, first, out, scratch) }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2(plan: &Plan, call: &Call<'_>, first: usize, out: &mut [f32], scratch: &mut Scratch) {
        // SAFETY: AVX2 and FMA are available (this function's contract).
        unsafe { plane::run::<Avx2, { Avx2::BLOCK }>(plan, call, first, out, scratch) }
    }
}
