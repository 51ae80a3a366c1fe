//! BatchNorm folding: `BatchNormalization(Conv(x, W, B))` with constant
//! weights and statistics becomes one `Conv(x, W', B')` (likewise for `Gemm`
//! with a constant B).
//!
//! With `s = scale / sqrt(var + epsilon)`, per output channel `c`:
//! `W'[c] = W[c]·s[c]` and `B'[c] = (B[c] − mean[c])·s[c] + bias[c]`.
//! The producer takes over the BatchNorm's output value, so its name and every
//! reader (graph outputs included) stay as they were.

use super::{detach, node_regions};
use crate::ir::{Graph, NodeId, Op, ValueDef, ValueId};
use d2nn_runtime::Tensor;
use ndarray::{ArrayD, Axis, IxDyn};

/// Folds every eligible BatchNorm; returns how many were folded.
pub fn run(graph: &mut Graph) -> usize {
    let mut folded = 0;
    for bn in graph.walk_nodes() {
        if try_fold(graph, bn).is_some() {
            folded += 1;
        }
    }
    folded
}

/// The per-channel affine map a BatchNorm applies: `y = x·scale + shift`.
struct Affine {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

fn const_f32(graph: &Graph, v: Option<ValueId>) -> Option<&ArrayD<f32>> {
    graph.const_value(v?)?.as_f32().ok()
}

fn batch_norm_affine(graph: &Graph, bn: NodeId, epsilon: f32) -> Option<Affine> {
    let node = &graph.nodes[bn];
    let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|i| const_f32(graph, node.input(i)));
    let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
    let channels = gamma.len();
    if [gamma, beta, mean, var].iter().any(|a| a.ndim() != 1 || a.len() != channels) {
        return None;
    }
    // f64 keeps the folded parameters as close as possible to the unfused math.
    let scale: Vec<f64> =
        gamma.iter().zip(var).map(|(&g, &v)| f64::from(g) / (f64::from(v) + f64::from(epsilon)).sqrt()).collect();
    let shift = beta.iter().zip(mean).zip(&scale).map(|((&b, &m), &s)| (f64::from(b) - f64::from(m) * s) as f32).collect();
    Some(Affine { scale: scale.into_iter().map(|s| s as f32).collect(), shift })
}

fn try_fold(graph: &mut Graph, bn: NodeId) -> Option<()> {
    let Op::BatchNorm { epsilon } = graph.nodes[bn].op else { return None };
    let x = graph.nodes[bn].input(0)?;
    let ValueDef::Node { node: producer, index: 0 } = graph.values[x].def else { return None };
    let regions = node_regions(graph);
    let region = *regions.get(&bn)?;
    if regions.get(&producer) != Some(&region) || graph.use_counts().get(&x).copied() != Some(1) {
        return None;
    }
    let affine = batch_norm_affine(graph, bn, epsilon)?;
    let (op, inputs) = match graph.nodes[producer].op.clone() {
        Op::Conv(attrs) => (Op::Conv(attrs), fold_into_conv(graph, producer, &affine)?),
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            // The bias absorbs `beta`, so the folded Gemm adds it unscaled.
            let inputs = fold_into_gemm(graph, producer, &affine, beta, trans_b)?;
            (Op::Gemm { alpha, beta: 1.0, trans_a, trans_b }, inputs)
        }
        _ => return None,
    };
    let y = *graph.nodes[bn].outputs.first()?;
    let p = &mut graph.nodes[producer];
    p.op = op;
    p.inputs = inputs;
    p.outputs = vec![y];
    graph.values[y].def = ValueDef::Node { node: producer, index: 0 };
    detach(graph, region, bn);
    Some(())
}

/// New inputs of a Conv whose output channels (weight axis 0) take `affine`.
fn fold_into_conv(graph: &mut Graph, conv: NodeId, affine: &Affine) -> Option<Vec<Option<ValueId>>> {
    let node = &graph.nodes[conv];
    let (x, name) = (node.input(0)?, node.name.clone());
    let w = const_f32(graph, node.input(1))?;
    let channels = affine.scale.len();
    if w.ndim() < 1 || w.shape()[0] != channels {
        return None;
    }
    let bias = match node.input(2) {
        None => vec![0.0; channels],
        Some(b) => {
            let b = const_f32(graph, Some(b))?;
            (b.ndim() == 1 && b.len() == channels).then(|| b.iter().copied().collect())?
        }
    };
    let mut w = w.clone();
    for (c, mut filter) in w.axis_iter_mut(Axis(0)).enumerate() {
        filter.mapv_inplace(|v| v * affine.scale[c]);
    }
    let b: Vec<f32> = bias.iter().enumerate().map(|(c, &b)| b * affine.scale[c] + affine.shift[c]).collect();
    let w = graph.add_const(&format!("{name}.weight_bn"), Tensor::F32(w));
    let b = graph.add_const(&format!("{name}.bias_bn"), Tensor::from_f32(&[channels], b).ok()?);
    Some(vec![Some(x), Some(w), Some(b)])
}

/// New inputs of a Gemm whose output columns take `affine`: B's output-column
/// axis is scaled and C (a per-column vector or scalar, or absent) becomes
/// `beta·C·scale + shift`.
fn fold_into_gemm(graph: &mut Graph, gemm: NodeId, affine: &Affine, beta: f32, trans_b: bool) -> Option<Vec<Option<ValueId>>> {
    let node = &graph.nodes[gemm];
    let (a, name) = (node.input(0)?, node.name.clone());
    let b = const_f32(graph, node.input(1))?;
    let columns = affine.scale.len();
    let column_axis = if trans_b { 0 } else { 1 };
    if b.ndim() != 2 || b.shape()[column_axis] != columns {
        return None;
    }
    let c: Vec<f32> = match node.input(2) {
        None => vec![0.0; columns],
        Some(c) => {
            let c = const_f32(graph, Some(c))?;
            // Only a C that is the same for every row can move into a per-column bias.
            let per_column = c.shape().iter().rev().skip(1).all(|&d| d == 1) && c.ndim() <= 2;
            match (per_column, c.len()) {
                (true, 1) => vec![c.iter().copied().next()?; columns],
                (true, n) if n == columns => c.iter().copied().collect(),
                _ => return None,
            }
        }
    };
    let mut b = b.clone();
    for (col, mut lane) in b.axis_iter_mut(Axis(column_axis)).enumerate() {
        lane.mapv_inplace(|v| v * affine.scale[col]);
    }
    let bias: Vec<f32> = c.iter().enumerate().map(|(m, &c)| beta * c * affine.scale[m] + affine.shift[m]).collect();
    let b = graph.add_const(&format!("{name}.weight_bn"), Tensor::F32(b));
    let bias = graph.add_const(&format!("{name}.bias_bn"), Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[columns]), bias).ok()?));
    Some(vec![Some(a), Some(b), Some(bias)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::TensorType;
    use d2nn_runtime::DType;

    /// `BatchNorm(Gemm(x, B, C))` with 3 output columns; returns the graph and the BN node.
    fn gemm_bn(c: Option<(&[usize], Vec<f32>)>, constant_stats: bool) -> (Graph, NodeId) {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[2, 2]));
        let b = g.add_const("b", Tensor::from_f32(&[2, 3], vec![1.0; 6]).expect("shape"));
        let c = c.map(|(shape, data)| g.add_const("c", Tensor::from_f32(shape, data).expect("shape")));
        let ty = || vec![("y".to_string(), TensorType::fixed(DType::F32, &[2, 3]))];
        let root = g.root;
        let gemm = g.add_node(root, "fc", Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false }, vec![Some(x), Some(b), c], ty());
        let stat = |g: &mut Graph, name: &str| g.add_const(name, Tensor::from_f32(&[3], vec![1.0; 3]).expect("shape"));
        let var = if constant_stats { stat(&mut g, "var") } else { g.add_input("var", TensorType::fixed(DType::F32, &[3])) };
        let inputs = vec![Some(g.nodes[gemm].outputs[0]), Some(stat(&mut g, "scale")), Some(stat(&mut g, "bias")), Some(stat(&mut g, "mean")), Some(var)];
        let bn = g.add_node(root, "bn", Op::BatchNorm { epsilon: 1e-5 }, inputs, ty());
        g.regions[root].outputs = g.nodes[bn].outputs.clone();
        (g, bn)
    }

    #[test]
    fn gemm_bias_forms_that_are_one_per_column_fold() {
        for c in [None, Some((&[][..], vec![2.0])), Some((&[1, 3][..], vec![1.0, 2.0, 3.0])), Some((&[3][..], vec![1.0, 2.0, 3.0]))] {
            let (mut g, _) = gemm_bn(c, true);
            assert_eq!(run(&mut g), 1);
            assert_eq!(g.regions[g.root].nodes.len(), 1);
        }
    }

    #[test]
    fn per_row_bias_or_runtime_statistics_do_not_fold() {
        let (mut g, bn) = gemm_bn(Some((&[2, 3], vec![0.0; 6])), true);
        assert_eq!(run(&mut g), 0);
        assert!(g.regions[g.root].nodes.contains(&bn));
        let (mut g, bn) = gemm_bn(None, false);
        assert_eq!(run(&mut g), 0);
        assert!(g.regions[g.root].nodes.contains(&bn));
    }
}
