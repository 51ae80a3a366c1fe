//! Inference-mode BatchNormalization (when it was not folded into a
//! convolution): a per-channel affine map over `[N, C, plane]`; and
//! LayerNormalization over rows ([`layer_norm`], bit for bit the reference's
//! arithmetic, see there).
//!
//! The statistics are folded once into `factor = scale / sqrt(var + eps)`;
//! each element then costs `factor·(x - mean) + bias` in f64, rounded once to
//! f32. The reference computes `scale·(x - mean) / sqrt(var + eps) + bias` in
//! f64, so the two differ by f64 rounding only (~1e-16 relative before the
//! final rounding to f32).

use super::{blocks, expect_len, KernelError};

/// Per-channel constants of a batch norm.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    mean: Vec<f64>,
    factor: Vec<f64>,
    bias: Vec<f64>,
}

impl BatchNorm {
    /// Folds the stored statistics; all four slices hold one value per channel.
    pub fn new(scale: &[f32], bias: &[f32], mean: &[f32], var: &[f32], epsilon: f32) -> Result<BatchNorm, KernelError> {
        let channels = scale.len();
        expect_len("bias", bias.len(), channels)?;
        expect_len("mean", mean.len(), channels)?;
        expect_len("var", var.len(), channels)?;
        let factor = scale.iter().zip(var).map(|(&s, &v)| f64::from(s) / (f64::from(v) + f64::from(epsilon)).sqrt()).collect();
        Ok(BatchNorm {
            mean: mean.iter().map(|&m| f64::from(m)).collect(),
            factor,
            bias: bias.iter().map(|&b| f64::from(b)).collect(),
        })
    }

    /// The folded per-channel constants: mean, factor and bias.
    pub fn folded(&self) -> (&[f64], &[f64], &[f64]) {
        (&self.mean, &self.factor, &self.bias)
    }

    /// A batch norm from constants folded by [`BatchNorm::new`] (as
    /// [`BatchNorm::folded`] returns them).
    pub fn from_folded(mean: Vec<f64>, factor: Vec<f64>, bias: Vec<f64>) -> Result<BatchNorm, KernelError> {
        expect_len("factor", factor.len(), mean.len())?;
        expect_len("bias", bias.len(), mean.len())?;
        Ok(BatchNorm { mean, factor, bias })
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }
}

/// Normalises `x` (`[N, channels, plane]`, N derived from the length) into `out`.
pub fn batch_norm(bn: &BatchNorm, plane: usize, x: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    expect_len("output", out.len(), x.len())?;
    let image = bn.channels().checked_mul(plane).ok_or_else(|| KernelError::Geometry("channels × plane overflows".into()))?;
    blocks("input", x.len(), image)?;
    if x.is_empty() {
        return Ok(());
    }
    for (k, (src, dst)) in x.chunks_exact(plane).zip(out.chunks_exact_mut(plane)).enumerate() {
        let c = k % bn.channels();
        let (mean, factor, bias) = (bn.mean[c], bn.factor[c], bn.bias[c]);
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = (factor * (f64::from(v) - mean) + bias) as f32;
        }
    }
    Ok(())
}

/// LayerNormalization's geometry: every `row` consecutive elements (the
/// axes from `axis` on) are standardised together.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct LayerNorm {
    pub row: usize,
    pub epsilon: f32,
}

/// `y = (x - mean) · inv_std · scale + bias` over each row of `x` (the row
/// count derived from the length), `scale` and `bias` holding `row` values
/// (already broadcast onto the row).
///
/// The reference's arithmetic in its order, so the result is bit for bit
/// the interpreter's: the mean is the sequential f64 sum over `row`, the
/// variance the sequential f64 sum of squared deviations over `row`,
/// `inv_std = 1 / sqrt(var + epsilon)`, each element
/// `((x - mean)·inv_std·scale + bias)` in f64 (`+ 0.0` without a bias)
/// rounded once.
pub fn layer_norm(g: &LayerNorm, scale: &[f32], bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) -> Result<(), KernelError> {
    expect_len("output", y.len(), x.len())?;
    expect_len("scale", scale.len(), g.row)?;
    if let Some(b) = bias {
        expect_len("bias", b.len(), g.row)?;
    }
    blocks("input", x.len(), g.row)?;
    if x.is_empty() {
        return Ok(());
    }
    let n = g.row as f64;
    let epsilon = f64::from(g.epsilon);
    for (src, dst) in x.chunks_exact(g.row).zip(y.chunks_exact_mut(g.row)) {
        let mean = src.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = src.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        let inv_std = 1.0 / (var + epsilon).sqrt();
        match bias {
            Some(b) => {
                for (((d, &v), &s), &b) in dst.iter_mut().zip(src).zip(scale).zip(b) {
                    *d = ((f64::from(v) - mean) * inv_std * f64::from(s) + f64::from(b)) as f32;
                }
            }
            None => {
                for ((d, &v), &s) in dst.iter_mut().zip(src).zip(scale) {
                    *d = ((f64::from(v) - mean) * inv_std * f64::from(s) + 0.0) as f32;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_the_definition(
            n in 0usize..3, channels in 1usize..5, plane in 1usize..9, eps in 1e-5f32..1e-1,
            params in prop::collection::vec((-3.0f32..3.0, -3.0f32..3.0, -3.0f32..3.0, 0.0f32..4.0), 4),
            xs in prop::collection::vec(-10.0f32..10.0, 3 * 4 * 8),
        ) {
            let p = &params[..channels];
            let (scale, bias, mean, var): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) =
                (p.iter().map(|t| t.0).collect(), p.iter().map(|t| t.1).collect(), p.iter().map(|t| t.2).collect(), p.iter().map(|t| t.3).collect());
            let bn = BatchNorm::new(&scale, &bias, &mean, &var, eps).unwrap();
            let x = &xs[..n * channels * plane];
            let mut out = vec![0.0; x.len()];
            batch_norm(&bn, plane, x, &mut out).unwrap();
            for (k, (&got, &v)) in out.iter().zip(x).enumerate() {
                let c = k / plane % channels;
                let want = f64::from(scale[c]) * (f64::from(v) - f64::from(mean[c])) / (f64::from(var[c]) + f64::from(eps)).sqrt() + f64::from(bias[c]);
                prop_assert!((f64::from(got) - want).abs() <= 1e-6 * want.abs() + 1e-6, "element {k}: got {got}, want {want}");
            }
        }
    }

    proptest! {
        /// Against the definition written independently: mean and variance
        /// in f64 as numpy's (sequential) sums.
        #[test]
        fn layer_norm_matches_the_definition(
            rows in 0usize..4, row in 1usize..20, eps in 1e-6f32..1e-1, with_bias in any::<bool>(),
            xs in prop::collection::vec(-10.0f32..10.0, 4 * 20),
            params in prop::collection::vec((-3.0f32..3.0, -3.0f32..3.0), 20),
        ) {
            let x = &xs[..rows * row];
            let scale: Vec<f32> = params[..row].iter().map(|p| p.0).collect();
            let bias: Vec<f32> = params[..row].iter().map(|p| p.1).collect();
            let mut y = vec![0.0; x.len()];
            layer_norm(&LayerNorm { row, epsilon: eps }, &scale, with_bias.then_some(&bias[..]), x, &mut y).unwrap();
            for r in 0..rows {
                let v = &x[r * row..(r + 1) * row];
                let mut sum = 0.0f64;
                for &e in v {
                    sum += f64::from(e);
                }
                let mean = sum / row as f64;
                let mut sq = 0.0f64;
                for &e in v {
                    sq += (f64::from(e) - mean) * (f64::from(e) - mean);
                }
                let inv = 1.0 / (sq / row as f64 + f64::from(eps)).sqrt();
                for j in 0..row {
                    let b = if with_bias { f64::from(bias[j]) } else { 0.0 };
                    let want = ((f64::from(v[j]) - mean) * inv * f64::from(scale[j]) + b) as f32;
                    prop_assert_eq!(y[r * row + j].to_bits(), want.to_bits(), "row {} element {}", r, j);
                }
            }
        }
    }

    #[test]
    fn layer_norm_bad_calls_are_errors() {
        let g = LayerNorm { row: 3, epsilon: 1e-5 };
        assert!(layer_norm(&g, &[1.0; 3], None, &[0.0; 5], &mut [0.0; 5]).is_err());
        assert!(layer_norm(&g, &[1.0; 2], None, &[0.0; 6], &mut [0.0; 6]).is_err());
        assert!(layer_norm(&g, &[1.0; 3], Some(&[0.0; 4]), &[0.0; 6], &mut [0.0; 6]).is_err());
        assert!(layer_norm(&g, &[1.0; 3], None, &[0.0; 6], &mut [0.0; 3]).is_err());
        // A constant row has zero variance: 1/sqrt(epsilon) times 0.
        let mut y = [9.0; 3];
        layer_norm(&g, &[1.0; 3], Some(&[0.5; 3]), &[2.0; 3], &mut y).unwrap();
        assert_eq!(y, [0.5; 3]);
    }

    #[test]
    fn mismatched_lengths_are_errors() {
        assert!(BatchNorm::new(&[1.0; 2], &[0.0; 2], &[0.0; 3], &[1.0; 2], 1e-5).is_err());
        let bn = BatchNorm::new(&[1.0; 2], &[0.0; 2], &[0.0; 2], &[1.0; 2], 1e-5).unwrap();
        assert!(batch_norm(&bn, 3, &[0.0; 5], &mut [0.0; 5]).is_err());
        assert!(batch_norm(&bn, 3, &[0.0; 6], &mut [0.0; 5]).is_err());
    }
}
