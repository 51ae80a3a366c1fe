//! The vector code of the depthwise kernel: the flat multi-tap convolution
//! over the phase planes, the activation, row copies and the stride-2 row
//! split (deinterleave) per instruction set.

use crate::gemm::simd::Simd;
use crate::gemm::Activation;

/// What the kernel needs beyond [`Simd`].
pub(super) trait Lanes: Simd {
    /// Output vectors accumulated side by side: independent FMA chains
    /// enough to hide the FMA latency, with a 3 × 3 kernel's nine weights
    /// still in registers.
    const BLOCK: usize;

    /// `evens[j] = pairs[j][0]`, `odds[j] = pairs[j][1]`.
    ///
    /// # Safety
    /// The CPU must support `Self`.
    unsafe fn deinterleave(pairs: &[[f32; 2]], evens: &mut [f32], odds: &mut [f32]);
}

/// The plain loop; LLVM turns it into shuffles where it can.
fn deinterleave_scalar(pairs: &[[f32; 2]], evens: &mut [f32], odds: &mut [f32]) {
    for ((e, o), &[a, b]) in evens.iter_mut().zip(odds.iter_mut()).zip(pairs) {
        *e = a;
        *o = b;
    }
}

impl Lanes for crate::gemm::simd::Portable {
    const BLOCK: usize = 4;

    #[inline(always)]
    unsafe fn deinterleave(pairs: &[[f32; 2]], evens: &mut [f32], odds: &mut [f32]) {
        deinterleave_scalar(pairs, evens, odds)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{deinterleave_scalar, Lanes};
    use crate::gemm::simd::{Avx2, Avx512};
    use std::arch::x86_64::*;

    impl Lanes for Avx512 {
        const BLOCK: usize = 8;

        #[inline(always)]
        unsafe fn deinterleave(pairs: &[[f32; 2]], evens: &mut [f32], odds: &mut [f32]) {
            let n = pairs.len().min(evens.len()).min(odds.len());
            let (src, e, o) = (pairs.as_ptr().cast::<f32>(), evens.as_mut_ptr(), odds.as_mut_ptr());
            // SAFETY: AVX-512F is available (the caller's contract); step `i`
            // reads pairs `i .. i + k` (32 floats, or 2k masked) and writes
            // `k` elements of each output, all inside the first `n`.
            unsafe {
                let even_index = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let odd_index = _mm512_add_epi32(even_index, _mm512_set1_epi32(1));
                let mut i = 0;
                while i + 16 <= n {
                    let (a, b) = (_mm512_loadu_ps(src.add(2 * i)), _mm512_loadu_ps(src.add(2 * i + 16)));
                    _mm512_storeu_ps(e.add(i), _mm512_permutex2var_ps(a, even_index, b));
                    _mm512_storeu_ps(o.add(i), _mm512_permutex2var_ps(a, odd_index, b));
                    i += 16;
                }
                if i < n {
                    // The last `k < 16` pairs, with masked accesses.
                    let k = n - i;
                    let mask = |m: usize| ((1u32 << m) - 1) as __mmask16;
                    let a = _mm512_maskz_loadu_ps(mask((2 * k).min(16)), src.add(2 * i));
                    let b = _mm512_maskz_loadu_ps(mask((2 * k).saturating_sub(16)), src.add(2 * i + 16));
                    _mm512_mask_storeu_ps(e.add(i), mask(k), _mm512_permutex2var_ps(a, even_index, b));
                    _mm512_mask_storeu_ps(o.add(i), mask(k), _mm512_permutex2var_ps(a, odd_index, b));
                }
            }
        }
    }

    impl Lanes for Avx2 {
        const BLOCK: usize = 4;

        #[inline(always)]
        unsafe fn deinterleave(pairs: &[[f32; 2]], evens: &mut [f32], odds: &mut [f32]) {
            let n = pairs.len().min(evens.len()).min(odds.len());
            let (body, _) = pairs[..n].as_chunks::<8>();
            // SAFETY: AVX2 is available (the caller's contract); chunk `i`
            // reads 16 floats of `pairs` and writes 8 of each output, all
            // inside the first `n` pairs / elements.
            unsafe {
                for (i, chunk) in body.iter().enumerate() {
                    let src = chunk.as_ptr().cast::<f32>();
                    let (a, b) = (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)));
                    // Within each 128-bit lane: [a0 a2 b0 b2], [a1 a3 b1 b3];
                    // then the 64-bit quarters are put back in order.
                    let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                    let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                    let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
                    let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
                    _mm256_storeu_ps(evens.as_mut_ptr().add(8 * i), e);
                    _mm256_storeu_ps(odds.as_mut_ptr().add(8 * i), o);
                }
            }
            let done = body.len() * 8;
            deinterleave_scalar(&pairs[done..n], &mut evens[done..n], &mut odds[done..n]);
        }
    }
}

/// `dst.copy_from_slice(src)` in vectors (no library call for short rows).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(super) unsafe fn copy<S: Simd>(src: &[f32], dst: &mut [f32]) {
    let (n, l) = (src.len().min(dst.len()), S::LANES);
    // SAFETY: the CPU supports `S`; full vectors cover `[x, x + l)` with
    // `x + l ≤ n`, the partial one `[x, n)`: all inside both slices.
    unsafe {
        let mut x = 0;
        while x + l <= n {
            S::store(dst.as_mut_ptr().add(x), S::load(src.as_ptr().add(x)));
            x += l;
        }
        if x < n {
            S::store_partial(dst.as_mut_ptr().add(x), n - x, S::load_partial(src.as_ptr().add(x), n - x));
        }
    }
}

/// One output channel's taps: flat output `i` is `act(bias + Σ_t
/// weights[t] · src[offsets[t] + i])`. `T` is the tap count when known at
/// compile time (the tap loop unrolls and the weights stay in registers), 0
/// otherwise.
pub(super) struct Taps<'a, const T: usize> {
    pub offsets: &'a [usize],
    pub weights: &'a [f32],
    pub bias: f32,
    pub activation: Activation,
}

impl<const T: usize> Taps<'_, T> {
    /// Computes `vectors` consecutive flat output vectors from `src` in
    /// blocks of up to `V = S::BLOCK`, handing them to `out` in order.
    ///
    /// # Safety
    /// The CPU must support `S`; `src` must be valid for reads of
    /// `max(offsets) + vectors · LANES` floats; `out` must accept `vectors`
    /// vectors.
    #[inline(always)]
    pub unsafe fn run<S: Lanes, const V: usize, O: Out>(&self, src: *const f32, vectors: usize, out: &mut O) {
        let taps = if T > 0 { T } else { self.offsets.len() };
        if self.offsets.len() != taps || self.weights.len() != taps {
            return;
        }
        // SAFETY: as this function's contract.
        unsafe {
            if T > 0 {
                // Copies the taps out of the slices so they stay in registers
                // across the stores (which LLVM cannot tell apart from them).
                let mut offsets = [0usize; T];
                offsets.copy_from_slice(self.offsets);
                let mut weights = [S::zero(); T];
                for (w, &x) in weights.iter_mut().zip(self.weights) {
                    *w = S::splat(x);
                }
                self.blocks::<S, V, [S::V; T], O>(src, &offsets, &weights, vectors, out);
            } else {
                self.blocks::<S, V, [f32], O>(src, self.offsets, self.weights, vectors, out);
            }
        }
    }

    /// [`run`](Self::run) with the taps' offsets and weights given.
    ///
    /// # Safety
    /// As for `run`.
    #[inline(always)]
    unsafe fn blocks<S: Lanes, const V: usize, W: Weights<S> + ?Sized, O: Out>(&self, src: *const f32, offsets: &[usize], weights: &W, vectors: usize, out: &mut O) {
        let l = S::LANES;
        let mut at = 0;
        // SAFETY: as for `run`; each block covers vectors `at .. at + N ≤ vectors`.
        unsafe {
            while at + V <= vectors {
                self.block::<S, V, W, O>(src.add(at * l), offsets, weights, out);
                at += V;
            }
            let src = src.add(at * l);
            match vectors - at {
                0 => {}
                1 => self.block::<S, 1, W, O>(src, offsets, weights, out),
                2 => self.block::<S, 2, W, O>(src, offsets, weights, out),
                3 => self.block::<S, 3, W, O>(src, offsets, weights, out),
                4 => self.block::<S, 4, W, O>(src, offsets, weights, out),
                5 => self.block::<S, 5, W, O>(src, offsets, weights, out),
                6 => self.block::<S, 6, W, O>(src, offsets, weights, out),
                _ => self.block::<S, 7, W, O>(src, offsets, weights, out),
            }
        }
    }

    /// `N` vectors: `act(bias + Σ_t w_t · src[offsets[t] + v·l ..])`, handed to `out`.
    ///
    /// # Safety
    /// The CPU must support `S`; `src + offsets[t]` must be valid for reads
    /// of `N · LANES` floats for every tap; `out` must accept `N` vectors.
    #[inline(always)]
    unsafe fn block<S: Lanes, const N: usize, W: Weights<S> + ?Sized, O: Out>(&self, src: *const f32, offsets: &[usize], weights: &W, out: &mut O) {
        let l = S::LANES;
        // SAFETY: the reads are inside the range of this function's
        // contract; the CPU supports `S`.
        unsafe {
            let mut acc = [S::splat(self.bias); N];
            for (t, &o) in offsets.iter().enumerate() {
                let (p, w) = (src.add(o), weights.get(t));
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = S::fmadd(w, S::load(p.add(v * l)), *a);
                }
            }
            // The activation arms are spelled out: a closure would be
            // compiled without the instruction set's features.
            match self.activation {
                Activation::Identity => {}
                Activation::Relu => {
                    for a in &mut acc {
                        *a = S::max(*a, S::zero());
                    }
                }
                Activation::Clip { min, max } => {
                    let (min, max) = (S::splat(min), S::splat(max));
                    for a in &mut acc {
                        *a = S::min(S::max(*a, min), max);
                    }
                }
                Activation::LeakyRelu { alpha } => {
                    let alpha = S::splat(alpha);
                    for a in &mut acc {
                        *a = S::leaky(*a, alpha);
                    }
                }
                Activation::Sigmoid => {
                    for a in &mut acc {
                        *a = S::sigmoid(*a);
                    }
                }
            }
            for a in acc {
                out.put::<S>(a);
            }
        }
    }
}

/// Where finished output vectors go, in order.
pub(super) trait Out {
    /// Stores the next vector.
    ///
    /// # Safety
    /// The CPU must support `S`; the destination must accept another vector.
    unsafe fn put<S: Simd>(&mut self, v: S::V);
}

/// Consecutive floats: `left` of them from `dst` (the last vector partial).
pub(super) struct Contiguous {
    pub dst: *mut f32,
    pub left: usize,
}

impl Out for Contiguous {
    #[inline(always)]
    unsafe fn put<S: Simd>(&mut self, v: S::V) {
        let l = S::LANES;
        // SAFETY: the CPU supports `S`; `dst` is writable for `left` floats
        // (the contract of whoever built `self`).
        unsafe {
            if self.left >= l {
                S::store(self.dst, v);
            } else if self.left > 0 {
                S::store_partial(self.dst, self.left, v);
            }
            self.dst = self.dst.wrapping_add(l);
        }
        self.left = self.left.saturating_sub(l);
    }
}

/// Output rows of `width` floats at `dst`, `rows` of them, while flat
/// vectors run along rows of `pitch` (a multiple of the vector width):
/// every vector lies in one row, and the lanes past `width` are dropped.
pub(super) struct Grid {
    pub dst: *mut f32,
    pub width: usize,
    pub pitch: usize,
    pub rows: usize,
    /// Where the next vector starts.
    pub row: usize,
    pub col: usize,
}

impl Out for Grid {
    #[inline(always)]
    unsafe fn put<S: Simd>(&mut self, v: S::V) {
        let l = S::LANES;
        if self.row < self.rows && self.col < self.width {
            let p = self.dst.wrapping_add(self.row * self.width + self.col);
            // SAFETY: the CPU supports `S`; `dst` is writable for
            // `rows · width` floats (the contract of whoever built `self`)
            // and the lanes stored end at the row's end.
            unsafe {
                if self.col + l <= self.width {
                    S::store(p, v);
                } else {
                    S::store_partial(p, self.width - self.col, v);
                }
            }
        }
        self.col += l;
        if self.col >= self.pitch {
            (self.row, self.col) = (self.row + 1, 0);
        }
    }
}

/// The taps' weights as vectors: pre-broadcast (a fixed tap count, kept in
/// registers) or broadcast on use.
trait Weights<S: Simd> {
    /// # Safety
    /// The CPU must support `S`.
    unsafe fn get(&self, t: usize) -> S::V;
}

impl<S: Simd, const T: usize> Weights<S> for [S::V; T] {
    #[inline(always)]
    unsafe fn get(&self, t: usize) -> S::V {
        self[t]
    }
}

impl<S: Simd> Weights<S> for [f32] {
    #[inline(always)]
    unsafe fn get(&self, t: usize) -> S::V {
        // SAFETY: the CPU supports `S` (this function's contract).
        unsafe { S::splat(self[t]) }
    }
}
