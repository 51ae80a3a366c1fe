//! Candidate knob values: the thresholds worth trying are those that split
//! the validation samples differently, so each knob's candidates are taken
//! between quantiles of the values its comparisons actually see on the data
//! (observed once, densely), plus one value below and one above them all.

use super::{CalibrateError, Dataset};
use crate::dynamic::Analysis;
use crate::ir::{Graph, ValueDef, ValueId};
use d2nn_runtime::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// What is known about one knob before the sweep.
#[derive(Clone, Debug)]
pub struct KnobRange {
    pub name: String,
    /// The model's value.
    pub default: f32,
    /// The finite values its comparisons saw on the data, sorted (empty when
    /// they are computed inside an `If` branch and cannot be observed).
    pub observed: Vec<f32>,
}

/// The comparison operand each knob's decisions compare against it, when
/// the graph computes that operand outside any `If` branch.
fn observable_operands(graph: &Graph, analysis: &Analysis) -> Vec<Vec<ValueId>> {
    let root = &graph.regions[graph.root].nodes;
    analysis
        .knobs
        .iter()
        .map(|knob| {
            let mut operands = Vec::new();
            for &a in &knob.atoms {
                let ValueDef::Node { node, .. } = graph.values[analysis.atoms[a as usize].value()].def else { continue };
                for v in graph.nodes[node].present_inputs().filter(|&v| v != knob.value) {
                    let visible = match graph.values[v].def {
                        ValueDef::Node { node: producer, .. } => root.contains(&producer),
                        ValueDef::Input(_) => true,
                        _ => false,
                    };
                    if visible && !operands.contains(&v) {
                        operands.push(v);
                    }
                }
            }
            operands
        })
        .collect()
}

/// Runs the dense model over the data set once, with every knob's
/// comparison operands as extra outputs, and collects what they hold.
pub fn observe(graph: &Graph, analysis: &Analysis, data: &Dataset, input: &str, batch: usize, threads: usize) -> Result<Vec<KnobRange>, crate::Error> {
    let operands = observable_operands(graph, analysis);
    let mut observed: Vec<Vec<f32>> = vec![Vec::new(); analysis.knobs.len()];
    let extra: Vec<ValueId> = {
        let mut all: Vec<ValueId> = operands.iter().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    if !extra.is_empty() {
        let mut probe = graph.clone();
        let outputs = probe.regions[probe.root].outputs.len();
        probe.regions[probe.root].outputs.extend(&extra);
        let program = crate::plan::lower(&probe)?;
        let mut executor = crate::plan::Executor::with_threads(Arc::new(program), threads);
        let mut start = 0;
        while start < data.len() {
            let end = (start + batch).min(data.len());
            let rows = data.rows(start, end);
            let feed = Tensor::from_f32(rows.shape(), rows.iter().copied().collect()).map_err(|e| CalibrateError::Data { path: data.path.clone(), message: e.to_string() })?;
            let results = executor.run(&HashMap::from([(input.to_string(), feed)]))?;
            let by_value: HashMap<ValueId, &Tensor> = extra.iter().copied().zip(&results[outputs..]).collect();
            for (k, values) in operands.iter().enumerate() {
                for v in values {
                    observed[k].extend(by_value[v].cast(d2nn_runtime::DType::F32).to_f32_vec().into_iter().filter(|x| x.is_finite()));
                }
            }
            start = end;
        }
    }
    Ok(analysis
        .knobs
        .iter()
        .zip(observed)
        .map(|(knob, mut seen)| {
            seen.sort_by(f32::total_cmp);
            KnobRange { name: knob.name.clone(), default: knob.default, observed: seen }
        })
        .collect())
}

/// A value clearly below (`direction` −1) or above (+1) `v`.
fn beyond(v: f32, direction: f32) -> f32 {
    v + direction * (v.abs() * 0.01).max(1e-3)
}

/// `steps` thresholds for a knob: between the observed values at evenly
/// spaced quantiles (so each step moves about the same share of samples),
/// the first below every observed value and the last above them all.
/// Unobserved knobs get a grid around their default instead.
pub fn thresholds(range: &KnobRange, steps: usize) -> Vec<f32> {
    let steps = steps.max(2);
    let seen = &range.observed;
    let mut out: Vec<f32> = if seen.is_empty() {
        let scale = range.default.abs().max(0.5);
        (0..steps).map(|i| range.default + scale * (4.0 * i as f32 / (steps - 1) as f32 - 2.0)).collect()
    } else {
        let n = seen.len();
        (0..steps)
            .map(|i| {
                let j = ((i as f64 / (steps - 1) as f64) * n as f64).round() as usize;
                match j {
                    0 => beyond(seen[0], -1.0),
                    j if j >= n => beyond(seen[n - 1], 1.0),
                    j => seen[j - 1] + (seen[j] - seen[j - 1]) / 2.0,
                }
            })
            .collect()
    };
    out.sort_by(f32::total_cmp);
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(observed: Vec<f32>) -> KnobRange {
        KnobRange { name: "t".into(), default: 0.5, observed }
    }

    #[test]
    fn thresholds_bracket_and_split_the_observed_values() {
        let t = thresholds(&range(vec![0.1, 0.2, 0.3, 0.4]), 5);
        assert_eq!(t.len(), 5);
        assert!(t[0] < 0.1 && t[4] > 0.4, "{t:?}");
        assert!((t[2] - 0.25).abs() < 1e-6, "the median split lies between the 2nd and 3rd values: {t:?}");
    }

    #[test]
    fn unobserved_knobs_get_a_grid_around_the_default() {
        let t = thresholds(&range(Vec::new()), 5);
        assert_eq!(t, vec![-0.5, 0.0, 0.5, 1.0, 1.5]);
    }

    proptest! {
        /// Thresholds are sorted, distinct, never equal to an observed value
        /// (a sample exactly on a threshold would flip with rounding), and
        /// include one that passes every sample and one that passes none.
        #[test]
        fn thresholds_never_sit_on_a_sample(mut seen in proptest::collection::vec(-1e3f32..1e3, 1..200), steps in 2usize..40) {
            seen.sort_by(f32::total_cmp);
            seen.dedup();
            let t = thresholds(&range(seen.clone()), steps);
            prop_assert!(t.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(t.len() <= steps);
            prop_assert!(t[0] < seen[0] && *t.last().unwrap() > *seen.last().unwrap());
            for x in &t {
                prop_assert!(!seen.contains(x), "{x} is an observed value");
            }
        }
    }
}
