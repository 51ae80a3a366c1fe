//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray 2016): each 2×2 output tile costs 16 multiply-adds per
//! input–output channel pair instead of 36, so the GEMM work of the 3×3
//! layers that dominate ResNets drops 2.25×.
//!
//! The input is cut into overlapping 4×4 patches (one per output tile,
//! zeros where a patch reaches into the padding), transformed to `Bᵀ·d·B`,
//! and the 16 transformed positions ξ become 16 independent GEMMs
//! `M[ξ] = U[ξ] · V[ξ]` with `U[ξ]` the `[C_out, C_in]` matrix of transformed
//! weights `G·g·Gᵀ`, packed once ([`WinogradWeights`]). The output
//! transform `Aᵀ·m·A` gives the 2×2 tile, to which the epilogue (bias,
//! residual, activation) is applied as it is stored.
//!
//! Tiles of the whole batch are numbered sample by sample, row by row, and
//! processed in blocks sized so the block's transformed input and GEMM
//! results stay in L2; blocks run in parallel when there are enough of them
//! (large batches, large images), otherwise each block's GEMMs are split
//! over the pool. The transforms are plain loops over tile rows, compiled
//! once per instruction set so that LLVM vectorises them.
//!
//! F(2×2, 3×3) only adds and subtracts in its data transforms and its weight
//! transform multiplies by ½, so its rounding error stays within a few ulp
//! of the direct sum's (larger tiles, F(4×4, 3×3), trade accuracy for speed;
//! d2nnc keeps ONNX Runtime's tolerances without re-checking every model).

use super::conv::{Conv2d, ConvEpilogue};
use super::{expect_len, KernelError};
use crate::gemm::simd::{load_at, store_prefix, Portable, Simd};
use crate::gemm::{sgemm, sgemm_par, Epilogue, Isa, MatMut, MatRef, PackedA};
use crate::pool::ThreadPool;
use std::cell::RefCell;
use std::ops::Range;

/// Transformed positions per tile (a 4×4 patch).
const POSITIONS: usize = 16;

/// Floats of a block's transformed input (`16 · C_in · tiles`) or GEMM
/// result: 512 KiB each, so both sit in L2 while the 16 GEMMs sweep them.
const BLOCK_FLOATS: usize = 128 * 1024;

/// Whether [`winograd_conv3x3`] can compute this convolution: a 3×3 kernel,
/// stride 1, dilation 1, one group, padding of at most 2 on each side (any
/// more and whole tiles would read nothing but zeros).
pub fn suits(c: &Conv2d) -> bool {
    (c.kh, c.kw) == (3, 3) && c.stride == (1, 1) && c.dilation == (1, 1) && c.group == 1 && c.pad.0 <= 2 && c.pad.1 <= 2
}

/// The 16 matrices `U[ξ] = (G·g·Gᵀ)[ξ]` of a 3×3 weight, each `[C_out, C_in]`
/// and packed as a GEMM left operand.
#[derive(Clone)]
pub struct WinogradWeights {
    c_out: usize,
    c_in: usize,
    positions: Vec<PackedA>,
}

impl WinogradWeights {
    /// Transforms and packs an ONNX weight `[C_out, C_in, 3, 3]` (row-major).
    pub fn new(weight: &[f32], c_out: usize, c_in: usize) -> Result<Self, KernelError> {
        expect_len("weight", weight.len(), c_out * c_in * 9)?;
        let mut u = vec![0.0f32; POSITIONS * c_out * c_in];
        for (pair, g) in weight.chunks_exact(9).enumerate() {
            // G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]; f64 so the
            // halves and sums round once.
            let rows = |col: usize| {
                let (a, b, c) = (g[col] as f64, g[3 + col] as f64, g[6 + col] as f64);
                [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c]
            };
            let gt = [rows(0), rows(1), rows(2)]; // gt[col][row of G·g]
            for i in 0..4 {
                let (a, b, c) = (gt[0][i], gt[1][i], gt[2][i]);
                let row = [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c];
                for (j, v) in row.into_iter().enumerate() {
                    u[(i * 4 + j) * c_out * c_in + pair] = v as f32;
                }
            }
        }
        let positions = u.chunks_exact(c_out * c_in).map(|m| PackedA::pack(MatRef::row_major(m, c_out, c_in))).collect();
        Ok(WinogradWeights { c_out, c_in, positions })
    }

    /// Bytes of the packed matrices.
    pub fn bytes(&self) -> usize {
        self.positions.iter().map(PackedA::bytes).sum()
    }

    /// `(C_out, C_in)`.
    pub fn channels(&self) -> (usize, usize) {
        (self.c_out, self.c_in)
    }
}

impl std::fmt::Debug for WinogradWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WinogradWeights {{ c_out: {}, c_in: {}, bytes: {} }}", self.c_out, self.c_in, self.bytes())
    }
}

/// The tiling of one call.
struct Tiling<'a> {
    c: &'a Conv2d,
    tiles_x: usize,
    per_sample: usize,
}

/// A run of tiles in one tile row of one sample: tiles `x0..x1` of row `ty`
/// of sample `n`, stored from column `at` of the block's matrices.
struct Segment {
    n: usize,
    ty: usize,
    x0: usize,
    x1: usize,
    at: usize,
}

impl Tiling<'_> {
    /// The tile rows that tiles `tiles` cross.
    fn segments(&self, tiles: Range<usize>) -> impl Iterator<Item = Segment> + '_ {
        let mut t = tiles.start;
        std::iter::from_fn(move || {
            (t < tiles.end).then(|| {
                let (n, within) = (t / self.per_sample, t % self.per_sample);
                let (ty, x0) = (within / self.tiles_x, within % self.tiles_x);
                let x1 = self.tiles_x.min(x0 + tiles.end - t);
                let seg = Segment { n, ty, x0, x1, at: t - tiles.start };
                t += x1 - x0;
                seg
            })
        })
    }
}

/// Each thread's block matrices and staging rows (grown to the largest
/// block; no allocation in steady state).
#[derive(Default)]
struct Scratch {
    /// Transformed input: 16 `[C_in, ld]` matrices (`ld` ≥ the block's
    /// tiles), [`position_stride`] apart.
    input: Vec<f32>,
    /// GEMM results: 16 `[C_out, ld]` matrices.
    product: Vec<f32>,
    /// Four staged input rows.
    stage: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `y = act(conv(x, weights) + bias + residual)` for a batch of NCHW samples
/// of a convolution that [`suits`] Winograd (the batch is `x.len()` over one
/// sample's size). Same contract as [`super::conv::conv2d`].
pub fn winograd_conv3x3(c: &Conv2d, weights: &WinogradWeights, epi: ConvEpilogue<'_>, x: &[f32], y: &mut [f32], pool: &ThreadPool) -> Result<(), KernelError> {
    if !suits(c) {
        return Err(KernelError::Geometry("Winograd F(2x2, 3x3) needs a 3x3 kernel, stride 1, dilation 1, one group and padding of at most 2".into()));
    }
    if weights.channels() != (c.c_out, c.c_in) {
        return Err(KernelError::Geometry(format!("the weights are for {:?} channels, the convolution has {:?}", weights.channels(), (c.c_out, c.c_in))));
    }
    let batch = c.check_call(&epi, x, y)?;
    if batch == 0 || c.c_out * c.oh * c.ow == 0 {
        return Ok(());
    }
    let tiling = Tiling { c, tiles_x: c.ow.div_ceil(2), per_sample: c.oh.div_ceil(2) * c.ow.div_ceil(2) };
    let total = batch * tiling.per_sample;
    let threads = pool.threads();
    let mut block = (BLOCK_FLOATS / (POSITIONS * c.c_in.max(c.c_out).max(1))).clamp(64, 512);
    // Enough blocks for every thread to take two: shrink them, but not below
    // 16 tiles, which is where the GEMMs stop filling their vectors.
    if threads > 1 && total.div_ceil(block) < 2 * threads && total >= 32 * threads {
        block = total.div_ceil(2 * threads);
    }
    let count = total.div_ceil(block);
    let out = SharedOut(y.as_mut_ptr(), y.len());
    let run = |b: usize, split: Option<&ThreadPool>| {
        let tiles = b * block..((b + 1) * block).min(total);
        SCRATCH.with(|s| run_block(&tiling, weights, &epi, x, &out, tiles, split, &mut s.borrow_mut()));
    };
    if threads > 1 && count >= 2 * threads {
        pool.parallel_for(count, &|b| run(b, None));
    } else {
        (0..count).for_each(|b| run(b, Some(pool)));
    }
    Ok(())
}

/// The output of one call, shared by the blocks that write disjoint pixels of it.
struct SharedOut(*mut f32, usize);

// SAFETY: blocks write disjoint elements through it (see `store_pixels`).
unsafe impl Sync for SharedOut {}

/// Floats from one transformed position's `[channels, ld]` matrix to the
/// next: two cache lines more than the matrix, so that the 16 positions of
/// a tile, read or written together by the transforms, do not all fall in
/// the same L1 sets (64 channels × 144 floats is exactly 9 pages apart).
fn position_stride(channels: usize, ld: usize) -> usize {
    channels * ld + 32
}

/// Transforms, multiplies and stores one block of tiles.
#[allow(clippy::too_many_arguments)]
fn run_block(t: &Tiling<'_>, w: &WinogradWeights, epi: &ConvEpilogue<'_>, x: &[f32], out: &SharedOut, tiles: Range<usize>, split: Option<&ThreadPool>, s: &mut Scratch) {
    let c = t.c;
    let nt = tiles.len();
    // Rows of the block's matrices a whole number of cache lines and one
    // more apart, so a GEMM walking down a column does not keep hitting the
    // same L1 sets (a power-of-two stride of 8 KiB did, at ~70 GFLOP/s).
    let ld = nt.next_multiple_of(16) + 16;
    s.input.resize(POSITIONS * position_stride(c.c_in, ld), 0.0);
    s.product.resize(POSITIONS * position_stride(c.c_out, ld), 0.0);
    let isa = Isa::detect();
    input_on(isa, t, x, tiles.clone(), ld, &mut s.input, &mut s.stage);
    for (xi, u) in w.positions.iter().enumerate() {
        let v = MatRef::new(&s.input[xi * position_stride(c.c_in, ld)..], c.c_in, nt, ld, 1);
        let m = MatMut::new(&mut s.product[xi * position_stride(c.c_out, ld)..], c.c_out, nt, ld, 1);
        match split {
            Some(pool) => sgemm_par(pool, u, v, m, &Epilogue::default()),
            None => sgemm(u, v, m, &Epilogue::default()),
        }
    }
    output_on(isa, t, epi, &s.product, tiles.clone(), ld, out);

}

/// [`transform_input`] on `isa`'s vectors.
fn input_on(isa: Isa, t: &Tiling<'_>, x: &[f32], tiles: Range<usize>, ld: usize, v: &mut [f32], stage: &mut Vec<f32>) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` only returns an ISA this CPU supports.
        Isa::Avx512 => unsafe { x86::input_avx512(t, x, tiles, ld, v, stage) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::input_avx2(t, x, tiles, ld, v, stage) },
        // SAFETY: the portable vectors run on any CPU.
        _ => unsafe { transform_input::<Portable>(t, x, tiles, ld, v, stage) },
    }
}

/// [`transform_output`] on `isa`'s vectors.
fn output_on(isa: Isa, t: &Tiling<'_>, epi: &ConvEpilogue<'_>, m: &[f32], tiles: Range<usize>, ld: usize, out: &SharedOut) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` only returns an ISA this CPU supports.
        Isa::Avx512 => unsafe { x86::output_avx512(t, epi, m, tiles, ld, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::output_avx2(t, epi, m, tiles, ld, out) },
        // SAFETY: the portable vectors run on any CPU.
        _ => unsafe { transform_output::<Portable>(t, epi, m, tiles, ld, out) },
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{transform_input, transform_output, ConvEpilogue, Range, SharedOut, Tiling};
    use crate::gemm::simd::{Avx2, Avx512};

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_avx512(t: &Tiling<'_>, x: &[f32], tiles: Range<usize>, ld: usize, v: &mut [f32], stage: &mut Vec<f32>) {
        // SAFETY: AVX-512F is available (this function's contract).
        unsafe { transform_input::<Avx512>(t, x, tiles, ld, v, stage) }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn input_avx2(t: &Tiling<'_>, x: &[f32], tiles: Range<usize>, ld: usize, v: &mut [f32], stage: &mut Vec<f32>) {
        // SAFETY: AVX2 and FMA are available (this function's contract).
        unsafe { transform_input::<Avx2>(t, x, tiles, ld, v, stage) }
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output_avx512(t: &Tiling<'_>, epi: &ConvEpilogue<'_>, m: &[f32], tiles: Range<usize>, ld: usize, out: &SharedOut) {
        // SAFETY: AVX-512F is available (this function's contract).
        unsafe { transform_output::<Avx512>(t, epi, m, tiles, ld, out) }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn output_avx2(t: &Tiling<'_>, epi: &ConvEpilogue<'_>, m: &[f32], tiles: Range<usize>, ld: usize, out: &SharedOut) {
        // SAFETY: AVX2 and FMA are available (this function's contract).
        unsafe { transform_output::<Avx2>(t, epi, m, tiles, ld, out) }
    }
}

/// `dst.copy_from_slice(src)` in vectors: rows of a few dozen floats, where
/// a call to `memcpy` costs as much as the copy.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn copy<S: Simd>(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "copy between unequal rows");
    for at in (0..src.len()).step_by(S::LANES) {
        let n = (src.len() - at).min(S::LANES);
        // SAFETY: the CPU supports `S` (this function's contract).
        unsafe { store_prefix::<S>(&mut dst[at..][..n], load_at::<S>(&src[..at + n], at)) };
    }
}

/// `V = Bᵀ·d·B` for every channel and tile of the block, into
/// `v[ξ·position_stride(C_in) + ci·ld + tile]`, with
/// `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`;
/// vectors run along the tiles of a segment.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn transform_input<S: Simd>(t: &Tiling<'_>, x: &[f32], tiles: Range<usize>, ld: usize, v: &mut [f32], stage: &mut Vec<f32>) {
    let c = t.c;
    for seg in t.segments(tiles) {
        let len = seg.x1 - seg.x0;
        // The four input rows under the segment's patches, zeros in the
        // padding: patch column k of tile x0 + j is `rows[r][2j + k]`.
        let span = 2 * len + 2;
        let first = (2 * seg.x0) as isize - c.pad.1 as isize;
        // The part of a staged row that lies inside the input row: [lo, hi).
        let lo = (-first).clamp(0, span as isize) as usize;
        let hi = (c.w as isize - first).clamp(lo as isize, span as isize) as usize;
        // Rows above or below the input, and the columns outside it, are the
        // same zeros for every channel: written once per segment.
        let inside = |r: usize| {
            let iy = (2 * seg.ty + r) as isize - c.pad.0 as isize;
            (iy >= 0 && (iy as usize) < c.h).then_some(iy as usize)
        };
        stage.clear();
        stage.resize(4 * span, 0.0);
        for ci in 0..c.c_in {
            let plane = &x[(seg.n * c.c_in + ci) * c.h * c.w..][..c.h * c.w];
            for (r, staged) in stage.chunks_exact_mut(span).enumerate() {
                if let Some(iy) = inside(r) {
                    let src = &plane[iy * c.w + (first + lo as isize) as usize..][..hi - lo];
                    // SAFETY: the CPU supports `S` (this function's contract).
                    unsafe { copy::<S>(src, &mut staged[lo..hi]) };
                }
            }
            for j in (0..len).step_by(S::LANES) {
                let n = (len - j).min(S::LANES);
                // SAFETY: the CPU supports `S` (this function's contract).
                unsafe {
                    // Horizontal: h[r][k] over the tiles j..j + n.
                    let h = [
                        horizontal::<S>(&stage[..span], j),
                        horizontal::<S>(&stage[span..2 * span], j),
                        horizontal::<S>(&stage[2 * span..3 * span], j),
                        horizontal::<S>(&stage[3 * span..], j),
                    ];
                    // Vertical, one column k at a time.
                    for k in 0..4 {
                        let out = [S::sub(h[0][k], h[2][k]), S::add(h[1][k], h[2][k]), S::sub(h[2][k], h[1][k]), S::sub(h[1][k], h[3][k])];
                        for (i, value) in out.into_iter().enumerate() {
                            store_prefix::<S>(&mut v[(i * 4 + k) * position_stride(c.c_in, ld) + ci * ld + seg.at + j..][..n], value);
                        }
                    }
                }
            }
        }
    }
}

/// `Bᵀ·d` along one staged input row for tiles `j..j + S::LANES`: patch
/// columns `d0 − d2, d1 + d2, d2 − d1, d1 − d3`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn horizontal<S: Simd>(staged: &[f32], j: usize) -> [S::V; 4] {
    // SAFETY: the CPU supports `S` (this function's contract).
    unsafe {
        let (d0, d1) = S::split_even_odd(load_at::<S>(staged, 2 * j), load_at::<S>(staged, 2 * j + S::LANES));
        let (d2, d3) = S::split_even_odd(load_at::<S>(staged, 2 * j + 2), load_at::<S>(staged, 2 * j + 2 + S::LANES));
        [S::sub(d0, d2), S::add(d1, d2), S::sub(d2, d1), S::sub(d1, d3)]
    }
}

/// `m·A` along patch row i for tiles `j..j + S::LANES` of a segment whose
/// positions (i, 0..4) start at `m[row..]`, `stride` apart:
/// `(m0 + m1 + m2, m1 − m2 − m3)`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn row_sums<S: Simd>(m: &[f32], row: usize, stride: usize, len: usize, j: usize) -> (S::V, S::V) {
    // SAFETY: the CPU supports `S` (this function's contract).
    unsafe {
        let m0 = load_at::<S>(&m[row..][..len], j);
        let m1 = load_at::<S>(&m[row + stride..][..len], j);
        let m2 = load_at::<S>(&m[row + 2 * stride..][..len], j);
        let m3 = load_at::<S>(&m[row + 3 * stride..][..len], j);
        (S::add(S::add(m0, m1), m2), S::sub(S::sub(m1, m2), m3))
    }
}

/// `Y = Aᵀ·m·A` for every output channel and tile of the block, with
/// `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`, plus the epilogue; stores the
/// pixels inside the output. Vectors run along the tiles of a segment.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn transform_output<S: Simd>(t: &Tiling<'_>, epi: &ConvEpilogue<'_>, m: &[f32], tiles: Range<usize>, ld: usize, out: &SharedOut) {
    let c = t.c;
    for seg in t.segments(tiles) {
        let len = seg.x1 - seg.x0;
        let x0 = 2 * seg.x0;
        let width = (2 * seg.x1).min(c.ow) - x0;
        for co in 0..c.c_out {
            // SAFETY: the CPU supports `S` (this function's contract).
            let bias = unsafe { S::splat(epi.bias.map_or(0.0, |b| b[co])) };
            for j in (0..len).step_by(S::LANES) {
                // SAFETY: as above.
                unsafe {
                    // Position (i, k) of channel co is row (4i + k)·C_out + co.
                    let stride = position_stride(c.c_out, ld);
                    let row = |i: usize| 4 * i * stride + co * ld + seg.at;
                    let (s0, d0) = row_sums::<S>(m, row(0), stride, len, j);
                    let (s1, d1) = row_sums::<S>(m, row(1), stride, len, j);
                    let (s2, d2) = row_sums::<S>(m, row(2), stride, len, j);
                    let (s3, d3) = row_sums::<S>(m, row(3), stride, len, j);
                    let rows = [
                        (S::add(S::add(s0, s1), s2), S::add(S::add(d0, d1), d2)),
                        (S::sub(S::sub(s1, s2), s3), S::sub(S::sub(d1, d2), d3)),
                    ];
                    for (r, (even, odd)) in rows.into_iter().enumerate() {
                        let oy = 2 * seg.ty + r;
                        if oy >= c.oh {
                            continue;
                        }
                        let row = ((seg.n * c.c_out + co) * c.oh + oy) * c.ow + x0;
                        let (low, high) = S::merge_even_odd(even, odd);
                        for (half, value) in [low, high].into_iter().enumerate() {
                            let px = 2 * j + half * S::LANES;
                            if px < width {
                                store_pixels::<S>(out, row + px, (width - px).min(S::LANES), value, bias, epi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Stores `act(v + bias + residual)` into the `count ≤ S::LANES` output
/// elements from `offset`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn store_pixels<S: Simd>(out: &SharedOut, offset: usize, count: usize, v: S::V, bias: S::V, epi: &ConvEpilogue<'_>) {
    assert!(offset + count <= out.1, "a tile row past the output");
    // SAFETY: the CPU supports `S` (contract); the residual has the output's
    // length (checked by the caller), so `offset..offset + count` is inside it.
    let value = unsafe {
        let mut value = S::add(v, bias);
        if let Some(res) = epi.residual {
            value = S::add(value, load_at::<S>(&res[..offset + count], offset));
        }
        epi.activation.apply_vec::<S>(value)
    };
    // SAFETY: in bounds (asserted); the pixels of a tile belong to that tile
    // alone, every tile is in exactly one block, and each block is run by
    // one thread, so no other reference to these elements exists while the
    // slice lives (the output is exclusively borrowed for the whole call).
    let dst = unsafe { std::slice::from_raw_parts_mut(out.0.add(offset), count) };
    // SAFETY: the CPU supports `S`.
    unsafe { store_prefix::<S>(dst, value) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Activation;
    use crate::kernels::conv::tests::{activation, naive, values};
    use proptest::prelude::*;

    fn geometry(c_in: usize, c_out: usize, h: usize, w: usize, pad: (usize, usize), end: (usize, usize)) -> Conv2d {
        let (oh, ow) = (h + pad.0 + end.0 - 2, w + pad.1 + end.1 - 2);
        Conv2d { c_in, h, w, c_out, oh, ow, kh: 3, kw: 3, stride: (1, 1), dilation: (1, 1), pad, group: 1 }
    }

    #[allow(clippy::too_many_arguments)]
    fn check(c: &Conv2d, batch: usize, bias: bool, residual: bool, activation: Activation, seed: u32, pools: &[usize]) -> Result<(), TestCaseError> {
        let w = values(c.c_out * c.c_in * 9, seed);
        let x = values(batch * c.c_in * c.h * c.w, seed ^ 7);
        let b = values(c.c_out, seed ^ 9);
        let r = values(batch * c.c_out * c.oh * c.ow, seed ^ 11);
        let epi = ConvEpilogue { bias: bias.then_some(&b[..]), residual: residual.then_some(&r[..]), activation };
        let want = naive(c, &w, &epi, &x, batch);
        let weights = WinogradWeights::new(&w, c.c_out, c.c_in).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for &threads in pools {
            let pool = ThreadPool::new(threads);
            let mut y = vec![f32::NAN; want.len()];
            winograd_conv3x3(c, &weights, epi, &x, &mut y, &pool).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Each output sums 9·C_in products of magnitude ≤ 1: the
            // transforms add a few roundings of partial sums that size.
            let tol = 1e-5 * (9.0 * c.c_in as f32 + 2.0);
            for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                prop_assert!((g - e).abs() <= tol * (1.0 + e.abs()), "at {}: {} vs {} ({} threads)", i, g, e, threads);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 64 }))]
        #[test]
        fn matches_the_definition(c_in in 1usize..6, c_out in 1usize..7, h in 1usize..11, w in 1usize..12,
                                  pad in (0usize..3, 0usize..3), end in (0usize..3, 0usize..3), batch in 1usize..4,
                                  bias in any::<bool>(), residual in any::<bool>(), activation in activation(), seed in 0u32..1000) {
            prop_assume!(h + pad.0 + end.0 >= 3 && w + pad.1 + end.1 >= 3);
            check(&geometry(c_in, c_out, h, w, pad, end), batch, bias, residual, activation, seed, &[1, 2])?;
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "millions of multiply-adds: too slow under Miri; the property test covers the same paths on small shapes")]
    fn blocked_and_parallel_tiles() {
        // Many blocks run in parallel (a batch of 6 over 30×30), blocks split
        // over tile rows and samples, odd output sizes, and deep channels
        // with few tiles (each block's GEMMs split over the pool).
        check(&geometry(24, 40, 30, 30, (1, 1), (1, 1)), 6, true, true, Activation::Relu, 1, &[1, 2, 3]).unwrap();
        check(&geometry(9, 5, 13, 7, (1, 0), (0, 2)), 5, true, false, Activation::Identity, 2, &[1, 2]).unwrap();
        check(&geometry(600, 33, 5, 5, (1, 1), (1, 1)), 1, false, true, Activation::Relu, 3, &[1, 2]).unwrap();
    }

    #[test]
    fn a_nan_input_stays_within_the_tiles_whose_patches_hold_it() {
        // 2 channels, 8×8, pad 1: tiles are 2×2 output blocks, patch of tile
        // (ty, tx) = input rows 2ty-1..2ty+3, columns 2tx-1..2tx+3.
        let c = geometry(2, 3, 8, 8, (1, 1), (1, 1));
        let w = values(3 * 2 * 9, 1);
        let mut x = values(2 * 64, 2);
        let (ny, nx) = (4usize, 5usize);
        x[64 + ny * 8 + nx] = f32::NAN;
        let weights = WinogradWeights::new(&w, 3, 2).unwrap();
        let mut y = vec![0.0; 3 * 64];
        winograd_conv3x3(&c, &weights, ConvEpilogue::default(), &x, &mut y, &ThreadPool::new(1)).unwrap();
        let in_patch = |t: usize, n: usize| (2 * t) as isize - 1 <= n as isize && n as isize <= (2 * t + 2) as isize;
        for co in 0..3 {
            for oy in 0..8 {
                for ox in 0..8 {
                    let v = y[(co * 8 + oy) * 8 + ox];
                    let in_window = oy.abs_diff(ny) <= 1 && ox.abs_diff(nx) <= 1;
                    let tile_touched = in_patch(oy / 2, ny) && in_patch(ox / 2, nx);
                    assert!(!in_window || v.is_nan(), "({co}, {oy}, {ox}) reads the NaN");
                    assert!(tile_touched || v.is_finite(), "({co}, {oy}, {ox}): NaN beyond the tiles holding it");
                }
            }
        }
    }

    #[test]
    fn bad_calls_are_errors() {
        let c = geometry(2, 3, 4, 4, (1, 1), (1, 1));
        let weights = WinogradWeights::new(&values(54, 1), 3, 2).unwrap();
        let pool = ThreadPool::new(1);
        let none = ConvEpilogue::default();
        let mut y = vec![0.0; 48];
        assert!(WinogradWeights::new(&values(53, 1), 3, 2).is_err());
        assert!(winograd_conv3x3(&c, &weights, none, &[0.0; 31], &mut y, &pool).is_err());
        assert!(winograd_conv3x3(&c, &weights, none, &[0.0; 32], &mut y[..47], &pool).is_err());
        assert!(winograd_conv3x3(&Conv2d { stride: (2, 2), ..c.clone() }, &weights, none, &[0.0; 32], &mut y, &pool).is_err());
        assert!(winograd_conv3x3(&Conv2d { c_out: 4, ..c.clone() }, &weights, none, &[0.0; 32], &mut y, &pool).is_err());
        assert!(winograd_conv3x3(&c, &weights, ConvEpilogue { bias: Some(&[0.0; 2]), ..none }, &[0.0; 32], &mut y, &pool).is_err());
        assert!(winograd_conv3x3(&c, &weights, none, &[0.0; 32], &mut y, &pool).is_ok());
    }
}
