//! Reading and writing tensors as NumPy `.npy` files and `.npz` archives.
//!
//! The element type is taken from the file's header: f32, i64, i32 and bool
//! load as themselves; f64 loads as f32 (NumPy's default float) and i8/u8 as
//! i32, so inputs saved without care still work.

use crate::Tensor;
use ndarray::ArrayD;
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpyExt, ReadableElement, WriteNpyExt};
use std::fs::File;
use std::io::{BufReader, BufWriter, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

/// Errors from `.npy` / `.npz` I/O; each names the file (and array) at fault.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: no array named `{name}` (arrays present: {available})")]
    MissingArray { path: PathBuf, name: String, available: String },
}

fn try_read<T: ReadableElement>(bytes: &[u8]) -> Result<ArrayD<T>, ReadNpyError> {
    ArrayD::<T>::read_npy(Cursor::new(bytes))
}

/// Decodes one `.npy` image held in memory. `origin` names it in errors.
pub fn decode_npy(bytes: &[u8], origin: &Path) -> Result<Tensor, NpyError> {
    let format = |e: ReadNpyError| NpyError::Format { path: origin.to_path_buf(), message: e.to_string() };
    macro_rules! attempt {
        ($t:ty, $wrap:expr) => {
            match try_read::<$t>(bytes) {
                Ok(a) => return Ok($wrap(a)),
                Err(ReadNpyError::WrongDescriptor(_)) => {}
                Err(e) => return Err(format(e)),
            }
        };
    }
    attempt!(f32, Tensor::F32);
    attempt!(i64, Tensor::I64);
    attempt!(i32, Tensor::I32);
    attempt!(bool, Tensor::Bool);
    attempt!(f64, |a: ArrayD<f64>| Tensor::F32(a.mapv(|v| v as f32)));
    attempt!(u8, |a: ArrayD<u8>| Tensor::I32(a.mapv(i32::from)));
    attempt!(i8, |a: ArrayD<i8>| Tensor::I32(a.mapv(i32::from)));
    match try_read::<f32>(bytes) {
        Err(e) => Err(NpyError::Format {
            path: origin.to_path_buf(),
            message: format!("unsupported element type ({e}); use float32, int64, int32 or bool"),
        }),
        Ok(_) => unreachable!("f32 was tried first"),
    }
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| BufReader::new(f).read_to_end(&mut bytes))
        .map_err(|source| NpyError::Open { path: path.to_path_buf(), source })?;
    decode_npy(&bytes, path)
}

/// Writes a tensor as a `.npy` file.
pub fn write_npy(path: &Path, tensor: &Tensor) -> Result<(), NpyError> {
    let file = File::create(path).map_err(|source| NpyError::Open { path: path.to_path_buf(), source })?;
    let w = BufWriter::new(file);
    let res = match tensor {
        Tensor::F32(a) => a.write_npy(w),
        Tensor::I64(a) => a.write_npy(w),
        Tensor::I32(a) => a.write_npy(w),
        Tensor::Bool(a) => a.write_npy(w),
    };
    res.map_err(|e| NpyError::Format { path: path.to_path_buf(), message: e.to_string() })
}

/// An opened `.npz` archive from which arrays are read by name.
pub struct Npz<R: Read + Seek> {
    path: PathBuf,
    reader: NpzReader<R>,
}

impl Npz<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, NpyError> {
        let file = File::open(path).map_err(|source| NpyError::Open { path: path.to_path_buf(), source })?;
        let reader = NpzReader::new(BufReader::new(file))
            .map_err(|e| NpyError::Format { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(Npz { path: path.to_path_buf(), reader })
    }
}

impl<R: Read + Seek> Npz<R> {
    /// Names of the arrays in the archive, without the `.npy` suffix.
    pub fn names(&mut self) -> Result<Vec<String>, NpyError> {
        let names = self
            .reader
            .names()
            .map_err(|e| NpyError::Format { path: self.path.clone(), message: e.to_string() })?;
        Ok(names.into_iter().map(|n| n.trim_end_matches(".npy").to_string()).collect())
    }

    /// Reads the array called `name` with the same dtype rules as [`read_npy`].
    pub fn read(&mut self, name: &str) -> Result<Tensor, NpyError> {
        let names = self.names()?;
        if !names.iter().any(|n| n == name) {
            return Err(NpyError::MissingArray { path: self.path.clone(), name: name.into(), available: names.join(", ") });
        }
        // NpzReader decodes typed arrays only; go through the raw bytes so the
        // header decides the dtype exactly as for a lone .npy file.
        let bytes = self.raw_member(name)?;
        decode_npy(&bytes, &self.path.join(name))
    }

    fn raw_member(&mut self, name: &str) -> Result<Vec<u8>, NpyError> {
        macro_rules! grab {
            ($t:ty) => {
                match self.reader.by_name::<ndarray::OwnedRepr<$t>, ndarray::IxDyn>(name) {
                    Ok(a) => {
                        let mut out = Vec::new();
                        a.write_npy(&mut out).map_err(|e| NpyError::Format { path: self.path.clone(), message: e.to_string() })?;
                        return Ok(out);
                    }
                    Err(ndarray_npy::ReadNpzError::Npy(ReadNpyError::WrongDescriptor(_))) => {}
                    Err(e) => return Err(NpyError::Format { path: self.path.clone(), message: e.to_string() }),
                }
            };
        }
        grab!(f32);
        grab!(i64);
        grab!(i32);
        grab!(bool);
        grab!(f64);
        grab!(u8);
        grab!(i8);
        Err(NpyError::Format { path: self.path.join(name), message: "unsupported element type".into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_dtype() {
        let dir = std::env::temp_dir().join(format!("d2nn-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for t in [
            Tensor::from_f32(&[2, 2], vec![1.0, -2.0, 3.5, 0.0]).unwrap(),
            Tensor::from_i64(&[3], vec![1, -2, 3]).unwrap(),
            Tensor::from_i32(&[1, 2], vec![7, 8]).unwrap(),
            Tensor::from_bool(&[2], vec![true, false]).unwrap(),
        ] {
            let p = dir.join("t.npy");
            write_npy(&p, &t).unwrap();
            assert_eq!(read_npy(&p).unwrap(), t);
        }
    }

    #[test]
    fn garbage_is_a_format_error_naming_the_file() {
        let err = decode_npy(b"not an npy file", Path::new("x.npy")).unwrap_err();
        assert!(err.to_string().starts_with("x.npy:"), "{err}");
    }
}
