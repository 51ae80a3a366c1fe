//! Paths: every distinct way through the network with its FLOPs (for
//! `inspect`), and the [`TraceSpec`] that runs record their trace against
//! (for `--report` and the bench's executed FLOPs).

use d2nn_runtime::trace::{RegionCost, TraceSpec};
use super::{Analysis, AtomKind, BlockId};
use crate::ir::{Graph, ValueId};
use std::collections::HashMap;

/// Decision combinations beyond which paths are not listed.
const MAX_COMBINATIONS: usize = 4096;

/// One distinct path: the blocks that run on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    /// Blocks whose guard holds on this path, in id order.
    pub blocks: Vec<BlockId>,
    /// FLOPs of one sample alone (batch 1) on this path.
    pub flops: u64,
    /// The decisions tested along the path and their outcome.
    pub decisions: Vec<(String, bool)>,
}

/// Enumerates the paths of `analysis` (when there are few enough decision
/// combinations).
pub(super) fn count(_graph: &Graph, analysis: &mut Analysis) {
    // Each source is a list of alternatives, each alternative an assignment
    // of the atoms it decides.
    let mut sources: Vec<Vec<Vec<(usize, bool)>>> = Vec::new();
    let mut choice_groups: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (a, atom) in analysis.atoms.iter().enumerate() {
        match atom.kind {
            AtomKind::Test { .. } => sources.push(vec![vec![(a, false)], vec![(a, true)]]),
            AtomKind::Choice { index, .. } => choice_groups.entry(index).or_default().push(a),
        }
    }
    let mut groups: Vec<(ValueId, Vec<usize>)> = choice_groups.into_iter().collect();
    groups.sort_by_key(|(v, _)| *v);
    for (_, members) in groups {
        let choices = match analysis.atoms[members[0]].kind {
            AtomKind::Choice { choices, .. } => choices,
            AtomKind::Test { .. } => unreachable!("grouped by choice"),
        };
        let mut alternatives: Vec<Vec<(usize, bool)>> =
            members.iter().map(|&m| members.iter().map(|&o| (o, o == m)).collect()).collect();
        if members.len() < choices {
            alternatives.push(members.iter().map(|&o| (o, false)).collect());
        }
        sources.push(alternatives);
    }
    let combos = sources.iter().try_fold(1usize, |acc, s| acc.checked_mul(s.len()).filter(|&c| c <= MAX_COMBINATIONS));
    let Some(combos) = combos else {
        analysis.paths = None;
        return;
    };
    let mut paths: Vec<Path> = Vec::new();
    let mut truth = vec![false; analysis.atoms.len()];
    for mut k in 0..combos {
        for s in &sources {
            for &(a, v) in &s[k % s.len()] {
                truth[a] = v;
            }
            k /= s.len();
        }
        let active: Vec<BlockId> =
            (0..analysis.blocks.len()).filter(|&b| analysis.blocks[b].guard.eval(&mut |a| truth[a as usize])).collect();
        if paths.iter().any(|p| p.blocks == active) {
            continue;
        }
        let flops = analysis.root_flops_per_sample
            + analysis.root_flops_fixed
            + active.iter().map(|&b| analysis.blocks[b].flops_per_sample + analysis.blocks[b].flops_fixed).sum::<u64>();
        // The decisions tested: those of blocks whose parent runs.
        let mut decisions: Vec<(String, bool)> = Vec::new();
        for block in &analysis.blocks {
            if block.parent.is_some_and(|p| !active.contains(&p)) {
                continue;
            }
            for a in block.local.atoms() {
                let entry = (analysis.atoms[a as usize].name.clone(), truth[a as usize]);
                if !decisions.contains(&entry) {
                    decisions.push(entry);
                }
            }
        }
        paths.push(Path { blocks: active, flops, decisions });
    }
    paths.sort_by(|a, b| a.flops.cmp(&b.flops).then_with(|| a.blocks.cmp(&b.blocks)));
    analysis.paths = Some(paths);
}

/// The costs and paths a [`Trace`](d2nn_runtime::trace::Trace) of this
/// analysis is recorded against (block ids are region indices).
pub(super) fn trace_spec(analysis: &Analysis) -> TraceSpec {
    TraceSpec {
        root: RegionCost { flops_per_sample: analysis.root_flops_per_sample, flops_fixed: analysis.root_flops_fixed },
        regions: analysis.blocks.iter().map(|b| RegionCost { flops_per_sample: b.flops_per_sample, flops_fixed: b.flops_fixed }).collect(),
        paths: analysis.paths.as_ref().map(|paths| paths.iter().map(|p| p.blocks.clone()).collect()),
    }
}
