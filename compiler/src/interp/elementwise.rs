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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_f32(shape, data.to_vec()).unwrap()
    }

    fn i(shape: &[usize], data: &[i64]) -> Tensor {
        Tensor::from_i64(shape, data.to_vec()).unwrap()
    }

    #[test]
    fn integer_div_truncates_and_rejects_zero() {
        let q = binary(BinaryOp::Div, &i(&[4], &[7, -7, 7, i64::MIN]), &i(&[4], &[2, 2, -2, -1])).unwrap();
        assert_eq!(q.to_i64_vec(), vec![3, -3, -3, i64::MIN]);
        let err = binary(BinaryOp::Div, &i(&[1], &[1]), &i(&[1], &[0])).unwrap_err();
        assert!(err.contains("division by zero"), "{err}");
        let i32_q = binary(BinaryOp::Div, &Tensor::from_i32(&[1], vec![-9]).unwrap(), &Tensor::from_i32(&[], vec![4]).unwrap());
        assert_eq!(i32_q.unwrap(), Tensor::from_i32(&[1], vec![-2]).unwrap());
    }

    #[test]
    fn max_min_propagate_nan() {
        let a = f(&[2], &[f32::NAN, 1.0]);
        let b = f(&[2], &[0.0, f32::NAN]);
        for op in [BinaryOp::Max, BinaryOp::Min] {
            assert!(binary(op, &a, &b).unwrap().to_f32_vec().iter().all(|v| v.is_nan()));
        }
        let three = variadic(VariadicOp::Max, &[&f(&[1], &[1.0]), &f(&[2], &[0.0, 5.0]), &f(&[], &[2.0])]).unwrap();
        assert_eq!(three.to_f32_vec(), vec![2.0, 5.0]);
    }

    #[test]
    fn mean_divides_the_broadcast_sum() {
        let m = variadic(VariadicOp::Mean, &[&f(&[2], &[1.0, 2.0]), &f(&[1], &[3.0]), &f(&[2, 1], &[5.0, 8.0])]).unwrap();
        assert_eq!(m.shape(), &[2, 2]);
        assert_eq!(m.to_f32_vec(), vec![3.0, 10.0 / 3.0, 4.0, 13.0 / 3.0]);
    }

    #[test]
    fn pow_mixed_types() {
        let p = binary(BinaryOp::Pow, &f(&[3], &[2.0, -2.0, 4.0]), &i(&[3], &[3, 2, -1])).unwrap();
        assert_eq!(p.to_f32_vec(), vec![8.0, 4.0, 0.25]);
        let q = binary(BinaryOp::Pow, &i(&[4], &[2, 3, -1, 2]), &i(&[4], &[10, 0, -3, -1])).unwrap();
        assert_eq!(q.to_i64_vec(), vec![1024, 1, -1, 0]);
        let r = binary(BinaryOp::Pow, &i(&[2], &[2, 9]), &f(&[2], &[0.5, 0.5])).unwrap();
        assert_eq!(r.to_i64_vec(), vec![1, 3]);
        assert!(binary(BinaryOp::Pow, &i(&[1], &[0]), &i(&[1], &[-1])).is_err());
    }

    #[test]
    fn clip_edge_cases() {
        let x = f(&[4], &[-2.0, 0.5, 3.0, f32::NAN]);
        let c = clip(&x, Some(&Tensor::scalar_f32(0.0)), Some(&Tensor::scalar_f32(1.0))).unwrap().to_f32_vec();
        assert_eq!(&c[..3], &[0.0, 0.5, 1.0]);
        assert!(c[3].is_nan());
        // min > max: everything becomes max, as in numpy.
        let inverted = clip(&x, Some(&f(&[1], &[2.0])), Some(&Tensor::scalar_f32(1.0))).unwrap().to_f32_vec();
        assert_eq!(&inverted[..3], &[1.0, 1.0, 1.0]);
        let ints = clip(&i(&[3], &[-5, 0, 9]), None, Some(&Tensor::scalar_i64(4))).unwrap();
        assert_eq!(ints.to_i64_vec(), vec![-5, 0, 4]);
        assert!(clip(&x, Some(&Tensor::scalar_i64(0)), None).is_err());
    }

    #[test]
    fn where_broadcasts_all_three() {
        let cond = Tensor::from_bool(&[2, 1], vec![true, false]).unwrap();
        let out = where_(&cond, &f(&[3], &[1.0, 2.0, 3.0]), &Tensor::scalar_f32(0.0)).unwrap();
        assert_eq!(out.shape(), &[2, 3]);
        assert_eq!(out.to_f32_vec(), vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn prelu_slope_broadcasts_to_x_only() {
        let out = binary(BinaryOp::PRelu, &f(&[2, 2], &[-1.0, 2.0, -3.0, 4.0]), &f(&[2], &[0.5, 0.1])).unwrap();
        assert_eq!(out.to_f32_vec(), vec![-0.5, 2.0, -1.5, 4.0]);
        assert!(binary(BinaryOp::PRelu, &f(&[2], &[1.0, 2.0]), &f(&[2, 2], &[0.0; 4])).is_err());
    }

    #[test]
    fn empty_tensors_broadcast() {
        let out = binary(BinaryOp::Add, &f(&[0, 3], &[]), &f(&[3], &[1.0, 2.0, 3.0])).unwrap();
        assert_eq!(out.shape(), &[0, 3]);
        let cmp = binary(BinaryOp::Less, &f(&[1, 0], &[]), &f(&[2, 1], &[0.0, 1.0])).unwrap();
        assert_eq!((cmp.dtype(), cmp.shape()), (d2nn_runtime::DType::Bool, &[2usize, 0][..]));
    }

    #[test]
    fn integer_unary_ops_wrap() {
        let out = unary(UnaryOp::Abs, &i(&[3], &[i64::MIN, -3, 4])).unwrap();
        assert_eq!(out.to_i64_vec(), vec![i64::MIN, 3, 4]);
        let sign = unary(UnaryOp::Sign, &Tensor::from_i32(&[3], vec![-7, 0, 9]).unwrap()).unwrap();
        assert_eq!(sign, Tensor::from_i32(&[3], vec![-1, 0, 1]).unwrap());
        assert!(unary(UnaryOp::Exp, &i(&[1], &[1])).is_err());
        assert!(unary(UnaryOp::Not, &f(&[1], &[1.0])).is_err());
    }

    /// Two shapes that broadcast: a common shape with some dims set to 1 on
    /// either side and a random number of leading dims dropped.
    fn broadcastable() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        proptest::collection::vec((0usize..4, any::<bool>(), any::<bool>()), 0..4).prop_flat_map(|dims| {
            let a: Vec<usize> = dims.iter().map(|&(d, one_a, _)| if one_a { 1 } else { d }).collect();
            let b: Vec<usize> = dims.iter().map(|&(d, _, one_b)| if one_b { 1 } else { d }).collect();
            let rank = dims.len();
            (Just(a), Just(b), 0..=rank, 0..=rank).prop_map(|(a, b, da, db)| (a[da..].to_vec(), b[db..].to_vec()))
        })
    }

    proptest! {
        /// Broadcasting Sub agrees with indexing each operand by the output
        /// index, reduced modulo its own dims (numpy's definition).
        #[test]
        fn broadcast_matches_index_definition((sa, sb) in broadcastable()) {
            let count = |s: &[usize]| s.iter().product::<usize>();
            let a = Tensor::from_f32(&sa, (0..count(&sa)).map(|v| v as f32).collect()).unwrap();
            let b = Tensor::from_f32(&sb, (0..count(&sb)).map(|v| (v * 10) as f32).collect()).unwrap();
            let out = binary(BinaryOp::Sub, &a, &b).unwrap();
            let (av, bv) = (a.as_f32().unwrap(), b.as_f32().unwrap());
            for (idx, &got) in out.as_f32().unwrap().indexed_iter() {
                let pick = |shape: &[usize]| -> Vec<usize> {
                    let skip = out.rank() - shape.len();
                    shape.iter().enumerate().map(|(d, &n)| if n == 1 { 0 } else { idx[skip + d] }).collect()
                };
                let want = av[IxDyn(&pick(&sa))] - bv[IxDyn(&pick(&sb))];
                prop_assert_eq!(got, want);
            }
        }
    }
}
