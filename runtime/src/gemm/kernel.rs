//! Micro-kernels and GEMV kernels, written once over [`Simd`] and
//! instantiated per instruction set.
//!
//! Both operands of a micro-kernel come as *panels*: `[k][PANEL]` arrays, i.e.
//! for every `k` the `PANEL = 32` values of 32 consecutive rows (of the
//! broadcast operand) or columns (of the vector operand), zero-padded. A
//! kernel reads a sub-panel: `a` points at row `r0` of its panel and `b` at
//! column `c0` of its panel, and both advance by `PANEL` floats per `k`.

use super::epilogue::RawEpi;
use super::simd::Simd;

/// Width of every packed panel, in rows of the broadcast operand and in
/// columns of the vector operand. A multiple of every kernel's `NR`.
pub(crate) const PANEL: usize = 32;

/// `C[0..MR, 0..n] (+)= Σ_k a[k][0..MR] ⊗ b[k][0..n]`, then the epilogue.
///
/// Arguments: `kc`, `a` (sub-panel, stride `PANEL`), `b` (sub-panel, stride
/// `PANEL`), `c` (tile origin, unit column stride), `rs_c`, `n` (valid
/// columns, `1..=NV·LANES`), `accumulate` (add to `C` instead of
/// overwriting), `epi` (null, or the epilogue at the tile origin; only passed
/// on the last K block and only when [`RawEpi::vector_ok`]).
pub(crate) type MicroKernel =
    unsafe fn(usize, *const f32, *const f32, usize, *mut f32, usize, usize, bool, *const RawEpi);

/// The generic micro-kernel body; `MR × NV` vector accumulators stay in
/// registers for the whole K loop.
///
/// # Safety
/// `kc ≥ 1`; `a` and `b` must cover `kc` panel rows (`(kc - 1)·PANEL + MR` resp.
/// `+ NV·LANES` floats), `c` must cover `MR` rows of `n` floats at stride
/// `rs_c` and `n ≤ NV·LANES`; `epi` is null or valid for the tile; the CPU
/// supports `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn micro<S: Simd, const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    bs: usize,
    c: *mut f32,
    rs_c: usize,
    n: usize,
    accumulate: bool,
    epi: *const RawEpi,
) {
    debug_assert!(kc >= 1 && n >= 1 && n <= NV * S::LANES);
    // SAFETY: the caller's contract above bounds every pointer access.
    unsafe {
        // The residual tile is read only after the K loop: start fetching it
        // now so the loop hides the misses (256×3136×64 with bias, residual
        // and Relu: 67 GFLOP/s without this, 95 with; 103 with no epilogue).
        if let Some(e) = epi.as_ref() {
            if !e.res.is_null() {
                for i in 0..MR {
                    for j in 0..NV {
                        prefetch(e.res.wrapping_add(i * e.res_rs + j * S::LANES));
                    }
                }
            }
        }
        // The first k initialises the accumulators (kc ≥ 1), so no zeroed
        // tile is ever materialised on the stack.
        let mut bv = [S::zero(); NV];
        for (j, bv) in bv.iter_mut().enumerate() {
            *bv = S::load(b.add(j * S::LANES));
        }
        let mut acc = [[S::zero(); NV]; MR];
        for (i, acc) in acc.iter_mut().enumerate() {
            let ai = S::splat(*a.add(i));
            for j in 0..NV {
                acc[j] = S::mul(ai, bv[j]);
            }
        }
        // `b` read in place from a row-major source (bs ≠ PANEL): fetch the
        // same row of the next panel, which the driver runs next. Without it
        // the strided rows miss to DRAM one page at a time once the source
        // outgrows the cache (64×3136×576 ran at 60 instead of 105 GFLOP/s).
        let prefetch_next = bs != PANEL;
        for k in 1..kc {
            // Indexed from the base rather than bumped, so that no pointer is
            // ever formed past the operand (Miri flagged the bump after the
            // last k).
            let (a, b) = (a.add(k * PANEL), b.add(k * bs));
            for (j, bv) in bv.iter_mut().enumerate() {
                *bv = S::load(b.add(j * S::LANES));
            }
            if prefetch_next {
                prefetch(b.wrapping_add(PANEL));
                prefetch(b.wrapping_add(PANEL + 16));
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let ai = S::splat(*a.add(i));
                for j in 0..NV {
                    acc[j] = S::fmadd(ai, bv[j], acc[j]);
                }
            }
        }
        if n == NV * S::LANES && epi.is_null() {
            // Full tile, no epilogue: straight-line stores.
            for (i, acc) in acc.iter().enumerate() {
                let crow = c.add(i * rs_c);
                for (j, &v) in acc.iter().enumerate() {
                    let p = crow.add(j * S::LANES);
                    S::store(p, if accumulate { S::add(v, S::load(p)) } else { v });
                }
            }
            return;
        }
        let epi = epi.as_ref();
        for (i, acc) in acc.iter().enumerate() {
            let crow = c.add(i * rs_c);
            for (j, &v) in acc.iter().enumerate() {
                let col = j * S::LANES;
                if col >= n {
                    break;
                }
                let w = (n - col).min(S::LANES);
                store_lane_group::<S>(v, crow.add(col), w, accumulate, epi, i, col);
            }
        }
    }
}

/// Adds the old value (if accumulating), applies the epilogue and stores `w`
/// lanes at `p`.
///
/// # Safety
/// `p` covers `w ≤ LANES` floats; `epi` valid at `(i, col)`; CPU supports `S`.
#[inline(always)]
unsafe fn store_lane_group<S: Simd>(
    mut v: S::V,
    p: *mut f32,
    w: usize,
    accumulate: bool,
    epi: Option<&RawEpi>,
    i: usize,
    col: usize,
) {
    // SAFETY: forwarded contract.
    unsafe {
        let full = w == S::LANES;
        if accumulate {
            v = S::add(v, if full { S::load(p) } else { S::load_partial(p, w) });
        }
        if let Some(e) = epi {
            v = e.apply_vec::<S>(v, i, col, w);
        }
        if full {
            S::store(p, v)
        } else {
            S::store_partial(p, w, v)
        }
    }
}

/// `y[0..PANEL] = Σ_k x[k] · b[k·bs .. k·bs + PANEL]` — one panel of a GEMV,
/// `U`-way unrolled over `k` with separate accumulators so that the FMA
/// latency is hidden even though there is a single row.
///
/// # Safety
/// `x` covers `k` floats, `b` covers `k` rows of `PANEL` floats at stride
/// `bs`, `y` covers `PANEL` floats; CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn gemv_panel<S: Simd, const NV: usize, const U: usize>(
    k: usize,
    x: *const f32,
    b: *const f32,
    bs: usize,
    y: *mut f32,
) {
    debug_assert_eq!(NV * S::LANES, PANEL);
    // SAFETY: the caller's contract bounds every access.
    unsafe {
        let mut acc = [[S::zero(); NV]; U];
        let mut kk = 0;
        while kk + U <= k {
            for (u, acc) in acc.iter_mut().enumerate() {
                let xv = S::splat(*x.add(kk + u));
                let row = b.add((kk + u) * bs);
                for (j, acc) in acc.iter_mut().enumerate() {
                    *acc = S::fmadd(xv, S::load(row.add(j * S::LANES)), *acc);
                }
            }
            kk += U;
        }
        while kk < k {
            let xv = S::splat(*x.add(kk));
            let row = b.add(kk * bs);
            for (j, acc) in acc[0].iter_mut().enumerate() {
                *acc = S::fmadd(xv, S::load(row.add(j * S::LANES)), *acc);
            }
            kk += 1;
        }
        for j in 0..NV {
            let mut s = acc[0][j];
            for acc in acc.iter().skip(1) {
                s = S::add(s, acc[j]);
            }
            S::store(y.add(j * S::LANES), s);
        }
    }
}

/// `y[j] = Σ_k x[k] · b[j·cs + k]` for `j < 4`: four dot products against
/// columns with unit stride along `k` (a plain `[N, K]` weight).
///
/// # Safety
/// `x` covers `k` floats, each of the 4 columns covers `k` floats, `y`
/// covers 4 floats; CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn gemv_dot4<S: Simd>(k: usize, x: *const f32, b: *const f32, cs: usize, y: *mut f32) {
    // SAFETY: the caller's contract bounds every access.
    unsafe {
        let l = S::LANES;
        let mut acc = [[S::zero(); 2]; 4];
        let mut kk = 0;
        while kk + 2 * l <= k {
            let x0 = S::load(x.add(kk));
            let x1 = S::load(x.add(kk + l));
            for (j, acc) in acc.iter_mut().enumerate() {
                let col = b.add(j * cs + kk);
                acc[0] = S::fmadd(x0, S::load(col), acc[0]);
                acc[1] = S::fmadd(x1, S::load(col.add(l)), acc[1]);
            }
            kk += 2 * l;
        }
        while kk < k {
            let w = (k - kk).min(l);
            let xv = S::load_partial(x.add(kk), w);
            for (j, acc) in acc.iter_mut().enumerate() {
                acc[0] = S::fmadd(xv, S::load_partial(b.add(j * cs + kk), w), acc[0]);
            }
            kk += w;
        }
        for (j, acc) in acc.iter().enumerate() {
            *y.add(j) = S::reduce_add(S::add(acc[0], acc[1]));
        }
    }
}

/// Applies the epilogue in place to `n` contiguous values (row 0 of `epi`).
///
/// # Safety
/// `y` covers `n` floats, `epi` is valid for `1 × n` and `vector_ok()`;
/// CPU supports `S`.
#[inline(always)]
pub(crate) unsafe fn epi_row<S: Simd>(y: *mut f32, n: usize, epi: &RawEpi) {
    // SAFETY: the caller's contract bounds every access.
    unsafe {
        let mut j = 0;
        while j < n {
            let w = (n - j).min(S::LANES);
            let v = if w == S::LANES { S::load(y.add(j)) } else { S::load_partial(y.add(j), w) };
            store_lane_group::<S>(v, y.add(j), w, false, Some(epi), 0, j);
            j += w;
        }
    }
}

/// One instruction set's kernels and its register-tile shape.
pub(crate) struct Arch {
    /// Rows of the register tile (broadcast operand).
    pub mr: usize,
    /// Lanes per vector.
    pub lanes: usize,
    /// `kernels[nv - 1][m - 1]` computes an `m × (≤ nv·lanes)` tile.
    pub kernels: &'static [&'static [MicroKernel]],
    pub gemv_panel: unsafe fn(usize, *const f32, *const f32, usize, *mut f32),
    pub gemv_dot4: unsafe fn(usize, *const f32, *const f32, usize, *mut f32),
    pub epi_row: unsafe fn(*mut f32, usize, &RawEpi),
    /// Whether the driver lets the kernel read a row-major `Bi` in place
    /// instead of packing it.
    pub b_in_place: bool,
}

impl Arch {
    /// Columns of the widest register tile.
    pub fn nr(&self) -> usize {
        self.kernels.len() * self.lanes
    }
}

/// Builds an [`Arch`] from a [`Simd`] type, the `#[target_feature]` list its
/// wrappers are compiled with (none for the portable one), the list of row
/// counts `1..=MR` (with `NV = 1` and `NV = 2` tables), the GEMV unroll and
/// whether a row-major `Bi` is read in place.
macro_rules! arch {
    ($S:ty, $feats:tt, rows = [$($m:literal),*], gemv_unroll = $u:literal, b_in_place = $bip:literal) => {
        arch!(@arch $S, $feats, $feats, rows = [$($m),*], gemv_unroll = $u, b_in_place = $bip)
    };
    (@arch $S:ty, [$($feat:literal)?], $feats:tt, rows = [$($m:literal),*], gemv_unroll = $u:literal, b_in_place = $bip:literal) => {{
        const ROW1: &[MicroKernel] = &[$(arch!(@k $S, $feats, $m, 1)),*];
        const ROW2: &[MicroKernel] = &[$(arch!(@k $S, $feats, $m, 2)),*];
        $(#[target_feature(enable = $feat)])?
        unsafe fn gp(k: usize, x: *const f32, b: *const f32, bs: usize, y: *mut f32) {
            // SAFETY: forwarded; the dispatcher only hands out this Arch when
            // the CPU has the features.
            unsafe { gemv_panel::<$S, { PANEL / <$S as Simd>::LANES }, $u>(k, x, b, bs, y) }
        }
        $(#[target_feature(enable = $feat)])?
        unsafe fn gd(k: usize, x: *const f32, b: *const f32, cs: usize, y: *mut f32) {
            // SAFETY: forwarded, as above.
            unsafe { gemv_dot4::<$S>(k, x, b, cs, y) }
        }
        $(#[target_feature(enable = $feat)])?
        unsafe fn er(y: *mut f32, n: usize, e: &RawEpi) {
            // SAFETY: forwarded, as above.
            unsafe { epi_row::<$S>(y, n, e) }
        }
        Arch {
            mr: [$($m),*].len(),
            lanes: <$S as Simd>::LANES,
            kernels: &[ROW1, ROW2],
            gemv_panel: gp,
            gemv_dot4: gd,
            epi_row: er,
            b_in_place: $bip,
        }
    }};
    (@k $S:ty, [$($feat:literal)?], $m:literal, $nv:literal) => {{
        $(#[target_feature(enable = $feat)])?
        #[allow(clippy::too_many_arguments)]
        unsafe fn k(
            kc: usize, a: *const f32, b: *const f32, bs: usize, c: *mut f32, rs: usize, n: usize,
            acc: bool, e: *const RawEpi,
        ) {
            // SAFETY: forwarded; the dispatcher only hands out this table
            // when the CPU has the features.
            unsafe { micro::<$S, $m, $nv>(kc, a, b, bs, c, rs, n, acc, e) }
        }
        k as MicroKernel
    }};
}

/// Portable fallback: 4 × 8 tile of 4-lane arrays (SSE2 after LLVM on
/// x86-64, whatever the baseline vector ISA is elsewhere).
pub(crate) static PORTABLE: Arch =
    arch!(super::simd::Portable, [], rows = [1, 2, 3, 4], gemv_unroll = 1, b_in_place = false);

/// AVX2 + FMA: the classic 6 × 16 tile (12 of 16 `ymm` accumulators).
#[cfg(target_arch = "x86_64")]
pub(crate) static AVX2: Arch =
    arch!(super::simd::Avx2, ["avx2,fma"], rows = [1, 2, 3, 4, 5, 6], gemv_unroll = 2, b_in_place = false);

/// AVX-512F: 14 × 32 (28 of 32 `zmm` accumulators, B in 2, A broadcast from
/// memory inside the FMA).
#[cfg(target_arch = "x86_64")]
pub(crate) static AVX512: Arch = arch!(
    super::simd::Avx512,
    ["avx512f"],
    rows = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
    gemv_unroll = 4,
    b_in_place = true
);

/// Hints that the 64-byte line at `p` is about to be read (a no-op off x86-64).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
