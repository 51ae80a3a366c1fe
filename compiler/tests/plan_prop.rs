//! Property tests of the plan executor against the reference interpreter:
//! for random shapes and attributes of every op with a fast kernel (conv —
//! GEMM and depthwise — and the chains a fusion pass will merge into it,
//! transposed convs, fully connected layers, pools, softmax, reductions,
//! batch and layer norm, unary and broadcasting binary ops, copies; the
//! mixed-type kernels are in `plan_logic.rs`), the plan must choose that kernel and
//! compute what the interpreter computes — exactly where the kernel promises
//! the interpreter's arithmetic, otherwise within a bound derived from it
//! (see `Tolerance`) — on 1 and 2 threads, at batch sizes 1..=64.

#[path = "plan_prop/conv.rs"]
mod conv;
#[path = "plan_prop/conv_transpose.rs"]
mod conv_transpose;
#[path = "plan_prop/dense.rs"]
mod dense;
#[path = "plan_prop/harness.rs"]
mod harness;
#[path = "plan_prop/pointwise.rs"]
mod pointwise;
#[path = "plan_prop/pool.rs"]
mod pool;

use conv::{Chain, ConvCase, Pads};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, max_shrink_iters: 256, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn conv_matches_interpreter(case in conv::conv_case(vec![Chain::None])) {
        conv::check_conv(&case)?;
    }

    #[test]
    fn fully_connected_matches_interpreter(case in dense::dense_case()) {
        dense::check_dense(&case)?;
    }

    #[test]
    fn conv_transpose_matches_interpreter(case in conv_transpose::conv_transpose_case()) {
        conv_transpose::check_conv_transpose(&case)?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn conv_chains_match_interpreter(case in conv::conv_case(vec![Chain::Relu, Chain::Clip6, Chain::LeakyRelu(0.1), Chain::Sigmoid, Chain::ResidualRelu])) {
        conv::check_conv(&case)?;
    }

    #[test]
    fn pool_matches_interpreter(case in pool::pool_case()) {
        pool::check_pool(&case)?;
    }

    #[test]
    fn global_pool_matches_interpreter(case in pool::global_case()) {
        pool::check_global(&case)?;
    }

    #[test]
    fn softmax_matches_interpreter(case in pointwise::softmax_case()) {
        pointwise::check_softmax(&case)?;
    }

    #[test]
    fn reduce_matches_interpreter(case in pointwise::reduce_case()) {
        pointwise::check_reduce(&case)?;
    }

    #[test]
    fn batch_norm_matches_interpreter(case in pointwise::batch_norm_case()) {
        pointwise::check_batch_norm(&case)?;
    }

    #[test]
    fn layer_norm_matches_interpreter(case in pointwise::layer_norm_case()) {
        pointwise::check_layer_norm(&case)?;
    }

    #[test]
    fn unary_matches_interpreter(case in pointwise::unary_case()) {
        pointwise::check_unary(&case)?;
    }

    #[test]
    fn binary_matches_interpreter(case in pointwise::binary_case()) {
        pointwise::check_binary(&case)?;
    }

    #[test]
    fn copies_match_interpreter(case in pointwise::copy_case()) {
        pointwise::check_copies(&case)?;
    }
}

/// Regression: a 1×1, stride-1 conv with no begin pad but an end pad has a
/// wider output than input; the plan once treated it as pointwise (looking at
/// the begin pads only) and handed the input to the GEMM as `[C_in, oh·ow]`,
/// whose view check panicked. 1-D: x `[N, 1, 1]`,
/// w `[1, 1, 1]`, pads `[0, 1]` → y `[N, 1, 2]`; 2-D: x `[N, 3, 2, 2]`,
/// w `[2, 3, 1, 1]`, pads `[0, 0, 1, 1]` → y `[N, 2, 3, 3]`.
#[test]
fn pointwise_conv_with_end_pads() {
    let one_d = ConvCase {
        batches: [1, 2],
        c_in: 1,
        c_out: 1,
        group: 1,
        input: vec![1],
        kernel: vec![1],
        strides: vec![1],
        dilations: vec![1],
        pads: Pads::Explicit(vec![0, 1]),
        bias: false,
        batch_norm: false,
        chain: Chain::None,
        seed: 0,
    };
    let two_d = ConvCase { c_in: 3, c_out: 2, input: vec![2, 2], kernel: vec![1, 1], strides: vec![1, 1], dilations: vec![1, 1], pads: Pads::Explicit(vec![0, 0, 1, 1]), ..one_d.clone() };
    for case in [one_d, two_d] {
        conv::check_conv(&case).unwrap_or_else(|e| panic!("{case:?}: {e}"));
    }
}
