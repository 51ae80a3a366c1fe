//! ConvTranspose cases: random 1-D and 2-D geometry (kernels 1 to 5,
//! strides, dilations, output padding, groups), explicit pads, `SAME_*`
//! and `output_shape`, with and without bias.

use super::harness::{check_against_interpreter, expect_kernel, optimize_and_lower, Builder, Tolerance};
use d2nnc::ir::{ConvAttrs, ConvTransposeAttrs, Op, Padding};
use d2nnc::plan::Kernel;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

/// Multiply-adds the interpreter does per case and batch.
const BUDGET: usize = 400_000;

#[derive(Clone, Debug)]
pub enum TransposePads {
    /// Begin pads, then end pads.
    Explicit(Vec<usize>),
    SameUpper,
    SameLower,
    /// `output_shape`, as a fraction in 0..=8 eighths of the way from one
    /// element to the full output, per axis.
    OutputShape(Vec<usize>),
}

#[derive(Clone, Debug)]
pub struct ConvTransposeCase {
    pub batches: [usize; 2],
    pub group: usize,
    pub in_per_group: usize,
    pub out_per_group: usize,
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub output_padding: Vec<usize>,
    pub pads: TransposePads,
    pub bias: bool,
    pub seed: u64,
}

impl ConvTransposeCase {
    /// The full (unpadded) output along axis `i`.
    fn full(&self, i: usize) -> usize {
        self.strides[i] * (self.input[i] - 1) + self.output_padding[i] + self.dilations[i] * (self.kernel[i] - 1) + 1
    }

    /// Output size and offset of output 0 in the full output, per the ONNX spec.
    fn axis(&self, i: usize) -> (usize, i64) {
        let spatial = self.input.len();
        let full = self.full(i) as i64;
        let (output, upper) = match &self.pads {
            TransposePads::Explicit(p) => return (full as usize - p[i] - p[spatial + i], p[i] as i64),
            TransposePads::SameUpper => ((self.input[i] * self.strides[i]) as i64, true),
            TransposePads::SameLower => ((self.input[i] * self.strides[i]) as i64, false),
            TransposePads::OutputShape(_) => (self.output_shape()[i] as i64, false),
        };
        let total = full - output;
        let half = total.div_euclid(2);
        (output as usize, if upper { half } else { total - half })
    }

    fn output_shape(&self) -> Vec<usize> {
        match &self.pads {
            TransposePads::OutputShape(eighths) => (0..self.input.len()).map(|i| 1 + (self.full(i) - 1) * eighths[i] / 8).collect(),
            _ => Vec::new(),
        }
    }

    /// Terms summed into one output: a product per input channel of the group and tap, and the bias.
    fn terms(&self) -> usize {
        self.in_per_group * self.kernel.iter().product::<usize>() + 1
    }

    fn macs_per_sample(&self) -> usize {
        self.group * self.in_per_group * self.input.iter().product::<usize>() * self.out_per_group * self.kernel.iter().product::<usize>()
    }
}

fn batch() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(1usize), 4 => 1usize..=64, 1 => Just(64usize)]
}

pub fn conv_transpose_case() -> impl Strategy<Value = ConvTransposeCase> {
    (1usize..=2).prop_flat_map(|spatial| {
        let geometry = (vec(1usize..=5, spatial), vec(1usize..=3, spatial), vec(select(vec![1usize, 1, 2]), spatial), vec(1usize..=9, spatial), vec(0usize..=2, spatial));
        let pads = prop_oneof![
            3 => vec(0usize..=4, 2 * spatial).prop_map(TransposePads::Explicit),
            1 => Just(TransposePads::SameUpper),
            1 => Just(TransposePads::SameLower),
            1 => vec(0usize..=8, spatial).prop_map(TransposePads::OutputShape),
        ];
        let channels = prop_oneof![3 => (Just(1usize), 1usize..=12, 1usize..=12), 1 => (2usize..=3, 1usize..=4, 1usize..=4)];
        (channels, (batch(), 1usize..=4), geometry, pads, any::<bool>(), any::<u64>()).prop_map(
            |((group, in_per_group, out_per_group), (b0, b1), (kernel, strides, dilations, input, output_padding), pads, bias, seed)| {
                let mut c = ConvTransposeCase { batches: [b0, b1], group, in_per_group, out_per_group, input, kernel, strides, dilations, output_padding, pads, bias, seed };
                // Output padding must be smaller than the stride or the dilation.
                for i in 0..c.input.len() {
                    c.output_padding[i] = c.output_padding[i].min(c.strides[i].max(c.dilations[i]) - 1);
                }
                while c.batches[0] * c.macs_per_sample() > BUDGET && c.input.iter().any(|&n| n > 1) {
                    let i = (0..c.input.len()).max_by_key(|&i| c.input[i]).unwrap_or(0);
                    c.input[i] = c.input[i].div_ceil(2);
                }
                // Explicit pads leave at least one output.
                if let TransposePads::Explicit(p) = &mut c.pads {
                    let spatial = c.input.len();
                    for i in 0..spatial {
                        let full = c.strides[i] * (c.input[i] - 1) + c.output_padding[i] + c.dilations[i] * (c.kernel[i] - 1) + 1;
                        p[i] = p[i].min(full - 1);
                        p[spatial + i] = p[spatial + i].min(full - 1 - p[i]);
                    }
                }
                let per_sample = c.macs_per_sample().max(1);
                for b in &mut c.batches {
                    *b = (*b).min((BUDGET / per_sample).max(1));
                }
                c
            },
        )
    })
}

/// The transposed-convolution kernel whenever every output starts inside
/// the full output (else the reference), matching the interpreter within
/// the bound of an f32 sum of each output's terms.
pub fn check_conv_transpose(c: &ConvTransposeCase) -> Result<(), TestCaseError> {
    let mut b = Builder::new(c.seed);
    let spatial = c.input.len();
    let (c_in, c_out) = (c.group * c.in_per_group, c.group * c.out_per_group);
    let x = b.input("x", &[&[c_in][..], &c.input].concat());
    let scale = 2f32.powi(-((2.0 * (c.terms() as f32).sqrt()).log2().round() as i32));
    let w = b.random("w", &[&[c_in, c.out_per_group][..], &c.kernel].concat(), scale);
    let bias = c.bias.then(|| b.random("b", &[c_out], 1.0));
    let (padding, output_shape) = match &c.pads {
        TransposePads::Explicit(p) => (Padding::Explicit(p.clone()), None),
        TransposePads::SameUpper => (Padding::SameUpper, None),
        TransposePads::SameLower => (Padding::SameLower, None),
        TransposePads::OutputShape(_) => (Padding::Explicit(vec![0; 2 * spatial]), Some(c.output_shape())),
    };
    let attrs = ConvTransposeAttrs {
        conv: ConvAttrs { kernel: c.kernel.clone(), strides: c.strides.clone(), dilations: c.dilations.clone(), padding, group: c.group },
        output_padding: c.output_padding.clone(),
        output_shape,
    };
    let y = b.node("deconv", Op::ConvTranspose(attrs), vec![Some(x), Some(w), bias]);
    let mut graph = b.finish(vec![y]);
    let program = optimize_and_lower(&mut graph);
    let axes: Vec<(usize, i64)> = (0..spatial).map(|i| c.axis(i)).collect();
    if axes.iter().all(|&(_, offset)| offset >= 0) {
        let pad: Vec<usize> = axes.iter().map(|&(_, o)| o as usize).collect();
        let (oh, ow) = if spatial == 1 { (1, axes[0].0) } else { (axes[0].0, axes[1].0) };
        let (ph, pw) = if spatial == 1 { (0, pad[0]) } else { (pad[0], pad[1]) };
        expect_kernel(&program, "deconv", &format!("the transposed conv kernel with output {oh}x{ow}, pads {ph},{pw}"), |k| {
            matches!(k, Kernel::ConvTranspose(t) if (t.geometry.oh, t.geometry.ow, t.geometry.pad) == (oh, ow, (ph, pw)) && t.geometry.group == c.group)
        })?;
    } else {
        expect_kernel(&program, "deconv", "the reference (output 0 before the full output)", |k| matches!(k, Kernel::Reference))?;
    }
    check_against_interpreter(&graph, program, &c.batches, c.seed, Tolerance::f32_sum(c.terms()))
}
