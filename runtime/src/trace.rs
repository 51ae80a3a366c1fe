//! What one dynamic run did: the samples each guarded region ran for, the
//! rows it was computed on, the regions each sample entered (and so its
//! path through the network), and the FLOPs executed.
//!
//! The static facts a trace needs — each region's cost and the list of
//! distinct paths — are a [`TraceSpec`] that the compiler derives from its
//! guard analysis; the plan executor, the interpreter and generated code
//! record into the same [`Trace`], so their reports agree.

/// The FLOPs of a region: per sample it runs for, plus a part independent of
/// the batch (work on constants).
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionCost {
    pub flops_per_sample: u64,
    pub flops_fixed: u64,
}

impl RegionCost {
    /// The FLOPs of running on `rows` rows (nothing when it does not run).
    pub fn at(&self, rows: usize) -> u64 {
        if rows == 0 {
            return 0;
        }
        self.flops_per_sample.saturating_mul(rows as u64).saturating_add(self.flops_fixed)
    }
}

/// The static description a trace is recorded against.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceSpec {
    /// What every run executes (the nodes outside any guarded region).
    pub root: RegionCost,
    /// Per guarded region, by index.
    pub regions: Vec<RegionCost>,
    /// The distinct paths, each the sorted list of regions a sample on it
    /// enters; `None` when there are too many to list.
    pub paths: Option<Vec<Vec<usize>>>,
}

/// What one run did (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub batch: usize,
    /// Per region: the samples whose guard held.
    pub rows: Vec<usize>,
    /// Per region: the rows it was computed on (more than `rows` for a
    /// region that runs on the whole batch when any sample needs it).
    pub rows_run: Vec<usize>,
    /// Per sample: the regions it entered, in entry order.
    pub sample_regions: Vec<Vec<usize>>,
    pub flops_executed: u64,
}

impl Trace {
    /// An empty trace of a run at batch `batch`, with the root's FLOPs counted.
    pub fn new(spec: &TraceSpec, batch: usize) -> Trace {
        Trace {
            batch,
            rows: vec![0; spec.regions.len()],
            rows_run: vec![0; spec.regions.len()],
            sample_regions: vec![Vec::new(); batch],
            flops_executed: spec.root.flops_per_sample.saturating_mul(batch as u64).saturating_add(spec.root.flops_fixed),
        }
    }

    /// Makes this trace an empty trace of a run at batch `batch`, like
    /// [`Trace::new`], reusing its memory (a steady-state run allocates nothing).
    pub fn reset(&mut self, spec: &TraceSpec, batch: usize) {
        self.batch = batch;
        for v in [&mut self.rows, &mut self.rows_run] {
            v.clear();
            v.resize(spec.regions.len(), 0);
        }
        self.sample_regions.iter_mut().for_each(Vec::clear);
        self.sample_regions.resize_with(batch, Vec::new);
        self.flops_executed = spec.root.flops_per_sample.saturating_mul(batch as u64).saturating_add(spec.root.flops_fixed);
    }

    /// Records that region `region` ran on `rows_run` rows for the samples
    /// `samples` (indices into the whole batch), whose guard held. Indices
    /// out of range are ignored: a trace never fails a run.
    pub fn enter(&mut self, spec: &TraceSpec, region: usize, samples: &[usize], rows_run: usize) {
        if let (Some(rows), Some(run)) = (self.rows.get_mut(region), self.rows_run.get_mut(region)) {
            *rows += samples.len();
            *run += rows_run;
        }
        for &s in samples {
            if let Some(list) = self.sample_regions.get_mut(s) {
                list.push(region);
            }
        }
        let cost = spec.regions.get(region).map_or(0, |c| c.at(rows_run));
        self.flops_executed = self.flops_executed.saturating_add(cost);
    }

    /// The index in [`TraceSpec::paths`] of the path sample `s` took.
    pub fn path_of(&self, spec: &TraceSpec, s: usize) -> Option<usize> {
        let mut regions = self.sample_regions.get(s)?.clone();
        regions.sort_unstable();
        regions.dedup();
        spec.paths.as_ref()?.iter().position(|p| *p == regions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TraceSpec {
        // An early exit: region 0 = the rest of the network, region 1 = the
        // exit head; paths: [1] (exit) and [0] (full depth).
        TraceSpec {
            root: RegionCost { flops_per_sample: 100, flops_fixed: 5 },
            regions: vec![RegionCost { flops_per_sample: 1000, flops_fixed: 0 }, RegionCost { flops_per_sample: 10, flops_fixed: 1 }],
            paths: Some(vec![vec![1], vec![0]]),
        }
    }

    #[test]
    fn reset_equals_new() {
        let spec = spec();
        let mut t = Trace::new(&spec, 5);
        t.enter(&spec, 0, &[1, 4], 2);
        for batch in [2, 7] {
            t.reset(&spec, batch);
            assert_eq!(t, Trace::new(&spec, batch));
        }
    }

    #[test]
    fn records_rows_paths_and_flops() {
        let spec = spec();
        let mut t = Trace::new(&spec, 3);
        assert_eq!(t.flops_executed, 305);
        t.enter(&spec, 1, &[0, 2], 2);
        t.enter(&spec, 0, &[1], 1);
        assert_eq!((t.rows.clone(), t.rows_run.clone()), (vec![1, 2], vec![1, 2]));
        assert_eq!(t.flops_executed, 305 + 21 + 1000);
        assert_eq!([0, 1, 2].map(|s| t.path_of(&spec, s)), [Some(0), Some(1), Some(0)]);
        // A region that ran on no rows costs nothing; bad indices are ignored.
        t.enter(&spec, 1, &[], 0);
        t.enter(&spec, 7, &[9], 4);
        assert_eq!(t.flops_executed, 305 + 21 + 1000);
        assert_eq!(t.path_of(&spec, 9), None);
    }
}
