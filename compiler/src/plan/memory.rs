//! Liveness-based memory planning: place buffers in one scratch arena so that
//! buffers alive at the same time never overlap, and the arena stays small.
//!
//! Every buffer's size is `bytes_per_batch × N + fixed_bytes` for the batch
//! size `N`, and a tensor is either batch-scaled or fixed (its shape holds the
//! batch symbol or not). The arena is therefore two regions planned
//! independently: a batch-scaled region whose offsets are multiplied by `N`
//! at run time, and a fixed region after it. One plan serves every batch size.
//!
//! Placement is greedy by size (largest first, each at the lowest offset that
//! does not collide with an already placed buffer whose lifetime overlaps),
//! the heuristic TFLite's arena planner uses; it is within a few percent of
//! optimal on CNN-shaped lifetimes and runs in O(n²) for n buffers.

/// What the planner needs to know about one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferRequest {
    /// Size in bytes per unit of batch (0 for a fixed-size buffer).
    pub bytes_per_batch: usize,
    /// Size in bytes independent of the batch (0 for a batch-scaled buffer).
    pub fixed_bytes: usize,
    /// Index of the first step that writes the buffer.
    pub first_step: usize,
    /// Index of the last step that reads it (inclusive).
    pub last_step: usize,
}

/// Where one buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In the batch-scaled region at `offset × N` bytes.
    Batch { offset: usize },
    /// In the fixed region, which follows the batch-scaled one, at `offset` bytes into it.
    Fixed { offset: usize },
}

/// The planned arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaLayout {
    /// Size of the batch-scaled region per unit of batch.
    pub bytes_per_batch: usize,
    /// Size of the fixed region.
    pub fixed_bytes: usize,
    /// One placement per request, in request order.
    pub placements: Vec<Placement>,
}

impl ArenaLayout {
    /// Total arena bytes for batch size `batch` (`None` on overflow).
    pub fn total_bytes(&self, batch: usize) -> Option<usize> {
        self.bytes_per_batch.checked_mul(batch)?.checked_add(self.fixed_bytes)
    }

    /// Byte offset of buffer `i` in the arena at batch size `batch`.
    pub fn offset(&self, i: usize, batch: usize) -> Option<usize> {
        match *self.placements.get(i)? {
            Placement::Batch { offset } => offset.checked_mul(batch),
            Placement::Fixed { offset } => self.bytes_per_batch.checked_mul(batch)?.checked_add(offset),
        }
    }
}

/// Alignment of every buffer, in bytes: a cache line, which also satisfies
/// 512-bit vector loads.
pub const ALIGN: usize = 64;

/// Why a layout cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanMemoryError {
    #[error("buffer {index} is both batch-scaled and fixed ({bytes_per_batch} B per batch + {fixed_bytes} B)")]
    MixedSize { index: usize, bytes_per_batch: usize, fixed_bytes: usize },
    #[error("buffer {index} is read at step {last_step} before it is written at step {first_step}")]
    BadLifetime { index: usize, first_step: usize, last_step: usize },
    #[error("the arena would exceed the address space")]
    Overflow,
}

fn round_up(n: usize) -> Option<usize> {
    n.checked_add(ALIGN - 1).map(|m| m / ALIGN * ALIGN)
}

/// Plans the arena for `requests`.
pub fn plan(requests: &[BufferRequest]) -> Result<ArenaLayout, PlanMemoryError> {
    for (index, r) in requests.iter().enumerate() {
        if r.bytes_per_batch > 0 && r.fixed_bytes > 0 {
            return Err(PlanMemoryError::MixedSize { index, bytes_per_batch: r.bytes_per_batch, fixed_bytes: r.fixed_bytes });
        }
        if r.last_step < r.first_step {
            return Err(PlanMemoryError::BadLifetime { index, first_step: r.first_step, last_step: r.last_step });
        }
    }
    let batch: Vec<usize> = (0..requests.len()).filter(|&i| requests[i].bytes_per_batch > 0).collect();
    let fixed: Vec<usize> = (0..requests.len()).filter(|&i| requests[i].bytes_per_batch == 0).collect();
    let (batch_offsets, bytes_per_batch) = pack(requests, &batch, |r| r.bytes_per_batch)?;
    let (fixed_offsets, fixed_bytes) = pack(requests, &fixed, |r| r.fixed_bytes)?;
    let mut placements = vec![Placement::Fixed { offset: 0 }; requests.len()];
    for (&i, &offset) in batch.iter().zip(&batch_offsets) {
        placements[i] = Placement::Batch { offset };
    }
    for (&i, &offset) in fixed.iter().zip(&fixed_offsets) {
        placements[i] = Placement::Fixed { offset };
    }
    Ok(ArenaLayout { bytes_per_batch, fixed_bytes, placements })
}

/// Greedy-by-size interval packing of the requests listed in `members`.
/// Returns each member's offset and the region's size.
fn pack(
    requests: &[BufferRequest],
    members: &[usize],
    size_of: impl Fn(&BufferRequest) -> usize,
) -> Result<(Vec<usize>, usize), PlanMemoryError> {
    let sizes: Vec<usize> = members.iter().map(|&i| round_up(size_of(&requests[i]))).collect::<Option<_>>().ok_or(PlanMemoryError::Overflow)?;
    let mut order: Vec<usize> = (0..members.len()).collect();
    // Largest first; ties by earlier start keep the layout deterministic.
    order.sort_by_key(|&k| (std::cmp::Reverse(sizes[k]), requests[members[k]].first_step, k));
    let mut offsets = vec![0usize; members.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(members.len());
    let mut region = 0usize;
    for k in order {
        let me = &requests[members[k]];
        // Intervals already placed whose lifetimes overlap this one, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&o| {
                let other = &requests[members[o]];
                other.first_step <= me.last_step && me.first_step <= other.last_step
            })
            .map(|&o| (offsets[o], offsets[o] + sizes[o]))
            .collect();
        busy.sort_unstable();
        let mut candidate = 0usize;
        for (start, end) in busy {
            if candidate.checked_add(sizes[k]).ok_or(PlanMemoryError::Overflow)? <= start {
                break;
            }
            candidate = candidate.max(end);
        }
        offsets[k] = candidate;
        region = region.max(candidate.checked_add(sizes[k]).ok_or(PlanMemoryError::Overflow)?);
        placed.push(k);
    }
    Ok((offsets, region))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(bytes_per_batch: usize, fixed_bytes: usize, first_step: usize, last_step: usize) -> BufferRequest {
        BufferRequest { bytes_per_batch, fixed_bytes, first_step, last_step }
    }

    #[test]
    fn a_chain_reuses_memory() {
        // a → b → c → d: only neighbours are alive together.
        let reqs = [req(1024, 0, 0, 1), req(1024, 0, 1, 2), req(1024, 0, 2, 3), req(1024, 0, 3, 4)];
        let layout = plan(&reqs).unwrap();
        assert_eq!(layout.bytes_per_batch, 2048);
        assert_eq!(layout.fixed_bytes, 0);
    }

    #[test]
    fn fixed_buffers_follow_the_batch_region() {
        let reqs = [req(100, 0, 0, 1), req(0, 10, 0, 1)];
        let layout = plan(&reqs).unwrap();
        assert_eq!(layout.bytes_per_batch, 128);
        assert_eq!(layout.offset(0, 4), Some(0));
        assert_eq!(layout.offset(1, 4), Some(512));
        assert_eq!(layout.total_bytes(4), Some(512 + 64));
    }

    #[test]
    fn bad_requests_are_errors() {
        assert!(matches!(plan(&[req(4, 4, 0, 0)]), Err(PlanMemoryError::MixedSize { index: 0, .. })));
        assert!(matches!(plan(&[req(4, 0, 3, 1)]), Err(PlanMemoryError::BadLifetime { index: 0, .. })));
        assert_eq!(plan(&[req(usize::MAX - 3, 0, 0, 0)]), Err(PlanMemoryError::Overflow));
    }

    proptest! {
        /// Buffers alive at the same step never overlap, every buffer fits in
        /// its region and is aligned, and the region is no larger than the
        /// sum of sizes (and no smaller than the peak of live sizes).
        #[test]
        fn live_buffers_never_overlap(raw in prop::collection::vec((any::<bool>(), 1usize..5000, 0usize..40, 0usize..10), 1..60),
                                      batch in 1usize..9) {
            let reqs: Vec<BufferRequest> = raw
                .iter()
                .map(|&(scaled, size, start, len)| if scaled { req(size, 0, start, start + len) } else { req(0, size, start, start + len) })
                .collect();
            let layout = plan(&reqs).unwrap();
            let size = |r: &BufferRequest| (r.bytes_per_batch * batch).max(r.fixed_bytes);
            let total = layout.total_bytes(batch).unwrap();
            for (i, a) in reqs.iter().enumerate() {
                let oa = layout.offset(i, batch).unwrap();
                prop_assert_eq!(oa % ALIGN, 0);
                prop_assert!(oa + size(a) <= total);
                for (j, b) in reqs.iter().enumerate().skip(i + 1) {
                    let live_together = a.first_step <= b.last_step && b.first_step <= a.last_step;
                    if live_together {
                        let ob = layout.offset(j, batch).unwrap();
                        prop_assert!(oa + size(a) <= ob || ob + size(b) <= oa, "buffers {} and {} overlap", i, j);
                    }
                }
            }
            let peak = (0..50).map(|s| reqs.iter().filter(|r| r.first_step <= s && s <= r.last_step).map(&size).sum::<usize>()).max().unwrap();
            // Batch-scaled sizes are aligned per unit of batch, then scaled.
            let sum: usize = reqs.iter().map(|r| round_up(r.bytes_per_batch).unwrap() * batch + round_up(r.fixed_bytes).unwrap()).sum();
            prop_assert!(total >= peak);
            prop_assert!(total <= sum);
        }
    }
}
