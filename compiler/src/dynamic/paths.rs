//! Paths and traces: every distinct way through the network with its FLOPs
//! (for `inspect`), and what one run did (for `--report` and the bench's
//! executed FLOPs).

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

/// What one dynamic run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    pub batch: usize,
    /// Per block: the samples whose guard held.
    pub rows: Vec<usize>,
    /// Per block: the rows it was computed on (more than `rows` for a
    /// whole-batch block).
    pub rows_run: Vec<usize>,
    /// Per sample: the blocks it entered, in entry order.
    pub sample_blocks: Vec<Vec<BlockId>>,
    pub flops_executed: u64,
}

impl Trace {
    /// An empty trace of a run at batch `batch`, with the root's FLOPs counted.
    pub fn new(analysis: &Analysis, batch: usize) -> Trace {
        Trace {
            batch,
            rows: vec![0; analysis.blocks.len()],
            rows_run: vec![0; analysis.blocks.len()],
            sample_blocks: vec![Vec::new(); batch],
            flops_executed: analysis.root_flops_per_sample.saturating_mul(batch as u64).saturating_add(analysis.root_flops_fixed),
        }
    }

    /// Records that block `b` ran on `rows_run` rows for the (global)
    /// samples `samples`, whose guard held.
    pub fn enter(&mut self, analysis: &Analysis, b: BlockId, samples: &[usize], rows_run: usize) {
        self.rows[b] += samples.len();
        self.rows_run[b] += rows_run;
        for &s in samples {
            if let Some(list) = self.sample_blocks.get_mut(s) {
                list.push(b);
            }
        }
        if rows_run > 0 {
            let block = &analysis.blocks[b];
            self.flops_executed = self
                .flops_executed
                .saturating_add(block.flops_per_sample.saturating_mul(rows_run as u64))
                .saturating_add(block.flops_fixed);
        }
    }

    /// The index in [`Analysis::paths`] of the path sample `s` took.
    pub fn path_of(&self, analysis: &Analysis, s: usize) -> Option<usize> {
        let mut blocks = self.sample_blocks.get(s)?.clone();
        blocks.sort_unstable();
        blocks.dedup();
        analysis.paths.as_ref()?.iter().position(|p| p.blocks == blocks)
    }
}
