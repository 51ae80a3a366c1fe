//! The labelled validation set `d2nnc calibrate` sweeps over: one `.npz`
//! archive holding the inputs and the integer class labels, checked against
//! each other and against the model's input port before any run.

use super::CalibrateError;
use d2nn_runtime::compiled::Dim;
use d2nn_runtime::ndarray::{ArrayD, ArrayViewD, Axis, Slice};
use d2nn_runtime::npy::Npz;
use d2nn_runtime::DType;
use std::path::{Path, PathBuf};

/// Inputs and labels read from a `.npz` archive.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub path: PathBuf,
    /// Name of the input array in the archive.
    pub x_key: String,
    /// Name of the label array in the archive.
    pub y_key: String,
    /// The inputs, samples along axis 0.
    pub x: ArrayD<f32>,
    /// One class index per sample.
    pub labels: Vec<usize>,
}

/// The array names tried, in order, when `--x` / `--y` are not given.
const X_KEYS: [&str; 4] = ["x", "X", "inputs", "input"];
const Y_KEYS: [&str; 5] = ["y", "Y", "labels", "label", "targets"];

fn pick_key(given: Option<&str>, defaults: &[&str], names: &[String], role: &str, path: &Path) -> Result<String, CalibrateError> {
    if let Some(key) = given {
        return Ok(key.to_string());
    }
    defaults.iter().find(|k| names.iter().any(|n| n == *k)).map(|k| k.to_string()).ok_or_else(|| CalibrateError::Data {
        path: path.to_path_buf(),
        message: format!("no {role} array (looked for {}; arrays present: {}); name it with --{}", defaults.join(", "), names.join(", "), if role == "input" { "x" } else { "y" }),
    })
}

impl Dataset {
    /// Reads `x_key` (float inputs) and `y_key` (integer labels) from the
    /// archive at `path`; without keys, the usual names (`x`, `y`, …).
    pub fn load(path: &Path, x_key: Option<&str>, y_key: Option<&str>) -> Result<Dataset, CalibrateError> {
        let mut npz = Npz::open(path)?;
        let names = npz.names()?;
        let x_key = pick_key(x_key, &X_KEYS, &names, "input", path)?;
        let y_key = pick_key(y_key, &Y_KEYS, &names, "label", path)?;
        let data_err = |message: String| CalibrateError::Data { path: path.to_path_buf(), message };
        let x = npz.read(&x_key)?;
        if !x.dtype().is_float() {
            return Err(data_err(format!("array `{x_key}` holds {} elements; the inputs must be floating point", x.dtype())));
        }
        let x = x.cast(DType::F32).as_f32().map_err(|e| data_err(e.to_string()))?.clone();
        if x.ndim() == 0 || x.shape()[0] == 0 {
            return Err(data_err(format!("array `{x_key}` has shape {:?}; it needs at least one sample along axis 0", x.shape())));
        }
        let y = npz.read(&y_key)?;
        if !y.dtype().is_int() {
            return Err(data_err(format!("array `{y_key}` holds {} elements; the labels must be integer class indices", y.dtype())));
        }
        let samples = x.shape()[0];
        let flat = match y.shape() {
            [n] | [n, 1] if *n == samples => y.to_i64_vec(),
            shape => {
                return Err(data_err(format!(
                    "array `{y_key}` has shape {shape:?} but `{x_key}` has {samples} samples (shape {:?}); the labels must be one class index per sample, shape [{samples}]",
                    x.shape()
                )))
            }
        };
        let mut labels = Vec::with_capacity(flat.len());
        for (i, &label) in flat.iter().enumerate() {
            let class = usize::try_from(label).map_err(|_| data_err(format!("array `{y_key}`: sample {i} has label {label}; class indices are ≥ 0")))?;
            labels.push(class);
        }
        Ok(Dataset { path: path.to_path_buf(), x_key, y_key, x, labels })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Samples `start..end` as a view.
    pub fn rows(&self, start: usize, end: usize) -> ArrayViewD<'_, f32> {
        self.x.slice_axis(Axis(0), Slice::from(start..end))
    }

    /// Checks the inputs against the model's input port (`name`, `dims`) and
    /// the labels against its number of classes; returns the batch size to
    /// run at: `preferred` for a batch-scaled input, the fixed batch otherwise.
    pub fn check_against(&self, name: &str, dims: &[Dim], classes: usize, preferred: usize) -> Result<usize, CalibrateError> {
        let shape = self.x.shape();
        let mismatch = || CalibrateError::Data {
            path: self.path.clone(),
            message: format!("array `{}` has shape {shape:?}; the model's input `{name}` takes {}", self.x_key, crate::back::clif::dims_text(dims)),
        };
        if dims.len() != shape.len() {
            return Err(mismatch());
        }
        let mut batch = None;
        for (i, (&dim, &size)) in dims.iter().zip(shape).enumerate() {
            match dim {
                Dim::Known(n) if i == 0 => batch = Some(n),
                Dim::Known(n) if n != size => return Err(mismatch()),
                Dim::Batch(1) if i == 0 => {}
                Dim::Batch(_) => return Err(mismatch()),
                Dim::Known(_) => {}
            }
        }
        let batch = batch.unwrap_or(preferred.max(1));
        if matches!(dims.first(), Some(Dim::Known(_))) && !shape[0].is_multiple_of(batch) {
            return Err(CalibrateError::Data {
                path: self.path.clone(),
                message: format!("array `{}` has {} samples; the model's input `{name}` has a fixed batch of {batch}, which must divide them", self.x_key, shape[0]),
            });
        }
        if let Some((i, &label)) = self.labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(CalibrateError::Data {
                path: self.path.clone(),
                message: format!("array `{}`: sample {i} has label {label}, but the model's output scores {classes} classes", self.y_key),
            });
        }
        Ok(batch)
    }
}
