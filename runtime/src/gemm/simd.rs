//! A tiny vector abstraction over the three instruction sets the GEMM core
//! targets, so that the micro-kernel, the GEMV kernels and the epilogue are
//! written once and instantiated per instruction set.
//!
//! Every method is `#[inline(always)]`: the generic kernels are only ever
//! called from wrappers carrying `#[target_feature(enable = ...)]`, and after
//! inlining the intrinsics end up inside a function compiled with the right
//! features (checked in the disassembly: the AVX-512 kernel's inner loop is
//! nothing but `vfmadd231ps zmm, zmm, dword ptr [..]{1to16}` and two loads).
//!
//! All methods are `unsafe`: the x86 ones require the CPU feature (callers
//! guarantee it by dispatching on `is_x86_feature_detected!`), and the memory
//! ones dereference raw pointers (callers guarantee `LANES` — or `n` for the
//! partial forms — readable/writable floats).

/// Vector operations used by the kernels. `V` holds `LANES` f32 lanes.
pub(crate) trait Simd: Copy + 'static {
    const LANES: usize;
    type V: Copy;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    /// Loads `LANES` floats (no alignment requirement).
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads the first `n < LANES` floats, zero-filling the rest.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n < LANES` lanes; memory past them is not touched.
    unsafe fn store_partial(p: *mut f32, n: usize, v: Self::V);
    /// `a * b + c`, fused.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Rounds to the nearest integer (ties to even), as a float.
    unsafe fn round(a: Self::V) -> Self::V;
    /// `2^n` for lanes holding integral values in `[-126, 127]`.
    unsafe fn pow2i(n: Self::V) -> Self::V;
    /// Lane-wise `if a < 0 { a * alpha } else { a }`.
    unsafe fn leaky(a: Self::V, alpha: Self::V) -> Self::V;
    /// Horizontal sum of the lanes.
    unsafe fn reduce_add(a: Self::V) -> f32;
    /// The even and the odd elements of the `2·LANES` floats `a ++ b`.
    unsafe fn split_even_odd(a: Self::V, b: Self::V) -> (Self::V, Self::V);
    /// `a[0], b[0], a[1], b[1], …` as two vectors (the inverse of `split_even_odd`).
    unsafe fn merge_even_odd(a: Self::V, b: Self::V) -> (Self::V, Self::V);

    /// `e^x`, Cephes `expf` polynomial after Cody–Waite range reduction
    /// (≤ 2 ulp on the clamped range; inputs are clamped to ±87.3 so the
    /// result neither overflows nor goes subnormal).
    #[inline(always)]
    unsafe fn exp(x: Self::V) -> Self::V {
        // SAFETY: pure lane arithmetic; the caller guarantees the CPU supports Self.
        unsafe {
            // `x` second, so NaN survives the clamp (see `max`).
            let x = Self::min(Self::splat(88.3), Self::max(Self::splat(-87.3), x));
            let n = Self::round(Self::mul(x, Self::splat(std::f32::consts::LOG2_E)));
            let r = Self::fmadd(n, Self::splat(-0.693_359_4), x);
            let r = Self::fmadd(n, Self::splat(2.121_944_4e-4), r);
            let mut p = Self::splat(1.987_569_1e-4);
            p = Self::fmadd(p, r, Self::splat(1.398_199_9e-3));
            p = Self::fmadd(p, r, Self::splat(8.333_452e-3));
            p = Self::fmadd(p, r, Self::splat(4.166_579_6e-2));
            p = Self::fmadd(p, r, Self::splat(1.666_666_5e-1));
            p = Self::fmadd(p, r, Self::splat(0.5));
            let r2 = Self::mul(r, r);
            let e = Self::add(Self::fmadd(p, r2, r), Self::splat(1.0));
            Self::mul(e, Self::pow2i(n))
        }
    }

    /// `1 / (1 + e^-x)`.
    #[inline(always)]
    unsafe fn sigmoid(x: Self::V) -> Self::V {
        // SAFETY: as for `exp`.
        unsafe {
            let one = Self::splat(1.0);
            let e = Self::exp(Self::sub(Self::zero(), x));
            Self::div(one, Self::add(one, e))
        }
    }
}

/// The first `S::LANES` floats of `src[at..]`, zeros past its end.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(crate) unsafe fn load_at<S: Simd>(src: &[f32], at: usize) -> S::V {
    let avail = src.len().saturating_sub(at);
    // SAFETY: `avail` floats are readable from `at`, and only as many are read.
    unsafe {
        if avail >= S::LANES {
            S::load(src.as_ptr().add(at))
        } else if avail > 0 {
            S::load_partial(src.as_ptr().add(at), avail)
        } else {
            S::zero()
        }
    }
}

/// Stores the first `dst.len() ≤ S::LANES` lanes of `v` into `dst`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(crate) unsafe fn store_prefix<S: Simd>(dst: &mut [f32], v: S::V) {
    let n = dst.len().min(S::LANES);
    // SAFETY: `n` floats of `dst` are writable and only as many are written.
    unsafe {
        if n == S::LANES {
            S::store(dst.as_mut_ptr(), v)
        } else {
            S::store_partial(dst.as_mut_ptr(), n, v)
        }
    }
}

/// Portable fallback: four lanes in a plain array. Every operation is a
/// fixed-length loop that LLVM turns into SSE2 instructions on x86-64 (and
/// into NEON elsewhere); no `std::arch` is involved.
#[derive(Clone, Copy)]
pub(crate) struct Portable;

const PL: usize = 4;

#[inline(always)]
fn map2(a: [f32; PL], b: [f32; PL], f: impl Fn(f32, f32) -> f32) -> [f32; PL] {
    let mut r = [0.0; PL];
    for i in 0..PL {
        r[i] = f(a[i], b[i]);
    }
    r
}

impl Simd for Portable {
    const LANES: usize = PL;
    type V = [f32; PL];

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; PL]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; PL]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees PL readable floats at `p`.
        unsafe { p.cast::<[f32; PL]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: the caller guarantees PL writable floats at `p`.
        unsafe { p.cast::<[f32; PL]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V {
        let mut r = [0.0; PL];
        for (i, r) in r.iter_mut().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` readable floats at `p`.
            *r = unsafe { *p.add(i) };
        }
        r
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, n: usize, v: Self::V) {
        for (i, v) in v.iter().enumerate().take(n) {
            // SAFETY: the caller guarantees `n` writable floats at `p`.
            unsafe { *p.add(i) = *v };
        }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // Plain multiply-add: `f32::mul_add` is a libm call without FMA
        // hardware, which would make the fallback kernel crawl.
        let mut r = [0.0; PL];
        for i in 0..PL {
            r[i] = a[i] * b[i] + c[i];
        }
        r
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        map2(a, b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        map2(a, b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        map2(a, b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V {
        map2(a, b, |x, y| x / y)
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        // `x > y ? x : y` like the x86 instructions (NaN in `a` gives `b`).
        map2(a, b, |x, y| if x > y { x } else { y })
    }
    #[inline(always)]
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V {
        map2(a, b, |x, y| if x < y { x } else { y })
    }
    #[inline(always)]
    unsafe fn round(a: Self::V) -> Self::V {
        map2(a, a, |x, _| x.round_ties_even())
    }
    #[inline(always)]
    unsafe fn pow2i(n: Self::V) -> Self::V {
        map2(n, n, |x, _| f32::from_bits((((x as i32) + 127) as u32) << 23))
    }
    #[inline(always)]
    unsafe fn leaky(a: Self::V, alpha: Self::V) -> Self::V {
        map2(a, alpha, |x, al| if x < 0.0 { x * al } else { x })
    }
    #[inline(always)]
    unsafe fn reduce_add(a: Self::V) -> f32 {
        (a[0] + a[1]) + (a[2] + a[3])
    }
    #[inline(always)]
    unsafe fn split_even_odd(a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        ([a[0], a[2], b[0], b[2]], [a[1], a[3], b[1], b[3]])
    }
    #[inline(always)]
    unsafe fn merge_even_odd(a: Self::V, b: Self::V) -> (Self::V, Self::V) {
        ([a[0], b[0], a[1], b[1]], [a[2], b[2], a[3], b[3]])
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// AVX2 + FMA, eight lanes in a `__m256`.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;

    /// `[-1; n] ++ [0; 8 - n]` as the mask for `vmaskmovps`.
    #[inline(always)]
    unsafe fn mask8(n: usize) -> __m256i {
        static M: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        debug_assert!(n <= 8);
        // SAFETY: 8 - n ∈ [0, 8], so the 8 ints read stay inside `M`.
        unsafe { _mm256_loadu_si256(M.as_ptr().add(8 - n).cast()) }
    }

    // SAFETY (whole impl): the caller guarantees AVX2 and FMA are available and
    // that pointers cover the lanes accessed, as documented on the trait.
    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;

        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: AVX2/FMA is available and `p` covers the lanes accessed (trait contract).
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: AVX2/FMA is available and `p` covers the lanes accessed (trait contract).
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
            // Masked-off lanes are not accessed (no fault past the end).
            // SAFETY: AVX2/FMA is available and `p` covers the lanes accessed (trait contract).
            unsafe { _mm256_maskload_ps(p, mask8(n)) }
        }
        #[inline(always)]
        unsafe fn store_partial(p: *mut f32, n: usize, v: __m256) {
            // SAFETY: AVX2/FMA is available and `p` covers the lanes accessed (trait contract).
            unsafe { _mm256_maskstore_ps(p, mask8(n), v) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn round(a: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe {
                let i = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i))
            }
        }
        #[inline(always)]
        unsafe fn leaky(a: __m256, alpha: __m256) -> __m256 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe {
                let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_setzero_ps());
                _mm256_blendv_ps(a, _mm256_mul_ps(a, alpha), neg)
            }
        }
        #[inline(always)]
        unsafe fn reduce_add(a: __m256) -> f32 {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
                _mm_cvtss_f32(s)
            }
        }
        #[inline(always)]
        unsafe fn split_even_odd(a: __m256, b: __m256) -> (__m256, __m256) {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe {
                // Within 128-bit halves: [a0 a2 b0 b2 | a4 a6 b4 b6]; then the
                // 64-bit pairs in the order 0, 2, 1, 3.
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
                (order(even), order(odd))
            }
        }
        #[inline(always)]
        unsafe fn merge_even_odd(a: __m256, b: __m256) -> (__m256, __m256) {
            // SAFETY: AVX2/FMA is available (trait contract); register-only operation.
            unsafe {
                // [a0 b0 a1 b1 | a4 b4 a5 b5] and [a2 b2 a3 b3 | a6 b6 a7 b7]; then the halves.
                let (low, high) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
                (_mm256_permute2f128_ps::<0x20>(low, high), _mm256_permute2f128_ps::<0x31>(low, high))
            }
        }
    }

    /// AVX-512F, sixteen lanes in a `__m512`; partial accesses use `k` masks.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    #[inline(always)]
    fn mask16(n: usize) -> __mmask16 {
        debug_assert!(n <= 16);
        ((1u32 << n) - 1) as __mmask16
    }

    // SAFETY (whole impl): the caller guarantees AVX-512F is available and that
    // pointers cover the lanes accessed, as documented on the trait.
    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;

        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: AVX-512F is available and `p` covers the lanes accessed (trait contract).
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            // SAFETY: AVX-512F is available and `p` covers the lanes accessed (trait contract).
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
            // Masked-off lanes are not accessed (fault suppression).
            // SAFETY: AVX-512F is available and `p` covers the lanes accessed (trait contract).
            unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
        }
        #[inline(always)]
        unsafe fn store_partial(p: *mut f32, n: usize, v: __m512) {
            // SAFETY: AVX-512F is available and `p` covers the lanes accessed (trait contract).
            unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn round(a: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe {
                let i = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
                _mm512_castsi512_ps(_mm512_slli_epi32::<23>(i))
            }
        }
        #[inline(always)]
        unsafe fn leaky(a: __m512, alpha: __m512) -> __m512 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe {
                let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_setzero_ps());
                _mm512_mask_mul_ps(a, neg, a, alpha)
            }
        }
        #[inline(always)]
        unsafe fn reduce_add(a: __m512) -> f32 {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe { _mm512_reduce_add_ps(a) }
        }
        #[inline(always)]
        unsafe fn split_even_odd(a: __m512, b: __m512) -> (__m512, __m512) {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe {
                // Indices 0..16 pick from `a`, 16..32 from `b`.
                let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                (_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b))
            }
        }
        #[inline(always)]
        unsafe fn merge_even_odd(a: __m512, b: __m512) -> (__m512, __m512) {
            // SAFETY: AVX-512F is available (trait contract); register-only operation.
            unsafe {
                let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
                let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
                (_mm512_permutex2var_ps(a, low, b), _mm512_permutex2var_ps(a, high, b))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `split_even_odd` and `merge_even_odd` on `S` against their definitions.
    fn even_odd_round_trip<S: Simd>() {
        let lanes = S::LANES;
        let data: Vec<f32> = (0..2 * lanes).map(|i| i as f32).collect();
        let (mut even, mut odd, mut low, mut high) = (vec![0.0; lanes], vec![0.0; lanes], vec![0.0; lanes], vec![0.0; lanes]);
        // SAFETY: the caller checked that the CPU supports `S`; every slice
        // holds `LANES` floats.
        unsafe {
            let (e, o) = S::split_even_odd(load_at::<S>(&data, 0), load_at::<S>(&data, lanes));
            store_prefix::<S>(&mut even, e);
            store_prefix::<S>(&mut odd, o);
            let (l, h) = S::merge_even_odd(e, o);
            store_prefix::<S>(&mut low, l);
            store_prefix::<S>(&mut high, h);
        }
        assert_eq!(even, data.iter().copied().step_by(2).collect::<Vec<_>>());
        assert_eq!(odd, data.iter().copied().skip(1).step_by(2).collect::<Vec<_>>());
        assert_eq!([low, high].concat(), data);
        // Loads past the end of a slice give zeros; stores write only the prefix.
        let mut short = vec![-1.0; lanes + 1];
        // SAFETY: as above.
        unsafe { store_prefix::<S>(&mut short[..lanes - 1], load_at::<S>(&data[..lanes - 1], 0)) };
        assert_eq!(short[..lanes - 1], data[..lanes - 1]);
        assert_eq!(short[lanes - 1..], [-1.0, -1.0]);
        // SAFETY: as above.
        let beyond = unsafe { load_at::<S>(&data, 2 * lanes) };
        let mut zeros = vec![1.0; lanes];
        // SAFETY: as above.
        unsafe { store_prefix::<S>(&mut zeros, beyond) };
        assert!(zeros.iter().all(|&z| z == 0.0));
    }

    #[test]
    fn even_odd_shuffles_on_every_instruction_set() {
        even_odd_round_trip::<Portable>();
        #[cfg(target_arch = "x86_64")]
        {
            if crate::gemm::Isa::Avx2.is_available() {
                even_odd_round_trip::<Avx2>();
            }
            if crate::gemm::Isa::Avx512.is_available() {
                even_odd_round_trip::<Avx512>();
            }
        }
    }
}
