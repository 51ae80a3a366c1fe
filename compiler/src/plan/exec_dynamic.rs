//! The plan executor's dynamic steps: guarded blocks (skip, run, or route
//! the rows that need them through compacted copies and scatter the results
//! back in place) and the masks after gated `Mul`s.

use super::exec::{Call, ExecError, Executor};
use super::{BufferId, Program, Step, Storage};
use crate::dynamic::{AtomId, BlockId, Mode};
use crate::interp::dynamic_element as element;
use crate::interp::Profile;
use d2nn_runtime::routing;
use std::borrow::Cow;

impl Executor {
    /// Runs [`Step::Block`] `block` in the frame `call`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn guarded(
        &mut self,
        p: &Program,
        block: BlockId,
        atoms: &[(AtomId, BufferId)],
        gathers: &[(BufferId, BufferId)],
        outputs: &[BufferId],
        body: &[Step],
        call: &Call,
        profile: &mut Option<&mut Profile>,
    ) -> Result<(), ExecError> {
        let analysis = p.dynamic.clone().ok_or_else(|| ExecError::Node {
            node: format!("R{block}"),
            op: "block".into(),
            reason: "a guarded block in a program without a dynamic schedule".into(),
        })?;
        let b = &analysis.blocks[block];
        let rows: Vec<usize> = {
            let values: Vec<(AtomId, Cow<d2nn_runtime::Tensor>)> =
                atoms.iter().map(|&(a, buf)| self.read(p, buf, call).map(|t| (a, t))).collect::<Result<_, _>>()?;
            let value = |a: AtomId| values.iter().find(|(x, _)| *x == a).map(|(_, t)| t);
            // The frame's samples, not `call.batch`: with a fixed batch the
            // arena has no batch symbol but the decisions still have a row per sample.
            (0..call.samples.len())
                .filter(|&i| b.local.eval(&mut |a| value(a).is_some_and(|t| analysis.atoms[a as usize].holds(element(t, i)))))
                .collect()
        };
        let needed: Vec<usize> = rows.iter().map(|&r| call.samples[r]).collect();
        let block_err = |reason: String| ExecError::Node { node: format!("R{block}"), op: "block".into(), reason };
        if rows.is_empty() {
            self.record(&analysis, block, &needed, 0);
            for &o in outputs {
                self.scatter_rows(p, o, &[], call).map_err(block_err)?;
            }
            return Ok(());
        }
        // A routed block reads its compacted copies even when every row runs.
        if b.mode != Mode::Routed {
            self.record(&analysis, block, &needed, call.samples.len());
            return self.block(p, body, call, profile);
        }
        self.record(&analysis, block, &needed, rows.len());
        for &(full, twin) in gathers {
            self.gather_rows(p, full, twin, &rows, call).map_err(block_err)?;
        }
        let mut bindings = call.bindings.clone();
        if let Some(batch) = analysis.batch {
            bindings.insert(batch, rows.len());
        }
        let sub = Call { inputs: call.inputs, batch: rows.len(), layout: call.layout, bindings, knobs: call.knobs, samples: needed };
        self.block(p, body, &sub, profile)?;
        for &o in outputs {
            self.scatter_rows(p, o, &rows, call).map_err(block_err)?;
        }
        Ok(())
    }

    fn record(&mut self, analysis: &crate::dynamic::Analysis, block: BlockId, samples: &[usize], rows_run: usize) {
        if let Some(t) = self.trace.as_mut() {
            t.enter(&analysis.trace_spec, block, samples, rows_run);
        }
    }

    /// Records the branch an `If` takes.
    pub(super) fn enter_branch(&mut self, p: &Program, node: crate::ir::NodeId, taken: bool, call: &Call) {
        let Some(analysis) = p.dynamic.as_ref() else { return };
        if let Some(br) = analysis.branches.get(&node) {
            let samples = call.samples.clone();
            self.record(analysis, br[if taken { 0 } else { 1 }], &samples, samples.len());
        }
    }

    /// Bytes of one row (sample) of a batch-scaled buffer; `None` for a
    /// buffer that does not scale with the batch.
    fn row_bytes(p: &Program, b: BufferId) -> Option<usize> {
        let buffer = &p.buffers[b];
        matches!(buffer.shape.first(), Some(crate::ir::Dim::Sym { factor: 1, .. }))
            .then(|| buffer.elements_at(1) * super::element_bytes(buffer.dtype))
    }

    /// Copies rows `rows` of `full` (in the frame `call`) to the first rows of `twin`.
    fn gather_rows(&mut self, p: &Program, full: BufferId, twin: BufferId, rows: &[usize], call: &Call) -> Result<(), String> {
        let Some(rb) = Self::row_bytes(p, full) else {
            return Err(format!("`{}` does not scale with the batch and cannot be compacted", p.buffers[full].name));
        };
        self.with_io::<u8>(p, &[full], twin, call, |ins, out| routing::gather_rows(ins[0], rb, rows, out).map_err(|e| e.to_string()))
    }

    /// Expands a buffer holding `rows.len()` compacted rows in place to the
    /// frame's rows: row `i` moves to `rows[i]`, the other rows become 0.
    /// With no rows, the whole buffer becomes 0 (a block that did not run).
    fn scatter_rows(&mut self, p: &Program, b: BufferId, rows: &[usize], call: &Call) -> Result<(), String> {
        let buffer = &p.buffers[b];
        let Storage::Arena(slot) = buffer.storage else { return Ok(()) };
        let bytes = buffer.elements_at(call.batch) * super::element_bytes(buffer.dtype);
        let off = self.offset(p, slot, call, buffer).map_err(|e| e.to_string())?;
        let rb = Self::row_bytes(p, b);
        let data = self.arena.view_mut::<u8>(off, bytes).map_err(|e| format!("buffer `{}`: {e}", buffer.name))?;
        match rb {
            Some(rb) => routing::scatter_rows(data, rb, rows).map_err(|e| e.to_string()),
            // A buffer without a batch axis holds no rows to move: it is kept
            // when the block ran and zeroed when it did not.
            None if rows.is_empty() => {
                data.fill(0);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// [`Step::Mask`]: zeroes the rows of `output` whose gate is 0.
    pub(super) fn mask(&mut self, p: &Program, gate: BufferId, output: BufferId, call: &Call) -> Result<(), String> {
        let closed: Vec<bool> = {
            let g = self.read(p, gate, call).map_err(|e| e.to_string())?;
            let rows = p.buffers[output].shape_at(call.batch).first().copied().unwrap_or(1);
            (0..rows).map(|i| element(&g, i) == 0.0).collect()
        };
        if !closed.iter().any(|&c| c) {
            return Ok(());
        }
        let buffer = &p.buffers[output];
        let Storage::Arena(slot) = buffer.storage else {
            return Err(format!("`{}` is not an arena buffer", buffer.name));
        };
        let bytes = buffer.elements_at(call.batch) * super::element_bytes(buffer.dtype);
        let off = self.offset(p, slot, call, buffer).map_err(|e| e.to_string())?;
        let data = self.arena.view_mut::<u8>(off, bytes).map_err(|e| format!("buffer `{}`: {e}", buffer.name))?;
        if buffer.shape.is_empty() {
            data.fill(0);
            return Ok(());
        }
        let rb = bytes / closed.len().max(1);
        routing::zero_rows(data, rb, |r| closed[r]).map_err(|e| e.to_string())
    }
}
