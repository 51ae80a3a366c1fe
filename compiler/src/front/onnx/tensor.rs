//! `TensorProto` → [`Tensor`]: typed fields, `raw_data`, and external data files
//! confined to the model's folder.

use super::error::LoadError;
use d2nn_runtime::{DType, Tensor};
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use protobuf::Enum;
use onnx_protobuf::TensorProto;
use std::path::{Component, Path};

/// Largest element count d2nnc accepts for one tensor: 2^30 elements (4 GiB of
/// f32), far beyond any real activation or weight, and small enough that a
/// hostile shape fails with an error instead of exhausting memory.
pub const MAX_ELEMENTS: u64 = 1 << 30;

/// Maps an ONNX element type code to a supported dtype.
pub fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    match DataType::from_i32(code) {
        Some(DataType::FLOAT) => Ok(DType::F32),
        Some(DataType::INT64) => Ok(DType::I64),
        Some(DataType::INT32) => Ok(DType::I32),
        Some(DataType::BOOL) => Ok(DType::Bool),
        Some(other) => Err(format!("element type {other:?} is not supported (d2nnc computes in f32 with i64/i32/bool indices)")),
        None => Err(format!("unknown element type code {code}")),
    }
}

/// Checked element count of `dims`.
pub fn element_count(dims: &[i64]) -> Result<usize, String> {
    let mut n: u64 = 1;
    for &d in dims {
        if d < 0 {
            return Err(format!("negative dimension {d} in {dims:?}"));
        }
        n = n.checked_mul(d as u64).filter(|&n| n <= MAX_ELEMENTS).ok_or_else(|| format!("absurd dimensions {dims:?}"))?;
    }
    Ok(n as usize)
}

/// Decodes a tensor. `base_dir` is the model's folder, for external data.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, LoadError> {
    let name = if t.name.is_empty() { "<unnamed tensor>" } else { t.name.as_str() };
    let err = |reason: String| LoadError::Tensor { tensor: name.to_string(), reason };
    let dtype = dtype_from_onnx(t.data_type).map_err(err)?;
    let count = element_count(&t.dims).map_err(err)?;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    if t.segment.is_some() {
        return Err(err("segmented tensors are not supported".into()));
    }
    let external = t.data_location.enum_value() == Ok(DataLocation::EXTERNAL);
    let raw: Option<std::borrow::Cow<[u8]>> = if external {
        Some(read_external(t, base_dir, count * dtype.size_of()).map_err(err)?.into())
    } else if !t.raw_data.is_empty() || count == 0 && typed_len(t, dtype) == 0 {
        Some(t.raw_data.as_slice().into())
    } else {
        None
    };
    let built = match raw {
        Some(bytes) => from_raw(dtype, &shape, count, &bytes),
        None => from_typed(t, dtype, &shape, count),
    };
    built.map_err(err)
}

fn typed_len(t: &TensorProto, dtype: DType) -> usize {
    match dtype {
        DType::F32 => t.float_data.len(),
        DType::I64 => t.int64_data.len(),
        DType::I32 | DType::Bool => t.int32_data.len(),
    }
}

fn from_raw(dtype: DType, shape: &[usize], count: usize, bytes: &[u8]) -> Result<Tensor, String> {
    let want = count * dtype.size_of();
    if bytes.len() != want {
        return Err(format!("raw data holds {} bytes, shape {shape:?} of {dtype} needs {want}", bytes.len()));
    }
    let t = match dtype {
        DType::F32 => Tensor::from_f32(shape, bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
        DType::I64 => Tensor::from_i64(shape, bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()),
        DType::I32 => Tensor::from_i32(shape, bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect()),
        DType::Bool => Tensor::from_bool(shape, bytes.iter().map(|&b| b != 0).collect()),
    };
    t.map_err(|e| e.to_string())
}

fn from_typed(t: &TensorProto, dtype: DType, shape: &[usize], count: usize) -> Result<Tensor, String> {
    let have = typed_len(t, dtype);
    if have != count {
        return Err(format!("typed data holds {have} elements, shape {shape:?} needs {count}"));
    }
    let built = match dtype {
        DType::F32 => Tensor::from_f32(shape, t.float_data.clone()),
        DType::I64 => Tensor::from_i64(shape, t.int64_data.clone()),
        DType::I32 => Tensor::from_i32(shape, t.int32_data.clone()),
        DType::Bool => Tensor::from_bool(shape, t.int32_data.iter().map(|&v| v != 0).collect()),
    };
    built.map_err(|e| e.to_string())
}

/// Reads an external-data tensor's bytes, refusing any location outside `base_dir`.
fn read_external(t: &TensorProto, base_dir: Option<&Path>, want: usize) -> Result<Vec<u8>, String> {
    let base = base_dir.ok_or("external data needs the model's folder, but the model was loaded from memory")?;
    let (mut location, mut offset, mut length) = (None, 0u64, None);
    for kv in &t.external_data {
        match kv.key.as_str() {
            "location" => location = Some(kv.value.clone()),
            "offset" => offset = kv.value.parse().map_err(|_| format!("bad external data offset `{}`", kv.value))?,
            "length" => length = Some(kv.value.parse::<u64>().map_err(|_| format!("bad external data length `{}`", kv.value))?),
            _ => {}
        }
    }
    let location = location.ok_or("external data without a `location`")?;
    let rel = Path::new(&location);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("external data location `{location}` escapes the model's folder"));
    }
    let base_real = base.canonicalize().map_err(|e| format!("cannot resolve model folder {}: {e}", base.display()))?;
    let full = base.join(rel);
    let real = full.canonicalize().map_err(|e| format!("cannot open external data `{location}`: {e}"))?;
    if !real.starts_with(&base_real) {
        return Err(format!("external data location `{location}` escapes the model's folder (it resolves to {})", real.display()));
    }
    let len = length.unwrap_or(want as u64);
    if len != want as u64 {
        return Err(format!("external data length {len} does not match the {want} bytes the shape needs"));
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&real).map_err(|e| format!("cannot open external data `{location}`: {e}"))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(format!("external data range {offset}+{len} lies beyond the end of `{location}` ({size} bytes)"));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; want];
    f.read_exact(&mut buf).map_err(|e| format!("reading external data `{location}`: {e}"))?;
    Ok(buf)
}
