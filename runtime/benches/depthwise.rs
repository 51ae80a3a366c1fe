//! Depthwise convolution benchmark over MobileNetV2's depthwise layers
//! (3×3, pad 1, batch 1, ReLU6 fused), against the previous kernel in the
//! same run.
//!
//! Run: `cargo bench -p d2nn-runtime --bench depthwise` (about 2 minutes).
//! The machine is shared: compare columns of one run, not runs.
//! At the end a table gives each layer's median GFLOP/s (`2 · 9 · outputs`
//! flops) for: `old`, the row-axpy / scalar-gather kernel this one replaced
//! (copied below, its ReLU6 as a separate pass); `new`, one thread, the ISA
//! `depthwise` picks; `avx2`, forced onto AVX2; `2 threads`; and, as the
//! memory roof, `memcpy`: a copy of the input into a buffer of its size
//! (`new` at 1.0× of it would move data as fast as a plain copy).

mod common;

use common::{bench, config, data, median};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use d2nn_runtime::gemm::{Activation, Isa};
use d2nn_runtime::kernels::depthwise::{depthwise, depthwise_on, Depthwise};
use d2nn_runtime::pool::ThreadPool;

/// (channels, input side, stride) of MobileNetV2's depthwise layers.
const LAYERS: &[(usize, usize, usize)] = &[
    (32, 112, 1),
    (96, 112, 2),
    (144, 56, 1),
    (144, 56, 2),
    (192, 28, 1),
    (192, 28, 2),
    (384, 14, 1),
    (576, 14, 1),
    (576, 14, 2),
    (960, 7, 1),
];

const RELU6: Activation = Activation::Clip { min: 0.0, max: 6.0 };

fn geometry(channels: usize, side: usize, stride: usize) -> Depthwise {
    let out = (side + 2 - 3) / stride + 1;
    Depthwise { channels, multiplier: 1, h: side, w: side, oh: out, ow: out, kh: 3, kw: 3, stride: (stride, stride), dilation: (1, 1), pad: (1, 1) }
}

fn layer_id(&(c, side, stride): &(usize, usize, usize)) -> String {
    format!("{c}ch {side}x{side} s{stride}")
}

fn layers(c: &mut Criterion) {
    let one = ThreadPool::new(1);
    let two = ThreadPool::new(2);
    for layer in LAYERS {
        let &(channels, side, stride) = layer;
        let d = geometry(channels, side, stride);
        let group = layer_id(layer);
        let flops = (2 * 9 * channels * d.oh * d.ow) as u64;
        let w = data(channels * 9, 1);
        let b = data(channels, 2);
        let x = data(channels * side * side, 3);
        let mut y = vec![0.0f32; channels * d.oh * d.ow];
        bench(c, &group, "old", flops, || {
            old_depthwise(&d, black_box(&w), Some(&b), black_box(&x), &mut y);
            for v in y.iter_mut() {
                *v = v.clamp(0.0, 6.0);
            }
        });
        bench(c, &group, "new", flops, || {
            depthwise(&d, black_box(&w), Some(&b), RELU6, black_box(&x), &mut y, &one).unwrap();
        });
        if Isa::Avx2.is_available() && Isa::detect() != Isa::Avx2 {
            bench(c, &group, "avx2", flops, || {
                depthwise_on(Isa::Avx2, &d, black_box(&w), Some(&b), RELU6, black_box(&x), &mut y, &one).unwrap();
            });
        }
        bench(c, &group, "2 threads", flops, || {
            depthwise(&d, black_box(&w), Some(&b), RELU6, black_box(&x), &mut y, &two).unwrap();
        });
        let mut copy = vec![0.0f32; x.len()];
        bench(c, &group, "memcpy", flops, || {
            copy.copy_from_slice(black_box(&x));
            black_box(&mut copy);
        });
    }
}

fn report(_: &mut Criterion) {
    println!();
    println!("isa: {:?}; GFLOP/s from per-sample medians (memcpy column: time of new / time of memcpy(x))", Isa::detect());
    println!("{:<20} {:>8} {:>8} {:>8} {:>10} {:>9} {:>10} {:>10}", "layer", "old", "new", "avx2", "2 threads", "new/old", "time new", "new/memcpy");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let (mut total_old, mut total_new) = (0.0, 0.0);
    for layer in LAYERS {
        let &(channels, side, stride) = layer;
        let d = geometry(channels, side, stride);
        let flops = (2 * 9 * channels * d.oh * d.ow) as f64;
        let id = layer_id(layer);
        let t = |v: &str| median(&format!("{id}/{v}"));
        let gf = |v: &str| t(v).map(|t| flops / t / 1e9);
        let (old, new) = (t("old").unwrap_or(f64::NAN), t("new").unwrap_or(f64::NAN));
        total_old += old;
        total_new += new;
        println!(
            "{:<20} {:>8} {:>8} {:>8} {:>10} {:>8.2}x {:>8.1}us {:>9.2}x",
            id,
            fmt(gf("old")),
            fmt(gf("new")),
            fmt(gf("avx2")),
            fmt(gf("2 threads")),
            old / new,
            new * 1e6,
            new / t("memcpy").unwrap_or(f64::NAN),
        );
    }
    println!("sum of the ten layers: old {:.0} us, new {:.0} us", total_old * 1e6, total_new * 1e6);
}

/// The kernel before this one (commit 45e3fa9), unchanged: an axpy over the
/// output row per tap for stride 1, a scalar gather otherwise.
fn old_depthwise(d: &Depthwise, weights: &[f32], bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) {
    let c_out = d.channels * d.multiplier;
    let (plane_in, plane_out, taps) = (d.h * d.w, d.oh * d.ow, d.kh * d.kw);
    let ((sh, sw), (dh, dw), (ph, pw)) = (d.stride, d.dilation, d.pad);
    for (xn, yn) in x.chunks_exact(d.channels * plane_in.max(1)).zip(y.chunks_exact_mut((c_out * plane_out).max(1))) {
        for co in 0..c_out {
            let plane = &xn[co / d.multiplier * plane_in..][..plane_in];
            let out = &mut yn[co * plane_out..][..plane_out];
            out.fill(bias.map_or(0.0, |b| b[co]));
            let kernel = &weights[co * taps..][..taps];
            for oy in 0..d.oh {
                let row_out = &mut out[oy * d.ow..][..d.ow];
                for ki in 0..d.kh {
                    let iy = (oy * sh + ki * dh) as isize - ph as isize;
                    if iy < 0 || iy >= d.h as isize {
                        continue;
                    }
                    let row_in = &plane[iy as usize * d.w..][..d.w];
                    for kj in 0..d.kw {
                        let wgt = kernel[ki * d.kw + kj];
                        let shift = (kj * dw) as isize - pw as isize;
                        let lo = if shift >= 0 { 0 } else { ((-shift) as usize).div_ceil(sw) };
                        let hi = if (d.w as isize) - shift <= 0 { 0 } else { (((d.w as isize - shift) as usize).div_ceil(sw)).min(d.ow) };
                        if lo >= hi {
                            continue;
                        }
                        let first = (lo * sw) as isize + shift;
                        if sw == 1 {
                            let src = &row_in[first as usize..][..hi - lo];
                            for (o, &v) in row_out[lo..hi].iter_mut().zip(src) {
                                *o += wgt * v;
                            }
                        } else {
                            for (k, o) in row_out[lo..hi].iter_mut().enumerate() {
                                *o += wgt * row_in[first as usize + k * sw];
                            }
                        }
                    }
                }
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = layers, report
}
criterion_main!(benches);
