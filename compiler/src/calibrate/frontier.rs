//! The accuracy–cost frontier of a sweep and the choice of one setting on it
//! under the user's constraint.

use super::CalibrateError;

/// One measured knob setting.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Knob values, in the order of [`super::Calibrator::knobs`].
    pub knobs: Vec<f32>,
    /// Share of samples classified correctly.
    pub accuracy: f64,
    /// Mean executed FLOPs per sample.
    pub flops: f64,
    /// `flops` over the dense model's FLOPs per sample.
    pub flops_fraction: f64,
    /// Wall time of the pass over the data set.
    pub seconds: f64,
}

/// What the chosen setting must satisfy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Constraint {
    /// Lose at most this much accuracy (a fraction, 0.01 = one point)
    /// against the reference; the cheapest such setting wins.
    MaxAccuracyDrop(f64),
    /// Execute at most this fraction of the dense FLOPs; the most accurate
    /// such setting wins.
    MaxFlops(f64),
}

/// Indices of the points no other point beats on both accuracy and FLOPs
/// (ties kept once), cheapest first.
pub fn pareto(points: &[Point]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| points[a].flops.total_cmp(&points[b].flops).then(points[b].accuracy.total_cmp(&points[a].accuracy)).then(points[a].seconds.total_cmp(&points[b].seconds)));
    let mut best = f64::NEG_INFINITY;
    let mut front = Vec::new();
    for i in order {
        if points[i].accuracy > best {
            best = points[i].accuracy;
            front.push(i);
        }
    }
    front
}

/// The setting to recommend: by `constraint`, judged against `reference`
/// (the accuracy the drop is measured from).
pub fn choose(points: &[Point], constraint: Constraint, reference: f64) -> Result<usize, CalibrateError> {
    let front = pareto(points);
    let pick = match constraint {
        // The frontier is cheapest first: the first that is accurate enough.
        Constraint::MaxAccuracyDrop(drop) => front.iter().copied().find(|&i| points[i].accuracy >= reference - drop - 1e-12),
        // The most accurate point within the budget is the last one under it.
        Constraint::MaxFlops(fraction) => front.iter().copied().take_while(|&i| points[i].flops_fraction <= fraction + 1e-12).last(),
    };
    pick.ok_or_else(|| {
        let cheapest = front.first().map(|&i| &points[i]);
        CalibrateError::Unsatisfiable {
            constraint: match constraint {
                Constraint::MaxAccuracyDrop(d) => format!("an accuracy of at least {:.2}% ({:.2}% − {:.2} points)", 100.0 * (reference - d), 100.0 * reference, 100.0 * d),
                Constraint::MaxFlops(f) => format!("at most {:.1}% of the dense FLOPs", 100.0 * f),
            },
            best: cheapest.map_or_else(|| "nothing was measured".into(), |p| format!("the cheapest setting measured executes {:.1}% of the dense FLOPs at {:.2}% accuracy", 100.0 * p.flops_fraction, 100.0 * p.accuracy)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn point(accuracy: f64, flops: f64) -> Point {
        Point { knobs: vec![], accuracy, flops, flops_fraction: flops / 100.0, seconds: flops }
    }

    #[test]
    fn frontier_drops_dominated_points() {
        let points = [point(0.9, 50.0), point(0.8, 60.0), point(0.95, 100.0), point(0.7, 10.0), point(0.9, 55.0)];
        assert_eq!(pareto(&points), vec![3, 0, 2]);
    }

    #[test]
    fn choice_follows_the_constraint() {
        let points = [point(0.9, 50.0), point(0.95, 100.0), point(0.7, 10.0)];
        assert_eq!(choose(&points, Constraint::MaxAccuracyDrop(0.05), 0.95).unwrap(), 0);
        assert_eq!(choose(&points, Constraint::MaxAccuracyDrop(0.01), 0.95).unwrap(), 1);
        assert_eq!(choose(&points, Constraint::MaxFlops(0.5), 0.95).unwrap(), 0);
        assert_eq!(choose(&points, Constraint::MaxFlops(0.2), 0.95).unwrap(), 2);
        let err = choose(&points, Constraint::MaxFlops(0.05), 0.95).unwrap_err().to_string();
        assert!(err.contains("at most 5.0% of the dense FLOPs") && err.contains("10.0%"), "{err}");
    }

    proptest! {
        /// No point beats a frontier point on both axes, every point is
        /// matched or beaten by some frontier point, and the choice meets
        /// its constraint and is the cheapest (most accurate) that does.
        #[test]
        fn frontier_and_choice_are_optimal(raw in proptest::collection::vec((0u32..20, 1u32..20), 1..40), drop in 0u32..10, budget in 1u32..20) {
            let points: Vec<Point> = raw.iter().map(|&(a, f)| point(a as f64 / 20.0, f as f64 * 5.0)).collect();
            let front = pareto(&points);
            for &i in &front {
                prop_assert!(!points.iter().any(|p| p.accuracy >= points[i].accuracy && p.flops <= points[i].flops && (p.accuracy > points[i].accuracy || p.flops < points[i].flops)));
            }
            for p in &points {
                prop_assert!(front.iter().any(|&i| points[i].accuracy >= p.accuracy && points[i].flops <= p.flops));
            }
            let reference = points.iter().map(|p| p.accuracy).fold(0.0, f64::max);
            let d = drop as f64 / 20.0;
            let i = choose(&points, Constraint::MaxAccuracyDrop(d), reference).unwrap();
            prop_assert!(points[i].accuracy >= reference - d - 1e-9);
            prop_assert!(!points.iter().any(|p| p.accuracy >= reference - d - 1e-9 && p.flops < points[i].flops));
            let f = budget as f64 * 5.0 / 100.0;
            if let Ok(i) = choose(&points, Constraint::MaxFlops(f), reference) {
                prop_assert!(points[i].flops_fraction <= f + 1e-9);
                prop_assert!(!points.iter().any(|p| p.flops_fraction <= f + 1e-9 && p.accuracy > points[i].accuracy));
            } else {
                prop_assert!(points.iter().all(|p| p.flops_fraction > f));
            }
        }
    }
}
