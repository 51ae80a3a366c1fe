//! Symbolic values of small integer tensors: the shape arithmetic exporters emit.
//!
//! torch writes `x.view(x.size(0), -1)` as Shape → Gather → Unsqueeze →
//! Concat → Reshape. With a symbolic batch `N` none of these is a constant,
//! but each element is known as an integer or as `factor × N`. This module
//! evaluates such chains without running the graph, so inference can give
//! `Reshape` an exact output type and folding can drop the chain.

use crate::ir::{BinaryOp, UnaryOp, Dim, Graph, Op, Symbol, ValueDef, ValueId};

/// Longest integer tensor tracked symbolically; shape vectors are far shorter.
const MAX_ELEMS: usize = 64;
/// Recursion limit: shape chains are short, and this bounds adversarial graphs.
const MAX_DEPTH: usize = 64;

/// One element of a symbolically known integer tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymInt {
    Int(i64),
    /// `factor × sym`.
    Sym { sym: Symbol, factor: i64 },
}

impl SymInt {
    pub fn from_dim(d: Dim) -> Option<SymInt> {
        match d {
            Dim::Known(n) => Some(SymInt::Int(n as i64)),
            Dim::Sym { sym, factor } => Some(SymInt::Sym { sym, factor: factor as i64 }),
            Dim::Unknown => None,
        }
    }

    /// The element as a dimension (`None` for negative integers).
    pub fn to_dim(self) -> Option<Dim> {
        match self {
            SymInt::Int(n) if n >= 0 => Some(Dim::Known(n as usize)),
            SymInt::Sym { sym, factor } if factor > 0 => Some(Dim::Sym { sym, factor: factor as usize }),
            _ => None,
        }
    }

    pub fn int(self) -> Option<i64> {
        match self {
            SymInt::Int(n) => Some(n),
            SymInt::Sym { .. } => None,
        }
    }

    fn binary(self, op: BinaryOp, other: SymInt) -> Option<SymInt> {
        use SymInt::*;
        match (op, self, other) {
            (BinaryOp::Add, Int(a), Int(b)) => a.checked_add(b).map(Int),
            (BinaryOp::Sub, Int(a), Int(b)) => a.checked_sub(b).map(Int),
            (BinaryOp::Mul, Int(a), Int(b)) => a.checked_mul(b).map(Int),
            (BinaryOp::Mul, Int(k), Sym { sym, factor }) | (BinaryOp::Mul, Sym { sym, factor }, Int(k)) => {
                if k == 0 {
                    Some(Int(0))
                } else {
                    factor.checked_mul(k).map(|factor| Sym { sym, factor })
                }
            }
            // ONNX integer Div truncates; only exact quotients stay symbolic.
            (BinaryOp::Div, Int(a), Int(b)) if b != 0 => Some(Int(a / b)),
            (BinaryOp::Div, Sym { sym, factor }, Int(b)) if b != 0 && factor % b == 0 => Some(Sym { sym, factor: factor / b }),
            (BinaryOp::Div, Sym { sym: s1, factor: f1 }, Sym { sym: s2, factor: f2 }) if s1 == s2 && f2 != 0 && f1 % f2 == 0 => {
                Some(Int(f1 / f2))
            }
            (BinaryOp::Max, Int(a), Int(b)) => Some(Int(a.max(b))),
            (BinaryOp::Min, Int(a), Int(b)) => Some(Int(a.min(b))),
            (BinaryOp::Equal, a, b) => equal(a, b).map(|e| Int(e as i64)),
            _ => None,
        }
    }
}

/// Equality when it is decidable: a positive multiple of a batch symbol never
/// equals a negative constant such as the `-1` of a reshape.
fn equal(a: SymInt, b: SymInt) -> Option<bool> {
    match (a, b) {
        (SymInt::Int(x), SymInt::Int(y)) => Some(x == y),
        (SymInt::Sym { sym: s1, factor: f1 }, SymInt::Sym { sym: s2, factor: f2 }) if s1 == s2 => Some(f1 == f2),
        (SymInt::Sym { factor, .. }, SymInt::Int(k)) | (SymInt::Int(k), SymInt::Sym { factor, .. }) if factor > 0 && k < 0 => {
            Some(false)
        }
        _ => None,
    }
}

/// The elements of `v` in row-major order, when known before running.
pub fn sym_value(graph: &Graph, v: ValueId) -> Option<Vec<SymInt>> {
    eval(graph, v, 0)
}

fn eval(graph: &Graph, v: ValueId, depth: usize) -> Option<Vec<SymInt>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let value = &graph.values[v];
    if !value.ty.dtype.is_int() && value.ty.dtype != d2nn_runtime::DType::Bool {
        return None;
    }
    let (node_id, index) = match &value.def {
        ValueDef::Const(t) => {
            return (t.len() <= MAX_ELEMS).then(|| t.to_i64_vec().into_iter().map(SymInt::Int).collect());
        }
        ValueDef::Input(_) => return None,
        ValueDef::Node { node, index } => (*node, *index),
    };
    let node = &graph.nodes[node_id];
    let arg = |i: usize| node.input(i).and_then(|x| eval(graph, x, depth + 1));
    let ints = |i: usize| node.input(i).and_then(|x| graph.const_value(x)).map(|t| t.to_i64_vec());
    let out = match &node.op {
        Op::Shape { start, end } => {
            let dims = &graph.values[node.input(0)?].ty.shape;
            let (s, e) = shape_range(dims.len(), *start, *end);
            dims[s..e].iter().map(|&d| SymInt::from_dim(d)).collect::<Option<Vec<_>>>()?
        }
        Op::Size => vec![SymInt::from_dim(graph.values[node.input(0)?].ty.volume())?],
        Op::Identity | Op::Cast { .. } | Op::Squeeze | Op::Unsqueeze | Op::Reshape { .. } | Op::Flatten { .. } => arg(0)?,
        Op::Concat { .. } => {
            let mut all = Vec::new();
            for x in node.present_inputs() {
                all.extend(eval(graph, x, depth + 1)?);
            }
            all
        }
        Op::Gather { axis } => {
            let data = arg(0)?;
            let data_rank = graph.values[node.input(0)?].ty.rank();
            if data_rank != 1 || (*axis != 0 && *axis != -1) {
                return None;
            }
            let mut picked = Vec::new();
            for i in ints(1)? {
                let i = if i < 0 { i + data.len() as i64 } else { i };
                picked.push(*data.get(usize::try_from(i).ok()?)?);
            }
            picked
        }
        Op::Slice => {
            let data = arg(0)?;
            if graph.values[node.input(0)?].ty.rank() != 1 {
                return None;
            }
            let (starts, ends) = (ints(1)?, ints(2)?);
            let steps = match node.input(4) {
                Some(_) => ints(4)?,
                None => vec![1],
            };
            if starts.len() != 1 || ends.len() != 1 || steps.len() != 1 || steps[0] == 0 {
                return None;
            }
            let (first, len) = slice_bounds(data.len(), starts[0], ends[0], steps[0])?;
            let mut out = Vec::with_capacity(len);
            for k in 0..len as i64 {
                out.push(*data.get(usize::try_from(first + k * steps[0]).ok()?)?);
            }
            out
        }
        Op::Unary(u @ (UnaryOp::Neg | UnaryOp::Abs)) => {
            let f = |n: i64| if *u == UnaryOp::Neg { n.checked_neg() } else { n.checked_abs() };
            arg(0)?
                .into_iter()
                .map(|x| match x {
                    SymInt::Int(n) => f(n).map(SymInt::Int),
                    SymInt::Sym { sym, factor } => f(factor).map(|factor| SymInt::Sym { sym, factor }),
                })
                .collect::<Option<Vec<_>>>()?
        }
        Op::Binary(op) => {
            let (a, b) = (arg(0)?, arg(1)?);
            broadcast_1d(&a, &b, |x, y| x.binary(*op, y))?
        }
        Op::Where => {
            let (c, a, b) = (arg(0)?, arg(1)?, arg(2)?);
            let n = c.len().max(a.len()).max(b.len());
            let pick = |xs: &[SymInt], i: usize| if xs.len() == 1 { Some(xs[0]) } else { xs.get(i).copied() };
            (0..n)
                .map(|i| match pick(&c, i)? {
                    SymInt::Int(0) => pick(&b, i),
                    SymInt::Int(_) => pick(&a, i),
                    SymInt::Sym { .. } => None,
                })
                .collect::<Option<Vec<_>>>()?
        }
        Op::ConstantOfShape { value } => {
            let shape = match node.input(0) {
                Some(_) => arg(0)?,
                None => value_shape_as_syms(graph, v)?,
            };
            let count: i64 = shape.iter().map(|d| d.int()).product::<Option<i64>>()?;
            if count as usize > MAX_ELEMS {
                return None;
            }
            let fill = value.to_i64_vec().first().copied().unwrap_or(0);
            vec![SymInt::Int(fill); count as usize]
        }
        Op::Expand => {
            let data = arg(0)?;
            let target = graph.values[v].ty.known_shape()?;
            let count: usize = target.iter().product();
            if data.len() != 1 || count > MAX_ELEMS {
                return None;
            }
            vec![data[0]; count]
        }
        _ => return None,
    };
    let _ = index;
    (out.len() <= MAX_ELEMS).then_some(out)
}

fn value_shape_as_syms(graph: &Graph, v: ValueId) -> Option<Vec<SymInt>> {
    graph.values[v].ty.shape.iter().map(|&d| SymInt::from_dim(d)).collect()
}

fn broadcast_1d(a: &[SymInt], b: &[SymInt], f: impl Fn(SymInt, SymInt) -> Option<SymInt>) -> Option<Vec<SymInt>> {
    match (a.len(), b.len()) {
        (x, y) if x == y => a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect(),
        (1, _) => b.iter().map(|&y| f(a[0], y)).collect(),
        (_, 1) => a.iter().map(|&x| f(x, b[0])).collect(),
        _ => None,
    }
}

/// The `[start, end)` range of `Shape`'s output for an input of rank `rank`.
pub fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let r = rank as i64;
    let clamp = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
    let s = clamp(start);
    let e = end.map_or(rank, clamp);
    (s, e.max(s))
}

/// The first index and element count of `Slice` along a dim of size `dim`,
/// with the spec's clamping: for positive steps `start` and `end` clamp to
/// `[0, dim]`, for negative steps `start` to `[0, dim-1]` and `end` to
/// `[-1, dim-1]`; negative values count from the end first. `None` for a
/// zero step.
pub fn slice_bounds(dim: usize, start: i64, end: i64, step: i64) -> Option<(i64, usize)> {
    if step == 0 {
        return None;
    }
    let d = dim as i128;
    let norm = |x: i64| if x < 0 { x as i128 + d } else { x as i128 };
    let (start, end, step) = (norm(start), norm(end), step as i128);
    let (first, count) = if step > 0 {
        let (s, e) = (start.clamp(0, d), end.clamp(0, d));
        (s, if e > s { (e - s + step - 1) / step } else { 0 })
    } else {
        if dim == 0 {
            return Some((0, 0));
        }
        let (s, e) = (start.clamp(0, d - 1), end.clamp(-1, d - 1));
        (s, if s > e { (s - e + (-step) - 1) / (-step) } else { 0 })
    };
    Some((first as i64, count as usize))
}

#[cfg(test)]
mod tests {
    use super::slice_bounds;

    #[test]
    fn slice_bounds_follow_the_spec_clamping() {
        assert_eq!(slice_bounds(10, 0, i64::MAX, 1), Some((0, 10)));
        assert_eq!(slice_bounds(10, -3, 1000, 1), Some((7, 3)));
        assert_eq!(slice_bounds(10, 1000, 1000, 1), Some((10, 0)));
        assert_eq!(slice_bounds(10, 0, 10, 3), Some((0, 4)));
        assert_eq!(slice_bounds(10, -1, i64::MIN, -1), Some((9, 10)));
        assert_eq!(slice_bounds(10, 20, 0, -2), Some((9, 5)));
        assert_eq!(slice_bounds(10, 5, 5, -1), Some((5, 0)));
        assert_eq!(slice_bounds(0, -1, i64::MIN, -1), Some((0, 0)));
        assert_eq!(slice_bounds(3, 0, 3, 0), None);
    }
}
