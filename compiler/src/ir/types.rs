//! Value types: an element type plus a shape whose dims are known, symbolic
//! (a named batch-like dimension times a constant factor), or unknown.

use d2nn_runtime::DType;
use std::fmt;

/// A named symbolic dimension (ONNX `dim_param`), interned in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(pub u32);

/// One dimension of a shape.
///
/// `Sym { sym, factor }` stands for `factor × sym`: reshapes such as
/// `[N, C, H, W] → [N·C, H·W]` keep a symbolic batch exact. `Unknown` is a
/// dimension that depends on runtime data (a shape read from a graph input);
/// the interpreter copes, code generation reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    Sym { sym: Symbol, factor: usize },
    Unknown,
}

impl Dim {
    pub fn sym(sym: Symbol) -> Dim {
        Dim::Sym { sym, factor: 1 }
    }

    pub fn known(self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(n),
            _ => None,
        }
    }

    pub fn is_known(self) -> bool {
        matches!(self, Dim::Known(_))
    }

    /// Exact quotient `self / other`, when it is representable.
    pub fn div_exact(self, other: Dim) -> Option<Dim> {
        match (self, other) {
            (Dim::Known(a), Dim::Known(b)) if b != 0 && a % b == 0 => Some(Dim::Known(a / b)),
            (Dim::Sym { sym, factor }, Dim::Known(b)) if b != 0 && factor % b == 0 => {
                Some(Dim::Sym { sym, factor: factor / b })
            }
            (Dim::Sym { sym: s1, factor: f1 }, Dim::Sym { sym: s2, factor: f2 }) if s1 == s2 && f2 != 0 && f1 % f2 == 0 => {
                Some(Dim::Known(f1 / f2))
            }
            _ => None,
        }
    }

    /// Evaluates the dim with runtime symbol bindings.
    pub fn resolve(self, bindings: &dyn Fn(Symbol) -> Option<usize>) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(n),
            Dim::Sym { sym, factor } => bindings(sym).map(|v| v * factor),
            Dim::Unknown => None,
        }
    }
}

impl std::ops::Mul for Dim {
    type Output = Dim;

    /// Product of two dims; `Unknown` when it is not representable.
    fn mul(self, other: Dim) -> Dim {
        match (self, other) {
            (Dim::Known(a), Dim::Known(b)) => a.checked_mul(b).map_or(Dim::Unknown, Dim::Known),
            (Dim::Known(0), _) | (_, Dim::Known(0)) => Dim::Known(0),
            (Dim::Known(k), Dim::Sym { sym, factor }) | (Dim::Sym { sym, factor }, Dim::Known(k)) => {
                factor.checked_mul(k).map_or(Dim::Unknown, |factor| Dim::Sym { sym, factor })
            }
            _ => Dim::Unknown,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Known(n)
    }
}

/// Product of all dims (the element count), symbolic where needed.
pub fn volume(dims: &[Dim]) -> Dim {
    dims.iter().fold(Dim::Known(1), |acc, &d| acc * d)
}

/// The type of a value: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Self {
        TensorType { dtype, shape }
    }

    /// A type whose every dim is known.
    pub fn fixed(dtype: DType, shape: &[usize]) -> Self {
        TensorType { dtype, shape: shape.iter().map(|&d| Dim::Known(d)).collect() }
    }

    pub fn scalar(dtype: DType) -> Self {
        TensorType { dtype, shape: Vec::new() }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The dims as plain numbers if all are known.
    pub fn known_shape(&self) -> Option<Vec<usize>> {
        self.shape.iter().map(|d| d.known()).collect()
    }

    pub fn volume(&self) -> Dim {
        volume(&self.shape)
    }
}

/// Displays a dim using the graph's symbol names.
pub struct DimDisplay<'a> {
    pub dim: Dim,
    pub symbols: &'a [String],
}

impl fmt::Display for DimDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dim {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym { sym, factor } => {
                let name = self.symbols.get(sym.0 as usize).map(String::as_str).unwrap_or("?sym");
                if factor == 1 {
                    write!(f, "{name}")
                } else {
                    write!(f, "{factor}*{name}")
                }
            }
            Dim::Unknown => write!(f, "?"),
        }
    }
}

/// Displays a type as `f32[N,3,224,224]` using the graph's symbol names.
pub struct TypeDisplay<'a> {
    pub ty: &'a TensorType,
    pub symbols: &'a [String],
}

impl fmt::Display for TypeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.ty.dtype)?;
        for (i, &dim) in self.ty.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", DimDisplay { dim, symbols: self.symbols })?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_arithmetic_stays_exact() {
        let n = Dim::sym(Symbol(0));
        let nc = n * Dim::Known(64);
        assert_eq!(nc, Dim::Sym { sym: Symbol(0), factor: 64 });
        assert_eq!(nc.div_exact(Dim::Known(16)), Some(Dim::Sym { sym: Symbol(0), factor: 4 }));
        assert_eq!(nc.div_exact(n), Some(Dim::Known(64)));
        assert_eq!(nc.div_exact(Dim::Known(3)), None);
        assert_eq!(n * n, Dim::Unknown);
    }
}
