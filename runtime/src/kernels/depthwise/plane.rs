//! The per-strip work of the depthwise kernel: the zero-padded polyphase
//! scratch, its fill from the input plane, and the loop over a task's planes
//! and strips (see the parent module for the design).

use super::kernel::{copy, Contiguous, Grid, Lanes, Taps};
use super::{product, Depthwise, KernelError};
use crate::gemm::Activation;
use std::ops::Range;

/// Floats of padded input one strip may hold: 16 KiB, half of L1d, so the
/// strip stays there while it is read `kh·kw` times per output.
pub(super) const STRIP_FLOATS: usize = 4096;

/// Rows of at least this many vectors are computed row by row
/// (`Mode::Rows`); narrower ones in blocks across rows.
const WIDE: usize = 4;

/// Floats past the phase planes: a strip's last vectors may read up to two
/// vectors past the last input any output uses (lanes computed and dropped).
const SLACK: usize = 64;

/// The call's operands, shared by all tasks.
pub(super) struct Call<'a> {
    pub d: &'a Depthwise,
    pub weights: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub activation: Activation,
    pub x: &'a [f32],
}

/// The scratch layout for one geometry.
///
/// A strip's padded rows are split into `sh · sw` *phase planes*: padded
/// row `j` (counted from the strip's first) and column `c` go to plane
/// `(j mod sh, c mod sw)`, row `⌊j / sh⌋`, element `⌊c / sw⌋`. Output
/// `(r, ox)` of the strip under tap `(ki, kj)` reads padded row
/// `r·sh + ki·dh` and column `ox·sw + kj·dw`, so it finds its input at flat
/// index `r·phase_len + ox` of its plane plus a per-tap constant: the whole
/// strip is one 1-D convolution over flat indices (lanes at `ox ≥ ow` are
/// computed and dropped).
pub(super) struct Plan {
    mode: Mode,
    /// Floats per phase row: at least the output width plus the widest
    /// tap's reach in phase units, `ow + ⌊(kw − 1)·dw / sw⌋`.
    phase_len: usize,
    /// Floats per phase plane: `⌈strip_rows / sh⌉` phase rows.
    plane_len: usize,
    /// Output rows per strip.
    strip: usize,
    /// Padded rows behind one output row: `(kh − 1)·dh + 1`.
    span: usize,
    /// Floats of the scratch: the phase planes, then room for the last
    /// vectors' over-reads.
    scratch_len: usize,
}

/// How a strip's flat outputs are computed and stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Wide rows (`WIDE` vectors or more): row by row, straight into `y`.
    Rows,
    /// Phase rows padded to whole vectors that hold no more vectors than the
    /// outputs need: blocks run across rows (enough independent FMA chains
    /// for narrow planes) and every vector lies in one row, so it is stored
    /// straight into `y`.
    Grid,
    /// Otherwise: blocks run across rows into a flat buffer, from which each
    /// row is copied into `y`.
    Flat,
}

impl Plan {
    /// The layout for `d`, whose output and kernel are not empty, for
    /// vectors of `lanes` floats, with strips of about `budget` floats
    /// (`STRIP_FLOATS`; tests go smaller).
    pub fn new(d: &Depthwise, lanes: usize, budget: usize) -> Result<Plan, KernelError> {
        let too_big = || KernelError::Geometry("depthwise scratch too large".into());
        let (sh, sw) = d.stride;
        let natural = d.ow.checked_add(product(d.kw - 1, d.dilation.1)? / sw).ok_or_else(too_big)?;
        let needed = d.ow.div_ceil(lanes);
        let (mode, phase_len) = if natural.div_ceil(lanes) == needed {
            (Mode::Grid, needed * lanes)
        } else if needed >= WIDE {
            (Mode::Rows, natural)
        } else {
            (Mode::Flat, natural)
        };
        let row_len = product(phase_len, sw)?;
        let span = product(d.kh - 1, d.dilation.0)?.checked_add(1).ok_or_else(too_big)?;
        let fit = budget / row_len;
        let strip = if fit > span { ((fit - span) / sh + 1).min(d.oh) } else { 1 };
        let plane_len = product(((strip - 1) * sh + span).div_ceil(sh), phase_len)?;
        let scratch_len = product(product(sh, sw)?, plane_len)?
            .checked_add(phase_len + SLACK)
            .filter(|&n| n <= isize::MAX as usize / 8)
            .ok_or_else(too_big)?;
        Ok(Plan { mode, phase_len, plane_len, strip, span, scratch_len })
    }

    /// Where padded row `j` of a strip starts: phase plane `(j mod sh, 0)`,
    /// phase row `⌊j / sh⌋` (its other column phases follow a plane apart).
    fn row_start(&self, j: usize, d: &Depthwise) -> usize {
        (j % d.stride.0 * d.stride.1) * self.plane_len + j / d.stride.0 * self.phase_len
    }
}

/// One thread's reusable buffers (no allocation once grown).
#[derive(Default)]
pub(super) struct Scratch {
    strip: Strip,
    /// Where tap `t` reads, relative to the flat output index.
    offsets: Vec<usize>,
    /// The largest of `offsets`.
    max_offset: usize,
}

/// A strip's padded input and flat output.
#[derive(Default)]
struct Strip {
    /// The phase planes, from `buf[base]` (64-byte aligned).
    buf: Vec<f32>,
    base: usize,
    /// Flat outputs before they go to `y` (`Mode::Flat`).
    flat: Vec<f32>,
    /// Padded rows that hold input since the last fill; all others are zero.
    filled: Range<usize>,
}

impl Scratch {
    fn prepare(&mut self, d: &Depthwise, plan: &Plan) {
        let strip = &mut self.strip;
        // 16 floats more than needed, to start the planes on a cache line.
        strip.buf.clear();
        strip.buf.resize(plan.scratch_len + 16, 0.0);
        strip.base = strip.buf.as_ptr().align_offset(64).min(16);
        strip.flat.clear();
        strip.flat.resize(if plan.mode == Mode::Flat { plan.strip * plan.phase_len } else { 0 }, 0.0);
        strip.filled = 0..0;
        let ((sh, sw), (dh, dw)) = (d.stride, d.dilation);
        self.offsets.clear();
        for ki in 0..d.kh {
            for kj in 0..d.kw {
                let (y, x) = (ki * dh, kj * dw);
                self.offsets.push((y % sh * sw + x % sw) * plan.plane_len + y / sh * plan.phase_len + x / sw);
            }
        }
        self.max_offset = self.offsets.iter().copied().max().unwrap_or(0);
    }
}

impl Strip {
    /// Copies the padded rows behind output rows `oy0..oy0 + rows` of input
    /// plane `plane` into the phase planes, zeroing rows that held input and
    /// are padding now.
    ///
    /// # Safety
    /// The CPU must support `S`.
    #[inline(always)]
    unsafe fn fill<S: Lanes>(&mut self, d: &Depthwise, plan: &Plan, plane: &[f32], oy0: usize, rows: usize) {
        let first = oy0 * d.stride.0;
        let count = (rows - 1) * d.stride.0 + plan.span;
        // Padded row `first + j` is input row `first + j − ph` when that is in `0..h`.
        let lo = d.pad.0.saturating_sub(first).min(count);
        let hi = (d.pad.0 + d.h).saturating_sub(first).clamp(lo, count);
        let buf = &mut self.buf[self.base..][..plan.scratch_len];
        for j in self.filled.clone().filter(|j| !(lo..hi).contains(j)) {
            let start = plan.row_start(j, d);
            for phase in 0..d.stride.1 {
                buf[start + phase * plan.plane_len..][..plan.phase_len].fill(0.0);
            }
        }
        // Row `j` is phase row `q` of row phase `p` (stepped, not divided).
        let (sh, sw) = d.stride;
        let (mut p, mut q) = if sh == 1 { (0, lo) } else { (lo % sh, lo / sh) };
        for src in plane.chunks_exact(d.w).skip((first + lo).saturating_sub(d.pad.0)).take(hi - lo) {
            let start = p * sw * plan.plane_len + q * plan.phase_len;
            // SAFETY: the CPU supports `S` (this function's contract).
            unsafe { copy_row::<S>(d, plan, src, buf, start) };
            p += 1;
            if p == sh {
                p = 0;
                q += 1;
            }
        }
        self.filled = lo..hi;
    }

    /// Computes `out` (`rows` output rows of one channel) from the filled
    /// strip whose taps reach up to `max_offset`.
    ///
    /// # Safety
    /// The CPU must support `S`; `V` must be `S::BLOCK`; `plan` must have
    /// been made for `S::LANES`.
    #[inline(always)]
    unsafe fn compute<S: Lanes, const V: usize, const T: usize>(&mut self, d: &Depthwise, plan: &Plan, taps: &Taps<'_, T>, max_offset: usize, rows: usize, out: &mut [f32]) {
        let (l, pitch) = (S::LANES, plan.phase_len);
        let buf = &self.buf[self.base..][..plan.scratch_len];
        // The flat vectors computed and the furthest one's reads.
        let vectors = match plan.mode {
            Mode::Rows => ((rows - 1) * pitch) / l + d.ow.div_ceil(l),
            Mode::Grid => rows * pitch / l,
            Mode::Flat => ((rows - 1) * pitch + d.ow).div_ceil(l),
        };
        let reach = max_offset + (vectors + 1) * l;
        assert!(
            reach <= buf.len() && out.len() == rows * d.ow && (plan.mode != Mode::Flat || rows * pitch <= self.flat.len()),
            "depthwise scratch too small"
        );
        // SAFETY (all arms): the CPU supports `S`; the reads end inside
        // `buf` (asserted above) and each destination takes what it is given.
        unsafe {
            match plan.mode {
                Mode::Rows => {
                    for (r, row) in out.chunks_exact_mut(d.ow).enumerate() {
                        let mut dst = Contiguous { dst: row.as_mut_ptr(), left: d.ow };
                        taps.run::<S, V, _>(buf.as_ptr().add(r * pitch), d.ow.div_ceil(l), &mut dst);
                    }
                }
                Mode::Grid => {
                    let mut dst = Grid { dst: out.as_mut_ptr(), width: d.ow, pitch, rows, row: 0, col: 0 };
                    taps.run::<S, V, _>(buf.as_ptr(), vectors, &mut dst);
                }
                Mode::Flat => {
                    let len = (rows - 1) * pitch + d.ow;
                    let mut dst = Contiguous { dst: self.flat.as_mut_ptr(), left: len };
                    taps.run::<S, V, _>(buf.as_ptr(), vectors, &mut dst);
                    for (r, row) in out.chunks_exact_mut(d.ow).enumerate() {
                        copy::<S>(&self.flat[r * pitch..][..d.ow], row);
                    }
                }
            }
        }
    }
}

/// Copies one input row into the phase rows of a padded row starting at
/// `buf[start]`: padded column `c = ix + pw` goes to column phase `c mod sw`
/// (a plane apart), element `⌊c / sw⌋`. Columns past the last one any
/// output reads are dropped.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn copy_row<S: Lanes>(d: &Depthwise, plan: &Plan, src: &[f32], buf: &mut [f32], start: usize) {
    let (sw, pw, len) = (d.stride.1, d.pad.1, plan.phase_len);
    let n = src.len().min((sw * len).saturating_sub(pw));
    if n == 0 {
        return;
    }
    let src = &src[..n];
    match sw {
        // SAFETY: the CPU supports `S` (this function's contract).
        1 => unsafe { copy::<S>(src, &mut buf[start + pw..][..n]) },
        2 => {
            // Even input columns land in phase `pw mod 2` from ⌊pw / 2⌋, odd
            // ones in the other phase from ⌈pw / 2⌉.
            let (p0, p1) = buf[start..].split_at_mut(plan.plane_len);
            let (evens, odds) = if pw % 2 == 0 { (p0, p1) } else { (p1, p0) };
            let (pairs, last) = src.as_chunks::<2>();
            let evens = &mut evens[pw / 2..][..n.div_ceil(2)];
            let odds = &mut odds[pw.div_ceil(2)..][..pairs.len()];
            // SAFETY: the CPU supports `S` (this function's contract).
            unsafe { S::deinterleave(pairs, evens, odds) };
            if let (Some(&a), Some(e)) = (last.first(), evens.last_mut()) {
                *e = a;
            }
        }
        _ => {
            for (ix, &v) in src.iter().enumerate() {
                let c = ix + pw;
                buf[start + c % sw * plan.plane_len + c / sw] = v;
            }
        }
    }
}

/// Computes output planes `first..` (global `(sample, channel)` indices)
/// into `out`, which holds whole planes.
///
/// # Safety
/// The CPU must support `S`; `V` must be `S::BLOCK`; `plan` must have been
/// made for `S::LANES`.
#[inline(always)]
pub(super) unsafe fn run<S: Lanes, const V: usize>(plan: &Plan, call: &Call<'_>, first: usize, out: &mut [f32], scratch: &mut Scratch) {
    // SAFETY (all arms): as this function's contract.
    unsafe {
        match call.d.kh * call.d.kw {
            9 => planes::<S, V, 9>(plan, call, first, out, scratch),
            25 => planes::<S, V, 25>(plan, call, first, out, scratch),
            _ => planes::<S, V, 0>(plan, call, first, out, scratch),
        }
    }
}

/// [`run`] for `T` taps (0: any number).
///
/// # Safety
/// As for [`run`].
#[inline(always)]
unsafe fn planes<S: Lanes, const V: usize, const T: usize>(plan: &Plan, call: &Call<'_>, first: usize, out: &mut [f32], scratch: &mut Scratch) {
    let d = call.d;
    let (c_out, plane_in, plane_out, taps) = (d.channels * d.multiplier, d.h * d.w, d.oh * d.ow, d.kh * d.kw);
    scratch.prepare(d, plan);
    let Scratch { strip, offsets, max_offset } = scratch;
    let total = out.len() / plane_out;
    // The task's first plane's (sample, output channel), stepped from there.
    let (mut done, mut n, mut co) = (0, first / c_out, first % c_out);
    while done < total {
        let ci = if d.multiplier == 1 { co } else { co / d.multiplier };
        // The run of this task's output channels that read input plane (n, ci).
        let count = ((ci + 1) * d.multiplier - co).min(total - done);
        let input = &call.x[(n * d.channels + ci) * plane_in..][..plane_in];
        let outputs = &mut out[done * plane_out..][..count * plane_out];
        for oy0 in (0..d.oh).step_by(plan.strip) {
            let rows = plan.strip.min(d.oh - oy0);
            // SAFETY: the CPU supports `S` (this function's contract).
            unsafe { strip.fill::<S>(d, plan, input, oy0, rows) };
            for (j, plane) in outputs.chunks_exact_mut(plane_out).enumerate() {
                let c = co + j;
                let kernel = Taps::<T> { offsets, weights: &call.weights[c * taps..][..taps], bias: call.bias.map_or(0.0, |b| b[c]), activation: call.activation };
                // SAFETY: the CPU supports `S`, `V` is `S::BLOCK` and `plan`
                // was made for `S` (this function's contract).
                unsafe { strip.compute::<S, V, T>(d, plan, &kernel, *max_offset, rows, &mut plane[oy0 * d.ow..][..rows * d.ow]) };
            }
        }
        done += count;
        co += count;
        if co == c_out {
            (n, co) = (n + 1, 0);
        }
    }
}
