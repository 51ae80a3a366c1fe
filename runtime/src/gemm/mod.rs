//! Single-precision GEMM core: `C = epilogue(A·B)` for convolutions (im2col
//! and 1×1), `Gemm`/`MatMul` and fully-connected layers.
//!
//! # API
//!
//! * Views: [`MatRef`] / [`MatMut`] — any row and column strides, checked
//!   once against the slice on construction.
//! * Constant operands: [`PackedA`] / [`PackedB`] pack a weight once (at
//!   model load) into the kernels' panel layout. The other operand is packed
//!   on the fly, block by block, into a [`GemmScratch`]. Mapping the usual
//!   layers:
//!   - conv / 1×1 conv as GEMM, NCHW: `C[C_out, pixels] = W[C_out, K] ·
//!     X[K, pixels]` → `sgemm(&PackedA::pack(w), x, c, ..)`, bias
//!     [`Bias::PerRow`];
//!   - fully connected, `W` stored `[out, in]` (ONNX `Gemm transB=1`):
//!     `Y[batch, out] = X[batch, in] · Wᵀ` →
//!     `sgemm(x, &PackedB::pack(w.t()), y, ..)`, bias [`Bias::PerCol`];
//!   - `MatMul` of two activations: both plain.
//!
//!   `PackedA::pack(w)` and `PackedB::pack(w.t())` produce the same bytes, so a
//!   weight's packing does not depend on which side it ends up on.
//! * [`sgemm`] (thread-local scratch) and [`sgemm_with_scratch`] (caller's
//!   scratch); [`sgemm_on`] forces an instruction set (tests, benchmarks).
//!   No call allocates once the scratch has grown to the largest shape.
//! * [`Epilogue`]: `C = act(A·B + bias + residual)` with a per-row or
//!   per-column [`Bias`], a residual `M × N` view with its own strides, and
//!   an [`Activation`] (Relu, Clip, LeakyRelu, Sigmoid). It is applied in
//!   registers on each tile's last K block (row-major `C` and residual), or
//!   by a vectorised pass over each finished block otherwise.
//! * `M = 1` or `N = 1` (batch-1 fully connected, matrix–vector) takes a GEMV
//!   path that streams the weight once (packed, or plain in either layout);
//!   [`sgemv`] is the row-vector shorthand.
//!
//! # Design
//!
//! BLIS-style. The kernels compute an internal problem `Ci = Ai·Bi` in which
//! `Ai` is *broadcast* (one scalar per row per `k`) and `Bi` is *vector*
//! (`NR` contiguous columns per `k`), accumulating an `MR × NR` tile of `Ci`
//! in registers. Every packed operand — constant or on the fly, either role —
//! uses one layout: panels of 32 (rows of `Ai` / columns of `Bi`), each
//! `K × 32` floats. With one layout a weight serves both roles, which lets
//! the driver choose per call (shapes are dynamic) between
//! * direct: `Ai = A`, `Bi = B`, vectors along `N`, and
//! * transposed: `Ai = Bᵀ`, `Bi = Aᵀ`, vectors along `M` (`Cᵀ = Bᵀ·Aᵀ`),
//!
//! whichever wastes fewer vector lanes. Conv outputs have `M = C_out` (a
//! multiple of 16) but `N = H·W` can be 49 or 196: with vectors along `N`, 49
//! columns fill 49 of 64 lanes; transposed they fill all of them, at the price
//! of a transposing pass over `C` when `C` is row-major (cost ~`40/K` of the
//! product, included in the choice).
//!
//! ## Micro-kernels (`kernel.rs`)
//! * AVX-512F: register tiles up to `MR × NR = 14 × 32` (2 `zmm` per `Bi`
//!   row, one broadcast per `Ai` row). A 32-row `Ai` panel is cut into
//!   `ceil(32 / 14) = 3` near-equal row chunks, so full panels run as
//!   11 + 11 + 10 rows: 22 accumulators, 2 vector loads and 11 broadcasts per
//!   22 FMAs — FMA-bound on Zen 4 (one 512-bit FMA per cycle, 2 loads per
//!   cycle). 16 × 32 would need all 32 registers for accumulators; 8 × 48 or
//!   6 × 64 do not divide the 32-wide panel. With both operands pre-packed
//!   the kernel sustains ~113 GFLOP/s, ≈ 96% of the FMA-loop peak measured
//!   on the same core (see the benchmark). Kernels exist for every row count
//!   1..=14, so row edges waste no FMAs; column edges use `k`-mask
//!   loads/stores (a ≤ 16-column edge runs the 1-vector kernel).
//! * AVX2 + FMA: `6 × 16` — 12 `ymm` accumulators; `vmaskmovps` edges.
//! * Portable: `4 × 8` over `[f32; 4]` arrays, which LLVM maps to SSE2.
//!
//! The instruction set is detected once (`is_x86_feature_detected!`, cached
//! in a `OnceLock`), so a binary built here runs anywhere x86-64 (or on any
//! target with the portable kernel).
//!
//! ## Blocking and packing
//! Loops, outer to inner: columns of `Bi` by `NC`, `K` by `KC`, rows of `Ai`
//! by `MC`, then 32-column panels of `Bi` cut into `NR` sub-panels, then
//! 32-row panels of `Ai` cut into row chunks. One `KC × NR` sub-panel of `Bi`
//! is swept by the whole `MC × KC` block of `Ai`, which stays in L2 (1 MiB,
//! 8-way on the target; L1d 32 KiB). `K` is split into near-equal blocks
//! (576 runs as 2 × 288, not 384 + 192). Values in `BLOCKING` (mod.rs); the kernel
//! is so compute-dense (22 FMAs per 128 bytes of `Bi`) that even L2-resident
//! sub-panels feed it, and a sweep of KC ∈ {192..576}, MC ∈ {256..1024},
//! NC ∈ {384..2048} moved the ResNet shapes by less than the machine's noise
//! except where noted there.
//!
//! On AVX-512 a plain `Bi` with unit column stride (the row-major activation
//! `X[K, pixels]` of a conv) is not packed at all: the kernel reads its full
//! 32-column panels in place at the source's row stride and prefetches the
//! same row of the next panel (only a ragged last panel is packed). Packing
//! writes and re-reads as many bytes as the product reads, which with 64
//! output channels cost ~15%; without the prefetch, the strided rows missed
//! one page at a time (60 instead of 105 GFLOP/s at 64×3136×576). The AVX2
//! kernel (12 FMAs per row instead of 22) could not hide those misses and
//! keeps packing.
//!
//! ## Measured (`cargo bench -p d2nn-runtime --bench gemm`)
//! On the target (Zen 4 EPYC, one core): an FMA-only loop peaks at ~117
//! GFLOP/s (Zen 4 splits 512-bit FMAs over its two 256-bit pipes: 32
//! FLOP/cycle). The conv-shaped products run at 80–104 GFLOP/s (criterion
//! medians; 70–90% of that loop, run-to-run spread ±15% on the shared
//! machine): 1.1–2× `matrixmultiply` on the 3×3 shapes and 2048×49×512; on
//! the two `K = 64` 1×1 shapes the two are within noise of each other
//! (0.8–1.1× across runs). The batch-1 FC GEMV streams its packed weight
//! at 80–90 GB/s, ~90% of a plain read of as many bytes, 25–35×
//! `matrixmultiply`.
//!
//! ## Threading
//! [`sgemm_par`] splits the columns of the internal problem into 32-aligned
//! ranges (twice as many as threads, handed out dynamically) and runs each
//! on a pool thread with that thread's scratch (`driver::gemm_cols`, or
//! `driver::gemv` for one-row problems): ranges write disjoint columns of
//! `C`, so no locks are needed. Because the split is over the *internal*
//! columns, a conv with few pixels (transposed: vectors along `C_out`) is
//! split over its output channels and a large one over its pixels.
//!
//! ## Safety
//! `unsafe` is confined to the kernels (raw-pointer SIMD) and the calls into
//! them. All bounds are established once per call: views are checked against
//! their slices on construction, the epilogue against `M × N`, and the
//! driver only forms tile pointers inside those bounds (each call site has a
//! `SAFETY` comment saying why).

#![deny(unsafe_op_in_unsafe_fn)]

mod driver;
mod epilogue;
mod kernel;
mod mat;
mod pack;
pub(crate) mod simd;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::pool::ThreadPool;

pub use driver::GemmScratch;
pub use epilogue::{Activation, Bias, Epilogue};
pub use mat::{MatMut, MatRef};
pub use pack::{PackedA, PackedB};

pub(crate) use driver::Blocking;
use driver::{Problem, Src};
use kernel::Arch;

/// Blocking for all instruction sets (see the module docs).
///
/// KC = 384: long enough that the `C` tile's load/store per K block is < 1%
/// of the FMAs, short enough that `MC × KC` (768 KiB) stays in L2. MC = 512.
/// NC = 2048 (a packed `Bi` block is 3 MiB, in L3). Measured on the target
/// (best of 30, GFLOP/s, 7 ResNet shapes): KC 256 / 384 / 512 within ±3 of
/// each other; NC 512 or 1024 lost ~10% on `2048×49×512` until the
/// contiguous `C` block got an odd-line row stride.
const BLOCKING: Blocking = Blocking { kc: 384, mc: 512, nc: 2048 };

/// The left operand of [`sgemm`]: a plain view or a pre-packed constant.
#[derive(Clone, Copy)]
pub enum Lhs<'a> {
    Plain(MatRef<'a>),
    Packed(&'a PackedA),
}

/// The right operand of [`sgemm`]: a plain view or a pre-packed constant.
#[derive(Clone, Copy)]
pub enum Rhs<'a> {
    Plain(MatRef<'a>),
    Packed(&'a PackedB),
}

impl<'a> From<MatRef<'a>> for Lhs<'a> {
    fn from(m: MatRef<'a>) -> Self {
        Lhs::Plain(m)
    }
}
impl<'a> From<&'a PackedA> for Lhs<'a> {
    fn from(p: &'a PackedA) -> Self {
        Lhs::Packed(p)
    }
}
impl<'a> From<MatRef<'a>> for Rhs<'a> {
    fn from(m: MatRef<'a>) -> Self {
        Rhs::Plain(m)
    }
}
impl<'a> From<&'a PackedB> for Rhs<'a> {
    fn from(p: &'a PackedB) -> Self {
        Rhs::Packed(p)
    }
}

impl Lhs<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Lhs::Plain(m) => (m.rows(), m.cols()),
            Lhs::Packed(p) => (p.rows(), p.cols()),
        }
    }
    /// As a packed-format source with panels over the rows of `A`.
    fn src(&self) -> Src<'_> {
        match self {
            Lhs::Plain(m) => Src::Plain { data: m.data(), sp: m.row_stride(), sk: m.col_stride() },
            Lhs::Packed(p) => Src::Packed(&p.p),
        }
    }
}

impl Rhs<'_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            Rhs::Plain(m) => (m.rows(), m.cols()),
            Rhs::Packed(p) => (p.rows(), p.cols()),
        }
    }
    /// As a packed-format source with panels over the columns of `B`.
    fn src(&self) -> Src<'_> {
        match self {
            Rhs::Plain(m) => Src::Plain { data: m.data(), sp: m.col_stride(), sk: m.row_stride() },
            Rhs::Packed(p) => Src::Packed(&p.p),
        }
    }
}

/// An instruction set the kernels exist for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust over fixed-size arrays (auto-vectorised); runs anywhere.
    Portable,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512F.
    Avx512,
}

impl Isa {
    /// Whether this CPU can run the kernels.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best available one, detected once per process.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| [Isa::Avx512, Isa::Avx2].into_iter().find(|i| i.is_available()).unwrap_or(Isa::Portable))
    }

    /// Register tile `(MR, NR)` of the micro-kernel.
    pub fn tile(self) -> (usize, usize) {
        let a = self.arch();
        (a.mr, a.nr())
    }

    fn arch(self) -> &'static Arch {
        match self {
            Isa::Portable => &kernel::PORTABLE,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => &kernel::AVX2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => &kernel::AVX512,
            #[cfg(not(target_arch = "x86_64"))]
            _ => &kernel::PORTABLE,
        }
    }
}

/// `C = epilogue(A·B)` with a thread-local scratch (allocation-free once it
/// has grown).
///
/// `A` is `M × K`, `B` is `K × N`, `C` is `M × N`; any strides. `C` is only
/// written, never read, so it may hold garbage.
///
/// # Panics
/// If the dimensions or the epilogue's bias/residual shapes disagree.
pub fn sgemm<'a>(a: impl Into<Lhs<'a>>, b: impl Into<Rhs<'a>>, c: MatMut<'_>, epi: &Epilogue<'_>) {
    SCRATCH.with(|s| sgemm_with_scratch(a, b, c, epi, &mut s.borrow_mut()))
}

/// [`sgemm`] spread over `pool`'s threads: each takes 32-aligned ranges of
/// the columns of the internal problem (see the module docs) with its own
/// thread-local scratch. Products too small to repay waking the workers
/// (≲ 0.2 MFLOP) run on the caller alone; a pool of one thread is plain
/// [`sgemm`].
///
/// # Panics
/// As [`sgemm`].
pub fn sgemm_par<'a>(pool: &ThreadPool, a: impl Into<Lhs<'a>>, b: impl Into<Rhs<'a>>, c: MatMut<'_>, epi: &Epilogue<'_>) {
    sgemm_par_on(Isa::detect(), pool, a, b, c, epi)
}

/// [`sgemm_par`] on a given instruction set.
///
/// # Panics
/// As [`sgemm_on`].
pub fn sgemm_par_on<'a>(isa: Isa, pool: &ThreadPool, a: impl Into<Lhs<'a>>, b: impl Into<Rhs<'a>>, c: MatMut<'_>, epi: &Epilogue<'_>) {
    gemm_impl(isa, a.into(), b.into(), c, epi, Threads::Pool { pool, min_macs: MIN_PARALLEL_MACS }, BLOCKING, Orientation::Auto)
}

thread_local! {
    /// Each thread's scratch for [`sgemm`] and the tasks of [`sgemm_par`].
    static SCRATCH: RefCell<GemmScratch> = const { RefCell::new(GemmScratch::new()) };
}

/// Who computes a product: the caller with its scratch, or a pool.
pub(crate) enum Threads<'s> {
    Caller(&'s mut GemmScratch),
    /// Split over `pool` when the product has at least `min_macs` multiply-adds.
    Pool { pool: &'s ThreadPool, min_macs: usize },
}

/// The split of the internal problem's columns into near-equal 32-aligned ranges.
struct ColumnSplit {
    n: usize,
    per: usize,
}

impl ColumnSplit {
    fn count(&self) -> usize {
        self.n.div_ceil(self.per)
    }
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        i * self.per..((i + 1) * self.per).min(self.n)
    }
}

/// Products below this many multiply-adds run on one thread: waking a
/// worker and sharing the result costs a few microseconds.
const MIN_PARALLEL_MACS: usize = 100_000;

/// Splits the columns for `threads` threads: twice as many ranges as
/// threads, so that a thread slowed by a neighbour on its core does not hold
/// the others up at the end, but never below one 32-column panel each.
fn column_split(p: &Problem, threads: usize, min_macs: usize) -> ColumnSplit {
    let panels = p.n.div_ceil(kernel::PANEL);
    let parts = if threads > 1 && p.m.saturating_mul(p.n).saturating_mul(p.k) >= min_macs { panels.min(2 * threads) } else { 1 };
    ColumnSplit { n: p.n, per: panels.div_ceil(parts.max(1)).max(1) * kernel::PANEL }
}

/// `y = epilogue(x · B)` for a row vector: the batch-1 fully-connected layer
/// (`x` has `K` values, `y` has `N`). The same as [`sgemm`] with `M = 1`,
/// which takes the GEMV path by itself: one sequential pass over `B`
/// (packed, or plain in either layout), eight independent FMA chains.
///
/// # Panics
/// If the lengths disagree with `B` or the epilogue.
pub fn sgemv<'a>(x: &[f32], b: impl Into<Rhs<'a>>, y: &mut [f32], epi: &Epilogue<'_>) {
    let b = b.into();
    let (k, n) = b.dims();
    assert!(x.len() == k && y.len() == n, "x has {} values and y {}, but B is {k}x{n}", x.len(), y.len());
    sgemm(MatRef::row_major(x, 1, k), b, MatMut::row_major(y, 1, n), epi)
}

/// [`sgemm`] with an explicit scratch buffer.
pub fn sgemm_with_scratch<'a>(
    a: impl Into<Lhs<'a>>,
    b: impl Into<Rhs<'a>>,
    c: MatMut<'_>,
    epi: &Epilogue<'_>,
    scratch: &mut GemmScratch,
) {
    sgemm_on(Isa::detect(), a, b, c, epi, scratch)
}

/// [`sgemm`] on a given instruction set.
///
/// # Panics
/// As [`sgemm`], and if `isa` is not available on this CPU.
pub fn sgemm_on<'a>(
    isa: Isa,
    a: impl Into<Lhs<'a>>,
    b: impl Into<Rhs<'a>>,
    c: MatMut<'_>,
    epi: &Epilogue<'_>,
    scratch: &mut GemmScratch,
) {
    gemm_impl(isa, a.into(), b.into(), c, epi, Threads::Caller(scratch), BLOCKING, Orientation::Auto)
}

/// Which internal problem the driver solves (forced in tests).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Orientation {
    Auto,
    /// `Ci = C`: vectors along `N`.
    Direct,
    /// `Ci = Cᵀ`: vectors along `M`.
    Transposed,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_impl(
    isa: Isa,
    a: Lhs<'_>,
    b: Rhs<'_>,
    mut c: MatMut<'_>,
    epi: &Epilogue<'_>,
    threads: Threads<'_>,
    blocking: Blocking,
    orientation: Orientation,
) {
    assert!(isa.is_available(), "{isa:?} kernels are not supported by this CPU");
    let (m, k) = a.dims();
    let (kb, n) = b.dims();
    assert_eq!(k, kb, "A is {m}x{k} but B is {kb}x{n}");
    assert!(c.rows() == m && c.cols() == n, "C is {}x{} but A·B is {m}x{n}", c.rows(), c.cols());
    epi.validate(m, n);
    if m == 0 || n == 0 {
        return;
    }
    let arch = isa.arch();
    let (rs_c, cs_c) = (c.row_stride(), c.col_stride());
    if k == 0 {
        let e = epi.raw(false);
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) is inside the validated M × N view and epilogue.
                unsafe { *c.ptr_mut().add(i * rs_c + j * cs_c) = e.apply_scalar(0.0, i, j) };
            }
        }
        return;
    }
    let transposed = match orientation {
        Orientation::Direct => false,
        Orientation::Transposed => true,
        // A one-row problem is a GEMV in whichever orientation has one row.
        Orientation::Auto if m == 1 || n == 1 => m != 1,
        Orientation::Auto => prefer_transposed(arch, m, n, k, rs_c, cs_c),
    };
    let p = if transposed {
        Problem {
            m: n,
            n: m,
            k,
            ai: b.src(),
            bi: a.src(),
            c: c.ptr_mut(),
            rs_c: cs_c,
            cs_c: rs_c,
            epi: epi.raw(true),
            epi_t: epi.raw(false),
        }
    } else {
        Problem {
            m,
            n,
            k,
            ai: a.src(),
            bi: b.src(),
            c: c.ptr_mut(),
            rs_c,
            cs_c,
            epi: epi.raw(false),
            epi_t: epi.raw(true),
        }
    };
    let run = |cols: std::ops::Range<usize>, scratch: &mut GemmScratch| {
        // SAFETY: `p` was built from views checked against their slices and an
        // epilogue checked against M × N; C is exclusively borrowed for the
        // call; `isa.is_available()` was asserted. Column ranges given to
        // concurrent calls are disjoint and 32-aligned (below), so they write
        // disjoint parts of C.
        unsafe {
            if p.m == 1 {
                driver::gemv(arch, &p, cols, scratch);
            } else {
                driver::gemm_cols(arch, &p, cols, blocking, scratch);
            }
        }
    };
    match threads {
        Threads::Pool { pool, min_macs } => {
            let ranges = column_split(&p, pool.threads(), min_macs);
            if ranges.count() <= 1 {
                SCRATCH.with(|s| run(0..p.n, &mut s.borrow_mut()));
            } else {
                pool.parallel_for(ranges.count(), &|i| SCRATCH.with(|s| run(ranges.range(i), &mut s.borrow_mut())));
            }
        }
        Threads::Caller(scratch) => run(0..p.n, scratch),
    }
}

/// Whether computing `Cᵀ = Bᵀ·Aᵀ` (vectors along `M`) beats `C = A·B`
/// (vectors along `N`): compares lane utilisation, charging the pass that
/// moves a block to a `C` without unit stride in the vector dimension.
fn prefer_transposed(arch: &Arch, m: usize, n: usize, k: usize, rs_c: usize, cs_c: usize) -> bool {
    let l = arch.lanes;
    let waste = |x: usize| x.div_ceil(l) as f64 * l as f64 / x as f64;
    let finish = |unit: bool| if unit { 1.0 } else { 1.0 + 40.0 / k as f64 };
    let direct = waste(n) * finish(cs_c == 1);
    let transposed = waste(m) * finish(rs_c == 1);
    transposed < direct * 0.98
}
