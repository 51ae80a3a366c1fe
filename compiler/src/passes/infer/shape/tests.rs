//! Shape-op inference over symbolic batches: the shape arithmetic torch
//! exports must give exact types, and the interpreter must agree at run time.

use crate::interp;
use crate::ir::{Dim, Graph, Op, Symbol, TensorType, ValueId};
use crate::passes::infer::{self, InferError};
use d2nn_runtime::{DType, Tensor};
use std::collections::HashMap;

/// Builds graphs node by node, inferring each node's types as the loader does.
struct Builder {
    g: Graph,
    n: Symbol,
}

impl Builder {
    fn new() -> Self {
        let mut g = Graph::new("t");
        let n = g.symbol("N");
        Builder { g, n }
    }

    fn batch(&self, factor: usize) -> Dim {
        Dim::Sym { sym: self.n, factor }
    }

    fn input(&mut self, name: &str, shape: Vec<Dim>) -> ValueId {
        self.g.add_input(name, TensorType::new(DType::F32, shape))
    }

    fn ints(&mut self, name: &str, v: Vec<i64>) -> ValueId {
        self.g.add_const(name, Tensor::vec_i64(v))
    }

    fn try_node(&mut self, op: Op, inputs: Vec<Option<ValueId>>, outputs: usize) -> Result<Vec<ValueId>, InferError> {
        let root = self.g.root;
        let name = format!("n{}", self.g.nodes.len());
        let outs = (0..outputs).map(|i| (format!("{name}.{i}"), TensorType::scalar(DType::F32))).collect();
        let node = self.g.add_node(root, &name, op, inputs, outs);
        let types = infer::infer_node(&self.g, node)?;
        let values = self.g.nodes[node].outputs.clone();
        for (&v, ty) in values.iter().zip(types) {
            self.g.values[v].ty = ty;
        }
        Ok(values)
    }

    fn node(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
        self.try_node(op, inputs.iter().map(|&v| Some(v)).collect(), 1).expect("inference succeeds")[0]
    }

    fn ty(&self, v: ValueId) -> &TensorType {
        &self.g.values[v].ty
    }

    /// `Unsqueeze(Gather(Shape(x), axis), [0])`: one dim of `x` as a 1-vector.
    fn dim_of(&mut self, x: ValueId, axis: i64) -> ValueId {
        let shape = self.node(Op::Shape { start: 0, end: None }, &[x]);
        let index = self.g.add_const("idx", Tensor::scalar_i64(axis));
        let dim = self.node(Op::Gather { axis: 0 }, &[shape, index]);
        let zero = self.ints("zero", vec![0]);
        self.node(Op::Unsqueeze, &[dim, zero])
    }

    fn run(mut self, outputs: Vec<ValueId>, x: Tensor) -> Vec<Tensor> {
        let root = self.g.root;
        self.g.regions[root].outputs = outputs;
        crate::ir::verify::verify(&self.g).expect("graph verifies");
        let name = self.g.values[self.g.inputs[0]].name.clone();
        interp::run(&self.g, &HashMap::from([(name, x)])).expect("interpreter runs")
    }
}

fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f32(shape, (0..n).map(|i| i as f32).collect()).unwrap()
}

#[test]
fn torch_view_batch_minus_one_is_exact() {
    // x.view(x.size(0), -1) for x: [N, 3, 4, 4].
    let mut b = Builder::new();
    let x = b.input("x", vec![b.batch(1), Dim::Known(3), Dim::Known(4), Dim::Known(4)]);
    let batch = b.dim_of(x, 0);
    let minus_one = b.ints("m1", vec![-1]);
    let target = b.node(Op::Concat { axis: 0 }, &[batch, minus_one]);
    let y = b.node(Op::Reshape { allowzero: false }, &[x, target]);
    assert_eq!(b.ty(y).shape, vec![b.batch(1), Dim::Known(48)]);
    let out = b.run(vec![y], iota(&[2, 3, 4, 4]));
    assert_eq!(out[0], iota(&[2, 48]));
}

#[test]
fn channel_shuffle_keeps_the_batch_symbol() {
    // shufflenet: [N, C, H, W] → [N, g, C/g, H, W] → swap → [N, -1, H, W].
    let mut b = Builder::new();
    let x = b.input("x", vec![b.batch(1), Dim::Known(4), Dim::Known(2), Dim::Known(3)]);
    let (n, h, w) = (b.dim_of(x, 0), b.dim_of(x, 2), b.dim_of(x, 3));
    let groups = b.ints("g", vec![2, 2]);
    let split_shape = b.node(Op::Concat { axis: 0 }, &[n, groups, h, w]);
    let grouped = b.node(Op::Reshape { allowzero: false }, &[x, split_shape]);
    assert_eq!(b.ty(grouped).shape, vec![b.batch(1), Dim::Known(2), Dim::Known(2), Dim::Known(2), Dim::Known(3)]);
    let swapped = b.node(Op::Transpose { perm: vec![0, 2, 1, 3, 4] }, &[grouped]);
    let (n2, h2, w2) = (b.dim_of(swapped, 0), b.dim_of(swapped, 3), b.dim_of(swapped, 4));
    let minus_one = b.ints("m1", vec![-1]);
    let back_shape = b.node(Op::Concat { axis: 0 }, &[n2, minus_one, h2, w2]);
    let y = b.node(Op::Reshape { allowzero: false }, &[swapped, back_shape]);
    assert_eq!(b.ty(y).shape, vec![b.batch(1), Dim::Known(4), Dim::Known(2), Dim::Known(3)]);
    let out = b.run(vec![y], iota(&[1, 4, 2, 3]));
    // Channels 0,1 | 2,3 interleave to 0,2,1,3.
    let got = out[0].to_f32_vec();
    let channel = |c: usize| got[c * 6];
    assert_eq!([channel(0), channel(1), channel(2), channel(3)], [0.0, 12.0, 6.0, 18.0]);
}

#[test]
fn folded_shape_operands_use_the_stored_type() {
    // After folding drops the shape operand, the stored type is the target.
    let mut b = Builder::new();
    let x = b.input("x", vec![b.batch(1), Dim::Known(6)]);
    let target = TensorType::new(DType::F32, vec![b.batch(2), Dim::Known(3)]);
    let root = b.g.root;
    let node = b.g.add_node(root, "r", Op::Reshape { allowzero: false }, vec![Some(x)], vec![("r".into(), target.clone())]);
    assert_eq!(infer::infer_node(&b.g, node).unwrap(), vec![target]);
    let y = b.g.nodes[node].outputs[0];
    let expand_ty = TensorType::new(DType::F32, vec![Dim::Known(2), b.batch(1), Dim::Known(6)]);
    let node = b.g.add_node(root, "e", Op::Expand, vec![Some(x)], vec![("e".into(), expand_ty.clone())]);
    assert_eq!(infer::infer_node(&b.g, node).unwrap(), vec![expand_ty]);
    let e = b.g.nodes[node].outputs[0];
    let fill = Op::ConstantOfShape { value: Tensor::from_i64(&[1], vec![7]).unwrap() };
    let fill_ty = TensorType::new(DType::I64, vec![b.batch(3)]);
    let node = b.g.add_node(root, "c", fill, vec![], vec![("c".into(), fill_ty.clone())]);
    assert_eq!(infer::infer_node(&b.g, node).unwrap(), vec![fill_ty]);
    let c = b.g.nodes[node].outputs[0];
    let out = b.run(vec![y, e, c], iota(&[2, 6]));
    assert_eq!(out[0], iota(&[4, 3]));
    assert_eq!(out[1].shape(), &[2, 2, 6]);
    assert_eq!(out[2], Tensor::from_i64(&[6], vec![7; 6]).unwrap());
}

#[test]
fn expand_and_constant_of_shape_follow_symbolic_shapes() {
    let mut b = Builder::new();
    let x = b.input("x", vec![b.batch(1), Dim::Known(1)]);
    let n = b.dim_of(x, 0);
    let three = b.ints("three", vec![3]);
    let target = b.node(Op::Concat { axis: 0 }, &[n, three]);
    let y = b.node(Op::Expand, &[x, target]);
    assert_eq!(b.ty(y).shape, vec![b.batch(1), Dim::Known(3)]);
    let zeros = b.node(Op::ConstantOfShape { value: Tensor::from_f32(&[1], vec![0.0]).unwrap() }, &[target]);
    assert_eq!(b.ty(zeros).shape, vec![b.batch(1), Dim::Known(3)]);
    let out = b.run(vec![y, zeros], iota(&[2, 1]));
    assert_eq!(out[0].to_f32_vec(), vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    assert_eq!(out[1].shape(), &[2, 3]);
}

#[test]
fn symbolic_dims_survive_concat_split_slice_and_resize() {
    let mut b = Builder::new();
    let x = b.input("x", vec![b.batch(1), Dim::Known(2), Dim::Known(4)]);
    let twice = b.node(Op::Concat { axis: 0 }, &[x, x]);
    assert_eq!(b.ty(twice).shape[0], b.batch(2));
    let halves = b.try_node(Op::Split { axis: 0 }, vec![Some(twice)], 2).unwrap();
    assert_eq!(b.ty(halves[1]).shape[0], b.batch(1));
    let (starts, ends) = (b.ints("s", vec![0, 1]), b.ints("e", vec![i64::MAX, 3]));
    let axes = b.ints("a", vec![0, 2]);
    let sliced = b.node(Op::Slice, &[x, starts, ends, axes]);
    assert_eq!(b.ty(sliced).shape, vec![b.batch(1), Dim::Known(2), Dim::Known(2)]);
    let scales = b.g.add_const("scales", Tensor::from_f32(&[3], vec![2.0, 1.0, 1.5]).unwrap());
    let attrs = crate::ir::ResizeAttrs::new(
        crate::ir::ResizeMode::Nearest,
        crate::ir::CoordinateTransform::Asymmetric,
        crate::ir::NearestMode::Floor,
    );
    let resized = b.try_node(Op::Resize(attrs), vec![Some(x), None, Some(scales)], 1).unwrap()[0];
    assert_eq!(b.ty(resized).shape, vec![b.batch(2), Dim::Known(2), Dim::Known(6)]);
    let out = b.run(vec![halves[1], sliced, resized], iota(&[3, 2, 4]));
    assert_eq!(out[0], iota(&[3, 2, 4]));
    assert_eq!(out[1].shape(), &[3, 2, 2]);
    assert_eq!(out[2].shape(), &[6, 2, 6]);
}

#[test]
fn arange_over_a_symbolic_dim_counts_that_dim() {
    let mut b = Builder::new();
    let x = b.input("x", vec![b.batch(3), Dim::Known(2)]);
    let shape = b.node(Op::Shape { start: 0, end: None }, &[x]);
    let zero = b.g.add_const("zero", Tensor::scalar_i64(0));
    let one = b.g.add_const("one", Tensor::scalar_i64(1));
    let limit = b.node(Op::Gather { axis: 0 }, &[shape, zero]);
    let positions = b.node(Op::Range, &[zero, limit, one]);
    assert_eq!(b.ty(positions).shape, vec![b.batch(3)]);
    let out = b.run(vec![positions], iota(&[6, 2]));
    assert_eq!(out[0], Tensor::vec_i64((0..6).collect()));
}

#[test]
fn invalid_shape_operands_are_errors_not_panics() {
    let mut b = Builder::new();
    let x = b.input("x", vec![Dim::Known(2), Dim::Known(3)]);
    let bad = b.ints("bad", vec![4, -1, -1]);
    let err = b.try_node(Op::Reshape { allowzero: false }, vec![Some(x), Some(bad)], 1).unwrap_err();
    assert!(err.reason.contains("more than one -1"), "{}", err.reason);
    let bad = b.ints("bad2", vec![5]);
    let err = b.try_node(Op::Reshape { allowzero: false }, vec![Some(x), Some(bad)], 1).unwrap_err();
    assert!(err.reason.contains("cannot reshape"), "{}", err.reason);
    let axes = b.ints("axes", vec![0]);
    let err = b.try_node(Op::Squeeze, vec![Some(x), Some(axes)], 1).unwrap_err();
    assert!(err.reason.contains("size 2"), "{}", err.reason);
    let err = b.try_node(Op::Transpose { perm: vec![0, 0] }, vec![Some(x)], 1).unwrap_err();
    assert!(err.reason.contains("not a permutation"), "{}", err.reason);
    let dynamic = b.g.add_input("shape", TensorType::new(DType::I64, vec![b.batch(1)]));
    let err = b.try_node(Op::Reshape { allowzero: false }, vec![Some(x), Some(dynamic)], 1).unwrap_err();
    assert!(err.reason.contains("dynamic length"), "{}", err.reason);
}

#[test]
fn runtime_shape_operands_give_unknown_dims_of_known_rank() {
    let mut b = Builder::new();
    let x = b.input("x", vec![b.batch(1), Dim::Known(3)]);
    let pads = b.g.add_input("pads", TensorType::fixed(DType::I64, &[4]));
    let y = b.node(Op::Pad { mode: crate::ir::PadMode::Constant }, &[x, pads]);
    assert_eq!(b.ty(y).shape, vec![Dim::Unknown, Dim::Unknown]);
    let target = b.g.add_input("target", TensorType::fixed(DType::I64, &[3]));
    let z = b.node(Op::Expand, &[x, target]);
    assert_eq!(b.ty(z).shape, vec![Dim::Unknown, b.batch(1), Dim::Known(3)]);
}
