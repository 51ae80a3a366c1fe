//! The accuracy–cost plot of a sweep (SVG, plotters): every measured setting,
//! the Pareto frontier, the dense model and the chosen setting.

use super::{CalibrateError, Point};
use plotters::prelude::*;
use std::path::Path;

/// What to draw besides the swept points.
pub struct PlotMarks<'a> {
    pub title: &'a str,
    /// The sweep, its frontier (indices, cheapest first) and the choice.
    pub points: &'a [Point],
    pub frontier: &'a [usize],
    pub chosen: Option<usize>,
    /// The full network: the most expensive setting measured.
    pub full: Option<usize>,
    /// Accuracy of the dense model (every node computed, at 100% FLOPs).
    pub dense_accuracy: f64,
    /// The model's own knob values.
    pub default: Option<&'a Point>,
}

/// Draws the plot into an SVG file at `path`.
pub fn write_plot(path: &Path, marks: &PlotMarks) -> Result<(), CalibrateError> {
    draw(path, marks).map_err(|e| CalibrateError::Plot { path: path.to_path_buf(), message: e.to_string() })
}

fn draw(path: &Path, marks: &PlotMarks) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let pct = |v: f64| 100.0 * v;
    let accuracies = marks.points.iter().map(|p| pct(p.accuracy)).chain([pct(marks.dense_accuracy)]);
    let (lo, hi) = accuracies.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), a| (lo.min(a), hi.max(a)));
    let margin = ((hi - lo) * 0.08).max(0.5);
    let y_range = (lo - margin).max(0.0)..(hi + margin).min(100.5);
    let mut chart = ChartBuilder::on(&root)
        .caption(marks.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..105.0, y_range)?;
    chart
        .configure_mesh()
        .x_desc("mean executed FLOPs (% of the dense model)")
        .y_desc("accuracy (%)")
        .light_line_style(RGBColor(245, 245, 245))
        .draw()?;
    let grey = RGBColor(160, 160, 160);
    chart
        .draw_series(marks.points.iter().map(|p| Circle::new((pct(p.flops_fraction), pct(p.accuracy)), 3, grey.filled())))?
        .label("knob settings")
        .legend(move |(x, y)| Circle::new((x + 10, y), 3, grey.filled()));
    let blue = RGBColor(31, 119, 180);
    let front: Vec<(f64, f64)> = marks.frontier.iter().map(|&i| (pct(marks.points[i].flops_fraction), pct(marks.points[i].accuracy))).collect();
    chart
        .draw_series(LineSeries::new(front.clone(), blue.stroke_width(2)))?
        .label("Pareto frontier")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart.draw_series(front.iter().map(|&xy| Circle::new(xy, 4, blue.filled())))?;
    let black = RGBColor(0, 0, 0);
    chart
        .draw_series([TriangleMarker::new((100.0, pct(marks.dense_accuracy)), 8, black.filled())])?
        .label(format!("dense execution, model's knobs ({:.2}%)", pct(marks.dense_accuracy)))
        .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, black.filled()));
    if let Some(f) = marks.full.map(|i| &marks.points[i]) {
        let purple = RGBColor(148, 103, 189);
        let xy = (pct(f.flops_fraction), pct(f.accuracy));
        chart
            .draw_series([Rectangle::new([(xy.0 - 0.9, xy.1 - 0.12 * margin), (xy.0 + 0.9, xy.1 + 0.12 * margin)], purple.filled())])?
            .label(format!("full network, every gate open ({:.2}%)", xy.1))
            .legend(move |(x, y)| Rectangle::new([(x + 5, y - 4), (x + 13, y + 4)], purple.filled()));
    }
    if let Some(d) = marks.default {
        let orange = RGBColor(255, 127, 14);
        chart
            .draw_series([Cross::new((pct(d.flops_fraction), pct(d.accuracy)), 6, orange.stroke_width(2))])?
            .label(format!("model's knobs ({:.2}%, {:.1}% FLOPs)", pct(d.accuracy), pct(d.flops_fraction)))
            .legend(move |(x, y)| Cross::new((x + 10, y), 5, orange.stroke_width(2)));
    }
    if let Some(c) = marks.chosen.map(|i| &marks.points[i]) {
        let red = RGBColor(214, 39, 40);
        let xy = (pct(c.flops_fraction), pct(c.accuracy));
        chart
            .draw_series([Circle::new(xy, 8, red.stroke_width(3))])?
            .label(format!("chosen ({:.2}%, {:.1}% FLOPs)", xy.1, xy.0))
            .legend(move |(x, y)| Circle::new((x + 10, y), 6, red.stroke_width(3)));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.9)).border_style(grey).draw()?;
    root.present()?;
    Ok(())
}
