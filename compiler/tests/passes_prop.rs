//! Property test of the pass pipeline: random graphs mixing elementwise work,
//! constant subexpressions, torch-style shape arithmetic over a symbolic batch
//! and `If` on constant conditions compute the same outputs after `optimize`
//! as before, at several batch sizes, and still verify.

use d2nn_runtime::{DType, Tensor};
use d2nnc::ir::{BinaryOp, Dim, Graph, Op, RegionKind, TensorType, UnaryOp, ValueId};
use proptest::prelude::*;
use std::collections::HashMap;

const WIDTH: usize = 4;

struct Builder {
    g: Graph,
    next: usize,
}

impl Builder {
    fn push(&mut self, op: Op, inputs: Vec<ValueId>) -> ValueId {
        self.push_in(self.g.root, op, inputs)
    }

    fn push_in(&mut self, region: d2nnc::ir::RegionId, op: Op, inputs: Vec<ValueId>) -> ValueId {
        self.next += 1;
        let name = format!("v{}", self.next);
        let placeholder = TensorType::scalar(DType::F32);
        let n = self.g.add_node(region, &name, op, inputs.into_iter().map(Some).collect(), vec![(name.clone(), placeholder)]);
        let ty = d2nnc::passes::infer::infer_node(&self.g, n).unwrap_or_else(|e| panic!("{e}"))[0].clone();
        let out = self.g.nodes[n].outputs[0];
        self.g.values[out].ty = ty;
        out
    }

    fn row_const(&mut self, values: [f32; WIDTH]) -> ValueId {
        self.next += 1;
        self.g.add_const(&format!("c{}", self.next), Tensor::from_f32(&[WIDTH], values.to_vec()).unwrap())
    }

    fn ints(&mut self, v: Vec<i64>) -> ValueId {
        self.next += 1;
        self.g.add_const(&format!("i{}", self.next), Tensor::vec_i64(v))
    }
}

#[derive(Clone, Debug)]
enum Step {
    Unary(u8, usize),
    BinaryWithConst(u8, usize, [f32; WIDTH]),
    Binary(u8, usize, usize),
    /// Two constants combined, then applied: a foldable subexpression.
    FoldableConst(usize, [f32; WIDTH], [f32; WIDTH]),
    /// `x.view(x.size(0), 2, 2)` then back to `[N, 4]` through Shape/Gather/Concat.
    ShapeRoundTrip(usize),
    /// `Where(x > t, a, b)`.
    Select(usize, usize, f32),
    /// `If` on a constant condition choosing between two expressions.
    ConstIf(bool, usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    let row = prop::array::uniform4(-2.0f32..2.0);
    prop_oneof![
        (0u8..4, 0usize..64).prop_map(|(k, a)| Step::Unary(k, a)),
        (0u8..4, 0usize..64, row.clone()).prop_map(|(k, a, c)| Step::BinaryWithConst(k, a, c)),
        (0u8..4, 0usize..64, 0usize..64).prop_map(|(k, a, b)| Step::Binary(k, a, b)),
        (0usize..64, row.clone(), row).prop_map(|(a, c, d)| Step::FoldableConst(a, c, d)),
        (0usize..64).prop_map(Step::ShapeRoundTrip),
        (0usize..64, 0usize..64, -1.0f32..1.0).prop_map(|(a, b, t)| Step::Select(a, b, t)),
        (any::<bool>(), 0usize..64, 0usize..64).prop_map(|(c, a, b)| Step::ConstIf(c, a, b)),
    ]
}

fn binary(k: u8) -> BinaryOp {
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Max][k as usize % 4]
}

fn unary(k: u8) -> UnaryOp {
    [UnaryOp::Relu, UnaryOp::Sigmoid, UnaryOp::Neg, UnaryOp::Tanh][k as usize % 4]
}

fn build(steps: &[Step]) -> Graph {
    let mut b = Builder { g: Graph::new("random"), next: 0 };
    let n = Dim::sym(b.g.symbol("N"));
    let x = b.g.add_input("x", TensorType::new(DType::F32, vec![n, Dim::Known(WIDTH)]));
    let mut pool = vec![x];
    let pick = |pool: &Vec<ValueId>, i: usize| pool[i % pool.len()];
    for s in steps {
        let v = match s.clone() {
            Step::Unary(k, a) => b.push(Op::Unary(unary(k)), vec![pick(&pool, a)]),
            Step::BinaryWithConst(k, a, c) => {
                let c = b.row_const(c);
                b.push(Op::Binary(binary(k)), vec![pick(&pool, a), c])
            }
            Step::Binary(k, a, c) => b.push(Op::Binary(binary(k)), vec![pick(&pool, a), pick(&pool, c)]),
            Step::FoldableConst(a, c, d) => {
                let (c, d) = (b.row_const(c), b.row_const(d));
                let cd = b.push(Op::Binary(BinaryOp::Mul), vec![c, d]);
                b.push(Op::Binary(BinaryOp::Add), vec![pick(&pool, a), cd])
            }
            Step::ShapeRoundTrip(a) => {
                let src = pick(&pool, a);
                let shape = b.push(Op::Shape { start: 0, end: None }, vec![src]);
                let zero = b.g.add_const("zero", Tensor::scalar_i64(0));
                let batch = b.push(Op::Gather { axis: 0 }, vec![shape, zero]);
                let axes = b.ints(vec![0]);
                let batch1 = b.push(Op::Unsqueeze, vec![batch, axes]);
                let rest = b.ints(vec![2, 2]);
                let target = b.push(Op::Concat { axis: 0 }, vec![batch1, rest]);
                let cube = b.push(Op::Reshape { allowzero: false }, vec![src, target]);
                let back = b.ints(vec![0, -1]);
                b.push(Op::Reshape { allowzero: false }, vec![cube, back])
            }
            Step::Select(a, c, t) => {
                let th = b.g.add_const("t", Tensor::scalar_f32(t));
                let cond = b.push(Op::Binary(BinaryOp::Greater), vec![pick(&pool, a), th]);
                b.push(Op::Where, vec![cond, pick(&pool, a), pick(&pool, c)])
            }
            Step::ConstIf(c, a, d) => {
                let cond = b.g.add_const("cond", Tensor::from_bool(&[], vec![c]).unwrap());
                let (ta, tb) = (pick(&pool, a), pick(&pool, d));
                let root = b.g.root;
                // Both branches must yield the same type: [N, WIDTH].
                let placeholder = b.g.values[ta].ty.clone();
                let node = b.g.add_node(root, "if", Op::If, vec![Some(cond)], vec![(format!("if{}", b.next), placeholder)]);
                let then_r = b.g.add_region(RegionKind::IfBranch { node, then_branch: true }, root);
                let else_r = b.g.add_region(RegionKind::IfBranch { node, then_branch: false }, root);
                let y1 = b.push_in(then_r, Op::Unary(UnaryOp::Relu), vec![ta]);
                let y2 = b.push_in(else_r, Op::Unary(UnaryOp::Neg), vec![tb]);
                b.g.regions[then_r].outputs = vec![y1];
                b.g.regions[else_r].outputs = vec![y2];
                b.g.nodes[node].regions = vec![then_r, else_r];
                b.g.nodes[node].outputs[0]
            }
        };
        pool.push(v);
    }
    let last = *pool.last().unwrap();
    let root = b.g.root;
    b.g.regions[root].outputs = vec![last, x];
    d2nnc::passes::infer::run(&mut b.g).unwrap();
    b.g
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn optimize_preserves_outputs(steps in prop::collection::vec(step(), 1..12),
                                  data in prop::collection::vec(-3.0f32..3.0, 5 * WIDTH)) {
        let raw = build(&steps);
        d2nnc::ir::verify::verify(&raw).unwrap_or_else(|e| panic!("generated graph: {e}"));
        let mut opt = raw.clone();
        d2nnc::passes::optimize(&mut opt).unwrap_or_else(|e| panic!("{e}"));
        d2nnc::ir::verify::verify(&opt).unwrap_or_else(|e| panic!("optimized graph: {e}"));
        for batch in [1usize, 2, 5] {
            let x = Tensor::from_f32(&[batch, WIDTH], data[..batch * WIDTH].to_vec()).unwrap();
            let feeds = HashMap::from([("x".to_string(), x)]);
            let want = d2nnc::interp::run(&raw, &feeds).unwrap();
            let got = d2nnc::interp::run(&opt, &feeds).unwrap();
            for (w, g) in want.iter().zip(&got) {
                d2nnc::compare::compare(g, w, 1e-6, 1e-6).unwrap_or_else(|m| panic!("batch {batch}: {m}"));
            }
        }
    }
}
