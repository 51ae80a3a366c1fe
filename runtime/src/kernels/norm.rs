//! Inference-mode BatchNormalization (when it was not folded into a
//! convolution): a per-channel affine map over `[N, C, plane]`.
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

    #[test]
    fn mismatched_lengths_are_errors() {
        assert!(BatchNorm::new(&[1.0; 2], &[0.0; 2], &[0.0; 3], &[1.0; 2], 1e-5).is_err());
        let bn = BatchNorm::new(&[1.0; 2], &[0.0; 2], &[0.0; 2], &[1.0; 2], 1e-5).unwrap();
        assert!(batch_norm(&bn, 3, &[0.0; 5], &mut [0.0; 5]).is_err());
        assert!(batch_norm(&bn, 3, &[0.0; 6], &mut [0.0; 5]).is_err());
    }
}
