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

mod common;

use common::{bench, config, data, measured_peak, median, PEAK_BEFORE};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
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

criterion_group! {
    name = benches;
    config = config();
    targets = conv_shapes, fc_gemv, report
}
criterion_main!(benches);
