//! The blocked loops around the micro-kernel (BLIS's five loops), the GEMV
//! path and the scratch buffer.
//!
//! Everything here works on the *internal* problem `Ci[m, n] = Ai[m, k] ·
//! Bi[k, n]`, where `Ai` is the broadcast operand (panels over its rows) and
//! `Bi` the vector operand (panels over its columns). The public entry maps
//! `C = A·B` onto it either directly or transposed (`Cᵀ = Bᵀ·Aᵀ`).

use std::ops::Range;

use super::epilogue::RawEpi;
use super::kernel::{Arch, PANEL};
use super::pack::{pack_block, Panels, ALIGN_F32};

/// Cache-blocking parameters (in elements).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blocking {
    /// Reduction block: a `KC × 32` panel of `Bi` is 32 KiB at 256.
    pub kc: usize,
    /// Rows of `Ai` per block (multiple of 32), kept in L2 across a column block.
    pub mc: usize,
    /// Columns of `Bi` per block (multiple of 32).
    pub nc: usize,
}

/// Reusable scratch for the operand packed on the fly, a transposed or
/// strided `C` block, and the GEMV's copy of `x`.
///
/// It only grows: after the first call with the largest shape, calls do not
/// allocate. One per thread: parallel calls use each thread's own.
#[derive(Default)]
pub struct GemmScratch {
    buf: Vec<f32>,
}

impl GemmScratch {
    pub const fn new() -> Self {
        GemmScratch { buf: Vec::new() }
    }

    /// Current size in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.buf.len() * 4
    }

    /// Splits the buffer into `N` 64-byte-aligned regions of the given sizes,
    /// growing it first if needed.
    fn regions<const N: usize>(&mut self, sizes: [usize; N]) -> [&mut [f32]; N] {
        let round = |s: usize| s.div_ceil(ALIGN_F32) * ALIGN_F32;
        let total: usize = sizes.iter().map(|&s| round(s)).sum::<usize>() + ALIGN_F32;
        if self.buf.len() < total {
            self.buf = vec![0.0; total];
        }
        let off = self.buf.as_ptr().align_offset(64).min(ALIGN_F32);
        let mut rest = &mut self.buf[off..];
        sizes.map(|s| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(round(s));
            rest = tail;
            &mut head[..s]
        })
    }
}

/// One operand of the internal problem. For `Ai` the panel dimension is its
/// rows, for `Bi` its columns; element `(p, k)` of a plain operand is
/// `data[p·sp + k·sk]`.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    Plain { data: &'a [f32], sp: usize, sk: usize },
    Packed(&'a Panels),
}

impl Src<'_> {
    fn is_plain(&self) -> bool {
        matches!(self, Src::Plain { .. })
    }

    /// The `plen × kc` block starting at `(p0, k0)` (`p0` a multiple of 32)
    /// as `(pointer to its first panel, floats between panels)`, packing it
    /// into `buf` if the operand is plain.
    fn block(&self, p0: usize, plen: usize, k0: usize, kc: usize, buf: &mut [f32]) -> (*const f32, usize) {
        debug_assert_eq!(p0 % PANEL, 0);
        match *self {
            Src::Plain { data, sp, sk } => {
                pack_block(&data[p0 * sp + k0 * sk..], sp, sk, plen, kc, buf);
                (buf.as_ptr(), kc * PANEL)
            }
            Src::Packed(p) => {
                debug_assert!(p0 + plen <= p.plen.div_ceil(PANEL) * PANEL && k0 + kc <= p.k);
                let off = (p0 / PANEL) * p.panel_stride() + k0 * PANEL;
                (p.data.as_slice()[off..].as_ptr(), p.panel_stride())
            }
        }
    }
}

/// The internal problem. `c` is valid for `m × n` elements at strides
/// `(rs_c, cs_c)`; `epi` is the epilogue in this orientation and `epi_t`
/// the same epilogue transposed (used when finishing a block row by
/// column).
pub(crate) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ai: Src<'a>,
    pub bi: Src<'a>,
    pub c: *mut f32,
    pub rs_c: usize,
    pub cs_c: usize,
    pub epi: RawEpi,
    pub epi_t: RawEpi,
}

// SAFETY: a problem is shared by the tasks of one parallel product. They
// only read the operands and epilogue, and write C through the column ranges
// `gemm_cols`/`gemv` are given, which the caller keeps disjoint.
unsafe impl Sync for Problem<'_> {}

/// Row stride of the contiguous C block: an odd number of cache lines, so
/// that the rows of a tile do not all map to the same L1 sets (a 512-column
/// block, 2 KiB per row, ran 10% slower).
fn c_ld(nc: usize) -> usize {
    nc.next_multiple_of(2 * ALIGN_F32) + ALIGN_F32
}

/// Splits `len` into `ceil(len / max)` nearly equal parts; returns the part size.
fn balanced(len: usize, max: usize) -> usize {
    let parts = len.div_ceil(max).max(1);
    len.div_ceil(parts)
}

/// Computes columns `cols` of the internal problem (`cols.start` a multiple
/// of 32). Column ranges are independent — they write disjoint columns of
/// `C` and read disjoint columns of `Bi` — so a thread pool can hand each
/// worker its own range and its own scratch.
///
/// # Safety
/// `p` must describe valid memory as documented on [`Problem`], `k ≥ 1`,
/// and the CPU must support `arch`.
pub(crate) unsafe fn gemm_cols(arch: &Arch, p: &Problem, cols: Range<usize>, blk: Blocking, scratch: &mut GemmScratch) {
    let (m, k) = (p.m, p.k);
    debug_assert!(k >= 1 && cols.start.is_multiple_of(PANEL) && cols.end <= p.n);
    let direct = p.cs_c == 1;
    let kc_step = balanced(k, blk.kc);
    let mc = blk.mc.min(m.div_ceil(PANEL) * PANEL);
    // A non-unit-stride C goes through a contiguous m × nc block; keep it
    // around 1 MiB by narrowing the column block.
    let nc_max = if direct { blk.nc } else { ((1 << 18) / m.max(1) / PANEL * PANEL).clamp(PANEL, blk.nc) };
    let nc_max = balanced(cols.len(), nc_max).div_ceil(PANEL) * PANEL;
    let a_sz = if p.ai.is_plain() { mc * kc_step } else { 0 };
    // A plain Bi whose panel dimension has unit stride (row-major activation
    // `X[K, pixels]` in conv) is read in place: the kernel walks 32 columns
    // of it per `k` at the source's row stride. Only a ragged last panel is
    // packed (so that no vector load crosses the end of a row). Measured
    // 5-15% faster than packing for the conv shapes (M = 64..1024): packing
    // writes and re-reads as many bytes as the product reads, and with few
    // output channels each packed panel is used only a few times.
    let direct_b = matches!(p.bi, Src::Plain { sp: 1, .. }) && arch.b_in_place;
    let b_sz = if direct_b {
        PANEL * kc_step
    } else if p.bi.is_plain() {
        nc_max * kc_step
    } else {
        0
    };
    let c_sz = if direct { 0 } else { m * c_ld(nc_max) };
    let t_sz = if direct { 0 } else { m.max(nc_max) };
    let [abuf, bbuf, cbuf, tbuf] = scratch.regions([a_sz, b_sz, c_sz, t_sz]);
    let (mr, nr, lanes) = (arch.mr, arch.nr(), arch.lanes);
    let vec_epi = !p.epi.is_none() && p.epi.vector_ok();
    let scalar_epi = !p.epi.is_none() && !vec_epi;

    let mut jc = cols.start;
    while jc < cols.end {
        let nc = nc_max.min(cols.end - jc);
        // Where this column block of C is accumulated.
        let (cblk, rs_cblk) = if direct {
            // SAFETY: jc < n, so the offset stays inside C.
            (unsafe { p.c.add(jc) }, p.rs_c)
        } else {
            (cbuf.as_mut_ptr(), c_ld(nc))
        };
        let mut pc = 0;
        while pc < k {
            let kc = kc_step.min(k - pc);
            let (first, last) = (pc == 0, pc + kc == k);
            let (bptr, bps) = if direct_b { (std::ptr::null(), 0) } else { p.bi.block(jc, nc, pc, kc, bbuf) };
            let mut ic = 0;
            while ic < m {
                let mcur = mc.min(m - ic);
                let (aptr, aps) = p.ai.block(ic, mcur, pc, kc, abuf);
                let fuse = last && direct && vec_epi;
                for jp in 0..nc.div_ceil(PANEL) {
                    let in_panel = PANEL.min(nc - jp * PANEL);
                    let (panel, bks) = match p.bi {
                        Src::Plain { data, sk, .. } if direct_b && in_panel == PANEL => {
                            (data[jc + jp * PANEL + pc * sk..].as_ptr(), sk)
                        }
                        _ if direct_b => (p.bi.block(jc + jp * PANEL, in_panel, pc, kc, bbuf).0, PANEL),
                        // SAFETY: jp < panels of the block.
                        _ => (unsafe { bptr.add(jp * bps) }, PANEL),
                    };
                    let mut sub = 0;
                    while sub < in_panel {
                        let nn = nr.min(in_panel - sub);
                        let table = arch.kernels[nn.div_ceil(lanes) - 1];
                        // Column of the tile within the block.
                        let col = jp * PANEL + sub;
                        // SAFETY: sub < 32, inside the panel.
                        let b_sub = unsafe { panel.add(sub) };
                        for ip in 0..mcur.div_ceil(PANEL) {
                            let rows = PANEL.min(mcur - ip * PANEL);
                            let chunks = rows.div_ceil(mr);
                            let mut r = 0;
                            for ch in 0..chunks {
                                let mm = rows / chunks + usize::from(ch < rows % chunks);
                                let row = ic + ip * PANEL + r;
                                let e = fuse.then(|| p.epi.at(row, jc + col));
                                let e_ptr = e.as_ref().map_or(std::ptr::null(), |e| e as *const RawEpi);
                                // SAFETY: the A sub-panel (rows r..r+mm of
                                // panel ip) and the B sub-panel (columns
                                // sub..sub+nn of panel jp, packed or in
                                // place at row stride bks) cover kc rows of
                                // their operands; the C tile (row, col) .. (row+mm,
                                // col+nn) is inside this block of C; the
                                // epilogue is at the tile origin; the CPU
                                // supports `arch` (caller).
                                unsafe {
                                    table[mm - 1](
                                        kc,
                                        aptr.add(ip * aps + r),
                                        b_sub,
                                        bks,
                                        cblk.add(row * rs_cblk + col),
                                        rs_cblk,
                                        nn,
                                        !first,
                                        e_ptr,
                                    );
                                }
                                r += mm;
                            }
                        }
                        sub += nn;
                    }
                }
                if last && direct && scalar_epi {
                    // A residual with a non-unit column stride: finish the
                    // block right after it was computed, while it is in cache.
                    for i in ic..ic + mcur {
                        for j in 0..nc {
                            // SAFETY: (i, jc + j) is inside C and the epilogue.
                            unsafe {
                                let c = cblk.add(i * rs_cblk + j);
                                *c = p.epi.apply_scalar(*c, i, jc + j);
                            }
                        }
                    }
                }
                ic += mcur;
            }
            pc += kc;
        }
        if !direct {
            // SAFETY: cbuf holds the m × nc block; C and both epilogues are
            // valid for (i, jc + j) with i < m, j < nc; the CPU supports arch.
            unsafe { finish_block(arch, p, jc, nc, c_ld(nc), cbuf, tbuf) };
        }
        jc += nc;
    }
}

/// Moves a finished contiguous `m × nc` block (row stride `nc`) to `C`
/// (columns `jc..jc + nc`), applying the epilogue. Walks `C` along its
/// smaller stride: by columns of the block when `C`'s rows are contiguous in
/// memory (the transposed case), by rows otherwise.
///
/// # Safety
/// As at the call site in [`gemm_cols`].
unsafe fn finish_block(arch: &Arch, p: &Problem, jc: usize, nc: usize, ld: usize, blk: &[f32], tmp: &mut [f32]) {
    let m = p.m;
    // SAFETY: all indices below stay in the m × nc block / C / epilogues.
    unsafe {
        if p.rs_c < p.cs_c {
            let e_ok = p.epi_t.vector_ok();
            for j in 0..nc {
                let t = &mut tmp[..m];
                for (i, t) in t.iter_mut().enumerate() {
                    *t = blk[i * ld + j];
                }
                let e = p.epi_t.at(jc + j, 0);
                epi_contiguous(arch, t, &e, e_ok);
                let c = p.c.add((jc + j) * p.cs_c);
                for (i, &v) in t.iter().enumerate() {
                    *c.add(i * p.rs_c) = v;
                }
            }
        } else {
            let e_ok = p.epi.vector_ok();
            for i in 0..m {
                let t = &mut tmp[..nc];
                t.copy_from_slice(&blk[i * ld..i * ld + nc]);
                let e = p.epi.at(i, jc);
                epi_contiguous(arch, t, &e, e_ok);
                let c = p.c.add(i * p.rs_c + jc * p.cs_c);
                for (j, &v) in t.iter().enumerate() {
                    *c.add(j * p.cs_c) = v;
                }
            }
        }
    }
}

/// Applies `e` (origin at `t[0]`, one row) to a contiguous row.
///
/// # Safety
/// `e` valid for `1 × t.len()`; CPU supports `arch`.
unsafe fn epi_contiguous(arch: &Arch, t: &mut [f32], e: &RawEpi, vector_ok: bool) {
    if e.is_none() {
        return;
    }
    if vector_ok {
        // SAFETY: forwarded.
        unsafe { (arch.epi_row)(t.as_mut_ptr(), t.len(), e) }
    } else {
        for (j, v) in t.iter_mut().enumerate() {
            // SAFETY: forwarded.
            *v = unsafe { e.apply_scalar(*v, 0, j) };
        }
    }
}

/// `Ci[0, cols] = x · Bi[.., cols]` for a one-row `Ai` (`x`): streams those
/// columns of `Bi` once (`cols.start` a multiple of 32).
///
/// # Safety
/// As for [`gemm_cols`], with `p.m == 1`.
pub(crate) unsafe fn gemv(arch: &Arch, p: &Problem, cols: Range<usize>, scratch: &mut GemmScratch) {
    let k = p.k;
    debug_assert!(p.m == 1 && k >= 1 && cols.start.is_multiple_of(PANEL) && cols.end <= p.n);
    let [xbuf] = scratch.regions([k]);
    // x, contiguous.
    let x: &[f32] = match p.ai {
        Src::Plain { data, sk: 1, .. } => &data[..k],
        Src::Plain { data, sk, .. } => {
            for (i, d) in xbuf.iter_mut().enumerate() {
                *d = data[i * sk];
            }
            xbuf
        }
        Src::Packed(pn) => {
            for (i, d) in xbuf.iter_mut().enumerate() {
                *d = pn.data.as_slice()[i * PANEL];
            }
            xbuf
        }
    };
    let vec_epi = p.epi.vector_ok();
    let mut y = [0.0f32; PANEL];
    for j0 in cols.clone().step_by(PANEL) {
        let w = PANEL.min(cols.end - j0);
        match p.bi {
            // SAFETY: panel j0/32 holds k rows of 32 floats; x has k floats.
            Src::Packed(pn) => unsafe {
                let b = pn.data.as_slice()[(j0 / PANEL) * pn.panel_stride()..].as_ptr();
                (arch.gemv_panel)(k, x.as_ptr(), b, PANEL, y.as_mut_ptr());
            },
            Src::Plain { data, sp: 1, sk } if w == PANEL => {
                // SAFETY: columns j0..j0+32 of rows 0..k lie inside the
                // validated view, whose element (k-1, j0+31) is in `data`.
                unsafe { (arch.gemv_panel)(k, x.as_ptr(), data[j0..].as_ptr(), sk, y.as_mut_ptr()) }
            }
            Src::Plain { data, sp, sk: 1 } => {
                let mut j = 0;
                while j + 4 <= w {
                    // SAFETY: columns j0+j..j0+j+4 each hold k contiguous
                    // floats inside the validated view.
                    unsafe {
                        (arch.gemv_dot4)(k, x.as_ptr(), data[(j0 + j) * sp..].as_ptr(), sp, y[j..].as_mut_ptr());
                    }
                    j += 4;
                }
                for (jj, y) in y.iter_mut().enumerate().take(w).skip(j) {
                    let col = &data[(j0 + jj) * sp..(j0 + jj) * sp + k];
                    *y = col.iter().zip(x).map(|(a, b)| a * b).sum();
                }
            }
            Src::Plain { data, sp, sk } => {
                for (jj, y) in y.iter_mut().enumerate().take(w) {
                    *y = (0..k).map(|kk| x[kk] * data[(j0 + jj) * sp + kk * sk]).sum();
                }
            }
        }
        let e = p.epi.at(0, j0);
        // SAFETY: the epilogue covers columns j0..j0+w of row 0; CPU supports arch.
        unsafe { epi_contiguous(arch, &mut y[..w], &e, vec_epi) };
        for (jj, &v) in y[..w].iter().enumerate() {
            // SAFETY: (0, j0 + jj) is inside C.
            unsafe { *p.c.add((j0 + jj) * p.cs_c) = v };
        }
    }
}
