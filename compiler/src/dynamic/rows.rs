//! Batch separability: which nodes keep samples apart, so that a region can
//! run on a compacted sub-batch and give each sample the rows it would get
//! in the whole batch.
//!
//! A forward pass over the graph marks each value `Rows` (axis 0 indexes the
//! samples: row `i` depends only on row `i` of the inputs) or `Shared` (the
//! same for every sample: constants, or values computed across the batch,
//! which a sub-batch reads unchanged). A node is row-local when its rule
//! below maps its operands to row outputs; otherwise it records why not, and
//! a region holding it runs on the whole batch.

use crate::ir::{Dim, Graph, NodeId, Op, RegionId, ValueId};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    Rows,
    Shared,
}

/// Row kinds of every value and the reason each row-mixing node mixes.
pub struct Separability {
    pub kinds: HashMap<ValueId, RowKind>,
    pub mixing: HashMap<NodeId, String>,
}

impl Separability {
    pub fn kind(&self, v: ValueId) -> RowKind {
        self.kinds.get(&v).copied().unwrap_or(RowKind::Shared)
    }
}

/// Runs the forward pass from the graph inputs (axis 0 of each is the batch).
pub fn analyze(graph: &Graph) -> Separability {
    let mut s = Separability { kinds: HashMap::new(), mixing: HashMap::new() };
    for &v in &graph.inputs {
        if graph.values[v].ty.rank() > 0 {
            s.kinds.insert(v, RowKind::Rows);
        }
    }
    region(graph, graph.root, &mut s);
    s
}

fn region(graph: &Graph, r: RegionId, s: &mut Separability) {
    for &n in &graph.regions[r].nodes {
        for &sub in &graph.nodes[n].regions {
            region(graph, sub, s);
        }
        let node = &graph.nodes[n];
        let any_rows = node.present_inputs().any(|v| s.kind(v) == RowKind::Rows);
        let verdict = if !any_rows && node.regions.is_empty() { Ok(()) } else { row_local(graph, n, s) };
        let out_kind = match verdict {
            Ok(()) if any_rows => RowKind::Rows,
            Ok(()) => RowKind::Shared,
            Err(reason) => {
                s.mixing.insert(n, reason);
                RowKind::Shared
            }
        };
        for &o in &node.outputs {
            s.kinds.insert(o, out_kind);
        }
    }
}

fn dim0(graph: &Graph, v: ValueId) -> Option<Dim> {
    graph.values[v].ty.shape.first().copied()
}

/// Whether the node maps row `i` of its row operands to row `i` of its
/// outputs; `Err` says why not.
fn row_local(graph: &Graph, n: NodeId, s: &Separability) -> Result<(), String> {
    let node = &graph.nodes[n];
    let out = node.outputs.first().copied().ok_or("it has no output")?;
    let out_rank = graph.values[out].ty.rank();
    let out0 = dim0(graph, out);
    let is_rows = |i: usize| node.input(i).is_some_and(|v| s.kind(v) == RowKind::Rows);
    let rank = |i: usize| node.input(i).map_or(0, |v| graph.values[v].ty.rank());
    let axis_of = |axis: i64, rank: usize| crate::interp::util::axis(axis, rank).ok();
    // Every row operand must line its axis 0 up with the output's, and every
    // shared operand must broadcast along it.
    let aligned = || -> Result<(), String> {
        for (i, v) in node.inputs.iter().enumerate() {
            let Some(v) = *v else { continue };
            let ty = &graph.values[v].ty;
            if s.kind(v) == RowKind::Rows {
                if ty.rank() != out_rank || dim0(graph, v) != out0 {
                    return Err(format!("operand {i} `{}` does not keep the samples on axis 0", graph.values[v].name));
                }
            } else if ty.rank() == out_rank && out_rank > 0 && dim0(graph, v) != Some(Dim::Known(1)) {
                return Err(format!("operand {i} `{}` is shared but not broadcast along the samples", graph.values[v].name));
            }
        }
        Ok(())
    };
    let only_data_rows = || -> Result<(), String> {
        match (1..node.inputs.len()).find(|&i| is_rows(i)) {
            Some(i) => Err(format!("operand {i} depends on the samples")),
            None => Ok(()),
        }
    };
    let keeps_axis0 = || -> Result<(), String> {
        let input0 = node.input(0).ok_or("missing data input")?;
        if is_rows(0) && dim0(graph, input0) == out0 && out_rank > 0 {
            Ok(())
        } else {
            Err("it moves data across axis 0".into())
        }
    };
    let const_axes = |i: usize| node.input(i).and_then(|v| graph.const_value(v)).map(|t| t.to_i64_vec());
    match &node.op {
        Op::Unary(_) | Op::Binary(_) | Op::Variadic(_) | Op::Where | Op::Clip | Op::Cast { .. } | Op::Identity | Op::Dropout => aligned(),
        Op::Conv(_) | Op::ConvTranspose(_) | Op::BatchNorm { .. } | Op::Pool { .. } | Op::GlobalPool { .. } | Op::Lrn { .. } | Op::InstanceNorm { .. } => {
            only_data_rows()?;
            keeps_axis0()
        }
        Op::Resize(_) | Op::Pad { .. } | Op::Expand | Op::Tile | Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze => {
            only_data_rows()?;
            keeps_axis0()
        }
        Op::Softmax { axis, .. } | Op::LayerNorm { axis, .. } => {
            only_data_rows()?;
            keeps_axis0()?;
            match axis_of(*axis, rank(0)) {
                Some(a) if a > 0 => Ok(()),
                _ => Err("it normalises across the samples".into()),
            }
        }
        Op::Reduce { noop_with_empty_axes, .. } => {
            only_data_rows()?;
            let axes = match node.input(1) {
                None => Vec::new(),
                Some(_) => const_axes(1).ok_or("its axes are not constant")?,
            };
            let reduces_all = axes.is_empty() && !noop_with_empty_axes;
            if reduces_all || axes.iter().any(|&a| axis_of(a, rank(0)) == Some(0)) {
                return Err("it reduces across the samples".into());
            }
            keeps_axis0()
        }
        Op::ArgReduce { axis, .. } | Op::TopK { axis, .. } => {
            only_data_rows()?;
            match axis_of(*axis, rank(0)) {
                Some(a) if a > 0 => keeps_axis0(),
                _ => Err("it ranks across the samples".into()),
            }
        }
        Op::OneHot { axis } => {
            only_data_rows()?;
            match axis_of(*axis, out_rank) {
                Some(a) if a > 0 => keeps_axis0(),
                _ => Err("it puts the classes on axis 0".into()),
            }
        }
        Op::Transpose { perm } => {
            if perm.first() == Some(&0) {
                keeps_axis0()
            } else {
                Err("it moves axis 0".into())
            }
        }
        Op::Slice => {
            only_data_rows()?;
            let axes = match node.input(3) {
                Some(_) => const_axes(3).ok_or("its axes are not constant")?,
                None => (0..const_axes(1).ok_or("its starts are not constant")?.len() as i64).collect(),
            };
            if axes.iter().any(|&a| axis_of(a, rank(0)) == Some(0)) {
                return Err("it slices axis 0".into());
            }
            keeps_axis0()
        }
        Op::Concat { axis } | Op::Split { axis } => {
            let joins_shared = matches!(node.op, Op::Concat { .. }) && node.present_inputs().any(|v| s.kind(v) != RowKind::Rows);
            if joins_shared {
                return Err("it joins shared and per-sample data".into());
            }
            if matches!(node.op, Op::Split { .. }) {
                only_data_rows()?;
            }
            match axis_of(*axis, rank(0)) {
                Some(a) if a > 0 => keeps_axis0(),
                _ => Err("it joins or splits along axis 0".into()),
            }
        }
        Op::Gather { axis } => {
            let a = axis_of(*axis, rank(0));
            match (is_rows(0), is_rows(1)) {
                (true, false) if a.is_some_and(|a| a > 0) => keeps_axis0(),
                // An embedding lookup: shared table, per-sample indices.
                (false, true) if a == Some(0) && dim0(graph, node.input(1).ok_or("missing indices")?) == out0 => Ok(()),
                _ => Err("it gathers along axis 0".into()),
            }
        }
        Op::Gemm { trans_a, .. } => {
            only_data_rows()?;
            if *trans_a {
                return Err("it transposes the samples into the reduction".into());
            }
            let c_ok = node.input(2).is_none_or(|c| graph.values[c].ty.rank() < 2 || dim0(graph, c) == Some(Dim::Known(1)));
            if c_ok {
                keeps_axis0()
            } else {
                Err("its bias is not broadcast along the samples".into())
            }
        }
        Op::MatMul => {
            let (a_rows, b_rows) = (is_rows(0), is_rows(1));
            if a_rows && !b_rows && rank(0) >= 2 && rank(1) <= 2 {
                keeps_axis0()
            } else if out_rank >= 3 && (!a_rows || rank(0) == out_rank) && (!b_rows || rank(1) == out_rank) {
                aligned()
            } else {
                Err("it multiplies across the samples".into())
            }
        }
        Op::If => Err("an If takes one condition for the whole batch".into()),
        Op::Shape { .. } | Op::Size => Err("it reads the batch size".into()),
        other => Err(format!("{} is not known to keep samples apart", other.name())),
    }
}
