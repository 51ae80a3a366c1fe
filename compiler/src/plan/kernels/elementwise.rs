//! Selection of the elementwise fast kernels: f32 unary ops, Clip with
//! constant bounds, and broadcasting binary ops (plus two-input Sum, Max and
//! Min, which are binary ops) whose broadcast strides do not depend on the batch.

use super::{f32_input, f32_output, shape};
use crate::ir::{BinaryOp, Dim, Graph, NodeId, UnaryOp, VariadicOp};
use crate::plan::{BinaryKernel, Kernel};
use d2nn_runtime::kernels::elementwise::{Binary, Unary};
use d2nn_runtime::Tensor;

pub(super) fn unary(graph: &Graph, node: NodeId, op: UnaryOp) -> Option<Kernel> {
    f32_input(graph, node, 0)?;
    f32_output(graph, node)?;
    Some(Kernel::Unary(match op {
        UnaryOp::Relu => Unary::Relu,
        UnaryOp::LeakyRelu { alpha } => Unary::LeakyRelu { alpha },
        UnaryOp::Sigmoid => Unary::Sigmoid,
        UnaryOp::HardSigmoid { alpha, beta } => Unary::HardSigmoid { alpha, beta },
        UnaryOp::HardSwish => Unary::HardSwish,
        UnaryOp::Tanh => Unary::Tanh,
        UnaryOp::Elu { alpha } => Unary::Elu { alpha },
        UnaryOp::Selu { alpha, gamma } => Unary::Selu { alpha, gamma },
        UnaryOp::Softplus => Unary::Softplus,
        UnaryOp::Exp => Unary::Exp,
        UnaryOp::Log => Unary::Log,
        UnaryOp::Sqrt => Unary::Sqrt,
        UnaryOp::Reciprocal => Unary::Reciprocal,
        UnaryOp::Neg => Unary::Neg,
        UnaryOp::Abs => Unary::Abs,
        UnaryOp::Floor => Unary::Floor,
        UnaryOp::Ceil => Unary::Ceil,
        UnaryOp::Round => Unary::Round,
        UnaryOp::Sign => Unary::Sign,
        UnaryOp::Erf | UnaryOp::Not => return None,
    }))
}

/// Clip whose bounds are absent or one-element f32 constants (what the
/// reference accepts); absent bounds become infinities, which no element
/// crosses.
pub(super) fn clip(graph: &Graph, node: NodeId) -> Option<Kernel> {
    f32_input(graph, node, 0)?;
    f32_output(graph, node)?;
    let bound = |i: usize, absent: f32| -> Option<f32> {
        if graph.nodes[node].input(i).is_none() {
            return Some(absent);
        }
        match graph.input_const(node, i)? {
            Tensor::F32(a) if a.len() == 1 => a.iter().next().copied(),
            _ => None,
        }
    };
    Some(Kernel::Unary(Unary::Clip { min: bound(1, f32::NEG_INFINITY)?, max: bound(2, f32::INFINITY)? }))
}

pub(super) fn binary(graph: &Graph, node: NodeId, op: BinaryOp) -> Option<Kernel> {
    let op = match op {
        BinaryOp::Add => Binary::Add,
        BinaryOp::Sub => Binary::Sub,
        BinaryOp::Mul => Binary::Mul,
        BinaryOp::Div => Binary::Div,
        BinaryOp::Max => Binary::Max,
        BinaryOp::Min => Binary::Min,
        BinaryOp::PRelu => Binary::PRelu,
        _ => return None,
    };
    let (a, b, out) = (f32_input(graph, node, 0)?, f32_input(graph, node, 1)?, f32_output(graph, node)?);
    // PRelu broadcasts the slope to X only; anything else is the reference's error to report.
    if op == Binary::PRelu && shape(graph, a) != shape(graph, out) {
        return None;
    }
    layout(op, shape(graph, a), shape(graph, b), shape(graph, out)).map(Kernel::Binary)
}

/// Two-input Sum, Max and Min are the binary ops (the reference folds them so).
pub(super) fn variadic(graph: &Graph, node: NodeId, op: VariadicOp) -> Option<Kernel> {
    if graph.nodes[node].inputs.len() != 2 {
        return None;
    }
    let op = match op {
        VariadicOp::Sum => BinaryOp::Add,
        VariadicOp::Max => BinaryOp::Max,
        VariadicOp::Min => BinaryOp::Min,
        VariadicOp::Mean => return None,
    };
    binary(graph, node, op)
}

/// The strided loop computing `out = a ∘ b` (numpy broadcasting), when its
/// strides do not depend on the batch, i.e. each operand's stride on every
/// axis it is not broadcast along is the product of known dims (a batch
/// axis outermost in the operand, the usual case, qualifies). Size-1 axes
/// are dropped and uniformly strided neighbours merged; the iteration dims
/// may hold the batch and are resolved per call.
pub(super) fn layout(op: Binary, a: &[Dim], b: &[Dim], out: &[Dim]) -> Option<BinaryKernel> {
    let (dims, [a_strides, b_strides]) = strided_layout([a, b], out)?;
    Some(BinaryKernel { op, dims, a_strides, b_strides })
}

/// [`layout`] for any number of operands: the iteration dims and each
/// operand's strides over them.
pub(super) fn strided_layout<const K: usize>(operands: [&[Dim]; K], out: &[Dim]) -> Option<(Vec<Dim>, [Vec<usize>; K])> {
    let all: Vec<Vec<usize>> = operands.iter().map(|o| strides(o, out)).collect::<Option<_>>()?;
    let mut dims: Vec<Dim> = Vec::new();
    let mut st: [Vec<usize>; K] = std::array::from_fn(|_| Vec::new());
    for (i, &d) in out.iter().enumerate() {
        if d == Dim::Known(1) {
            continue;
        }
        // Axis `i` merges into the previous one when each operand steps over
        // both uniformly: previous stride = stride × this dim (or both 0).
        let uniform = |prev: usize, s: usize| (prev == 0 && s == 0) || d.known().and_then(|n| s.checked_mul(n)) == Some(prev);
        let merge = !dims.is_empty() && st.iter().zip(&all).all(|(s, a)| uniform(s[s.len() - 1], a[i]));
        if merge {
            let last = dims.len() - 1;
            dims[last] = dims[last] * d;
            for (s, a) in st.iter_mut().zip(&all) {
                s[last] = a[i];
            }
        } else {
            dims.push(d);
            for (s, a) in st.iter_mut().zip(&all) {
                s.push(a[i]);
            }
        }
    }
    if dims.iter().any(|d| matches!(d, Dim::Unknown)) {
        return None;
    }
    Some((dims, st))
}

/// An operand's strides over the output's axes (0 where it is broadcast),
/// when they are all known numbers.
fn strides(operand: &[Dim], out: &[Dim]) -> Option<Vec<usize>> {
    let skip = out.len().checked_sub(operand.len())?;
    let mut st = vec![0; out.len()];
    let mut step = Dim::Known(1);
    for i in (skip..out.len()).rev() {
        let d = operand[i - skip];
        if d == Dim::Known(1) {
            continue;
        }
        if d != out[i] {
            return None;
        }
        st[i] = step.known()?;
        step = step * d;
    }
    Some(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Symbol;

    const N: Dim = Dim::Sym { sym: Symbol(0), factor: 1 };

    fn k(n: usize) -> Dim {
        Dim::Known(n)
    }

    #[test]
    fn strides_never_depend_on_the_batch() {
        // Same shape: one axis of N·C·H·W.
        let same = layout(Binary::Add, &[N, k(3), k(4)], &[N, k(3), k(4)], &[N, k(3), k(4)]).unwrap();
        assert_eq!((same.dims, same.a_strides, same.b_strides), (vec![Dim::Sym { sym: Symbol(0), factor: 12 }], vec![1], vec![1]));
        // Per-channel constant over NCHW.
        let channel = layout(Binary::Mul, &[N, k(8), k(5), k(5)], &[k(1), k(8), k(1), k(1)], &[N, k(8), k(5), k(5)]).unwrap();
        assert_eq!((channel.dims, channel.a_strides, channel.b_strides), (vec![N, k(8), k(25)], vec![200, 25, 1], vec![0, 1, 0]));
        // An outer product of two batch-sized vectors: symbolic dims, static strides.
        let outer = layout(Binary::Add, &[N, k(1)], &[k(1), N], &[N, N]).unwrap();
        assert_eq!((outer.dims, outer.a_strides, outer.b_strides), (vec![N, N], vec![1, 0], vec![0, 1]));
        // The batch inside an operand: its outer stride would be a multiple of N.
        assert!(layout(Binary::Add, &[k(2), N, k(3)], &[k(3)], &[k(2), N, k(3)]).is_none());
        // Unless that outer axis has size 1.
        let inner = layout(Binary::Add, &[k(1), N, k(3)], &[k(3)], &[k(1), N, k(3)]).unwrap();
        assert_eq!((inner.dims, inner.a_strides, inner.b_strides), (vec![N, k(3)], vec![3, 1], vec![0, 1]));
    }
}
