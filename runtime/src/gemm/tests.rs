//! Every path against a naive f64 triple loop.
//!
//! The property test draws shapes (including 1, odd sizes, sizes that are not
//! multiples of any tile, K = 1 and K beyond one KC block), layouts (row- and
//! column-major, padded strides, strided C and residual), plain or packed
//! operands, every epilogue, the orientation (auto / direct / transposed),
//! the blocking (tiny blocks to cross every block boundary cheaply) and the
//! instruction set (each available one, explicitly), and the threading (the
//! caller alone, or a pool of 2 or 3 threads splitting the columns).

use super::*;
use proptest::prelude::*;

/// The instruction sets this CPU runs, each tested explicitly.
fn isas() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.is_available()).collect()
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A matrix stored with a given layout inside a larger buffer.
#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    ColMajor,
    /// Row-major with `pad` extra elements per row.
    PaddedRows(usize),
    /// Column-major with `pad` extra elements per column.
    PaddedCols(usize),
    /// Both strides non-unit: element (i, j) at `i * (2 * cols + 1) + 2 * j`.
    Strided,
}

impl Layout {
    fn strides(self, rows: usize, cols: usize) -> (usize, usize) {
        match self {
            Layout::RowMajor => (cols, 1),
            Layout::ColMajor => (1, rows),
            Layout::PaddedRows(p) => (cols + p, 1),
            Layout::PaddedCols(p) => (1, rows + p),
            Layout::Strided => (2 * cols + 1, 2),
        }
    }
    fn len(self, rows: usize, cols: usize) -> usize {
        let (rs, cs) = self.strides(rows, cols);
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    }
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        4 => Just(Layout::RowMajor),
        2 => Just(Layout::ColMajor),
        1 => (1usize..5).prop_map(Layout::PaddedRows),
        1 => (1usize..5).prop_map(Layout::PaddedCols),
        1 => Just(Layout::Strided),
    ]
}

fn activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Relu),
        (-1.0f32..0.0, 0.0f32..1.0).prop_map(|(min, max)| Activation::Clip { min, max }),
        (0.0f32..0.5).prop_map(|alpha| Activation::LeakyRelu { alpha }),
        Just(Activation::Sigmoid),
    ]
}

#[derive(Clone, Copy, Debug)]
enum BiasKind {
    None,
    Row,
    Col,
}

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    la: Layout,
    lb: Layout,
    lc: Layout,
    packed_a: bool,
    packed_b: bool,
    bias: BiasKind,
    residual: Option<Layout>,
    act: Activation,
    orientation: Orientation,
    blocking: Blocking,
    seed: u64,
}

/// Under Miri everything is ~10⁴× slower: keep shapes small there (still
/// past one 14-row tile, one 32-wide panel and a few K blocks).
const MIRI: bool = cfg!(miri);

fn dim() -> impl Strategy<Value = usize> {
    let (mid, big) = if MIRI { (16, 40) } else { (40, 100) };
    prop_oneof![
        3 => 1usize..=4,
        3 => 5usize..=mid,
        2 => mid + 1..=big,
    ]
}

fn kdim() -> impl Strategy<Value = usize> {
    let (mid, big, huge) = if MIRI { (8, 20, 40) } else { (40, 300, 700) };
    prop_oneof![
        2 => Just(1usize),
        4 => 2usize..=mid,
        2 => mid + 1..=big,
        1 => big + 1..=huge,
    ]
}

fn blocking() -> impl Strategy<Value = Blocking> {
    prop_oneof![
        2 => Just(BLOCKING),
        1 => (1usize..=40, 1usize..=3, 1usize..=3).prop_map(|(kc, mc, nc)| Blocking {
            kc,
            mc: mc * kernel::PANEL,
            nc: nc * kernel::PANEL
        }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (dim(), dim(), kdim()),
        (layout(), layout(), layout()),
        (any::<bool>(), any::<bool>()),
        prop_oneof![Just(BiasKind::None), Just(BiasKind::Row), Just(BiasKind::Col)],
        proptest::option::of(layout()),
        activation(),
        prop_oneof![2 => Just(Orientation::Auto), 1 => Just(Orientation::Direct), 1 => Just(Orientation::Transposed)],
        blocking(),
        any::<u64>(),
    )
        .prop_map(
            |((m, n, k), (la, lb, lc), (packed_a, packed_b), bias, residual, act, orientation, blocking, seed)| Case {
                m,
                n,
                k,
                la,
                lb,
                lc,
                packed_a,
                packed_b,
                bias,
                residual,
                act,
                orientation,
                blocking,
                seed,
            },
        )
}

fn act64(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Identity => x,
        Activation::Relu => x.max(0.0),
        Activation::Clip { min, max } => x.max(min as f64).min(max as f64),
        Activation::LeakyRelu { alpha } => {
            if x < 0.0 {
                x * alpha as f64
            } else {
                x
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

/// Runs one case on `isa` and compares with the f64 reference. Elements of
/// C's buffer outside the view must keep their sentinel; inside, the NaN
/// C starts with must be overwritten, never read.
fn check(case: &Case, isa: Isa) -> Result<(), TestCaseError> {
    let Case { m, n, k, .. } = *case;
    let a_buf = values(case.la.len(m, k), case.seed);
    let b_buf = values(case.lb.len(k, n), case.seed ^ 1);
    let (ars, acs) = case.la.strides(m, k);
    let (brs, bcs) = case.lb.strides(k, n);
    let a = MatRef::new(&a_buf, m, k, ars, acs);
    let b = MatRef::new(&b_buf, k, n, brs, bcs);
    let bias_buf = match case.bias {
        BiasKind::None => vec![],
        BiasKind::Row => values(m, case.seed ^ 2),
        BiasKind::Col => values(n, case.seed ^ 2),
    };
    let res_buf = case.residual.map(|l| values(l.len(m, n), case.seed ^ 3)).unwrap_or_default();
    let mut epi = Epilogue::default().with_activation(case.act);
    epi.bias = match case.bias {
        BiasKind::None => Bias::None,
        BiasKind::Row => Bias::PerRow(&bias_buf),
        BiasKind::Col => Bias::PerCol(&bias_buf),
    };
    if let Some(l) = case.residual {
        let (rs, cs) = l.strides(m, n);
        epi = epi.with_residual(MatRef::new(&res_buf, m, n, rs, cs));
    }

    const SENTINEL: f32 = 12345.0;
    let (crs, ccs) = case.lc.strides(m, n);
    let clen = case.lc.len(m, n);
    let mut c_buf = vec![SENTINEL; clen];
    for i in 0..m {
        for j in 0..n {
            c_buf[i * crs + j * ccs] = f32::NAN;
        }
    }
    let pa;
    let pb;
    let lhs = if case.packed_a {
        pa = PackedA::pack(a);
        Lhs::Packed(&pa)
    } else {
        Lhs::Plain(a)
    };
    let rhs = if case.packed_b {
        pb = PackedB::pack(b);
        Rhs::Packed(&pb)
    } else {
        Rhs::Plain(b)
    };
    let mut scratch = GemmScratch::new();
    // Every other case runs on a pool with 2 or 3 threads, split however
    // small. The pool is the case's own, so its workers are joined when the
    // case ends (Miri checks that no thread outlives the test).
    let pool = ThreadPool::new(if case.seed.is_multiple_of(2) { 2 } else { 3 });
    let threads = match case.seed % 4 {
        0 | 1 => Threads::Pool { pool: &pool, min_macs: 0 },
        _ => Threads::Caller(&mut scratch),
    };
    gemm_impl(isa, lhs, rhs, MatMut::new(&mut c_buf, m, n, crs, ccs), &epi, threads, case.blocking, case.orientation);

    let mut inside = vec![false; clen];
    for i in 0..m {
        for j in 0..n {
            inside[i * crs + j * ccs] = true;
            let mut acc = 0.0f64;
            let mut mag = 0.0f64;
            for kk in 0..k {
                let p = a.at(i, kk) as f64 * b.at(kk, j) as f64;
                acc += p;
                mag += p.abs();
            }
            match case.bias {
                BiasKind::None => {}
                BiasKind::Row => acc += bias_buf[i] as f64,
                BiasKind::Col => acc += bias_buf[j] as f64,
            }
            if let Some(r) = epi.residual {
                acc += r.at(i, j) as f64;
            }
            let want = act64(case.act, acc);
            let got = c_buf[i * crs + j * ccs];
            // f32 accumulation error grows with K; the epilogue adds a few ulps.
            let tol = 2e-6 * (k as f64 + 4.0) * (mag + 1.0) + 1e-6;
            prop_assert!((got as f64 - want).abs() <= tol, "{isa:?} C[{i}][{j}] = {got}, want {want} (tol {tol:e})");
        }
    }
    for (idx, &v) in c_buf.iter().enumerate() {
        if !inside[idx] {
            prop_assert_eq!(v, SENTINEL, "{:?} wrote outside C at offset {}", isa, idx);
        }
    }
    Ok(())
}

fn cases() -> u32 {
    if cfg!(miri) {
        4
    } else {
        256
    }
}

fn config() -> ProptestConfig {
    let mut c = ProptestConfig { cases: cases(), ..ProptestConfig::default() };
    if cfg!(miri) {
        // No file system under Miri's isolation.
        c.failure_persistence = None;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    /// Every available instruction set, explicitly, on the same random case.
    #[test]
    fn every_isa_matches_reference(case in case()) {
        for isa in isas() {
            check(&case, isa)?;
        }
    }

    /// The public entry with the detected instruction set and default blocking.
    #[test]
    fn dispatcher_matches_reference(mut case in case()) {
        case.orientation = Orientation::Auto;
        case.blocking = BLOCKING;
        check(&case, Isa::detect())?;
    }

    /// One-row and one-column products (the GEMV path), every operand form.
    #[test]
    fn gemv_matches_reference(mut case in case(), ones in 0u8..3, isa_pick in 0usize..3) {
        match ones {
            0 => case.m = 1,
            1 => case.n = 1,
            _ => { case.m = 1; case.n = 1; }
        }
        case.orientation = Orientation::Auto;
        let isas = isas();
        check(&case, isas[isa_pick % isas.len()])?;
    }
}

fn fixed(m: usize, n: usize, k: usize) -> Case {
    Case {
        m,
        n,
        k,
        la: Layout::RowMajor,
        lb: Layout::RowMajor,
        lc: Layout::RowMajor,
        packed_a: true,
        packed_b: false,
        bias: BiasKind::Row,
        residual: Some(Layout::RowMajor),
        act: Activation::Relu,
        orientation: Orientation::Auto,
        blocking: BLOCKING,
        seed: 7,
    }
}

fn run(case: &Case, isa: Isa) {
    if let Err(e) = check(case, isa) {
        panic!("{e}");
    }
}

/// Every tile edge of every kernel: row counts around MR and the 32-row
/// panel, column counts around 16 / 32, in both orientations.
fn tile_edges(isa: Isa) {
    let (mr, nr) = isa.tile();
    let (ms, ns, ks): (&[usize], &[usize], &[usize]) = if cfg!(miri) {
        (&[1, mr, mr + 1, 33], &[1, nr / 2 + 1, nr, 33], &[1, 5])
    } else {
        (
            &[1, 2, mr - 1, mr, mr + 1, 31, 32, 33, 2 * 32 + mr + 3],
            &[1, 3, nr / 2, nr / 2 + 1, nr - 1, nr, nr + 1, 32, 33, 49],
            &[1, 9, 257],
        )
    };
    for &m in ms {
        for &n in ns {
            for &k in ks {
                for o in [Orientation::Direct, Orientation::Transposed] {
                    let mut c = fixed(m, n, k);
                    c.orientation = o;
                    run(&c, isa);
                }
            }
        }
    }
}

#[test]
fn portable_kernel_tile_edges() {
    tile_edges(Isa::Portable);
}

#[test]
fn avx2_kernel_tile_edges() {
    if !Isa::Avx2.is_available() {
        eprintln!("skipped: no AVX2 + FMA on this CPU");
        return;
    }
    tile_edges(Isa::Avx2);
}

#[test]
fn avx512_kernel_tile_edges() {
    if !Isa::Avx512.is_available() {
        eprintln!("skipped: no AVX-512F on this CPU");
        return;
    }
    tile_edges(Isa::Avx512);
}

/// Shapes spanning several MC / NC / KC blocks with the production blocking.
#[test]
#[cfg_attr(miri, ignore = "too slow under Miri")]
fn multi_block_shapes() {
    for isa in isas() {
        for (m, n, k) in [(530, 70, 600), (40, 2100, 20), (70, 45, 1030)] {
            run(&fixed(m, n, k), isa);
        }
    }
}

/// NaN reaching the epilogue (here through the residual) stays NaN through
/// every activation, on every path, as ONNX's elementwise ops define it.
#[test]
fn nan_propagates_through_every_activation() {
    for isa in isas() {
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::Clip { min: 0.0, max: 6.0 },
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::Sigmoid,
        ] {
            assert!(act.apply(f32::NAN).is_nan(), "{act:?}");
            // 3 x 40 (vector and tail lanes), both orientations.
            let (m, n, k) = (3, 40, 5);
            let a = vec![1.0f32; m * k];
            let b = vec![1.0f32; k * n];
            let mut residual = vec![0.5f32; m * n];
            for i in (0..m * n).step_by(7) {
                residual[i] = f32::NAN;
            }
            for o in [Orientation::Direct, Orientation::Transposed] {
                let mut y = vec![0.0f32; m * n];
                let epi = Epilogue::default().with_activation(act).with_residual(MatRef::row_major(&residual, m, n));
                let mut s = GemmScratch::new();
                gemm_impl(isa, MatRef::row_major(&a, m, k).into(), MatRef::row_major(&b, k, n).into(), MatMut::row_major(&mut y, m, n), &epi, Threads::Caller(&mut s), BLOCKING, o);
                for (i, v) in y.iter().enumerate() {
                    assert_eq!(v.is_nan(), residual[i].is_nan(), "{isa:?} {act:?} {o:?} at {i}: {v}");
                }
            }
        }
    }
}

/// Every activation through the vector epilogue on every instruction set,
/// including inputs where Sigmoid's exp saturates.
#[test]
fn activations_every_isa() {
    for isa in isas() {
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::Clip { min: -0.25, max: 0.5 },
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::Sigmoid,
        ] {
            for o in [Orientation::Direct, Orientation::Transposed] {
                let mut c = fixed(19, 37, 11);
                c.act = act;
                c.orientation = o;
                run(&c, isa);
            }
        }
        // Large magnitudes: sigmoid must saturate to 1 / ~0, not NaN.
        let a = [100.0f32, -100.0];
        let b = [1.0f32];
        let mut y = [0.0f32; 2];
        let epi = Epilogue::default().with_activation(Activation::Sigmoid);
        let mut s = GemmScratch::new();
        sgemm_on(
            isa,
            MatRef::col_major(&a, 2, 1),
            MatRef::row_major(&b, 1, 1),
            MatMut::col_major(&mut y, 2, 1),
            &epi,
            &mut s,
        );
        assert!(y[0] == 1.0 && (0.0..1e-30).contains(&y[1]), "{isa:?}: {y:?}");
    }
}

#[test]
fn detect_prefers_widest() {
    let d = Isa::detect();
    assert!(d.is_available());
    if Isa::Avx512.is_available() {
        assert_eq!(d, Isa::Avx512);
    } else if Isa::Avx2.is_available() {
        assert_eq!(d, Isa::Avx2);
    }
}

#[test]
fn empty_and_k0() {
    for isa in isas() {
        let mut s = GemmScratch::new();
        // K = 0: C = epilogue(0).
        let bias = [1.0f32, -2.0];
        let mut c = [f32::NAN; 6];
        let epi = Epilogue::default().with_bias(Bias::PerRow(&bias)).with_activation(Activation::Relu);
        sgemm_on(
            isa,
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 3),
            MatMut::row_major(&mut c, 2, 3),
            &epi,
            &mut s,
        );
        assert_eq!(c, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        // M = 0 / N = 0: nothing to do, nothing touched.
        let mut c: [f32; 0] = [];
        sgemm_on(
            isa,
            MatRef::row_major(&[], 0, 4),
            MatRef::row_major(&[0.0; 8], 4, 2),
            MatMut::row_major(&mut c, 0, 2),
            &Epilogue::NONE,
            &mut s,
        );
    }
}

/// After the first call the scratch does not grow again for the same shape.
#[test]
#[cfg_attr(miri, ignore = "too slow under Miri")]
fn scratch_reused_without_growth() {
    let (m, n, k) = (70, 300, 600);
    let a = values(m * k, 1);
    let b = values(k * n, 2);
    let mut c = vec![0.0; m * n];
    let mut s = GemmScratch::new();
    for isa in isas() {
        sgemm_on(
            isa,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            MatMut::row_major(&mut c, m, n),
            &Epilogue::NONE,
            &mut s,
        );
    }
    let cap = s.capacity_bytes();
    assert!(cap > 0);
    for _ in 0..3 {
        for isa in isas() {
            sgemm_on(
                isa,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                MatMut::row_major(&mut c, m, n),
                &Epilogue::NONE,
                &mut s,
            );
        }
    }
    assert_eq!(s.capacity_bytes(), cap);
}

/// `PackedA` of `W` and `PackedB` of `Wᵀ` are the same bytes.
#[test]
fn packed_a_and_b_share_layout() {
    let w = values(37 * 21, 5);
    let pa = PackedA::pack(MatRef::row_major(&w, 37, 21));
    let pb = PackedB::pack(MatRef::row_major(&w, 37, 21).t());
    assert_eq!(pa.p.data.as_slice(), pb.p.data.as_slice());
    assert_eq!((pa.rows(), pa.cols()), (37, 21));
    assert_eq!((pb.rows(), pb.cols()), (21, 37));
}

#[test]
#[should_panic(expected = "A is 2x3 but B is 4x5")]
fn mismatched_k_panics() {
    let mut c = [0.0; 10];
    sgemm(
        MatRef::row_major(&[0.0; 6], 2, 3),
        MatRef::row_major(&[0.0; 20], 4, 5),
        MatMut::row_major(&mut c, 2, 5),
        &Epilogue::NONE,
    );
}

#[test]
#[should_panic(expected = "does not fit")]
fn view_out_of_bounds_panics() {
    let _ = MatRef::new(&[0.0; 5], 2, 3, 3, 1);
}

#[test]
fn smoke() {
    let a: Vec<f32> = (0..6).map(|x| x as f32).collect();
    let b: Vec<f32> = (0..12).map(|x| x as f32).collect();
    let mut c = vec![0.0; 8];
    sgemm(MatRef::row_major(&a, 2, 3), MatRef::row_major(&b, 3, 4), MatMut::row_major(&mut c, 2, 4), &Epilogue::NONE);
    assert_eq!(c, vec![20., 23., 26., 29., 56., 68., 80., 92.]);
}

#[test]
fn sgemv_matches_sgemm() {
    let (k, n) = (300, 77);
    let w = values(n * k, 11); // [out, in]
    let x = values(k, 12);
    let bias = values(n, 13);
    let epi = Epilogue::default().with_bias(Bias::PerCol(&bias)).with_activation(Activation::Relu);
    let packed = PackedB::pack(MatRef::row_major(&w, n, k).t());
    let mut y1 = vec![0.0; n];
    let mut y2 = vec![0.0; n];
    sgemv(&x, &packed, &mut y1, &epi);
    sgemv(&x, MatRef::row_major(&w, n, k).t(), &mut y2, &epi);
    for j in 0..n {
        let want = (0..k).map(|i| x[i] as f64 * w[j * k + i] as f64).sum::<f64>() + bias[j] as f64;
        let want = want.max(0.0);
        assert!((y1[j] as f64 - want).abs() < 1e-4, "packed y[{j}] = {}, want {want}", y1[j]);
        assert!((y2[j] as f64 - want).abs() < 1e-4, "plain y[{j}] = {}, want {want}", y2[j]);
    }
}
