//! `d2nnc run`: load, optimise, execute on `.npy` inputs, write `.npy` outputs.

use super::inputs::{read_inputs, InputSpec};
use super::Backend;
use d2nn_runtime::npy;
use d2nnc::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What `d2nnc run` was asked to do besides the model and inputs.
pub struct RunOptions {
    pub backend: Backend,
    pub threads: usize,
    pub knobs: Vec<(String, f32)>,
    pub fixes: Vec<(String, f32)>,
    /// Compute every node (the ONNX semantics) instead of following the decisions.
    pub dense: bool,
    /// Where to write the JSON report of what ran.
    pub report: Option<PathBuf>,
}

pub fn run(model: &Path, inputs: &[InputSpec], output_dir: &Path, options: &RunOptions) -> Result<(), Error> {
    let (graph, analysis) = super::knobs::load(model, &options.fixes)?;
    super::knobs::check_knobs(&analysis, &options.knobs)?;
    let feeds = read_inputs(inputs)?;
    let dynamic = !options.dense && analysis.is_dynamic();
    let (outputs, trace) = match (options.backend, dynamic) {
        (Backend::Interp, false) => {
            let knobbed = with_knob_values(&graph, &analysis, &options.knobs);
            (d2nnc::interp::run(&knobbed, &feeds)?, None)
        }
        (Backend::Interp, true) => {
            let knobs: d2nnc::interp::Knobs = options.knobs.iter().cloned().collect();
            let (out, trace) = d2nnc::interp::run_dynamic(&graph, &analysis, &feeds, &knobs)?;
            (out, Some(trace))
        }
        (Backend::Jit, _) => {
            let dense_graph = if dynamic { None } else { Some(with_knob_values(&graph, &analysis, &options.knobs)) };
            let source = dense_graph.as_ref().unwrap_or(&graph);
            let program = if dynamic { d2nnc::plan::lower_dynamic(&graph, &analysis)? } else { d2nnc::plan::lower(source)? };
            let mut model = d2nnc::back::clif::JitModel::compile(source, &program, &analysis, options.threads)?;
            if dynamic {
                for (name, value) in &options.knobs {
                    model.set_knob(name, *value)?;
                }
            }
            let out = model.run_tensors(&feeds)?;
            (out, dynamic.then(|| model.trace().clone()))
        }
        (Backend::Plan, _) => {
            let program = if dynamic { d2nnc::plan::lower_dynamic(&graph, &analysis)? } else { d2nnc::plan::lower(&with_knob_values(&graph, &analysis, &options.knobs))? };
            let mut ex = d2nnc::plan::Executor::with_threads(std::sync::Arc::new(program), options.threads);
            if dynamic {
                for (name, value) in &options.knobs {
                    ex.set_knob(name, *value)?;
                }
            }
            let out = ex.run(&feeds)?;
            (out, ex.trace().cloned())
        }
    };
    std::fs::create_dir_all(output_dir).map_err(|source| Error::Io { path: output_dir.to_path_buf(), source })?;
    let mut used = HashMap::new();
    for (&v, t) in graph.outputs().iter().zip(&outputs) {
        let name = &graph.values[v].name;
        let path = unique_path(output_dir, &sanitize(name), &mut used);
        npy::write_npy(&path, t)?;
        println!("{name}: {}{:?} -> {}", t.dtype(), t.shape(), path.display());
    }
    let batch = feeds.values().next().and_then(|t| t.shape().first().copied()).unwrap_or(1);
    if let Some(trace) = &trace {
        println!(
            "dynamic: {} of {} dense FLOPs executed ({:.1}%)",
            super::inspect::group(trace.flops_executed),
            super::inspect::group(analysis.dense_flops(trace.batch)),
            100.0 * trace.flops_executed as f64 / analysis.dense_flops(trace.batch).max(1) as f64
        );
    }
    if let Some(path) = &options.report {
        let report = super::report::report(model, options.backend, &graph, &analysis, trace.as_ref(), batch, &options.knobs);
        let text = serde_json::to_string_pretty(&report).map_err(|e| Error::Usage(format!("cannot encode the report: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|source| Error::Io { path: path.clone(), source })?;
        println!("report -> {}", path.display());
    }
    Ok(())
}

/// `graph` with the knobs' constants replaced by the given values (dense
/// execution of a moved threshold).
pub fn with_knob_values(graph: &d2nnc::ir::Graph, analysis: &d2nnc::dynamic::Analysis, knobs: &[(String, f32)]) -> d2nnc::ir::Graph {
    let mut g = graph.clone();
    for (name, value) in knobs {
        if let Some(k) = analysis.knob(name) {
            if let Some(old) = g.const_value(k.value) {
                if let Ok(t) = d2nn_runtime::Tensor::from_f32(old.shape(), vec![*value; old.len()]) {
                    g.values[k.value].def = d2nnc::ir::ValueDef::Const(std::sync::Arc::new(t));
                }
            }
        }
    }
    g
}

/// A file name from an output name: anything but ASCII letters, digits, `-`,
/// `_` and `.` becomes `_`, and leading dots are dropped so the file can never
/// be hidden or step outside the output folder.
pub fn sanitize(name: &str) -> String {
    d2nnc::back::rust::krate::file_stem(name)
}

fn unique_path(dir: &Path, stem: &str, used: &mut HashMap<String, usize>) -> PathBuf {
    let n = used.entry(stem.to_string()).or_insert(0);
    *n += 1;
    if *n == 1 {
        dir.join(format!("{stem}.npy"))
    } else {
        dir.join(format!("{stem}_{n}.npy"))
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn unsafe_names_are_sanitised() {
        assert_eq!(sanitize("logits"), "logits");
        assert_eq!(sanitize("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize("a/b:c d"), "a_b_c_d");
        assert_eq!(sanitize("..."), "output");
    }
}
