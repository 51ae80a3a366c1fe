//! Inference for the elementwise family: dtype rules of each op and the shapes
//! of broadcasting, Gemm and numpy-style MatMul, with symbolic dims carried.

use super::{broadcast_shapes, InferCtx, InferError};
use crate::ir::{BinaryOp, Dim, Op, TensorType, UnaryOp, VariadicOp};
use d2nn_runtime::DType;

const FLOAT: &[DType] = &[DType::F32];
const NUMERIC: &[DType] = &[DType::F32, DType::I64, DType::I32];
const SIGNED_OR_FLOAT: &[DType] = NUMERIC;
const BOOL: &[DType] = &[DType::Bool];
const ANY: &[DType] = &[DType::F32, DType::I64, DType::I32, DType::Bool];

pub(super) fn infer(ctx: &InferCtx) -> Result<Vec<TensorType>, InferError> {
    let ty = match ctx.op() {
        Op::Gemm { trans_a, trans_b, .. } => gemm(ctx, *trans_a, *trans_b)?,
        Op::MatMul => matmul(ctx)?,
        Op::Unary(op) => {
            let dtype = ctx.expect_dtype(0, unary_dtypes(*op))?;
            TensorType::new(dtype, ctx.input(0)?.shape.clone())
        }
        Op::Binary(op) => binary(ctx, *op)?,
        Op::Variadic(op) => variadic(ctx, *op)?,
        Op::Clip => clip(ctx)?,
        Op::Where => {
            ctx.expect_dtype(0, BOOL)?;
            let dtype = same_dtype(ctx, &[1, 2], ANY)?;
            TensorType::new(dtype, broadcast_inputs(ctx, &[0, 1, 2])?)
        }
        Op::Cast { to } => {
            ctx.expect_dtype(0, ANY)?;
            TensorType::new(*to, ctx.input(0)?.shape.clone())
        }
        other => return Err(ctx.err(format!("{} is not an elementwise op", other.name()))),
    };
    Ok(vec![ty])
}

/// The dtypes ONNX allows (and d2nnc supports) for each unary op.
fn unary_dtypes(op: UnaryOp) -> &'static [DType] {
    match op {
        UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign => SIGNED_OR_FLOAT,
        UnaryOp::Not => BOOL,
        _ => FLOAT,
    }
}

fn binary(ctx: &InferCtx, op: BinaryOp) -> Result<TensorType, InferError> {
    use BinaryOp::*;
    let shape = broadcast_inputs(ctx, &[0, 1])?;
    let dtype = match op {
        Add | Sub | Mul | Div | Max | Min => same_dtype(ctx, &[0, 1], NUMERIC)?,
        PRelu => {
            // The slope must broadcast *to* X: the output is X's shape.
            let (x, slope) = (ctx.input(0)?, ctx.input(1)?);
            unidirectional(ctx, &slope.shape, &x.shape, "slope")?;
            let dtype = same_dtype(ctx, &[0, 1], FLOAT)?;
            return Ok(TensorType::new(dtype, x.shape.clone()));
        }
        // The exponent may have any numeric type; the result has the base's.
        Pow => {
            ctx.expect_dtype(1, NUMERIC)?;
            ctx.expect_dtype(0, NUMERIC)?
        }
        Greater | Less | GreaterOrEqual | LessOrEqual => {
            same_dtype(ctx, &[0, 1], NUMERIC)?;
            DType::Bool
        }
        Equal => {
            same_dtype(ctx, &[0, 1], ANY)?;
            DType::Bool
        }
        And | Or | Xor => same_dtype(ctx, &[0, 1], BOOL)?,
    };
    Ok(TensorType::new(dtype, shape))
}

fn variadic(ctx: &InferCtx, op: VariadicOp) -> Result<TensorType, InferError> {
    let all: Vec<usize> = (0..ctx.num_inputs()).collect();
    if all.is_empty() {
        return Err(ctx.err("needs at least one input"));
    }
    let allowed = match op {
        VariadicOp::Sum | VariadicOp::Mean => FLOAT,
        VariadicOp::Max | VariadicOp::Min => NUMERIC,
    };
    let dtype = same_dtype(ctx, &all, allowed)?;
    Ok(TensorType::new(dtype, broadcast_inputs(ctx, &all)?))
}

fn clip(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let x = ctx.input(0)?;
    let dtype = ctx.expect_dtype(0, NUMERIC)?;
    for (i, name) in [(1, "min"), (2, "max")] {
        let Some(bound) = ctx.opt_input(i) else { continue };
        if bound.dtype != dtype {
            return Err(ctx.err(format!("`{name}` (input {i}) has dtype {}, expected {dtype} like the data", bound.dtype)));
        }
        // The spec says scalar; exporters also write shape [1], which is harmless.
        if let Some(n) = bound.volume().known() {
            if n != 1 {
                return Err(ctx.err(format!("`{name}` (input {i}) must hold one element, it has {n}")));
            }
        }
    }
    Ok(TensorType::new(dtype, x.shape.clone()))
}

fn gemm(ctx: &InferCtx, trans_a: bool, trans_b: bool) -> Result<TensorType, InferError> {
    let dtype = same_dtype(ctx, &[0, 1], FLOAT)?;
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    for (i, t) in [(0, a), (1, b)] {
        if t.rank() != 2 {
            return Err(ctx.err(format!("input {i} has rank {}, Gemm needs matrices (rank 2)", t.rank())));
        }
    }
    let (m, ka) = if trans_a { (a.shape[1], a.shape[0]) } else { (a.shape[0], a.shape[1]) };
    let (kb, n) = if trans_b { (b.shape[1], b.shape[0]) } else { (b.shape[0], b.shape[1]) };
    check_inner(ctx, ka, kb)?;
    let out = vec![m, n];
    if let Some(c) = ctx.opt_input(2) {
        if c.dtype != dtype {
            return Err(ctx.err(format!("C (input 2) has dtype {}, expected {dtype}", c.dtype)));
        }
        unidirectional(ctx, &c.shape, &out, "C")?;
    }
    Ok(TensorType::new(dtype, out))
}

fn matmul(ctx: &InferCtx) -> Result<TensorType, InferError> {
    let dtype = same_dtype(ctx, &[0, 1], NUMERIC)?;
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    if a.rank() == 0 || b.rank() == 0 {
        return Err(ctx.err("MatMul operands must have rank 1 or more"));
    }
    // numpy: a 1-D left operand is a row vector, a 1-D right one a column
    // vector; the added dim is removed from the result.
    let a_mat: Vec<Dim> = if a.rank() == 1 { vec![Dim::Known(1), a.shape[0]] } else { a.shape.clone() };
    let b_mat: Vec<Dim> = if b.rank() == 1 { vec![b.shape[0], Dim::Known(1)] } else { b.shape.clone() };
    let (ra, rb) = (a_mat.len(), b_mat.len());
    check_inner(ctx, a_mat[ra - 1], b_mat[rb - 2])?;
    let mut out = broadcast_shapes(&a_mat[..ra - 2], &b_mat[..rb - 2])
        .map_err(|e| ctx.err(format!("batch dims of {:?} and {:?}: {e}", a.shape, b.shape)))?;
    if a.rank() > 1 {
        out.push(a_mat[ra - 2]);
    }
    if b.rank() > 1 {
        out.push(b_mat[rb - 1]);
    }
    Ok(TensorType::new(dtype, out))
}

/// Checks that the contracted dims agree where both are known.
fn check_inner(ctx: &InferCtx, ka: Dim, kb: Dim) -> Result<(), InferError> {
    let certain_mismatch = match (ka, kb) {
        (Dim::Known(x), Dim::Known(y)) => x != y,
        (Dim::Known(_), Dim::Sym { .. }) | (Dim::Sym { .. }, Dim::Known(_)) => false,
        (Dim::Sym { sym: s1, factor: f1 }, Dim::Sym { sym: s2, factor: f2 }) => s1 == s2 && f1 != f2,
        _ => false,
    };
    if certain_mismatch {
        return Err(ctx.err(format!("inner dimensions differ: {ka:?} vs {kb:?}")));
    }
    Ok(())
}

/// Checks that `from` broadcasts to `to` without changing `to`.
fn unidirectional(ctx: &InferCtx, from: &[Dim], to: &[Dim], what: &str) -> Result<(), InferError> {
    let fits = from.len() <= to.len()
        && from.iter().rev().zip(to.iter().rev()).all(|(&f, &t)| match (f, t) {
            (Dim::Known(x), Dim::Known(y)) => x == 1 || x == y,
            (Dim::Sym { sym: s1, factor: f1 }, Dim::Sym { sym: s2, factor: f2 }) if s1 == s2 => f1 == f2,
            // Anything else depends on symbol bindings; the kernel checks it.
            _ => true,
        });
    if fits {
        Ok(())
    } else {
        Err(ctx.err(format!("{what} of shape {from:?} does not broadcast to {to:?}")))
    }
}

/// The common dtype of `inputs`, which must be one of `allowed`.
fn same_dtype(ctx: &InferCtx, inputs: &[usize], allowed: &[DType]) -> Result<DType, InferError> {
    let first = ctx.expect_dtype(inputs[0], allowed)?;
    for &i in &inputs[1..] {
        let dt = ctx.input(i)?.dtype;
        if dt != first {
            return Err(ctx.err(format!("input {i} has dtype {dt}, but input {} has {first}", inputs[0])));
        }
    }
    Ok(first)
}

fn broadcast_inputs(ctx: &InferCtx, inputs: &[usize]) -> Result<Vec<Dim>, InferError> {
    let mut shape = ctx.input(inputs[0])?.shape.clone();
    for &i in &inputs[1..] {
        shape = broadcast_shapes(&shape, &ctx.input(i)?.shape).map_err(|e| ctx.err(format!("input {i}: {e}")))?;
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::super::infer_node;
    use crate::ir::{BinaryOp, Dim, Graph, Op, Symbol, TensorType, UnaryOp, VariadicOp};
    use d2nn_runtime::{DType, Tensor};

    /// Infers `op` over inputs of the given types (`None` = omitted optional input).
    fn infer(op: Op, inputs: &[Option<TensorType>]) -> Result<TensorType, String> {
        let mut g = Graph::new("t");
        let ids = inputs.iter().enumerate().map(|(i, t)| t.clone().map(|t| g.add_input(&format!("x{i}"), t))).collect();
        let root = g.root;
        let n = g.add_node(root, "n", op, ids, vec![("y".into(), TensorType::scalar(DType::F32))]);
        infer_node(&g, n).map(|mut v| v.remove(0)).map_err(|e| e.reason)
    }

    fn f32t(dims: &[Dim]) -> Option<TensorType> {
        Some(TensorType::new(DType::F32, dims.to_vec()))
    }

    fn k(n: usize) -> Dim {
        Dim::Known(n)
    }

    /// A symbolic batch dim; inference never looks up its name.
    fn batch() -> Dim {
        Dim::sym(Symbol(0))
    }

    #[test]
    fn binary_broadcast_keeps_symbolic_batch() {
        let n = batch();
        let out = infer(Op::Binary(BinaryOp::Add), &[f32t(&[n, k(1), k(4)]), f32t(&[k(3), k(1)])]).unwrap();
        assert_eq!(out, TensorType::new(DType::F32, vec![n, k(3), k(4)]));
        let err = infer(Op::Binary(BinaryOp::Add), &[f32t(&[k(2)]), f32t(&[k(3)])]).unwrap_err();
        assert!(err.contains("broadcast"), "{err}");
    }

    #[test]
    fn comparisons_give_bool_and_logic_needs_bool() {
        let cmp = infer(Op::Binary(BinaryOp::Greater), &[f32t(&[k(2)]), f32t(&[k(1)])]).unwrap();
        assert_eq!(cmp.dtype, DType::Bool);
        let err = infer(Op::Binary(BinaryOp::And), &[f32t(&[k(2)]), f32t(&[k(2)])]).unwrap_err();
        assert!(err.contains("expected bool"), "{err}");
        let mixed = infer(Op::Binary(BinaryOp::Sub), &[f32t(&[k(2)]), Some(TensorType::fixed(DType::I64, &[2]))]);
        assert!(mixed.unwrap_err().contains("dtype i64"));
    }

    #[test]
    fn pow_keeps_the_base_dtype() {
        let out = infer(Op::Binary(BinaryOp::Pow), &[Some(TensorType::fixed(DType::I32, &[3])), f32t(&[k(1)])]).unwrap();
        assert_eq!(out, TensorType::fixed(DType::I32, &[3]));
    }

    #[test]
    fn prelu_slope_broadcasts_one_way_only() {
        assert_eq!(infer(Op::Binary(BinaryOp::PRelu), &[f32t(&[k(2), k(3)]), f32t(&[k(3)])]).unwrap().shape, vec![k(2), k(3)]);
        let err = infer(Op::Binary(BinaryOp::PRelu), &[f32t(&[k(3)]), f32t(&[k(2), k(3)])]).unwrap_err();
        assert!(err.contains("slope"), "{err}");
    }

    #[test]
    fn unary_dtype_rules() {
        let i64t = Some(TensorType::fixed(DType::I64, &[2]));
        assert_eq!(infer(Op::Unary(UnaryOp::Abs), std::slice::from_ref(&i64t)).unwrap().dtype, DType::I64);
        assert!(infer(Op::Unary(UnaryOp::Exp), std::slice::from_ref(&i64t)).is_err());
        assert!(infer(Op::Unary(UnaryOp::Not), &[f32t(&[k(1)])]).is_err());
    }

    #[test]
    fn matmul_follows_numpy_shapes() {
        let n = batch();
        let mm = |a: &[Dim], b: &[Dim]| infer(Op::MatMul, &[f32t(a), f32t(b)]).map(|t| t.shape);
        assert_eq!(mm(&[n, k(4), k(5)], &[k(5), k(6)]).unwrap(), vec![n, k(4), k(6)]);
        assert_eq!(mm(&[k(5)], &[k(5)]).unwrap(), vec![]);
        assert_eq!(mm(&[k(5)], &[k(2), k(5), k(3)]).unwrap(), vec![k(2), k(3)]);
        assert_eq!(mm(&[k(2), k(1), k(4), k(5)], &[k(3), k(5), k(1)]).unwrap(), vec![k(2), k(3), k(4), k(1)]);
        assert_eq!(mm(&[k(4), k(5)], &[k(5)]).unwrap(), vec![k(4)]);
        assert!(mm(&[k(4), k(5)], &[k(6), k(1)]).unwrap_err().contains("inner"));
        assert!(mm(&[], &[k(1)]).is_err());
    }

    #[test]
    fn gemm_shapes_with_transposes_and_bias() {
        let n = batch();
        let gemm = |ta, tb| Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: ta, trans_b: tb };
        let out = infer(gemm(false, true), &[f32t(&[n, k(8)]), f32t(&[k(10), k(8)]), f32t(&[k(10)])]).unwrap();
        assert_eq!(out.shape, vec![n, k(10)]);
        let out = infer(gemm(true, false), &[f32t(&[k(8), k(3)]), f32t(&[k(8), k(10)]), None]).unwrap();
        assert_eq!(out.shape, vec![k(3), k(10)]);
        let err = infer(gemm(false, false), &[f32t(&[k(3), k(8)]), f32t(&[k(8), k(10)]), f32t(&[k(3), k(1), k(10)])]).unwrap_err();
        assert!(err.contains("C of shape"), "{err}");
        assert!(infer(gemm(false, false), &[f32t(&[k(3), k(7)]), f32t(&[k(8), k(10)])]).is_err());
    }

    #[test]
    fn variadic_where_clip_and_cast() {
        let n = batch();
        let out = infer(Op::Variadic(VariadicOp::Mean), &[f32t(&[k(3)]), f32t(&[n, k(1)]), f32t(&[k(1)])]).unwrap();
        assert_eq!(out.shape, vec![n, k(3)]);
        let cond = Some(TensorType::new(DType::Bool, vec![k(2), k(1)]));
        let out = infer(Op::Where, &[cond, f32t(&[k(3)]), f32t(&[k(1)])]).unwrap();
        assert_eq!(out.shape, vec![k(2), k(3)]);
        let bad_bound = infer(Op::Clip, &[f32t(&[k(3)]), Some(TensorType::fixed(DType::I64, &[])), None]).unwrap_err();
        assert!(bad_bound.contains("`min`"), "{bad_bound}");
        let long_bound = infer(Op::Clip, &[f32t(&[k(3)]), None, f32t(&[k(2)])]).unwrap_err();
        assert!(long_bound.contains("one element"), "{long_bound}");
        let cast = infer(Op::Cast { to: DType::I64 }, &[f32t(&[n])]).unwrap();
        assert_eq!(cast, TensorType::new(DType::I64, vec![n]));
    }

    #[test]
    fn constant_operands_type_like_inputs() {
        let mut g = Graph::new("t");
        let c = g.add_const("c", Tensor::scalar_f32(2.0));
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[4]));
        let root = g.root;
        let n = g.add_node(root, "n", Op::Binary(BinaryOp::Mul), vec![Some(x), Some(c)], vec![("y".into(), TensorType::scalar(DType::F32))]);
        assert_eq!(infer_node(&g, n).unwrap()[0], TensorType::fixed(DType::F32, &[4]));
    }
}
