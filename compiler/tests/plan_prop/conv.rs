//! Convolution cases: random 1-D and 2-D geometry (kernels 1×1 to 7×7 and
//! non-square, strides, dilations, explicit, SAME and VALID padding, plain,
//! grouped and depthwise convs with and without bias, BatchNorm folded in),
//! alone or followed by an activation or a residual Add and ReLU.

use super::harness::{check_against_interpreter, expect_kernel, expect_some_kernel, optimize_and_lower, Builder, Tolerance};
use d2nnc::ir::{BinaryOp, ConvAttrs, Graph, Op, Padding, UnaryOp};
use d2nnc::plan::Kernel;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

/// Multiply-adds the interpreter does per case and batch: keeps a case to a
/// few milliseconds of the naive interpreter at opt-level 1.
const BUDGET: usize = 600_000;

#[derive(Clone, Debug, PartialEq)]
pub enum Pads {
    /// Begin pads, then end pads.
    Explicit(Vec<usize>),
    SameUpper,
    SameLower,
    /// `auto_pad = VALID`, which the front end turns into zero explicit pads.
    Valid,
}

/// What follows the convolution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Chain {
    None,
    Relu,
    /// Clip(0, 6): ReLU6.
    Clip6,
    LeakyRelu(f32),
    Sigmoid,
    /// `Relu(conv + residual)` with a residual input of the conv's shape.
    ResidualRelu,
}

#[derive(Clone, Debug)]
pub struct ConvCase {
    /// Batch sizes run in turn on one executor.
    pub batches: [usize; 2],
    pub c_in: usize,
    pub c_out: usize,
    pub group: usize,
    /// Spatial input dims (1 or 2 of them).
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Pads,
    pub bias: bool,
    /// A BatchNormalization after the conv, which `optimize` folds into it.
    pub batch_norm: bool,
    pub chain: Chain,
    pub seed: u64,
}

impl ConvCase {
    fn reach(&self, i: usize) -> usize {
        self.dilations[i] * (self.kernel[i] - 1) + 1
    }

    /// The smallest input along axis `i` that leaves one output.
    fn min_input(&self, i: usize) -> usize {
        let spatial = self.input.len();
        match &self.pads {
            Pads::Explicit(p) => self.reach(i).saturating_sub(p[i] + p[spatial + i]).max(1),
            Pads::Valid => self.reach(i),
            Pads::SameUpper | Pads::SameLower => 1,
        }
    }

    fn output(&self, i: usize) -> usize {
        let spatial = self.input.len();
        match &self.pads {
            Pads::Explicit(p) => (self.input[i] + p[i] + p[spatial + i] - self.reach(i)) / self.strides[i] + 1,
            Pads::Valid => (self.input[i] - self.reach(i)) / self.strides[i] + 1,
            Pads::SameUpper | Pads::SameLower => self.input[i].div_ceil(self.strides[i]),
        }
    }

    /// Products summed into one output element.
    pub fn taps(&self) -> usize {
        self.c_in / self.group * self.kernel.iter().product::<usize>()
    }

    fn macs_per_sample(&self) -> usize {
        self.c_out * (0..self.input.len()).map(|i| self.output(i)).product::<usize>() * self.taps()
    }

    /// Grows inputs too small for the window, then halves the spatial size
    /// (before the batch) until the case fits [`BUDGET`].
    fn fit(mut self) -> ConvCase {
        for i in 0..self.input.len() {
            self.input[i] = self.input[i].max(self.min_input(i));
        }
        while self.batches[0] * self.macs_per_sample() > BUDGET {
            let Some(i) = (0..self.input.len()).filter(|&i| self.input[i] > self.min_input(i)).max_by_key(|&i| self.input[i]) else { break };
            self.input[i] = (self.input[i] / 2).max(self.min_input(i));
        }
        let per_sample = self.macs_per_sample().max(1);
        for b in &mut self.batches {
            *b = (*b).min((BUDGET / per_sample).max(1));
        }
        self
    }

    pub fn is_depthwise(&self) -> bool {
        self.group == self.c_in && self.group > 1
    }
}

/// (C_in, C_out, group): plain convs with channel counts past 32 (GEMM
/// edges), small groups, and depthwise convs with multiplier 1 or 2.
fn channels() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![
        3 => (1usize..=40, 1usize..=40).prop_map(|(ci, co)| (ci, co, 1)),
        1 => (33usize..=40, 33usize..=40).prop_map(|(ci, co)| (ci, co, 1)),
        2 => (2usize..=5, 1usize..=8, 1usize..=8).prop_map(|(g, cg, mg)| (g * cg, g * mg, g)),
        2 => (1usize..=40, 1usize..=2).prop_map(|(c, m)| (c, c * m, c)),
    ]
}

fn batch() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(1usize), 4 => 1usize..=64, 1 => Just(64usize)]
}

pub fn conv_case(chains: Vec<Chain>) -> impl Strategy<Value = ConvCase> {
    (1usize..=2).prop_flat_map(move |spatial| {
        let kernel = (vec(select(vec![1usize, 1, 2, 3, 3, 4, 5, 7]), spatial), any::<bool>()).prop_map(|(mut k, square)| {
            if square {
                let first = k[0];
                k.fill(first);
            }
            k
        });
        let pads = prop_oneof![
            3 => vec(0usize..=3, 2 * spatial).prop_map(Pads::Explicit),
            1 => Just(Pads::SameUpper),
            1 => Just(Pads::SameLower),
            1 => Just(Pads::Valid),
        ];
        let geometry = (kernel, vec(1usize..=3, spatial), vec(prop_oneof![3 => Just(1usize), 1 => Just(2)], spatial), vec(1usize..=13, spatial), pads);
        let extras = (any::<bool>(), prop_oneof![3 => Just(false), 1 => Just(true)], select(chains.clone()), any::<u64>());
        (channels(), (batch(), 1usize..=4), geometry, extras).prop_map(
            |((c_in, c_out, group), (b0, b1), (kernel, strides, dilations, input, pads), (bias, batch_norm, chain, seed))| {
                ConvCase { batches: [b0, b1], c_in, c_out, group, input, kernel, strides, dilations, pads, bias, batch_norm, chain, seed }.fit()
            },
        )
    })
}

pub fn conv_graph(c: &ConvCase) -> Graph {
    let mut b = Builder::new(c.seed);
    let spatial = c.input.len();
    let x = b.input("x", &[&[c.c_in][..], &c.input].concat());
    // Weights scaled by a power of two near 1/(4·√taps): pre-activations of
    // order 1, so Sigmoid and LeakyRelu see both signs unsaturated.
    let scale = 2f32.powi(-((4.0 * (c.taps() as f32).sqrt()).log2().round() as i32));
    let w = b.random("w", &[&[c.c_out, c.c_in / c.group][..], &c.kernel].concat(), scale);
    let bias = c.bias.then(|| b.random("b", &[c.c_out], 1.0));
    let padding = match &c.pads {
        Pads::Explicit(p) => Padding::Explicit(p.clone()),
        Pads::Valid => Padding::Explicit(vec![0; 2 * spatial]),
        Pads::SameUpper => Padding::SameUpper,
        Pads::SameLower => Padding::SameLower,
    };
    let attrs = ConvAttrs { kernel: c.kernel.clone(), strides: c.strides.clone(), dilations: c.dilations.clone(), padding, group: c.group };
    let mut y = b.node("conv", Op::Conv(attrs), vec![Some(x), Some(w), bias]);
    if c.batch_norm {
        let gamma = b.random("bn_scale", &[c.c_out], 0.5);
        let beta = b.random("bn_bias", &[c.c_out], 1.0);
        let mean = b.random("bn_mean", &[c.c_out], 0.25);
        let var_values = super::harness::data(c.c_out, c.seed ^ 0xBA7C).into_iter().map(|v| v.abs() + 0.25).collect();
        let var = b.constant("bn_var", &[c.c_out], var_values);
        y = b.op("bn", Op::BatchNorm { epsilon: 1e-5 }, &[y, gamma, beta, mean, var]);
    }
    y = match c.chain {
        Chain::None => y,
        Chain::Relu => b.op("relu", Op::Unary(UnaryOp::Relu), &[y]),
        Chain::Clip6 => {
            let (lo, hi) = (b.constant("lo", &[], vec![0.0]), b.constant("hi", &[], vec![6.0]));
            b.op("relu6", Op::Clip, &[y, lo, hi])
        }
        Chain::LeakyRelu(alpha) => b.op("leaky", Op::Unary(UnaryOp::LeakyRelu { alpha }), &[y]),
        Chain::Sigmoid => b.op("sigmoid", Op::Unary(UnaryOp::Sigmoid), &[y]),
        Chain::ResidualRelu => {
            let shape = b.shape(y);
            let residual = b.input_shaped("residual", shape);
            let sum = b.op("add", Op::Binary(BinaryOp::Add), &[y, residual]);
            b.op("relu", Op::Unary(UnaryOp::Relu), &[sum])
        }
    };
    b.finish(vec![y])
}

/// The case's plan picks the intended kernel and matches the interpreter.
/// Alone, the conv must run the depthwise kernel exactly when `group = C_in`
/// and `C_in > 1`, and the GEMM one otherwise; after an activation or
/// residual, which a fusion pass may merge into it, some step must still run
/// a conv kernel.
pub fn check_conv(c: &ConvCase) -> Result<(), TestCaseError> {
    let mut graph = conv_graph(c);
    let program = optimize_and_lower(&mut graph);
    if c.chain == Chain::None {
        if c.is_depthwise() {
            expect_kernel(&program, "conv", "the depthwise kernel", |k| matches!(k, Kernel::Depthwise { .. }))?;
        } else {
            expect_kernel(&program, "conv", "the GEMM conv kernel", |k| matches!(k, Kernel::Conv(_)))?;
        }
    } else {
        expect_some_kernel(&program, "a conv kernel", |k| matches!(k, Kernel::Conv(_) | Kernel::Depthwise { .. }))?;
    }
    if c.batch_norm {
        let left = super::harness::kernels(&program).into_iter().any(|(_, k)| matches!(k, Kernel::BatchNorm { .. } | Kernel::Reference));
        prop_assert!(!left, "the BatchNorm should be folded into the conv");
    }
    // Terms per output: the products, the bias and the residual.
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::f32_sum(c.taps() + 2))
}
