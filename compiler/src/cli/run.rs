//! `d2nnc run`: load, optimise, execute on `.npy` inputs, write `.npy` outputs.

use super::inputs::{read_inputs, InputSpec};
use super::Backend;
use d2nn_runtime::npy;
use d2nnc::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn run(model: &Path, inputs: &[InputSpec], output_dir: &Path, backend: Backend, threads: usize) -> Result<(), Error> {
    let loaded = d2nnc::load_and_optimize(model)?;
    let graph = &loaded.graph;
    let feeds = read_inputs(inputs)?;
    let outputs = match backend {
        Backend::Interp => d2nnc::interp::run(graph, &feeds)?,
        Backend::Plan => d2nnc::plan::Executor::with_threads(std::sync::Arc::new(d2nnc::plan::lower(graph)?), threads).run(&feeds)?,
    };
    std::fs::create_dir_all(output_dir).map_err(|source| Error::Io { path: output_dir.to_path_buf(), source })?;
    let mut used = HashMap::new();
    for (&v, t) in graph.outputs().iter().zip(&outputs) {
        let name = &graph.values[v].name;
        let path = unique_path(output_dir, &sanitize(name), &mut used);
        npy::write_npy(&path, t)?;
        println!("{name}: {}{:?} -> {}", t.dtype(), t.shape(), path.display());
    }
    Ok(())
}

/// A file name from an output name: anything but ASCII letters, digits, `-`,
/// `_` and `.` becomes `_`, and leading dots are dropped so the file can never
/// be hidden or step outside the output folder.
pub fn sanitize(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "output".to_string()
    } else {
        trimmed.to_string()
    }
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
