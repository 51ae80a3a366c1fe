//! `d2nnc calibrate`: sweep a model's knobs on labelled validation data,
//! print the accuracy–cost frontier, pick a setting under a constraint, and
//! write it as a knob file (plus an SVG plot).

use clap::builder::RangedU64ValueParser;
use d2nnc::calibrate::{choose, pareto, write_knobs_file, write_plot, CalibrateError, Calibrator, Constraint, Dataset, PlotMarks, Point, SweepOptions, SweepShape};
use d2nnc::Error;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const LONG_ABOUT: &str = "\
Sweep a model's knobs (its decision thresholds) on labelled validation data \
and choose where to sit on the accuracy-cost curve.

The model is JIT-compiled (dynamic execution) and run over the whole data set \
in batches for every setting; each setting's accuracy (argmax of the class \
scores against the labels), mean executed FLOPs per sample and wall time are \
measured. Each knob's candidate values lie between quantiles of the values \
its comparisons see on the data (observed once with the dense model), plus \
one below and one above them all, so every step moves a similar share of \
samples. With few knobs every combination is tried (at most --max-settings); \
with many, all knobs move through their quantiles together.

The Pareto frontier is printed as a table. The chosen setting is the cheapest \
whose accuracy is within --max-accuracy-drop of the full network's (the most \
expensive setting: every gate open, no early exit), or with --max-flops the \
most accurate that executes at most that fraction of the dense FLOPs. It is \
written as TOML (-o) that run, bench and compile read with --knobs-file.

Ctrl-C stops the sweep after the current batch, prints the frontier measured \
so far, writes nothing and exits with status 130.";

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Validation data: an .npz archive with the inputs and integer labels.
    #[arg(long, value_name = "VAL.npz")]
    pub data: PathBuf,
    /// The inputs' array in the archive [default: x, X, inputs or input].
    #[arg(long = "x", value_name = "KEY")]
    pub x_key: Option<String>,
    /// The labels' array in the archive [default: y, Y, labels, label or targets].
    #[arg(long = "y", value_name = "KEY")]
    pub y_key: Option<String>,
    /// The knobs to sweep, comma-separated (the others keep the model's values) [default: all].
    #[arg(long, value_name = "NAME,…", value_delimiter = ',')]
    pub knobs: Vec<String>,
    /// Choose the cheapest setting losing at most this much accuracy (0.01 =
    /// one point) against the full network [default: 0.01].
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction, conflicts_with = "max_flops")]
    pub max_accuracy_drop: Option<f64>,
    /// Choose the most accurate setting executing at most this fraction of the dense FLOPs.
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub max_flops: Option<f64>,
    /// Draw the accuracy-cost curve into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write the chosen knobs to this TOML file (for --knobs-file).
    #[arg(long, short = 'o', value_name = "FILE.toml")]
    pub output: Option<PathBuf>,
    /// Samples per call (models with a batch axis; fixed-batch models run at their batch).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..=65536))]
    pub batch: usize,
    /// Threads for the kernels [default: physical cores].
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..=4096))]
    pub threads: Option<usize>,
    /// Candidate values per knob [default: as many as --max-settings allows, up to 33].
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(2..=1000))]
    pub steps: Option<usize>,
    /// Most settings a sweep may measure.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = RangedU64ValueParser::<usize>::new().range(2..=1_000_000))]
    pub max_settings: usize,
    /// Passes over the data per setting; the fastest one's time is reported.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub repeats: usize,
    /// The output holding the class scores [default: the first].
    #[arg(long, value_name = "NAME")]
    pub scores: Option<String>,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not a fraction between 0 and 1 (0.01 = 1%)"));
    }
    Ok(v)
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// The frontier (and the chosen row) as an aligned table.
fn print_table(cal: &Calibrator, points: &[Point], rows: &[usize], chosen: Option<usize>, dense: &Point) {
    let names: Vec<&str> = cal.swept.iter().map(|&k| cal.knobs[k].name.as_str()).collect();
    let mut header = format!("  {:<2}{:>9} {:>9} {:>10} {:>7}", "", "accuracy", "FLOPs", "time ms", "÷dense");
    for n in &names {
        header.push_str(&format!("  {n:>w$}", w = n.len().max(10)));
    }
    println!("{header}");
    for &i in rows {
        let p = &points[i];
        let mut line = format!("  {:<2}{:>9} {:>9} {:>10.2} {:>7.3}", if Some(i) == chosen { "*" } else { "" }, pct(p.accuracy), pct(p.flops_fraction), 1e3 * p.seconds, p.seconds / dense.seconds);
        for (&k, n) in cal.swept.iter().zip(&names) {
            line.push_str(&format!("  {:>w$}", format!("{}", p.knobs[k]), w = n.len().max(10)));
        }
        println!("{line}");
    }
}

pub fn calibrate(args: &CalibrateArgs, threads: usize) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // A second handler cannot be installed (tests, embedding); the sweep
        // then simply cannot be interrupted early.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let data = Dataset::load(&args.data, args.x_key.as_deref(), args.y_key.as_deref())?;
    let options = SweepOptions { batch: args.batch, threads, knobs: args.knobs.clone(), steps: args.steps, max_settings: args.max_settings, output: args.scores.clone(), repeats: args.repeats };
    let mut cal = Calibrator::new(&args.model, data, &options)?;
    let settings = cal.settings();
    println!(
        "calibrating {} on {} ({} samples, `{}` → `{}`, {} classes; batch {}, {} threads)",
        args.model.display(),
        args.data.display(),
        cal.data.len(),
        cal.data.x_key,
        cal.output.1,
        cal.classes,
        cal.batch,
        threads
    );
    for (k, knob) in cal.knobs.iter().enumerate() {
        let role = if cal.swept.contains(&k) { "swept" } else { "kept" };
        let seen = match (knob.observed.first(), knob.observed.last()) {
            (Some(lo), Some(hi)) => format!("its comparisons saw {} values in [{lo}, {hi}]", knob.observed.len()),
            _ => "compared inside an If branch: not observed, grid around the default".into(),
        };
        println!("  knob {} = {} ({role}; {seen})", knob.name, knob.default);
    }
    match cal.shape {
        SweepShape::Grid { steps } => println!("  {} settings: every combination of {steps} values per swept knob, and the model's own", settings.len()),
        SweepShape::Diagonal { steps } => println!("  {} settings: all swept knobs stepped together through {steps} quantiles, and the model's own", settings.len()),
    }
    let dense = cal.measure_dense(&stop).map_err(interrupted_early)?;
    println!("dense model (every node): accuracy {}, {:.3} MFLOP per sample, {:.2} ms per pass", pct(dense.accuracy), dense.flops / 1e6, 1e3 * dense.seconds);

    let bar = ProgressBar::new(settings.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} settings, {elapsed} elapsed, ~{eta} left  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut points = Vec::with_capacity(settings.len());
    let mut interrupted = false;
    for knobs in &settings {
        match cal.measure(knobs, &stop) {
            Ok(p) => {
                bar.set_message(format!("last: {} at {} FLOPs", pct(p.accuracy), pct(p.flops_fraction)));
                points.push(p);
                bar.inc(1);
            }
            Err(Error::Calibrate(CalibrateError::Interrupted)) => {
                interrupted = true;
                break;
            }
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
    }
    bar.finish_and_clear();
    let frontier = pareto(&points);
    if interrupted {
        println!("Pareto frontier of the {} settings measured before the interrupt:", points.len());
        print_table(&cal, &points, &frontier, None, &dense);
        eprintln!("interrupted after {} of {} settings; nothing written", points.len(), settings.len());
        std::process::exit(130);
    }
    let model_own = &points[0];
    // The full network: the most expensive setting (ties: the most accurate).
    let full = (0..points.len()).max_by(|&a, &b| points[a].flops.total_cmp(&points[b].flops).then(points[a].accuracy.total_cmp(&points[b].accuracy))).unwrap_or(0);
    let constraint = match (args.max_accuracy_drop, args.max_flops) {
        (_, Some(f)) => Constraint::MaxFlops(f),
        (Some(d), None) => Constraint::MaxAccuracyDrop(d),
        (None, None) => Constraint::MaxAccuracyDrop(0.01),
    };
    let chosen = choose(&points, constraint, points[full].accuracy);
    println!("Pareto frontier ({} of {} settings; FLOPs as % of the dense model; time: the fastest of {} passes over the data):", frontier.len(), points.len(), cal.repeats);
    print_table(&cal, &points, &frontier, chosen.as_ref().ok().copied(), &dense);
    println!("full network (most FLOPs):  accuracy {}, {} FLOPs", pct(points[full].accuracy), pct(points[full].flops_fraction));
    println!("model's own knobs:          accuracy {}, {} FLOPs", pct(model_own.accuracy), pct(model_own.flops_fraction));
    if let Some(path) = &args.plot {
        let title = format!("{} on {}", file_label(&args.model), file_label(&args.data));
        write_plot(path, &PlotMarks { title: &title, points: &points, frontier: &frontier, chosen: chosen.as_ref().ok().copied(), full: Some(full), dense_accuracy: dense.accuracy, default: Some(model_own) })?;
        println!("wrote {}", path.display());
    }
    let chosen = chosen?;
    let c = &points[chosen];
    let rule = match constraint {
        Constraint::MaxAccuracyDrop(d) => format!("the cheapest within {:.2} points of the full network's accuracy", 100.0 * d),
        Constraint::MaxFlops(f) => format!("the most accurate at most {} of the dense FLOPs", pct(f)),
    };
    println!("chosen ({rule}): accuracy {}, {} FLOPs, {:.2}× faster than dense", pct(c.accuracy), pct(c.flops_fraction), dense.seconds / c.seconds);
    let knobs: Vec<(String, f32)> = cal.knobs.iter().zip(&c.knobs).map(|(k, &v)| (k.name.clone(), v)).collect();
    for (name, v) in &knobs {
        println!("  {name} = {v}");
    }
    if let Some(path) = &args.output {
        let comment = format!(
            "Knobs chosen by `d2nnc calibrate` for {} on {}:\n{rule}.\nUse with: d2nnc run|bench|compile {} --knobs-file {}",
            args.model.display(),
            args.data.display(),
            args.model.display(),
            path.display()
        );
        let mut info = toml::Table::new();
        info.insert("model".into(), args.model.display().to_string().into());
        info.insert("data".into(), args.data.display().to_string().into());
        info.insert("samples".into(), (cal.data.len() as i64).into());
        info.insert("accuracy".into(), round(c.accuracy).into());
        info.insert("flops_fraction".into(), round(c.flops_fraction).into());
        info.insert("full_network_accuracy".into(), round(points[full].accuracy).into());
        info.insert("dense_accuracy".into(), round(dense.accuracy).into());
        info.insert("constraint".into(), rule.into());
        // The most expensive setting, for comparisons against the full network.
        let full_knobs: toml::Table = cal.knobs.iter().zip(&points[full].knobs).map(|(k, &v)| (k.name.clone(), toml::Value::Float(format!("{v}").parse::<f64>().unwrap_or(v as f64)))).collect();
        info.insert("full_network_knobs".into(), toml::Value::Table(full_knobs));
        write_knobs_file(path, &comment, &knobs, info)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn round(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

fn file_label(path: &std::path::Path) -> String {
    let mut parts: Vec<&str> = path.iter().rev().take(2).filter_map(|s| s.to_str()).collect();
    parts.reverse();
    parts.join("/")
}

/// Ctrl-C before the sweep started: nothing measured, nothing written.
fn interrupted_early(e: Error) -> Error {
    if matches!(e, Error::Calibrate(CalibrateError::Interrupted)) {
        eprintln!("interrupted before the sweep; nothing written");
        std::process::exit(130);
    }
    e
}
