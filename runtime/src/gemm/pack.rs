//! Panel packing: the constant operand once at load time ([`PackedA`],
//! [`PackedB`]), the other operand block by block into scratch.
//!
//! Layout of a packed matrix with panel dimension `P` (rows of `A`, columns
//! of `B`) and reduction dimension `K`: `ceil(P / 32)` panels, panel `p` is
//! `K` rows of 32 floats, row `k` holding elements `p·32 .. p·32 + 32` of
//! the panel dimension at reduction index `k` (zero past `P`). Panels are not
//! split by K block, so any KC can walk them, and a GEMV reads the whole
//! matrix as one sequential stream.

use super::kernel::PANEL;
use super::mat::MatRef;

/// A `len`-float zeroed buffer whose first element is 64-byte aligned (one
/// cache line, one `zmm`).
#[derive(Clone)]
pub(crate) struct AlignedVec {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

/// Floats per 64-byte line.
pub(crate) const ALIGN_F32: usize = 16;

impl AlignedVec {
    pub fn zeroed(len: usize) -> Self {
        let buf = vec![0.0f32; len + ALIGN_F32];
        let off = buf.as_ptr().align_offset(64).min(ALIGN_F32);
        AlignedVec { buf, off, len }
    }
    pub fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// Packs a `plen × kc` block into `dst` (`ceil(plen / 32)` panels of
/// `kc × 32`). Element `(p, k)` of the block is `src[p·sp + k·sk]`.
///
/// # Panics
/// If `src` or `dst` is too short (the callers derive both from validated
/// views, so this is a bounds check, not an expected failure).
pub(crate) fn pack_block(src: &[f32], sp: usize, sk: usize, plen: usize, kc: usize, dst: &mut [f32]) {
    let npan = plen.div_ceil(PANEL);
    let dst = &mut dst[..npan * kc * PANEL];
    if plen == 0 || kc == 0 {
        return;
    }
    if sp == 1 {
        // Rows of the block are contiguous in the source: read each one
        // sequentially (prefetcher- and TLB-friendly) and deal it out to the
        // panels. Reading panel by panel instead walks `kc` pages per 128
        // bytes and ran at a third of the speed.
        for k in 0..kc {
            let row = &src[k * sk..k * sk + plen];
            for (p, panel) in dst.chunks_exact_mut(kc * PANEL).enumerate() {
                let d = &mut panel[k * PANEL..(k + 1) * PANEL];
                let s = &row[p * PANEL..];
                if s.len() >= PANEL {
                    // Fixed-size copy: a few `vmovups`, not a `memmove` call.
                    let d: &mut [f32; PANEL] = d.try_into().unwrap();
                    *d = s[..PANEL].try_into().unwrap();
                } else {
                    d[..s.len()].copy_from_slice(s);
                    d[s.len()..].fill(0.0);
                }
            }
        }
        return;
    }
    for (p, panel) in dst.chunks_exact_mut(kc * PANEL).enumerate() {
        let p0 = p * PANEL;
        let w = (plen - p0).min(PANEL);
        if sk == 1 {
            // Contiguous along k: walk each source line once, scatter by 32.
            for l in 0..w {
                let s = (p0 + l) * sp;
                for (k, &v) in src[s..s + kc].iter().enumerate() {
                    panel[k * PANEL + l] = v;
                }
            }
            if w < PANEL {
                for row in panel.chunks_exact_mut(PANEL) {
                    row[w..].fill(0.0);
                }
            }
        } else {
            for (k, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                for (l, d) in row.iter_mut().enumerate() {
                    *d = if l < w { src[(p0 + l) * sp + k * sk] } else { 0.0 };
                }
            }
        }
    }
}

/// A whole matrix in panel layout (see the module docs).
#[derive(Clone)]
pub(crate) struct Panels {
    /// Length of the panel dimension.
    pub plen: usize,
    /// Length of the reduction dimension.
    pub k: usize,
    pub data: AlignedVec,
}

impl Panels {
    fn pack(src: &[f32], plen: usize, k: usize, sp: usize, sk: usize) -> Self {
        let mut data = AlignedVec::zeroed(plen.div_ceil(PANEL) * PANEL * k);
        pack_block(src, sp, sk, plen, k, data.as_mut_slice());
        Panels { plen, k, data }
    }

    /// Floats between the starts of two consecutive panels.
    pub fn panel_stride(&self) -> usize {
        self.k * PANEL
    }

    pub fn bytes(&self) -> usize {
        self.data.as_slice().len() * 4
    }
}

/// The left operand `A` (`M × K`) of `C = A·B`, packed once.
///
/// This is the conv weight in `C[C_out, pixels] = W[C_out, C_in·kh·kw] ·
/// X[C_in·kh·kw, pixels]`. Panels run over the rows of `A`.
#[derive(Clone)]
pub struct PackedA {
    pub(crate) p: Panels,
}

/// The right operand `B` (`K × N`) of `C = A·B`, packed once.
///
/// This is the fully-connected weight in `Y[batch, out] = X[batch, in] ·
/// Wᵀ`: for ONNX `Gemm` with `transB = 1` (weight stored `[out, in]`) pack
/// `MatRef::row_major(w, out, in).t()`. Panels run over the columns of `B`.
///
/// `PackedA` of `W` and `PackedB` of `Wᵀ` hold the same bytes: a weight packs
/// the same way whichever side it sits on.
#[derive(Clone)]
pub struct PackedB {
    pub(crate) p: Panels,
}

impl PackedA {
    /// Packs `a` (`M × K`, any strides; fastest from column-major, fine from
    /// row-major — it runs once).
    pub fn pack(a: MatRef<'_>) -> Self {
        PackedA { p: Panels::pack(a.data(), a.rows(), a.cols(), a.row_stride(), a.col_stride()) }
    }
    /// `M`.
    pub fn rows(&self) -> usize {
        self.p.plen
    }
    /// `K`.
    pub fn cols(&self) -> usize {
        self.p.k
    }
    /// Size of the packed data (rows padded to a multiple of 32).
    pub fn bytes(&self) -> usize {
        self.p.bytes()
    }
}

impl PackedB {
    /// Packs `b` (`K × N`, any strides).
    pub fn pack(b: MatRef<'_>) -> Self {
        PackedB { p: Panels::pack(b.data(), b.cols(), b.rows(), b.col_stride(), b.row_stride()) }
    }
    /// `K`.
    pub fn rows(&self) -> usize {
        self.p.k
    }
    /// `N`.
    pub fn cols(&self) -> usize {
        self.p.plen
    }
    /// Size of the packed data (columns padded to a multiple of 32).
    pub fn bytes(&self) -> usize {
        self.p.bytes()
    }
}
