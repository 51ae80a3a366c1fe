//! Convolution and fully connected layers with their weights packed once:
//! the one place that decides how a layer's weights are laid out (im2col
//! panels, Winograd-transformed matrices, GEMM right operand) and which
//! kernel a call runs, so the plan executor and generated code agree.

use crate::gemm::{sgemm_par, Activation, Bias, Epilogue, MatMut, MatRef, PackedA, PackedB};
use crate::kernels::conv::{conv2d, Conv2d, ConvEpilogue};
use crate::kernels::winograd::{self, winograd_conv3x3, WinogradWeights};
use crate::kernels::KernelError;
use crate::pool::ThreadPool;

/// Fewest input and output channels for which a 3×3 stride-1 conv runs as
/// Winograd F(2×2, 3×3): below that its transforms cost more than the
/// multiplies it saves.
pub const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Fewest output tiles (2×2 pixels) in a call for which a 3×3 conv runs
/// as Winograd: below that each of its 16 GEMMs has too few columns to
/// amortise streaming its weight matrix (ResNet's 7×7 layer4 at batch 1 has
/// 16 tiles and ran at 0.76× im2col's speed).
pub const WINOGRAD_MIN_TILES: usize = 64;

/// A convolution's weights, packed for the kernel that will run it.
#[derive(Clone)]
pub enum ConvWeights {
    /// One GEMM left operand per group, for im2col (or pointwise) convolution.
    Im2col(Vec<PackedA>),
    /// The 16 transformed matrices of a 3×3 stride-1 convolution computed by
    /// Winograd F(2×2, 3×3); for a small image also the im2col packing,
    /// used when a call has fewer than [`WINOGRAD_MIN_TILES`] tiles.
    Winograd { transformed: WinogradWeights, direct: Option<Vec<PackedA>> },
}

impl ConvWeights {
    /// Packs `weights` (`[c_out, c_in / group, kh, kw]`, row-major) for
    /// `geometry`, choosing Winograd for 3×3 stride-1 convs with at least
    /// [`WINOGRAD_MIN_CHANNELS`] channels on each side.
    pub fn pack(geometry: &Conv2d, weights: &[f32]) -> Result<ConvWeights, KernelError> {
        let g = geometry;
        if g.group == 0 || !g.c_in.is_multiple_of(g.group) || !g.c_out.is_multiple_of(g.group) {
            return Err(KernelError::Geometry(format!("{} input and {} output channels in {} groups", g.c_in, g.c_out, g.group)));
        }
        let (mg, k) = (g.c_out / g.group, g.c_in / g.group * g.kh * g.kw);
        let expected = g.c_out.checked_mul(k).ok_or_else(|| KernelError::Geometry("the weight size overflows".into()))?;
        if weights.len() != expected {
            return Err(KernelError::Length { what: "weights", expected, actual: weights.len() });
        }
        let direct = || (0..g.group).map(|i| PackedA::pack(MatRef::row_major(&weights[i * mg * k..(i + 1) * mg * k], mg, k))).collect::<Vec<_>>();
        if winograd::suits(g) && g.c_in >= WINOGRAD_MIN_CHANNELS && g.c_out >= WINOGRAD_MIN_CHANNELS {
            // An image with fewer tiles than Winograd needs keeps the im2col
            // packing too, for calls with few samples.
            let small = g.oh.div_ceil(2) * g.ow.div_ceil(2) < WINOGRAD_MIN_TILES;
            let transformed = WinogradWeights::new(weights, g.c_out, g.c_in)?;
            return Ok(ConvWeights::Winograd { transformed, direct: small.then(direct) });
        }
        Ok(ConvWeights::Im2col(direct()))
    }

    /// Bytes held by the packed weights.
    pub fn bytes(&self) -> usize {
        let groups = |d: &[PackedA]| d.iter().map(PackedA::bytes).sum::<usize>();
        match self {
            ConvWeights::Im2col(d) => groups(d),
            ConvWeights::Winograd { transformed, direct } => transformed.bytes() + direct.as_deref().map_or(0, groups),
        }
    }

    /// `y = act(conv(x) + bias + residual)` for a batch of NCHW samples
    /// (the batch derived from `x.len()`).
    pub fn run(&self, geometry: &Conv2d, epilogue: ConvEpilogue<'_>, x: &[f32], y: &mut [f32], pool: &ThreadPool) -> Result<(), KernelError> {
        match self {
            ConvWeights::Im2col(groups) => conv2d(geometry, groups, epilogue, x, y, pool),
            ConvWeights::Winograd { transformed, direct } => {
                let g = geometry;
                let samples = x.len() / (g.c_in * g.h * g.w).max(1);
                let tiles = samples * g.oh.div_ceil(2) * g.ow.div_ceil(2);
                match direct {
                    Some(direct) if tiles < WINOGRAD_MIN_TILES => conv2d(g, direct, epilogue, x, y, pool),
                    _ => winograd_conv3x3(g, transformed, epilogue, x, y, pool),
                }
            }
        }
    }
}

impl std::fmt::Debug for ConvWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = |d: &[PackedA]| d.iter().map(PackedA::bytes).sum::<usize>();
        match self {
            ConvWeights::Im2col(d) => write!(f, "PackedA x{} ({} bytes)", d.len(), groups(d)),
            ConvWeights::Winograd { transformed, direct } => {
                write!(f, "Winograd F(2x2,3x3) ({} bytes)", transformed.bytes())?;
                match direct {
                    Some(d) => write!(f, " + PackedA x{} for small batches ({} bytes)", d.len(), groups(d)),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A fully connected layer's `[k, n]` weight, packed as the GEMM's right operand.
#[derive(Clone)]
pub struct DenseWeights {
    packed: PackedB,
}

impl DenseWeights {
    /// Packs a `[k, n]` row-major weight, or with `transposed` an `[n, k]`
    /// one (a `Gemm` with `transB = 1`, PyTorch's `Linear`).
    pub fn pack(weights: &[f32], k: usize, n: usize, transposed: bool) -> Result<DenseWeights, KernelError> {
        let expected = k.checked_mul(n).ok_or_else(|| KernelError::Geometry("the weight size overflows".into()))?;
        if weights.len() != expected {
            return Err(KernelError::Length { what: "weights", expected, actual: weights.len() });
        }
        let packed = if transposed { PackedB::pack(MatRef::row_major(weights, n, k).t()) } else { PackedB::pack(MatRef::row_major(weights, k, n)) };
        Ok(DenseWeights { packed })
    }

    /// The reduction length.
    pub fn k(&self) -> usize {
        self.packed.rows()
    }

    /// The output width.
    pub fn n(&self) -> usize {
        self.packed.cols()
    }

    pub fn bytes(&self) -> usize {
        self.packed.bytes()
    }

    /// `y = act(x · W + bias + residual)` over the rows of `x` (`[rows, k]`,
    /// the rows derived from its length); `bias` holds one value per column.
    pub fn run(&self, bias: Option<&[f32]>, residual: Option<&[f32]>, activation: Activation, x: &[f32], y: &mut [f32], pool: &ThreadPool) -> Result<(), KernelError> {
        let (k, n) = (self.k(), self.n());
        if k == 0 || !x.len().is_multiple_of(k) {
            return Err(KernelError::Ragged { what: "input", unit: k, actual: x.len() });
        }
        let rows = x.len() / k;
        if y.len() != rows * n {
            return Err(KernelError::Length { what: "output", expected: rows * n, actual: y.len() });
        }
        if let Some(r) = residual.filter(|r| r.len() != y.len()) {
            return Err(KernelError::Length { what: "residual", expected: y.len(), actual: r.len() });
        }
        if let Some(b) = bias.filter(|b| b.len() != n) {
            return Err(KernelError::Length { what: "bias", expected: n, actual: b.len() });
        }
        let mut epi = Epilogue::default().with_activation(activation);
        if let Some(b) = bias {
            epi = epi.with_bias(Bias::PerCol(b));
        }
        if let Some(r) = residual {
            epi = epi.with_residual(MatRef::row_major(r, rows, n));
        }
        sgemm_par(pool, MatRef::row_major(x, rows, k), &self.packed, MatMut::row_major(y, rows, n), &epi);
        Ok(())
    }
}

impl std::fmt::Debug for DenseWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedB {}x{} ({} bytes)", self.k(), self.n(), self.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv_geometry(c: usize, hw: usize) -> Conv2d {
        Conv2d { c_in: c, h: hw, w: hw, c_out: c, oh: hw, ow: hw, kh: 3, kw: 3, stride: (1, 1), dilation: (1, 1), pad: (1, 1), group: 1 }
    }

    #[test]
    fn picks_winograd_only_with_enough_channels() {
        let few = conv_geometry(8, 8);
        assert!(matches!(ConvWeights::pack(&few, &vec![0.5; 8 * 8 * 9]).unwrap(), ConvWeights::Im2col(_)));
        let many = conv_geometry(16, 8);
        let w = ConvWeights::pack(&many, &vec![0.5; 16 * 16 * 9]).unwrap();
        assert!(matches!(w, ConvWeights::Winograd { direct: Some(_), .. }), "an 8x8 image has 16 tiles: keeps im2col too");
    }

    #[test]
    fn winograd_and_im2col_agree() {
        let g = conv_geometry(16, 6);
        let weights: Vec<f32> = (0..16 * 16 * 9).map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0).collect();
        let x: Vec<f32> = (0..4 * 16 * 36).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        let pool = ThreadPool::new(1);
        let epi = || ConvEpilogue { bias: None, residual: None, activation: Activation::Identity };
        let wino = ConvWeights::pack(&g, &weights).unwrap();
        let direct = ConvWeights::Im2col(vec![PackedA::pack(MatRef::row_major(&weights, 16, 16 * 9))]);
        // Batch 1 has 9 tiles (im2col path), batch 4 has 36 (still under 64);
        // compare both against the plain packing.
        for batch in [1, 4] {
            let xs = &x[..batch * 16 * 36];
            let (mut a, mut b) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
            wino.run(&g, epi(), xs, &mut a, &pool).unwrap();
            direct.run(&g, epi(), xs, &mut b, &pool).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn rejects_wrong_sizes() {
        let g = conv_geometry(4, 4);
        assert!(matches!(ConvWeights::pack(&g, &[0.0; 3]), Err(KernelError::Length { .. })));
        let d = DenseWeights::pack(&[1.0; 6], 2, 3, false).unwrap();
        let pool = ThreadPool::new(1);
        let mut y = [0.0; 3];
        assert!(d.run(None, None, Activation::Identity, &[1.0; 3], &mut y, &pool).is_err());
        assert!(d.run(Some(&[1.0; 2]), None, Activation::Identity, &[1.0; 2], &mut y, &pool).is_err());
        d.run(Some(&[1.0; 3]), None, Activation::Identity, &[1.0, 2.0], &mut y, &pool).unwrap();
        assert_eq!(y, [4.0; 3]);
    }
}
