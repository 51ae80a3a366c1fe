//! Helpers shared by the runtime's benchmarks: criterion timing with the
//! per-iteration samples kept for a final table, input data, and the
//! single-core FMA peak measured on this machine.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use d2nn_runtime::gemm::Isa;

thread_local! {
    /// Per-iteration times of every benchmark, by id.
    static TIMES: RefCell<BTreeMap<String, Vec<f64>>> = const { RefCell::new(BTreeMap::new()) };
    /// FMA-loop peak measured before the first benchmark.
    pub static PEAK_BEFORE: RefCell<f64> = const { RefCell::new(f64::NAN) };
}

pub fn record(id: &str, iters: u64, d: Duration) {
    TIMES.with(|t| t.borrow_mut().entry(id.to_string()).or_default().push(d.as_secs_f64() / iters as f64));
}

pub fn median(id: &str) -> Option<f64> {
    TIMES.with(|t| {
        let t = t.borrow();
        let mut v = t.get(id)?.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Some(v[v.len() / 2])
    })
}

pub fn data(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

/// Times `f` with criterion and records the per-iteration samples under `id`.
pub fn bench(c: &mut Criterion, group: &str, id: &str, flops: u64, mut f: impl FnMut()) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(flops));
    let key = format!("{group}/{id}");
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            let d = t.elapsed();
            record(&key, iters, d);
            d
        })
    });
    g.finish();
}

/// Single-core f32 FMA throughput from independent accumulator chains.
pub fn measured_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        fn run512(iters: u64) -> f32 {
            let mut acc = [_mm512_setzero_ps(); 16];
            let a = _mm512_set1_ps(0.999_999);
            let b = _mm512_set1_ps(1e-7);
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm512_fmadd_ps(a, *r, b);
                }
            }
            let mut s = _mm512_setzero_ps();
            for r in acc {
                s = _mm512_add_ps(s, r);
            }
            _mm512_reduce_add_ps(s)
        }
        #[target_feature(enable = "avx2,fma")]
        fn run256(iters: u64) -> f32 {
            let mut acc = [_mm256_setzero_ps(); 12];
            let a = _mm256_set1_ps(0.999_999);
            let b = _mm256_set1_ps(1e-7);
            for _ in 0..iters {
                for r in acc.iter_mut() {
                    *r = _mm256_fmadd_ps(a, *r, b);
                }
            }
            let mut s = [0.0f32; 8];
            let mut t = _mm256_setzero_ps();
            for r in acc {
                t = _mm256_add_ps(t, r);
            }
            // SAFETY: s holds 8 floats.
            unsafe { _mm256_storeu_ps(s.as_mut_ptr(), t) };
            s.iter().sum()
        }
        let (iters, per_iter): (u64, f64) = if Isa::Avx512.is_available() {
            (20_000_000, 16.0 * 16.0 * 2.0)
        } else if Isa::Avx2.is_available() {
            (20_000_000, 12.0 * 8.0 * 2.0)
        } else {
            return f64::NAN;
        };
        let mut best = 0.0f64;
        for _ in 0..7 {
            let t = Instant::now();
            // SAFETY: the feature was detected just above.
            let r = unsafe {
                if Isa::Avx512.is_available() {
                    run512(iters)
                } else {
                    run256(iters)
                }
            };
            black_box(r);
            best = best.max(iters as f64 * per_iter / t.elapsed().as_secs_f64() / 1e9);
        }
        best
    }
    #[cfg(not(target_arch = "x86_64"))]
    f64::NAN
}

pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1500))
        .without_plots()
}

