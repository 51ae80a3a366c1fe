//! Kernels for the elementwise family: unary math, broadcasting binary and
//! variadic ops, comparisons and logic, Clip, Where, Cast, and (in
//! [`matmul`]) Gemm and MatMul. Semantics follow the ONNX reference
//! implementation (numpy): NaN propagates through Max/Min/Clip, integer
//! arithmetic wraps, integer Div truncates toward zero.

mod math;
mod matmul;

use super::util::{broadcast, broadcast_to, try_zip_broadcast, zip_broadcast};
use super::EvalCtx;
use crate::ir::{BinaryOp, Op, UnaryOp, VariadicOp};
use d2nn_runtime::Tensor;
use ndarray::{ArrayD, IxDyn};

pub(super) fn eval(ctx: &EvalCtx) -> Result<Vec<Tensor>, String> {
    let out = match ctx.op() {
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            matmul::gemm(ctx.input(0)?, ctx.input(1)?, ctx.opt_input(2), *alpha, *beta, *trans_a, *trans_b)?
        }
        Op::MatMul => matmul::matmul(ctx.input(0)?, ctx.input(1)?)?,
        Op::Unary(op) => unary(*op, ctx.input(0)?)?,
        Op::Binary(op) => binary(*op, ctx.input(0)?, ctx.input(1)?)?,
        Op::Variadic(op) => {
            let operands = (0..ctx.inputs.len()).map(|i| ctx.input(i)).collect::<Result<Vec<_>, _>>()?;
            variadic(*op, &operands)?
        }
        Op::Clip => clip(ctx.input(0)?, ctx.opt_input(1), ctx.opt_input(2))?,
        Op::Where => where_(ctx.input(0)?, ctx.input(1)?, ctx.input(2)?)?,
        Op::Cast { to } => ctx.input(0)?.cast(*to),
        other => return Err(format!("{} is not an elementwise op", other.name())),
    };
    Ok(vec![out])
}

fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor, String> {
    use UnaryOp::*;
    Ok(match (op, x) {
        (Not, Tensor::Bool(a)) => Tensor::Bool(a.mapv(|v| !v)),
        (Not, _) => return Err(format!("Not needs a bool input, got {}", x.dtype())),
        (_, Tensor::F32(a)) => Tensor::F32(a.mapv(|v| math::unary_f32(op, v))),
        (Relu | Neg | Abs | Sign, Tensor::I64(a)) => Tensor::I64(a.mapv(|v| unary_int(op, v))),
        (Relu | Neg | Abs | Sign, Tensor::I32(a)) => Tensor::I32(a.mapv(|v| unary_int(op, v) as i32)),
        _ => return Err(format!("{} is not defined on {}", Op::Unary(op).name(), x.dtype())),
    })
}

/// Integer Relu/Neg/Abs/Sign; computed in i64, where i32 wrapping agrees after truncation.
fn unary_int(op: UnaryOp, v: impl Into<i64>) -> i64 {
    let v: i64 = v.into();
    match op {
        UnaryOp::Relu => v.max(0),
        UnaryOp::Neg => v.wrapping_neg(),
        UnaryOp::Abs => v.wrapping_abs(),
        _ => v.signum(),
    }
}

/// Arithmetic every numeric element type supports.
trait Number: Copy + PartialOrd {
    fn arith(op: BinaryOp, x: Self, y: Self) -> Result<Self, String>;
}

impl Number for f32 {
    fn arith(op: BinaryOp, x: f32, y: f32) -> Result<f32, String> {
        Ok(match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            // numpy's maximum/minimum propagate NaN; f32::max would drop it.
            BinaryOp::Max | BinaryOp::Min if x.is_nan() || y.is_nan() => f32::NAN,
            BinaryOp::Max => x.max(y),
            BinaryOp::Min => x.min(y),
            _ => return Err(format!("{} is not arithmetic", Op::Binary(op).name())),
        })
    }
}

macro_rules! int_number {
    ($t:ty) => {
        impl Number for $t {
            fn arith(op: BinaryOp, x: $t, y: $t) -> Result<$t, String> {
                Ok(match op {
                    BinaryOp::Add => x.wrapping_add(y),
                    BinaryOp::Sub => x.wrapping_sub(y),
                    BinaryOp::Mul => x.wrapping_mul(y),
                    // Rust's `/` truncates toward zero like the ONNX reference;
                    // wrapping covers MIN / -1.
                    BinaryOp::Div if y == 0 => return Err(format!("integer division by zero ({x} / 0)")),
                    BinaryOp::Div => x.wrapping_div(y),
                    BinaryOp::Max => x.max(y),
                    BinaryOp::Min => x.min(y),
                    _ => return Err(format!("{} is not arithmetic", Op::Binary(op).name())),
                })
            }
        }
    };
}
int_number!(i64);
int_number!(i32);

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    use BinaryOp::*;
    use Tensor::{Bool, F32, I32, I64};
    let mismatch = || format!("{} is not defined on {} and {}", Op::Binary(op).name(), a.dtype(), b.dtype());
    Ok(match op {
        Add | Sub | Mul | Div | Max | Min => match (a, b) {
            (F32(x), F32(y)) => F32(try_zip_broadcast(x, y, |p, q| f32::arith(op, p, q))?),
            (I64(x), I64(y)) => I64(try_zip_broadcast(x, y, |p, q| i64::arith(op, p, q))?),
            (I32(x), I32(y)) => I32(try_zip_broadcast(x, y, |p, q| i32::arith(op, p, q))?),
            _ => return Err(mismatch()),
        },
        PRelu => match (a, b) {
            (F32(x), F32(slope)) => {
                // Unidirectional: the slope broadcasts to X, never the reverse.
                let slope = broadcast_to(slope, x.shape()).map_err(|e| format!("slope: {e}"))?;
                let data = x.iter().zip(slope.iter()).map(|(&v, &s)| if v < 0.0 { s * v } else { v }).collect();
                F32(ArrayD::from_shape_vec(x.raw_dim(), data).map_err(|e| e.to_string())?)
            }
            _ => return Err(mismatch()),
        },
        Pow => pow(a, b)?,
        Greater | Less | GreaterOrEqual | LessOrEqual | Equal => match (a, b) {
            (F32(x), F32(y)) => Bool(zip_broadcast(x, y, |p, q| compare(op, p, q))?),
            (I64(x), I64(y)) => Bool(zip_broadcast(x, y, |p, q| compare(op, p, q))?),
            (I32(x), I32(y)) => Bool(zip_broadcast(x, y, |p, q| compare(op, p, q))?),
            (Bool(x), Bool(y)) if op == Equal => Bool(zip_broadcast(x, y, |p, q| p == q)?),
            _ => return Err(mismatch()),
        },
        And | Or | Xor => match (a, b) {
            (Bool(x), Bool(y)) => Bool(zip_broadcast(x, y, |p, q| match op {
                And => p && q,
                Or => p || q,
                _ => p != q,
            })?),
            _ => return Err(mismatch()),
        },
    })
}

fn compare<T: PartialOrd>(op: BinaryOp, x: T, y: T) -> bool {
    match op {
        BinaryOp::Greater => x > y,
        BinaryOp::Less => x < y,
        BinaryOp::GreaterOrEqual => x >= y,
        BinaryOp::LessOrEqual => x <= y,
        _ => x == y,
    }
}

/// An exponent element of any numeric type.
#[derive(Clone, Copy)]
enum Exponent {
    Int(i64),
    Float(f32),
}

/// `base ^ exponent` with the base's dtype, as the reference computes it:
/// float results in double precision rounded once, an integer base with a
/// float exponent truncated toward zero.
fn pow(base: &Tensor, exponent: &Tensor) -> Result<Tensor, String> {
    let exponent: ArrayD<Exponent> = match exponent {
        Tensor::F32(e) => e.mapv(Exponent::Float),
        Tensor::I64(e) => e.mapv(Exponent::Int),
        Tensor::I32(e) => e.mapv(|v| Exponent::Int(v as i64)),
        Tensor::Bool(_) => return Err("Pow's exponent must be numeric, got bool".into()),
    };
    let real = |b: f64, e: Exponent| match e {
        Exponent::Int(n) => b.powf(n as f64),
        Exponent::Float(f) => b.powf(f as f64),
    };
    let int = |b: i64, e: Exponent| match e {
        Exponent::Int(n) => int_pow(b, n),
        // numpy computes int ** float in double and casts back (saturating here).
        Exponent::Float(f) => Ok((b as f64).powf(f as f64) as i64),
    };
    Ok(match base {
        Tensor::F32(b) => Tensor::F32(zip_broadcast(b, &exponent, |b, e| real(b as f64, e) as f32)?),
        Tensor::I64(b) => Tensor::I64(try_zip_broadcast(b, &exponent, int)?),
        // Wrapping i64 powers truncate to the wrapping i32 power.
        Tensor::I32(b) => Tensor::I32(try_zip_broadcast(b, &exponent, |b, e| int(b as i64, e).map(|v| v as i32))?),
        Tensor::Bool(_) => return Err("Pow's base must be numeric, got bool".into()),
    })
}


/// Integer power with wrapping; a negative exponent truncates the real result.
fn int_pow(base: i64, exp: i64) -> Result<i64, String> {
    if exp < 0 {
        return match base {
            0 => Err(format!("0 raised to the negative power {exp}")),
            1 => Ok(1),
            -1 => Ok(if exp % 2 == 0 { 1 } else { -1 }),
            _ => Ok(0),
        };
    }
    let (mut result, mut square, mut e) = (1i64, base, exp as u64);
    while e > 0 {
        if e & 1 == 1 {
            result = result.wrapping_mul(square);
        }
        square = square.wrapping_mul(square);
        e >>= 1;
    }
    Ok(result)
}

fn variadic(op: VariadicOp, operands: &[&Tensor]) -> Result<Tensor, String> {
    let (first, rest) = operands.split_first().ok_or("needs at least one input")?;
    let step = match op {
        VariadicOp::Sum | VariadicOp::Mean => BinaryOp::Add,
        VariadicOp::Max => BinaryOp::Max,
        VariadicOp::Min => BinaryOp::Min,
    };
    let mut acc = (*first).clone();
    for t in rest {
        acc = binary(step, &acc, t)?;
    }
    if op == VariadicOp::Mean {
        let n = operands.len() as f32;
        acc = match acc {
            Tensor::F32(a) => Tensor::F32(a.mapv(|v| v / n)),
            other => return Err(format!("Mean is defined on f32, got {}", other.dtype())),
        };
    }
    Ok(acc)
}

fn clip(x: &Tensor, min: Option<&Tensor>, max: Option<&Tensor>) -> Result<Tensor, String> {
    // Bounds are checked to share the data's dtype, so these reads are exact.
    let scalar = |t: Option<&Tensor>, name: &str| -> Result<Option<Tensor>, String> {
        match t {
            None => Ok(None),
            Some(b) if b.dtype() != x.dtype() => Err(format!("`{name}` has dtype {}, the data {}", b.dtype(), x.dtype())),
            Some(b) if b.len() != 1 => Err(format!("`{name}` must hold one element, it has shape {:?}", b.shape())),
            Some(b) => Ok(Some(b.clone())),
        }
    };
    let (lo, hi) = (scalar(min, "min")?, scalar(max, "max")?);
    let first_f32 = |t: &Option<Tensor>| t.as_ref().and_then(|b| b.to_f32_vec().first().copied());
    let first_int = |t: &Option<Tensor>| t.as_ref().and_then(|b| b.to_i64_vec().first().copied());
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(clamp_elements(a, first_f32(&lo), first_f32(&hi))),
        Tensor::I64(a) => Tensor::I64(clamp_elements(a, first_int(&lo), first_int(&hi))),
        Tensor::I32(a) => {
            let narrow = |v: Option<i64>| v.map(|v| v as i32);
            Tensor::I32(clamp_elements(a, narrow(first_int(&lo)), narrow(first_int(&hi))))
        }
        Tensor::Bool(_) => return Err("Clip is not defined on bool".into()),
    })
}

/// Comparisons rather than `clamp()`: NaN data stays NaN, and when
/// min > max every element becomes max, as numpy's clip does.
fn clamp_elements<T: Copy + PartialOrd>(a: &ArrayD<T>, lo: Option<T>, hi: Option<T>) -> ArrayD<T> {
    a.mapv(|mut v| {
        if let Some(lo) = lo {
            if v < lo {
                v = lo;
            }
        }
        if let Some(hi) = hi {
            if v > hi {
                v = hi;
            }
        }
        v
    })
}

fn where_(cond: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor, String> {
    let cond = cond.as_bool().map_err(|e| format!("condition: {e}"))?;
    fn select<T: Copy>(cond: &ArrayD<bool>, x: &ArrayD<T>, y: &ArrayD<T>) -> Result<ArrayD<T>, String> {
        let shape = broadcast(&[cond.shape(), x.shape(), y.shape()])?;
        let (c, xv, yv) = (broadcast_to(cond, &shape)?, broadcast_to(x, &shape)?, broadcast_to(y, &shape)?);
        let data = c.iter().zip(xv.iter()).zip(yv.iter()).map(|((&c, &p), &q)| if c { p } else { q }).collect();
        ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| e.to_string())
    }
    Ok(match (x, y) {
        (Tensor::F32(p), Tensor::F32(q)) => Tensor::F32(select(cond, p, q)?),
        (Tensor::I64(p), Tensor::I64(q)) => Tensor::I64(select(cond, p, q)?),
        (Tensor::I32(p), Tensor::I32(q)) => Tensor::I32(select(cond, p, q)?),
        (Tensor::Bool(p), Tensor::Bool(q)) => Tensor::Bool(select(cond, p, q)?),
        _ => return Err(format!("X and Y must have one dtype, got {} and {}", x.dtype(), y.dtype())),
    })
}
