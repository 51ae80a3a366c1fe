//! GEMM benchmark over ResNet-50 conv-shaped products and a batch-1 FC GEMV,
//! against `matrixmultiply` in the same run.
//!
//! Run: `cargo bench -p d2nn-runtime --bench gemm` (about 1.5 minutes).
//! Criterion prints its own per-benchmark lines; at the end a table gives
//! each shape's median GFLOP/s, its fraction of the 265 GFLOP/s single-core
//! peak the team quoted and of the peak measured here by an FMA loop at the
//! start of the run, and the ratio to `matrixmultiply`.
//!
//! Variants: `packed` is the intended use (weight pre-packed once, the
//! activation packed on the fly), `plain` packs both operands every call
//! (what `matrixmultiply` does), `avx2` is `packed` forced onto the AVX2
//! kernels.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use d2nn_runtime::gemm::{sgemm_on, Epilogue, GemmScratch, Isa, MatMut, MatRef, PackedA, PackedB};

const QUOTED_PEAK: f64 = 265.0;

/// (M, N, K, label). Conv shapes: C[C_out, pixels] = W[C_out, C_in·kh·kw] · X.
const CONV: &[(usize, usize, usize, &str)] = &[
    (64, 3136, 576, "conv2_x 3x3"),
    (128, 784, 1152, "conv3_x 3x3"),
    (256, 196, 2304, "conv4_x 3x3"),
    (512, 49, 4608, "conv5_x 3x3"),
    (64, 3136, 64, "conv2_x 1x1 reduce"),
    (256, 3136, 64, "conv2_x 1x1 expand"),
    (2048, 49, 512, "conv5_x 1x1 expand"),
];

thread_local! {
    /// Per-iteration times of every benchmark, by id.
    static TIMES: RefCell<BTreeMap<String, Vec<f64>>> = const { RefCell::new(BTreeMap::new()) };
    /// FMA-loop peak measured before the first benchmark.
    static PEAK_BEFORE: RefCell<f64> = const { RefCell::new(f64::NAN) };
}

fn record(id: &str, iters: u64, d: Duration) {
    TIMES.with(|t| t.borrow_mut().entry(id.to_string()).or_default().push(d.as_secs_f64() / iters as f64));
}

fn median(id: &str) -> Option<f64> {
    TIMES.with(|t| {
        let t = t.borrow();
        let mut v = t.get(id)?.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Some(v[v.len() / 2])
    })
}

fn data(len: usize, seed: u32) -> Vec<f32> {
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
fn bench(c: &mut Criterion, group: &str, id: &str, flops: u64, mut f: impl FnMut()) {
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

fn conv_shapes(c: &mut Criterion) {
    PEAK_BEFORE.with(|p| *p.borrow_mut() = measured_peak());
    let best = Isa::detect();
    for &(m, n, k, label) in CONV {
        let group = format!("{m}x{n}x{k}");
        let flops = 2 * (m * n * k) as u64;
        let w = data(m * k, 1);
        let x = data(k * n, 2);
        let mut out = vec![0.0f32; m * n];
        let wp = PackedA::pack(MatRef::row_major(&w, m, k));
        let mut scratch = GemmScratch::new();
        let _ = label;
        bench(c, &group, "d2nn-packed", flops, || {
            sgemm_on(
                best,
                &wp,
                MatRef::row_major(black_box(&x), k, n),
                MatMut::row_major(&mut out, m, n),
                &Epilogue::NONE,
                &mut scratch,
            );
        });
        bench(c, &group, "d2nn-plain", flops, || {
            sgemm_on(
                best,
                MatRef::row_major(black_box(&w), m, k),
                MatRef::row_major(black_box(&x), k, n),
                MatMut::row_major(&mut out, m, n),
                &Epilogue::NONE,
                &mut scratch,
            );
        });
        if Isa::Avx2.is_available() && best != Isa::Avx2 {
            bench(c, &group, "d2nn-avx2", flops, || {
                sgemm_on(
                    Isa::Avx2,
                    &wp,
                    MatRef::row_major(black_box(&x), k, n),
                    MatMut::row_major(&mut out, m, n),
                    &Epilogue::NONE,
                    &mut scratch,
                );
            });
        }
        bench(c, &group, "matrixmultiply", flops, || {
            // SAFETY: row-major buffers of exactly m×k, k×n and m×n floats.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    black_box(w.as_ptr()),
                    k as isize,
                    1,
                    black_box(x.as_ptr()),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        });
    }
}

fn fc_gemv(c: &mut Criterion) {
    let best = Isa::detect();
    let (n, k) = (1000, 2048);
    let group = format!("1x{n}x{k}");
    let flops = 2 * (n * k) as u64;
    // W stored [out, in] as in ONNX Gemm(transB = 1); y = x · Wᵀ.
    let w = data(n * k, 3);
    let x = data(k, 4);
    let mut y = vec![0.0f32; n];
    let wp = PackedB::pack(MatRef::row_major(&w, n, k).t());
    let mut scratch = GemmScratch::new();
    bench(c, &group, "d2nn-packed", flops, || {
        sgemm_on(
            best,
            MatRef::row_major(black_box(&x), 1, k),
            &wp,
            MatMut::row_major(&mut y, 1, n),
            &Epilogue::NONE,
            &mut scratch,
        );
    });
    bench(c, &group, "d2nn-plain", flops, || {
        sgemm_on(
            best,
            MatRef::row_major(black_box(&x), 1, k),
            MatRef::row_major(black_box(&w), n, k).t(),
            MatMut::row_major(&mut y, 1, n),
            &Epilogue::NONE,
            &mut scratch,
        );
    });
    bench(c, &group, "matrixmultiply", flops, || {
        // SAFETY: x is 1×k, w is n×k row-major read as its k×n transpose, y is 1×n.
        unsafe {
            matrixmultiply::sgemm(
                1,
                k,
                n,
                1.0,
                black_box(x.as_ptr()),
                k as isize,
                1,
                black_box(w.as_ptr()),
                1,
                k as isize,
                0.0,
                y.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    });
    // The roofline for the GEMV: one read of the same number of bytes.
    let bytes = wp.bytes();
    let stream = data(bytes / 4, 5);
    bench(c, &group, "read-bandwidth", flops, || {
        black_box(sum(black_box(&stream)));
    });
}

/// Sum with 8 independent lanes groups so it is bound by loads, not latency.
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 32];
    let chunks = v.chunks_exact(32);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Single-core f32 FMA throughput from independent accumulator chains.
fn measured_peak() -> f64 {
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

fn report(_: &mut Criterion) {
    // The machine is shared: take the better of a measurement before and
    // after the benchmarks as the peak.
    let before = PEAK_BEFORE.with(|p| *p.borrow());
    let after = measured_peak();
    let peak = before.max(after);
    let gf = |id: &str, flops: f64| median(id).map(|t| flops / t / 1e9);
    println!();
    println!(
        "isa: {:?}, tile {:?}; FMA-loop peak measured before / after: {before:.1} / {after:.1} GFLOP/s",
        Isa::detect(),
        Isa::detect().tile()
    );
    println!(
        "{:<16} {:<20} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8}",
        "M x N x K", "layer", "packed", "%265", "%meas", "plain", "avx2", "mm", "pk/mm"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut rows: Vec<(String, &str, f64)> =
        CONV.iter().map(|&(m, n, k, l)| (format!("{m}x{n}x{k}"), l, 2.0 * (m * n * k) as f64)).collect();
    rows.push(("1x1000x2048".into(), "fc1000 GEMV", 2.0 * 1000.0 * 2048.0));
    for (g, label, flops) in rows {
        let p = gf(&format!("{g}/d2nn-packed"), flops);
        let mm = gf(&format!("{g}/matrixmultiply"), flops);
        println!(
            "{:<16} {:<20} {:>9} {:>6.1}% {:>7.1}% {:>9} {:>9} {:>9} {:>7.2}x",
            g,
            label,
            fmt(p),
            p.unwrap_or(f64::NAN) / QUOTED_PEAK * 100.0,
            p.unwrap_or(f64::NAN) / peak * 100.0,
            fmt(gf(&format!("{g}/d2nn-plain"), flops)),
            fmt(gf(&format!("{g}/d2nn-avx2"), flops)),
            fmt(mm),
            p.unwrap_or(f64::NAN) / mm.unwrap_or(f64::NAN),
        );
    }
    if let (Some(t), Some(r)) = (median("1x1000x2048/d2nn-packed"), median("1x1000x2048/read-bandwidth")) {
        let bytes = (1000usize.div_ceil(32) * 32 * 2048 * 4) as f64;
        println!(
            "GEMV streams {:.1} MB: {:.1} GB/s; a plain read of as many bytes runs at {:.1} GB/s",
            bytes / 1e6,
            bytes / t / 1e9,
            bytes / r / 1e9
        );
    }
    println!(
        "(GFLOP/s from per-sample medians; %265 = of the quoted peak, %meas = of the better FMA-loop figure above)"
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1500))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = conv_shapes, fc_gemv, report
}
criterion_main!(benches);
