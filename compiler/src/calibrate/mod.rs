//! Choosing knob values on validation data, the library behind `d2nnc
//! calibrate`: candidate thresholds from what the controllers output on the
//! data, a sweep of the JIT-compiled model (dynamic, batched) measuring
//! accuracy, executed FLOPs and wall time per setting, the Pareto frontier,
//! and the choice of one setting under a constraint.

mod candidates;
mod data;
mod frontier;
mod knobs_file;
mod plot;

pub use candidates::{thresholds, KnobRange};
pub use data::Dataset;
pub use frontier::{choose, pareto, Constraint, Point};
pub use knobs_file::{read_knobs_file, render_knobs_file, write_knobs_file};
pub use plot::{write_plot, PlotMarks};

use crate::back::clif::JitModel;
use d2nn_runtime::compiled::Dim;
use d2nn_runtime::ndarray::{ArrayViewD, Axis};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What went wrong while calibrating; each names the file, array or knob.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error(transparent)]
    Npy(#[from] d2nn_runtime::npy::NpyError),
    #[error("{model}: {message}")]
    Model { model: PathBuf, message: String },
    #[error("knob file {path}: {message}")]
    KnobsFile { path: PathBuf, message: String },
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error("no knob setting meets the constraint ({constraint}); {best}")]
    Unsatisfiable { constraint: String, best: String },
    #[error("interrupted")]
    Interrupted,
}

/// How to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Samples per call for a model with a batch axis.
    pub batch: usize,
    pub threads: usize,
    /// The knobs to sweep (others stay at the model's values); all if empty.
    pub knobs: Vec<String>,
    /// Candidate values per swept knob; from `max_settings` if `None`.
    pub steps: Option<usize>,
    /// Upper bound on the settings of a grid sweep.
    pub max_settings: usize,
    /// The output holding the class scores; the first if `None`.
    pub output: Option<String>,
    /// Passes over the data per setting; the fastest is its time.
    pub repeats: usize,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions { batch: 64, threads: 1, knobs: Vec::new(), steps: None, max_settings: 256, output: None, repeats: 1 }
    }
}

/// How the settings cover the knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepShape {
    /// Every combination of every swept knob's candidates.
    Grid { steps: usize },
    /// Too many knobs for a grid: all move together, each through its own
    /// quantiles (the `i`-th setting puts every knob at its `i`-th candidate).
    Diagonal { steps: usize },
}

/// A model compiled for the sweep, with its data.
pub struct Calibrator {
    pub model_path: PathBuf,
    pub data: Dataset,
    /// Every knob of the model, in the model's order.
    pub knobs: Vec<KnobRange>,
    /// Indices into `knobs` of those swept.
    pub swept: Vec<usize>,
    /// Candidate values of each swept knob.
    pub candidates: Vec<Vec<f32>>,
    pub shape: SweepShape,
    /// Samples per call.
    pub batch: usize,
    /// The class-score output: index and name.
    pub output: (usize, String),
    pub classes: usize,
    /// Passes per measurement (the fastest is kept).
    pub repeats: usize,
    dynamic: JitModel,
    dense: JitModel,
}

/// Steps per knob that keep a grid over `knobs` knobs within `max_settings`.
fn grid_steps(knobs: usize, max_settings: usize) -> usize {
    let mut steps = 2usize;
    while (steps + 1).checked_pow(knobs as u32).is_some_and(|n| n <= max_settings) && steps < 33 {
        steps += 1;
    }
    steps
}

impl Calibrator {
    /// Compiles the model at `model_path` (dynamic and dense twins), checks
    /// the data against it, and derives each knob's candidate values.
    pub fn new(model_path: &Path, data: Dataset, options: &SweepOptions) -> Result<Calibrator, crate::Error> {
        let model_err = |message: String| CalibrateError::Model { model: model_path.to_path_buf(), message };
        let (graph, program, analysis) = crate::back::clif::lower_file(model_path, &[])?;
        if analysis.knobs.is_empty() {
            return Err(model_err("has no knobs (decision thresholds) to calibrate; `d2nnc inspect` shows what it decides".into()).into());
        }
        let dynamic = JitModel::compile(&graph, &program, &analysis, options.threads)?;
        let dense = JitModel::compile(&graph, &crate::plan::lower(&graph)?, &analysis, options.threads)?;
        let meta = dynamic.meta();
        if meta.inputs.len() != 1 {
            let names: Vec<&str> = meta.inputs.iter().map(|p| p.name.as_str()).collect();
            return Err(model_err(format!("has {} inputs ({}); calibrate feeds one array to one input", names.len(), names.join(", "))).into());
        }
        if let Some(p) = meta.inputs.iter().chain(&meta.outputs).find(|p| p.dtype != d2nn_runtime::DType::F32) {
            return Err(model_err(format!("port `{}` holds {} elements; calibrate runs float models", p.name, p.dtype)).into());
        }
        let output = match &options.output {
            Some(name) => meta.outputs.iter().position(|p| &p.name == name).ok_or_else(|| {
                model_err(format!("has no output `{name}` (outputs: {})", meta.outputs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")))
            })?,
            None => 0,
        };
        let port = &meta.outputs[output];
        let classes = match port.dims.as_slice() {
            [Dim::Batch(1) | Dim::Known(_), Dim::Known(c)] if *c >= 2 => *c,
            dims => {
                return Err(model_err(format!(
                    "output `{}` has dims {}; calibrate needs class scores [batch, classes] (pick another output with --output)",
                    port.name,
                    crate::back::clif::dims_text(dims)
                ))
                .into())
            }
        };
        let output = (output, port.name.clone());
        let input = meta.inputs[0].clone();
        let batch = data.check_against(&input.name, &input.dims, classes, options.batch)?;
        if let Some(name) = options.knobs.iter().find(|n| analysis.knob(n).is_none()) {
            let available = analysis.knobs.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(crate::dynamic::KnobError::Unknown { name: name.clone(), available }.into());
        }
        let knobs = candidates::observe(&graph, &analysis, &data, &input.name, batch, options.threads)?;
        let swept: Vec<usize> = (0..knobs.len()).filter(|&k| options.knobs.is_empty() || options.knobs.contains(&knobs[k].name)).collect();
        let shape = match options.steps {
            Some(steps) => SweepShape::Grid { steps: steps.max(2) },
            None => {
                let steps = grid_steps(swept.len(), options.max_settings.max(2));
                if steps >= 3 || 2usize.checked_pow(swept.len() as u32).is_some_and(|n| n <= options.max_settings) {
                    SweepShape::Grid { steps }
                } else {
                    SweepShape::Diagonal { steps: options.max_settings.clamp(2, 33) }
                }
            }
        };
        let steps = match shape {
            SweepShape::Grid { steps } | SweepShape::Diagonal { steps } => steps,
        };
        let candidates = swept.iter().map(|&k| thresholds(&knobs[k], steps)).collect();
        Ok(Calibrator { model_path: model_path.to_path_buf(), data, knobs, swept, candidates, shape, batch, output, classes, repeats: options.repeats.max(1), dynamic, dense })
    }

    /// The model's own knob values.
    pub fn defaults(&self) -> Vec<f32> {
        self.knobs.iter().map(|k| k.default).collect()
    }

    /// Every setting to measure (full knob vectors), the model's own first.
    pub fn settings(&self) -> Vec<Vec<f32>> {
        let mut out = vec![self.defaults()];
        match self.shape {
            SweepShape::Grid { .. } => {
                let mut combos: Vec<Vec<f32>> = vec![Vec::new()];
                for values in &self.candidates {
                    combos = combos.into_iter().flat_map(|c| values.iter().map(move |&v| [c.as_slice(), &[v]].concat())).collect();
                }
                for combo in combos {
                    let mut full = self.defaults();
                    for (&k, v) in self.swept.iter().zip(combo) {
                        full[k] = v;
                    }
                    out.push(full);
                }
            }
            SweepShape::Diagonal { steps } => {
                for i in 0..steps {
                    let mut full = self.defaults();
                    for (&k, values) in self.swept.iter().zip(&self.candidates) {
                        full[k] = values[(i * values.len() / steps).min(values.len() - 1)];
                    }
                    out.push(full);
                }
            }
        }
        out.dedup();
        out
    }

    /// Dense FLOPs per sample (every region run).
    pub fn dense_flops_per_sample(&self) -> f64 {
        let dense = &self.dynamic.meta().dense;
        dense.at(self.batch) as f64 / self.batch as f64
    }

    /// Runs `model` over the data set `repeats` times; returns (correct,
    /// executed FLOPs, seconds) of the first pass with the fastest time.
    fn passes(model: &mut JitModel, data: &Dataset, batch: usize, output: usize, repeats: usize, stop: &AtomicBool) -> Result<(usize, f64, f64), crate::Error> {
        let (correct, flops, mut seconds) = Self::pass(model, data, batch, output, stop)?;
        for _ in 1..repeats {
            seconds = seconds.min(Self::pass(model, data, batch, output, stop)?.2);
        }
        Ok((correct, flops, seconds))
    }

    /// Runs `model` over the data set; returns (correct, executed FLOPs, seconds).
    fn pass(model: &mut JitModel, data: &Dataset, batch: usize, output: usize, stop: &AtomicBool) -> Result<(usize, f64, f64), crate::Error> {
        let mut correct = 0;
        let mut flops = 0.0;
        let mut seconds = 0.0;
        let mut start = 0;
        while start < data.len() {
            if stop.load(Ordering::Relaxed) {
                return Err(CalibrateError::Interrupted.into());
            }
            let end = (start + batch).min(data.len());
            let rows = data.rows(start, end);
            let t = Instant::now();
            let outputs = model.run(std::slice::from_ref(&rows))?;
            seconds += t.elapsed().as_secs_f64();
            flops += model.trace().flops_executed as f64;
            correct += count_correct(outputs[output].view(), &data.labels[start..end]);
            start = end;
        }
        Ok((correct, flops, seconds))
    }

    /// Measures one setting (`knobs` in the order of [`Calibrator::knobs`]).
    /// Stops with [`CalibrateError::Interrupted`] once `stop` is set.
    pub fn measure(&mut self, knobs: &[f32], stop: &AtomicBool) -> Result<Point, crate::Error> {
        for (k, &v) in self.knobs.iter().zip(knobs) {
            self.dynamic.set_knob(&k.name, v)?;
        }
        let (correct, flops, seconds) = Self::passes(&mut self.dynamic, &self.data, self.batch, self.output.0, self.repeats, stop)?;
        let n = self.data.len() as f64;
        let per_sample = flops / n;
        Ok(Point { knobs: knobs.to_vec(), accuracy: correct as f64 / n, flops: per_sample, flops_fraction: per_sample / self.dense_flops_per_sample(), seconds })
    }

    /// Measures the dense model (every node computed, the model's knobs).
    pub fn measure_dense(&mut self, stop: &AtomicBool) -> Result<Point, crate::Error> {
        let (correct, _, seconds) = Self::passes(&mut self.dense, &self.data, self.batch, self.output.0, self.repeats, stop)?;
        let dense = self.dense_flops_per_sample();
        Ok(Point { knobs: self.defaults(), accuracy: correct as f64 / self.data.len() as f64, flops: dense, flops_fraction: 1.0, seconds })
    }
}

/// Rows of `scores` ([n, classes]) whose first maximum is the label; a row
/// holding NaN counts as wrong.
pub fn count_correct(scores: ArrayViewD<'_, f32>, labels: &[usize]) -> usize {
    scores
        .axis_iter(Axis(0))
        .zip(labels)
        .filter(|(row, &label)| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v.is_nan() {
                    return false;
                }
                if v > row[best] {
                    best = i;
                }
            }
            best == label
        })
        .count()
}
