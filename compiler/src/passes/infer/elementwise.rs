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
