//! ConvTranspose (transposed convolution) over NCHW data, 1-D or 2-D (a 1-D
//! one has `h = oh = kh = 1`), grouped, strided, dilated and padded, as
//! GEMM followed by col2im.
//!
//! Per sample and group, `cols = Wᵀ[g] · X[g]`: the weight (`[C_in,
//! C_out/group, kh, kw]`) of group `g` is `[C_in/group, C_out/group·kh·kw]`,
//! so its transpose, packed once ([`ConvTransposeWeights`]), is the GEMM's
//! left operand and the group's input planes (`[C_in/group, h·w]`, read in
//! place) its right operand. Row `(m, ky, kx)`, column `(iy, ix)` of `cols`
//! is input pixel `(iy, ix)`'s contribution through tap `(ky, kx)` to
//! output channel `m`, which col2im adds at output position
//! `(iy·sh + ky·dh − ph, ix·sw + kx·dw − pw)` when that lies inside the
//! output. The output starts as the bias. Input rows are taken in blocks
//! whose `cols` fits in L2, from a per-thread scratch.
//!
//! Numerics: the GEMM and col2im sum in f32 (in their own order, with or
//! without FMA), where the reference sums every term in f64 and rounds
//! once; each output differs from it by at most the usual bound of an
//! f32 sum of its terms (`C_in/group` products per tap that reaches it,
//! plus the bias).
//!
//! Threads: (sample, group) units write disjoint output planes and run in
//! parallel when there are enough of them; otherwise each unit's GEMM is
//! split over the pool ([`sgemm_par`]) and its col2im over output channels.

use super::scratch::Reused;
use super::{blocks, expect_len, KernelError};
use crate::gemm::{sgemm, sgemm_par, Epilogue, MatMut, MatRef, PackedA};
use crate::pool::ThreadPool;
use std::cell::RefCell;

thread_local! {
    /// Each thread's `cols` block.
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of one `cols` block (~384 KiB, in L2 with the weights).
const BLOCK_FLOATS: usize = 96 * 1024;

/// `cols` floats from which a unit's col2im is split over the pool.
const MIN_PARALLEL_COL2IM: usize = 32 * 1024;

/// The geometry of a 2-D transposed convolution.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConvTranspose2d {
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
    /// Where output `(0, 0)` lies in the full (unpadded) output of size
    /// `stride·(in − 1) + dilation·(k − 1) + 1 (+ output_padding)`: the
    /// begin pads. The end pads and output padding show only in `oh`, `ow`.
    pub pad: (usize, usize),
    pub group: usize,
}

impl ConvTranspose2d {
    /// Input channels per group.
    pub fn in_per_group(&self) -> usize {
        self.c_in / self.group.max(1)
    }

    /// Output channels per group.
    pub fn out_per_group(&self) -> usize {
        self.c_out / self.group.max(1)
    }

    /// Multiply-adds per sample.
    pub fn macs_per_sample(&self) -> usize {
        self.c_in * self.h * self.w * self.out_per_group() * self.kh * self.kw
    }

    fn validate(&self) -> Result<(), KernelError> {
        let bad = |why: &str| Err(KernelError::Geometry(why.into()));
        if self.group == 0 || !self.c_in.is_multiple_of(self.group) || !self.c_out.is_multiple_of(self.group) {
            return bad("channels must divide into the groups");
        }
        if self.stride.0 == 0 || self.stride.1 == 0 || self.dilation.0 == 0 || self.dilation.1 == 0 {
            return bad("strides and dilations must be positive");
        }
        let sizes = [self.c_in, self.h, self.w, self.c_out, self.oh, self.ow, self.kh, self.kw];
        if sizes.iter().try_fold(1usize, |n, &d| n.checked_mul(d.max(1))).is_none() {
            return bad("the sizes overflow");
        }
        Ok(())
    }
}

/// A transposed convolution's weights packed once: per group, the GEMM left
/// operand `[C_out/group·kh·kw, C_in/group]`.
#[derive(Clone)]
pub struct ConvTransposeWeights {
    groups: Vec<PackedA>,
}

impl ConvTransposeWeights {
    /// Packs `weights` (ONNX layout `[c_in, c_out / group, kh, kw]`, row-major).
    pub fn pack(g: &ConvTranspose2d, weights: &[f32]) -> Result<ConvTransposeWeights, KernelError> {
        g.validate()?;
        let (cg, mk) = (g.in_per_group(), g.out_per_group() * g.kh * g.kw);
        expect_len("weights", weights.len(), g.c_in * mk)?;
        let groups = (0..g.group).map(|i| PackedA::pack(MatRef::row_major(&weights[i * cg * mk..(i + 1) * cg * mk], cg, mk).t())).collect();
        Ok(ConvTransposeWeights { groups })
    }

    /// Bytes held by the packed weights.
    pub fn bytes(&self) -> usize {
        self.groups.iter().map(PackedA::bytes).sum()
    }
}

impl std::fmt::Debug for ConvTransposeWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConvTransposeWeights x{} ({} bytes)", self.groups.len(), self.bytes())
    }
}

/// `y = conv_transpose(x, weights) + bias` for a batch of NCHW samples (the
/// batch is `x.len()` over one sample's size); `bias` holds one value per
/// output channel.
pub fn conv_transpose2d(g: &ConvTranspose2d, weights: &ConvTransposeWeights, bias: Option<&[f32]>, x: &[f32], y: &mut [f32], pool: &ThreadPool) -> Result<(), KernelError> {
    g.validate()?;
    let (cg, mg) = (g.in_per_group(), g.out_per_group());
    let (hw, ohw, mk) = (g.h * g.w, g.oh * g.ow, mg * g.kh * g.kw);
    let batch = blocks("input", x.len(), g.c_in * hw)?;
    expect_len("output", y.len(), batch * g.c_out * ohw)?;
    if let Some(b) = bias {
        expect_len("bias", b.len(), g.c_out)?;
    }
    expect_len("weights (groups)", weights.groups.len(), g.group)?;
    if let Some(w) = weights.groups.iter().find(|w| w.rows() != mk || w.cols() != cg) {
        return Err(KernelError::Geometry(format!("a packed weight is {}x{}, expected {mk}x{cg}", w.rows(), w.cols())));
    }
    if y.is_empty() {
        return Ok(());
    }
    let unit = mg * ohw;
    let units = batch * g.group;
    let threads = pool.threads();
    let run = |u: usize, out: &mut [f32], split: Option<&ThreadPool>| {
        let (n, gi) = (u / g.group, u % g.group);
        for (m, plane) in out.chunks_exact_mut(ohw).enumerate() {
            plane.fill(bias.map_or(0.0, |b| b[gi * mg + m]));
        }
        if cg == 0 || hw == 0 || mk == 0 {
            return;
        }
        let xg = &x[(n * g.c_in + gi * cg) * hw..][..cg * hw];
        let rows_per_block = (BLOCK_FLOATS / (mk * g.w)).clamp(1, g.h);
        for r0 in (0..g.h).step_by(rows_per_block) {
            let rows = r0..(r0 + rows_per_block).min(g.h);
            let width = rows.len() * g.w;
            let mut cols = Reused::new(&COLS, mk * width, 0.0);
            let b = MatRef::new(&xg[r0 * g.w..], cg, width, hw, 1);
            let c = MatMut::row_major(&mut cols, mk, width);
            match split {
                Some(pool) => sgemm_par(pool, &weights.groups[gi], b, c, &Epilogue::NONE),
                None => sgemm(&weights.groups[gi], b, c, &Epilogue::NONE),
            }
            match split {
                Some(pool) if pool.threads() > 1 && cols.len() >= MIN_PARALLEL_COL2IM && mg > 1 => {
                    let per_task = mg.div_ceil(2 * pool.threads());
                    pool.parallel_chunks_mut(out, per_task * ohw, &|i, piece| col2im(g, &cols, rows.clone(), i * per_task, piece));
                }
                _ => col2im(g, &cols, rows.clone(), 0, out),
            }
        }
    };
    if threads > 1 && units >= 2 * threads {
        pool.parallel_chunks_mut(y, unit, &|u, out| run(u, out, None));
    } else {
        for (u, out) in y.chunks_mut(unit).enumerate() {
            run(u, out, Some(pool));
        }
    }
    Ok(())
}

/// Adds the `cols` block of input rows `rows` into the output planes of
/// channels `first_m..` of one (sample, group) unit, as many as `out` holds.
fn col2im(g: &ConvTranspose2d, cols: &[f32], rows: std::ops::Range<usize>, first_m: usize, out: &mut [f32]) {
    let ((sh, sw), (dh, dw), (ph, pw)) = (g.stride, g.dilation, g.pad);
    let (ohw, width) = (g.oh * g.ow, rows.len() * g.w);
    for (m, plane) in (first_m..).zip(out.chunks_exact_mut(ohw)) {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let tap = &cols[((m * g.kh + ky) * g.kw + kx) * width..][..width];
                // Input columns whose output lands inside a row: ox = ix·sw + shift ∈ [0, ow).
                let shift = (kx * dw) as isize - pw as isize;
                let lo = if shift >= 0 { 0 } else { ((-shift) as usize).div_ceil(sw) }.min(g.w);
                let hi = if (g.ow as isize) <= shift { 0 } else { ((g.ow as isize - shift) as usize).div_ceil(sw).min(g.w) };
                if lo >= hi {
                    continue;
                }
                for (iy, src) in rows.clone().zip(tap.chunks_exact(g.w)) {
                    let oy = (iy * sh + ky * dh) as isize - ph as isize;
                    if oy < 0 || oy as usize >= g.oh {
                        continue;
                    }
                    let dst = &mut plane[oy as usize * g.ow..][..g.ow];
                    let first = (lo as isize * sw as isize + shift) as usize;
                    if sw == 1 {
                        for (d, &v) in dst[first..first + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in dst[first..].iter_mut().step_by(sw).zip(&src[lo..hi]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
