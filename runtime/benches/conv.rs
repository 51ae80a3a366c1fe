//! Convolution benchmark over ResNet-50's conv layers (batch 1): the
//! runtime's `conv2d` (blocked im2col + packed GEMM, fused bias + ReLU) on
//! one and on two threads, next to a peer measured in the same run — the
//! whole im2col matrix followed by `matrixmultiply`'s sgemm, one thread —
//! and, for the 3×3 stride-1 layers, Winograd F(2×2, 3×3) (the kernel the
//! plan picks for them) on one thread.
//!
//! Run: `cargo bench -p d2nn-runtime --bench conv` (about 2 minutes). The
//! final table gives each layer's median GFLOP/s, its fraction of the FMA
//! peak measured by a loop at the start and end of the run, the two-thread
//! speed-up, the ratio to the peer, and Winograd's effective GFLOP/s (the
//! direct conv's FLOPs over its time) with its speed-up over `conv2d`.

mod common;

use common::{bench, config, data, measured_peak, median, PEAK_BEFORE};
use criterion::{criterion_group, criterion_main, Criterion};
use d2nn_runtime::gemm::{Activation, MatRef, PackedA};
use d2nn_runtime::kernels::conv::{conv2d, Conv2d, ConvEpilogue};
use d2nn_runtime::kernels::winograd::{self, winograd_conv3x3, WinogradWeights};
use d2nn_runtime::pool::ThreadPool;
use std::hint::black_box;

/// (label, C_in, H=W, C_out, kernel, stride): ResNet-50 v1.5 layers.
const LAYERS: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("conv1 7x7/2", 3, 224, 64, 7, 2),
    ("layer1 3x3", 64, 56, 64, 3, 1),
    ("layer1 1x1 reduce", 256, 56, 64, 1, 1),
    ("layer1 1x1 expand", 64, 56, 256, 1, 1),
    ("layer2.0 3x3/2", 128, 56, 128, 3, 2),
    ("layer2 3x3", 128, 28, 128, 3, 1),
    ("layer2.0 down 1x1/2", 256, 56, 512, 1, 2),
    ("layer3 3x3", 256, 14, 256, 3, 1),
    ("layer4 3x3", 512, 7, 512, 3, 1),
    ("layer4 1x1 expand", 512, 7, 2048, 1, 1),
];

fn geometry(c_in: usize, hw: usize, c_out: usize, k: usize, s: usize) -> Conv2d {
    let pad = k / 2;
    let out = (hw + 2 * pad - k) / s + 1;
    Conv2d { c_in, h: hw, w: hw, c_out, oh: out, ow: out, kh: k, kw: k, stride: (s, s), dilation: (1, 1), pad: (pad, pad), group: 1 }
}

fn flops(c: &Conv2d) -> u64 {
    2 * c.macs_per_sample() as u64
}

/// The peer's im2col: the whole `[C_in·kh·kw, oh·ow]` matrix.
fn im2col_whole(c: &Conv2d, x: &[f32], col: &mut [f32]) {
    let pix = c.oh * c.ow;
    let mut row = 0;
    for ci in 0..c.c_in {
        for ki in 0..c.kh {
            for kj in 0..c.kw {
                let dst = &mut col[row * pix..(row + 1) * pix];
                for oy in 0..c.oh {
                    for ox in 0..c.ow {
                        let iy = (oy * c.stride.0 + ki) as isize - c.pad.0 as isize;
                        let ix = (ox * c.stride.1 + kj) as isize - c.pad.1 as isize;
                        dst[oy * c.ow + ox] = if iy >= 0 && ix >= 0 && (iy as usize) < c.h && (ix as usize) < c.w {
                            x[(ci * c.h + iy as usize) * c.w + ix as usize]
                        } else {
                            0.0
                        };
                    }
                }
                row += 1;
            }
        }
    }
}

fn layers(crit: &mut Criterion) {
    PEAK_BEFORE.with(|p| *p.borrow_mut() = measured_peak());
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    for &(label, c_in, hw, c_out, k, s) in LAYERS {
        let c = geometry(c_in, hw, c_out, k, s);
        let depth = c.depth_per_group();
        let (pix, f) = (c.oh * c.ow, flops(&c));
        let w = data(c_out * depth, 1);
        let bias = data(c_out, 2);
        let x = data(c_in * hw * hw, 3);
        let mut y = vec![0.0f32; c_out * pix];
        let packed = [PackedA::pack(MatRef::row_major(&w, c_out, depth))];
        let epi = ConvEpilogue { bias: Some(&bias), residual: None, activation: Activation::Relu };
        for pool in &pools {
            let id = format!("d2nn-{}t", pool.threads());
            bench(crit, label, &id, f, || conv2d(&c, &packed, epi, black_box(&x), &mut y, pool).expect("valid geometry"));
        }
        if winograd::suits(&c) {
            let weights = WinogradWeights::new(&w, c_out, c_in).expect("a 3x3 weight");
            bench(crit, label, "winograd-1t", f, || winograd_conv3x3(&c, &weights, epi, black_box(&x), &mut y, &pools[0]).expect("valid geometry"));
        }
        let mut col = vec![0.0f32; depth * pix];
        bench(crit, label, "im2col+matrixmultiply", f, || {
            im2col_whole(&c, black_box(&x), &mut col);
            // SAFETY: row-major buffers of exactly c_out×depth, depth×pix and c_out×pix floats.
            unsafe {
                matrixmultiply::sgemm(c_out, depth, pix, 1.0, w.as_ptr(), depth as isize, 1, col.as_ptr(), pix as isize, 1, 0.0, y.as_mut_ptr(), pix as isize, 1)
            }
        });
    }
}

fn report(_: &mut Criterion) {
    let before = PEAK_BEFORE.with(|p| *p.borrow());
    let after = measured_peak();
    let peak = before.max(after);
    println!();
    println!("FMA-loop peak measured before / after: {before:.1} / {after:.1} GFLOP/s (one core)");
    println!("{:<22} {:>9} {:>7} {:>9} {:>7} {:>9} {:>8} {:>9} {:>8}", "layer", "1 thread", "%peak", "2 threads", "2t/1t", "peer", "1t/peer", "winograd", "wino/1t");
    for &(label, c_in, hw, c_out, k, s) in LAYERS {
        let f = flops(&geometry(c_in, hw, c_out, k, s)) as f64;
        let gf = |id: &str| median(&format!("{label}/{id}")).map_or(f64::NAN, |t| f / t / 1e9);
        let (one, two, peer, wino) = (gf("d2nn-1t"), gf("d2nn-2t"), gf("im2col+matrixmultiply"), gf("winograd-1t"));
        let wino = if wino.is_nan() { format!("{:>9} {:>8}", "-", "-") } else { format!("{wino:>9.1} {:>7.2}x", wino / one) };
        println!(
            "{label:<22} {one:>9.1} {:>6.1}% {two:>9.1} {:>6.2}x {peer:>9.1} {:>7.2}x {wino}",
            one / peak * 100.0,
            two / one,
            one / peer
        );
    }
    println!("(GFLOP/s from per-sample medians, bias + ReLU fused; peer = whole im2col, then matrixmultiply sgemm, one thread;");
    println!(" winograd = F(2x2, 3x3) on one thread, effective GFLOP/s = the direct conv's FLOPs over its time)");
}

criterion_group! {
    name = benches;
    config = config();
    targets = layers, report
}
criterion_main!(benches);
