//! Fully connected cases: `Gemm` (transB 0/1, alpha, beta, bias `[n]`,
//! `[1, n]` or scalar) and `MatMul` with a constant 2-D weight, over
//! 1..=64 batch rows (batch 1 is the GEMV path) and odd `k`, `n` up to 300.

use super::harness::{check_against_interpreter, expect_kernel, optimize_and_lower, Builder, Tolerance};
use d2nnc::ir::{Graph, Op};
use d2nnc::plan::Kernel;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

/// Multiply-adds per case and batch (see the conv cases' budget).
const BUDGET: usize = 400_000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GemmBias {
    None,
    /// `[n]`.
    Row,
    /// `[1, n]`.
    Matrix,
    /// `[]`, broadcast to every element.
    Scalar,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Form {
    Gemm { trans_b: bool, alpha: f32, beta: f32, bias: GemmBias },
    /// `MatMul(x, W)` with x `[N, k]`, or `[N, middle, k]` when `middle` is set.
    MatMul { middle: Option<usize> },
}

#[derive(Clone, Debug)]
pub struct DenseCase {
    pub batches: [usize; 2],
    pub k: usize,
    pub n: usize,
    pub form: Form,
    pub seed: u64,
}

impl DenseCase {
    fn rows_per_sample(&self) -> usize {
        match self.form {
            Form::MatMul { middle: Some(m) } => m,
            _ => 1,
        }
    }

    /// Whether the plan's fully connected kernel applies as documented:
    /// alpha 1 and a bias per output column (or none).
    pub fn dense_eligible(&self) -> bool {
        match self.form {
            Form::MatMul { .. } => true,
            Form::Gemm { alpha, bias, .. } => alpha == 1.0 && (bias != GemmBias::Scalar || self.n == 1),
        }
    }
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![1 => 1usize..=16, 2 => 1usize..=300, 1 => (0usize..150).prop_map(|h| 2 * h + 1)]
}

pub fn dense_case() -> impl Strategy<Value = DenseCase> {
    let gemm = (any::<bool>(), select(vec![1.0f32, 1.0, 1.0, 0.5, -1.5]), select(vec![1.0f32, 1.0, 0.0, 2.0, -0.5]), select(vec![GemmBias::None, GemmBias::Row, GemmBias::Matrix, GemmBias::Scalar]))
        .prop_map(|(trans_b, alpha, beta, bias)| Form::Gemm { trans_b, alpha, beta, bias });
    let matmul = prop_oneof![2 => Just(None), 1 => (1usize..=5).prop_map(Some)].prop_map(|middle| Form::MatMul { middle });
    let form = prop_oneof![3 => gemm, 1 => matmul];
    let batch = prop_oneof![2 => Just(1usize), 3 => 1usize..=64, 1 => Just(64usize)];
    (batch, 1usize..=4, size(), size(), form, any::<u64>()).prop_map(|(b0, b1, k, n, form, seed)| {
        let mut case = DenseCase { batches: [b0, b1], k, n, form, seed };
        let per_sample = case.rows_per_sample() * k * n;
        for b in &mut case.batches {
            *b = (*b).min((BUDGET / per_sample).max(1));
        }
        case
    })
}

pub fn dense_graph(c: &DenseCase) -> Graph {
    let mut b = Builder::new(c.seed);
    // Weights near 1/(4·√k): outputs of order 1.
    let scale = 2f32.powi(-((4.0 * (c.k as f32).sqrt()).log2().round() as i32));
    let y = match c.form {
        Form::Gemm { trans_b, alpha, beta, bias } => {
            let x = b.input("x", &[c.k]);
            let w = b.random("w", &if trans_b { [c.n, c.k] } else { [c.k, c.n] }, scale);
            let bias = match bias {
                GemmBias::None => None,
                GemmBias::Row => Some(b.random("c", &[c.n], 1.0)),
                GemmBias::Matrix => Some(b.random("c", &[1, c.n], 1.0)),
                GemmBias::Scalar => Some(b.random("c", &[], 1.0)),
            };
            b.node("dense", Op::Gemm { alpha, beta, trans_a: false, trans_b }, vec![Some(x), Some(w), bias])
        }
        Form::MatMul { middle } => {
            let x = match middle {
                Some(m) => b.input("x", &[m, c.k]),
                None => b.input("x", &[c.k]),
            };
            let w = b.random("w", &[c.k, c.n], scale);
            b.op("dense", Op::MatMul, &[x, w])
        }
    };
    b.finish(vec![y])
}

/// Eligible forms must run the fully connected kernel with the case's `k`
/// and `n`; the others (alpha ≠ 1, a scalar bias over several columns) may
/// run any kernel. All must match the interpreter.
pub fn check_dense(c: &DenseCase) -> Result<(), TestCaseError> {
    let mut graph = dense_graph(c);
    let program = optimize_and_lower(&mut graph);
    if c.dense_eligible() {
        let (k, n) = (c.k, c.n);
        expect_kernel(&program, "dense", &format!("the fully connected kernel with k = {k}, n = {n}"), |kernel| {
            matches!(kernel, Kernel::Dense(d) if d.k == k && d.n == n)
        })?;
    }
    // Terms per output: the products and the (beta-scaled) bias.
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::f32_sum(c.k + 1))
}
