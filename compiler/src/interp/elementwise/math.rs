//! Scalar math of the unary float ops, computed in f64 where that makes the
//! oracle more accurate than an f32 kernel could be, and `erf`, which Rust's
//! standard library lacks.

use crate::ir::UnaryOp;

/// One element of a float unary op. `Not` is a bool op and never reaches here.
pub(super) fn unary_f32(op: UnaryOp, x: f32) -> f32 {
    use UnaryOp::*;
    let xd = x as f64;
    match op {
        // `x < 0` (rather than max) keeps NaN, as numpy's `maximum(x, 0)` does.
        Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        LeakyRelu { alpha } => {
            if x < 0.0 {
                alpha * x
            } else {
                x
            }
        }
        Sigmoid => sigmoid(xd) as f32,
        HardSigmoid { alpha, beta } => hard_sigmoid(alpha as f64 * xd + beta as f64) as f32,
        HardSwish => (xd * hard_sigmoid(xd / 6.0 + 0.5)) as f32,
        Tanh => x.tanh(),
        Elu { alpha } => {
            if x > 0.0 {
                x
            } else {
                (alpha as f64 * xd.exp_m1()) as f32
            }
        }
        Selu { alpha, gamma } => {
            let y = if x > 0.0 { xd } else { alpha as f64 * xd.exp_m1() };
            (gamma as f64 * y) as f32
        }
        // log(1 + e^x) without overflow for large x.
        Softplus => {
            if xd > 0.0 {
                (xd + (-xd).exp().ln_1p()) as f32
            } else {
                xd.exp().ln_1p() as f32
            }
        }
        Exp => xd.exp() as f32,
        Log => xd.ln() as f32,
        Sqrt => x.sqrt(),
        Reciprocal => 1.0 / x,
        Neg => -x,
        Abs => x.abs(),
        Erf => erf(xd) as f32,
        Floor => x.floor(),
        Ceil => x.ceil(),
        Round => x.round_ties_even(),
        // numpy's sign: 0 for ±0, NaN for NaN.
        Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
        Not => f32::NAN,
    }
}

fn sigmoid(x: f64) -> f64 {
    // Two forms so that neither exponential overflows.
    if x > 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn hard_sigmoid(v: f64) -> f64 {
    // `clamp` keeps NaN, as the reference's max(0, min(1, v)) does.
    v.clamp(0.0, 1.0)
}

/// The error function to about 1e-15 relative accuracy.
pub(super) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let y = if a < 2.5 {
        erf_series(a)
    } else if a < 6.0 {
        1.0 - erfc_continued_fraction(a)
    } else {
        // erfc(6) ≈ 2e-17: below f64 resolution at 1.
        1.0
    };
    y.copysign(x)
}

/// Maclaurin series `2/√π · Σ (-1)ⁿ x²ⁿ⁺¹ / (n! (2n+1))`; below 2.5 the
/// cancellation between terms costs at most three digits.
fn erf_series(x: f64) -> f64 {
    let mut term = x; // (-1)ⁿ x²ⁿ⁺¹ / n!
    let mut sum = 0.0;
    for n in 0..200 {
        let contribution = term / (2 * n + 1) as f64;
        sum += contribution;
        if contribution.abs() < 1e-17 * sum.abs() {
            break;
        }
        term *= -x * x / (n + 1) as f64;
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

/// Laplace's continued fraction `erfc(x) = e^{-x²}/√π · 1/(x + ½/(x + 1/(x + 3⁄2/(x + …))))`,
/// which converges quickly for x ≥ 2.5.
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut tail = x;
    for k in (1..=60).rev() {
        tail = x + (k as f64 / 2.0) / tail;
    }
    (-x * x).exp() * std::f64::consts::FRAC_2_SQRT_PI / (2.0 * tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_reference_values() {
        // Values from the closed-form tables (Abramowitz & Stegun 7.1), 16 digits.
        let cases = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (2.5, 0.999593047982555),
            (3.0, 0.9999779095030014),
            (4.0, 0.9999999845827421),
        ];
        for (x, want) in cases {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {} want {want}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-14);
        }
        assert_eq!(erf(10.0), 1.0);
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn erf_is_continuous_where_the_methods_meet() {
        let below = erf(2.5 - 1e-12);
        let at = erf(2.5);
        assert!((at - below).abs() < 1e-13);
    }

    #[test]
    fn round_is_half_to_even_and_sign_keeps_nan() {
        let r = |x| unary_f32(UnaryOp::Round, x);
        assert_eq!([r(0.5), r(1.5), r(2.5), r(-0.5), r(-1.5), r(2.4)], [0.0, 2.0, 2.0, -0.0, -2.0, 2.0]);
        assert!(unary_f32(UnaryOp::Sign, f32::NAN).is_nan());
        assert_eq!(unary_f32(UnaryOp::Sign, -0.0), 0.0);
    }

    #[test]
    fn activations_saturate_without_overflow() {
        assert_eq!(unary_f32(UnaryOp::Sigmoid, -1000.0), 0.0);
        assert_eq!(unary_f32(UnaryOp::Sigmoid, 1000.0), 1.0);
        assert_eq!(unary_f32(UnaryOp::Softplus, 1000.0), 1000.0);
        assert_eq!(unary_f32(UnaryOp::Softplus, -1000.0), 0.0);
        assert!(unary_f32(UnaryOp::Relu, f32::NAN).is_nan());
        assert_eq!(unary_f32(UnaryOp::HardSwish, 4.0), 4.0);
        assert_eq!(unary_f32(UnaryOp::HardSwish, -4.0), 0.0);
    }
}
