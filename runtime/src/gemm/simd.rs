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
    }
}
