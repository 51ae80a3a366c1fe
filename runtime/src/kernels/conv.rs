//! Convolution as GEMM over pre-packed weights, with the epilogue fused:
//! `y = act(conv(x, w) + bias + residual)` over NCHW data (1-D convs have
//! `h = oh = kh = 1`).
//!
//! Per sample and group, `Y[g] = W[g] · im2col(X[g])`, where `W[g]` is
//! `[C_out/group, C_in/group · kh · kw]` packed once ([`PackedA`]). The
//! pixels are cut into column blocks; each block's slice of the im2col
//! matrix is built in a per-thread scratch just before its GEMM, so it is
//! still in L2 when the GEMM reads it (materialising the whole im2col matrix
//! of ResNet's first 3×3 layers — 7 MB — and reading it back cost ~40% of
//! those layers). Pointwise convs (1×1, stride 1, no padding) read the input
//! in place. Bias, residual and activation are applied by the GEMM's
//! epilogue while the tile is in registers.
//!
//! Threads: the (sample, group, pixel block) units run in parallel when
//! there are enough of them to balance; otherwise units run one after
//! another and each GEMM is split over the pool ([`sgemm_par`]).

use super::{blocks, expect_len, KernelError};
use crate::gemm::simd::{load_at, store_prefix, Portable, Simd};
use crate::gemm::{sgemm, sgemm_par, Activation, Bias, Epilogue, Isa, MatMut, MatRef, PackedA};
use crate::pool::ThreadPool;
use std::cell::RefCell;

/// The geometry of a 2-D convolution (a 1-D one has `h = oh = kh = 1`).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
pub struct Conv2d {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    /// Padding before the first row and column.
    pub pad: (usize, usize),
    pub group: usize,
}

impl Conv2d {
    /// Whether the input is already the GEMM's right operand (no im2col):
    /// 1×1, stride 1 and no padding at either end (end padding shows as an
    /// output larger than the input).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.pad == (0, 0) && (self.oh, self.ow) == (self.h, self.w)
    }

    /// Rows of each group's weight matrix (output channels per group).
    pub fn rows_per_group(&self) -> usize {
        self.c_out / self.group.max(1)
    }

    /// Columns of each group's weight matrix (`C_in/group · kh · kw`).
    pub fn depth_per_group(&self) -> usize {
        self.c_in / self.group.max(1) * self.kh * self.kw
    }

    /// Multiply-adds per sample.
    pub fn macs_per_sample(&self) -> usize {
        self.c_out * self.oh * self.ow * self.depth_per_group()
    }

    /// Checks a call's slices against the geometry (the input a whole
    /// number of samples, the output, bias and residual to match) and
    /// returns the batch.
    pub(crate) fn check_call(&self, epi: &ConvEpilogue<'_>, x: &[f32], y: &[f32]) -> Result<usize, KernelError> {
        self.validate()?;
        let batch = blocks("input", x.len(), self.c_in * self.h * self.w)?;
        expect_len("output", y.len(), batch * self.c_out * self.oh * self.ow)?;
        if let Some(b) = epi.bias {
            expect_len("bias", b.len(), self.c_out)?;
        }
        if let Some(r) = epi.residual {
            expect_len("residual", r.len(), y.len())?;
        }
        Ok(batch)
    }

    fn validate(&self) -> Result<(), KernelError> {
        let bad = |why: &str| Err(KernelError::Geometry(why.into()));
        if self.group == 0 || !self.c_in.is_multiple_of(self.group) || !self.c_out.is_multiple_of(self.group) {
            return bad("channels must divide into the groups");
        }
        if self.stride.0 == 0 || self.stride.1 == 0 || self.dilation.0 == 0 || self.dilation.1 == 0 {
            return bad("strides and dilations must be positive");
        }
        // Any output size is safe to compute: windows wholly in the padding
        // read nothing and give the bias.
        Ok(())
    }
}

/// Fused extras of a convolution: `act(conv + bias + residual)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvEpilogue<'a> {
    /// One value per output channel.
    pub bias: Option<&'a [f32]>,
    /// A tensor of the output's shape added before the activation.
    pub residual: Option<&'a [f32]>,
    pub activation: Activation,
}

/// Floats of one im2col block: ~384 KiB keeps it in L2 next to the
/// weight block the GEMM sweeps over it.
const BLOCK_FLOATS: usize = 96 * 1024;

thread_local! {
    /// Each thread's im2col block, grown to the largest one (no allocation
    /// in steady state).
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y = act(conv(x, weights) + bias + residual)` for a batch of NCHW samples
/// (the batch is `x.len()` over one sample's size). `weights` holds one
/// packed `[C_out/group, C_in/group·kh·kw]` matrix per group.
pub fn conv2d(c: &Conv2d, weights: &[PackedA], epi: ConvEpilogue<'_>, x: &[f32], y: &mut [f32], pool: &ThreadPool) -> Result<(), KernelError> {
    let batch = c.check_call(&epi, x, y)?;
    let (sample_in, sample_out) = (c.c_in * c.h * c.w, c.c_out * c.oh * c.ow);
    let (mg, k, pix) = (c.rows_per_group(), c.depth_per_group(), c.oh * c.ow);
    expect_len("weights (groups)", weights.len(), c.group)?;
    if let Some(w) = weights.iter().find(|w| w.rows() != mg || w.cols() != k) {
        return Err(KernelError::Geometry(format!("a packed weight is {}x{}, expected {mg}x{k}", w.rows(), w.cols())));
    }
    if batch == 0 || sample_out == 0 {
        return Ok(());
    }
    let threads = pool.threads();
    let mut block = pixel_block(k, pix, c.is_pointwise());
    // Units run in parallel when there are enough samples × groups, or
    // enough pixels to cut each plane into about four units per thread;
    // otherwise (few pixels: the late layers) each unit's im2col and GEMM
    // are split instead.
    let lanes = batch * c.group;
    let parallel_units = threads > 1 && (lanes >= 2 * threads || pix >= 128 * threads);
    if parallel_units && lanes < 2 * threads {
        let per_unit = pix.div_ceil((4 * threads).div_ceil(lanes));
        block = block.min(per_unit.next_multiple_of(32).max(64));
    }
    let per_group = pix.div_ceil(block);
    let units = batch * c.group * per_group;
    let out = SharedOut(y.as_mut_ptr());
    // Unit u = ((n · group) + g) · per_group + b writes rows g·mg.. of sample
    // n, pixels b·block..: disjoint for distinct units.
    let run_unit = |u: usize, split: Option<&ThreadPool>| {
        let (ng, b) = (u / per_group, u % per_group);
        let (n, g) = (ng / c.group, ng % c.group);
        let (p0, p1) = (b * block, ((b + 1) * block).min(pix));
        let xg = &x[n * sample_in + g * (c.c_in / c.group) * c.h * c.w..][..(c.c_in / c.group) * c.h * c.w];
        let y_off = n * sample_out + g * mg * pix + p0;
        let mut e = Epilogue::default().with_activation(epi.activation);
        if let Some(bias) = epi.bias {
            e = e.with_bias(Bias::PerRow(&bias[g * mg..][..mg]));
        }
        if let Some(res) = epi.residual {
            e = e.with_residual(MatRef::new(&res[y_off..], mg, p1 - p0, pix, 1));
        }
        // SAFETY: rows g·mg..(g+1)·mg and pixel columns p0..p1 of sample n
        // lie inside `y` (length batch · sample_out, checked above), and no
        // other unit touches them (see above); `y` is exclusively borrowed
        // for the whole call.
        let out = unsafe { MatMut::from_raw_parts(out.get().add(y_off), mg, p1 - p0, pix, 1) };
        let gemm = |rhs: MatRef<'_>| match split {
            Some(pool) => sgemm_par(pool, &weights[g], rhs, out, &e),
            None => sgemm(&weights[g], rhs, out, &e),
        };
        if c.is_pointwise() {
            gemm(MatRef::new(&xg[p0..], k, p1 - p0, pix, 1));
        } else {
            COLUMNS.with(|cols| {
                let mut cols = cols.borrow_mut();
                let width = p1 - p0;
                cols.clear();
                cols.resize(k * width, 0.0);
                // One input channel's kh·kw rows per piece.
                let rows = c.kh * c.kw * width;
                match split {
                    Some(pool) if pool.threads() > 1 && cols.len() >= 64 * 1024 => {
                        let per_task = (c.c_in / c.group).div_ceil(2 * pool.threads());
                        pool.parallel_chunks_mut(&mut cols, per_task * rows, &|i, piece| im2col(c, xg, p0..p1, i * per_task, piece));
                    }
                    _ => im2col(c, xg, p0..p1, 0, &mut cols),
                }
                gemm(MatRef::row_major(&cols, k, width));
            });
        }
    };
    if parallel_units {
        pool.parallel_for(units, &|u| run_unit(u, None));
    } else {
        (0..units).for_each(|u| run_unit(u, Some(pool)));
    }
    Ok(())
}

/// The output pointer shared by the units of one call.
struct SharedOut(*mut f32);

impl SharedOut {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

// SAFETY: units write disjoint elements through it (see `conv2d`).
unsafe impl Sync for SharedOut {}

/// Pixels per column block: as many as fit [`BLOCK_FLOATS`] in the im2col
/// matrix (a multiple of 32, the GEMM's panel width), or all of them when
/// that is not much more. Pointwise convs have no im2col matrix but use the
/// same blocks, which gives the threads independent units.
fn pixel_block(k: usize, pix: usize, pointwise: bool) -> usize {
    let per = if pointwise { 2 * BLOCK_FLOATS } else { BLOCK_FLOATS };
    let block = (per / k.max(1) / 32 * 32).max(128);
    if pix <= block + block / 2 {
        pix.max(1)
    } else {
        block
    }
}

/// Unfolds pixels `pixels` of one group of one sample, from input channel
/// `first_channel` on, into `cols`: rows of the row-major
/// `[cg·kh·kw, pixels.len()]` im2col matrix (zeros where a window reaches
/// into the padding), as many whole channels' rows as `cols` holds. `cols`
/// must be zeroed.
fn im2col(c: &Conv2d, x: &[f32], pixels: std::ops::Range<usize>, first_channel: usize, cols: &mut [f32]) {
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` only returns an ISA this CPU supports.
        Isa::Avx512 => unsafe { x86::im2col_avx512(c, x, pixels, first_channel, cols) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::im2col_avx2(c, x, pixels, first_channel, cols) },
        // SAFETY: the portable vectors run on any CPU.
        _ => unsafe { im2col_on::<Portable>(c, x, pixels, first_channel, cols) },
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{im2col_on, Conv2d};
    use crate::gemm::simd::{Avx2, Avx512};
    use std::ops::Range;

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn im2col_avx512(c: &Conv2d, x: &[f32], pixels: Range<usize>, first_channel: usize, cols: &mut [f32]) {
        // SAFETY: AVX-512F is available (this function's contract).
        unsafe { im2col_on::<Avx512>(c, x, pixels, first_channel, cols) }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn im2col_avx2(c: &Conv2d, x: &[f32], pixels: Range<usize>, first_channel: usize, cols: &mut [f32]) {
        // SAFETY: AVX2 and FMA are available (this function's contract).
        unsafe { im2col_on::<Avx2>(c, x, pixels, first_channel, cols) }
    }
}

/// `dst[i] = src[2i]` (zeros where `2i` is past `src`), in vectors: the
/// stride-2 taps of a strided conv (ResNet's 7×7/2 stem).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn take_even<S: Simd>(src: &[f32], dst: &mut [f32]) {
    for at in (0..dst.len()).step_by(S::LANES) {
        let n = (dst.len() - at).min(S::LANES);
        // SAFETY: the CPU supports `S` (this function's contract).
        unsafe {
            let (even, _) = S::split_even_odd(load_at::<S>(src, 2 * at), load_at::<S>(src, 2 * at + S::LANES));
            store_prefix::<S>(&mut dst[at..][..n], even);
        }
    }
}

/// [`im2col`] on `S`'s vectors.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn im2col_on<S: Simd>(c: &Conv2d, x: &[f32], pixels: std::ops::Range<usize>, first_channel: usize, cols: &mut [f32]) {
    let width = pixels.len();
    let channels = cols.len() / (c.kh * c.kw * width).max(1);
    let ((sh, sw), (dh, dw), (ph, pw)) = (c.stride, c.dilation, c.pad);
    let mut row = 0;
    for ci in first_channel..first_channel + channels {
        let plane = &x[ci * c.h * c.w..(ci + 1) * c.h * c.w];
        for ki in 0..c.kh {
            for kj in 0..c.kw {
                let dst = &mut cols[row * width..(row + 1) * width];
                // Output columns whose tap lands inside a row: ix = ox·sw + kj·dw − pw ∈ [0, w).
                let shift = (kj * dw) as isize - pw as isize;
                let lo = if shift >= 0 { 0 } else { ((-shift) as usize).div_ceil(sw) }.min(c.ow);
                let hi = if (c.w as isize) <= shift { 0 } else { ((c.w as isize - shift) as usize).div_ceil(sw).min(c.ow) };
                let mut p = pixels.start;
                while p < pixels.end {
                    let (oy, ox0) = (p / c.ow, p % c.ow);
                    let ox1 = c.ow.min(ox0 + pixels.end - p);
                    let seg = &mut dst[p - pixels.start..][..ox1 - ox0];
                    let iy = (oy * sh + ki * dh) as isize - ph as isize;
                    if iy >= 0 && (iy as usize) < c.h && lo < hi {
                        let src = &plane[iy as usize * c.w..][..c.w];
                        let (a, b) = (lo.max(ox0), hi.min(ox1));
                        if a < b {
                            let first = (a * sw) as isize + shift;
                            let out = &mut seg[a - ox0..b - ox0];
                            if sw == 1 {
                                out.copy_from_slice(&src[first as usize..][..b - a]);
                            } else if sw == 2 {
                                // SAFETY: the CPU supports `S` (this function's contract).
                                unsafe { take_even::<S>(&src[first as usize..], out) };
                            } else {
                                // Whole `sw`-element groups, so the strided
                                // read vectorises as loads and shuffles; the
                                // last tap may have fewer than `sw` behind it.
                                let from = &src[first as usize..];
                                let whole = out.len().min(from.len() / sw);
                                for (o, group) in out[..whole].iter_mut().zip(from.chunks_exact(sw)) {
                                    *o = group[0];
                                }
                                for (t, o) in out.iter_mut().enumerate().skip(whole) {
                                    *o = from[t * sw];
                                }
                            }
                        }
                    }
                    p += ox1 - ox0;
                }
                row += 1;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, in f64 (the reference of the conv kernels' tests).
    pub(crate) fn naive(c: &Conv2d, w: &[f32], epi: &ConvEpilogue, x: &[f32], batch: usize) -> Vec<f32> {
        let (cg, mg) = (c.c_in / c.group, c.c_out / c.group);
        let mut y = vec![0.0f32; batch * c.c_out * c.oh * c.ow];
        for n in 0..batch {
            for co in 0..c.c_out {
                let g = co / mg;
                for oy in 0..c.oh {
                    for ox in 0..c.ow {
                        let mut acc = epi.bias.map_or(0.0, |b| b[co] as f64);
                        for ci in 0..cg {
                            for ki in 0..c.kh {
                                for kj in 0..c.kw {
                                    let iy = (oy * c.stride.0 + ki * c.dilation.0) as isize - c.pad.0 as isize;
                                    let ix = (ox * c.stride.1 + kj * c.dilation.1) as isize - c.pad.1 as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < c.h && (ix as usize) < c.w {
                                        let xv = x[((n * c.c_in + g * cg + ci) * c.h + iy as usize) * c.w + ix as usize];
                                        acc += w[((co * cg + ci) * c.kh + ki) * c.kw + kj] as f64 * xv as f64;
                                    }
                                }
                            }
                        }
                        let at = ((n * c.c_out + co) * c.oh + oy) * c.ow + ox;
                        acc += epi.residual.map_or(0.0, |r| r[at] as f64);
                        y[at] = epi.activation.apply(acc as f32);
                    }
                }
            }
        }
        y
    }

    fn pack(c: &Conv2d, w: &[f32]) -> Vec<PackedA> {
        let (mg, k) = (c.rows_per_group(), c.depth_per_group());
        (0..c.group).map(|g| PackedA::pack(MatRef::row_major(&w[g * mg * k..][..mg * k], mg, k))).collect()
    }

    /// `n` deterministic values in [-1, 1).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ seed) % 97) as f32 / 48.0 - 1.0).collect()
    }


    fn check(c: &Conv2d, batch: usize, bias: bool, residual: bool, activation: Activation, seed: u32) -> Result<(), TestCaseError> {
        let w = values(c.c_out * c.depth_per_group(), seed);
        let x = values(batch * c.c_in * c.h * c.w, seed ^ 7);
        let b = values(c.c_out, seed ^ 9);
        let r = values(batch * c.c_out * c.oh * c.ow, seed ^ 11);
        let epi = ConvEpilogue { bias: bias.then_some(&b[..]), residual: residual.then_some(&r[..]), activation };
        let want = naive(c, &w, &epi, &x, batch);
        let packed = pack(c, &w);
        // Pools local to the call, so their workers are joined when it ends (Miri checks).
        for pool in [ThreadPool::new(1), ThreadPool::new(2)] {
            let mut y = vec![f32::NAN; want.len()];
            conv2d(c, &packed, epi, &x, &mut y, &pool).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                let tol = 1e-5 * (c.depth_per_group() as f32 + 2.0);
                prop_assert!((g - e).abs() <= tol * (1.0 + e.abs()), "at {}: {} vs {} ({} threads)", i, g, e, pool.threads());
            }
        }
        Ok(())
    }

    pub(crate) fn activation() -> impl Strategy<Value = Activation> {
        prop_oneof![Just(Activation::Identity), Just(Activation::Relu), Just(Activation::Clip { min: 0.0, max: 0.5 }), Just(Activation::Sigmoid)]
    }

    proptest! {
        // Miri runs a few cases: enough to cover the threaded units' raw views.
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 64 }))]
        #[test]
        fn matches_the_definition(cg in 1usize..5, mg in 1usize..6, group in 1usize..4, h in 1usize..10, w in 1usize..12,
                                  kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..3,
                                  dh in 1usize..3, dw in 1usize..3, ph in 0usize..3, pw in 0usize..3,
                                  batch in 1usize..4, bias in any::<bool>(), residual in any::<bool>(),
                                  activation in activation(), seed in 0u32..1000) {
            let (eh, ew) = ((kh - 1) * dh + 1, (kw - 1) * dw + 1);
            prop_assume!(h + 2 * ph >= eh && w + 2 * pw >= ew);
            let (oh, ow) = ((h + 2 * ph - eh) / sh + 1, (w + 2 * pw - ew) / sw + 1);
            let c = Conv2d { c_in: cg * group, h, w, c_out: mg * group, oh, ow, kh, kw, stride: (sh, sw), dilation: (dh, dw), pad: (ph, pw), group };
            check(&c, batch, bias, residual, activation, seed)?;
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "millions of multiply-adds: too slow under Miri; the property test covers the same paths on small shapes")]
    fn blocked_pixels_and_parallel_units() {
        // Several pixel blocks per group (a 3×3 conv over 40×40 with K = 9·20),
        // a pointwise conv with several blocks, a large batch, and a deep
        // conv over few pixels.
        let conv = |c_in, h, w, c_out, k: usize, pad| Conv2d {
            c_in, h, w, c_out, oh: h + 2 * pad - k + 1, ow: w + 2 * pad - k + 1, kh: k, kw: k,
            stride: (1, 1), dilation: (1, 1), pad: (pad, pad), group: 1,
        };
        check(&conv(20, 40, 40, 33, 3, 1), 1, true, true, Activation::Relu, 1).unwrap();
        check(&conv(8, 60, 50, 17, 1, 0), 2, true, false, Activation::Identity, 2).unwrap();
        check(&conv(3, 5, 5, 4, 3, 1), 64, false, true, Activation::Relu, 3).unwrap();
        // Few pixels, deep K: one unit whose im2col is split over the threads.
        check(&conv(64, 15, 15, 40, 3, 1), 1, true, false, Activation::Identity, 6).unwrap();
        // 1×1 with padding only at the end is not pointwise: the output is larger.
        let end_padded = Conv2d { c_in: 3, h: 2, w: 2, c_out: 2, oh: 3, ow: 3, kh: 1, kw: 1, stride: (1, 1), dilation: (1, 1), pad: (0, 0), group: 1 };
        assert!(!end_padded.is_pointwise());
        check(&end_padded, 2, true, false, Activation::Identity, 4).unwrap();
        assert!(pixel_block(576, 3136, false) < 3136);
    }

    #[test]
    fn bad_calls_are_errors() {
        // A batch of 8 on two threads: parallel units writing through raw views (run under Miri too).
        let small = Conv2d { c_in: 2, h: 3, w: 4, c_out: 3, oh: 3, ow: 4, kh: 3, kw: 3, stride: (1, 1), dilation: (1, 1), pad: (1, 1), group: 1 };
        check(&small, 8, true, true, Activation::Relu, 5).unwrap();
        let c = Conv2d { c_in: 2, h: 3, w: 3, c_out: 2, oh: 3, ow: 3, kh: 3, kw: 3, stride: (1, 1), dilation: (1, 1), pad: (1, 1), group: 1 };
        let packed = pack(&c, &values(2 * 18, 1));
        let pool = ThreadPool::new(1);
        let mut y = vec![0.0; 18];
        let none = ConvEpilogue::default();
        assert!(conv2d(&c, &packed, none, &[0.0; 17], &mut y, &pool).is_err());
        assert!(conv2d(&c, &packed, none, &[0.0; 18], &mut y[..17], &pool).is_err());
        assert!(conv2d(&c, &packed[..0], none, &[0.0; 18], &mut y, &pool).is_err());
        assert!(conv2d(&c, &packed, ConvEpilogue { bias: Some(&[0.0; 3]), ..none }, &[0.0; 18], &mut y, &pool).is_err());
        assert!(conv2d(&c, &packed, ConvEpilogue { residual: Some(&[0.0; 3]), ..none }, &[0.0; 18], &mut y, &pool).is_err());
        assert!(conv2d(&Conv2d { group: 0, ..c.clone() }, &packed, none, &[0.0; 18], &mut y, &pool).is_err());
        assert!(conv2d(&c, &packed, none, &[0.0; 18], &mut y, &pool).is_ok());
    }
}
