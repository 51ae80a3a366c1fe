//! The weights file of a compiled model: every constant tensor a generated
//! crate needs, in one binary blob that the crate embeds with
//! `include_bytes!` and reads once when its model is built.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic    b"D2NNWTS\0"
//! version  u32 (1)
//! count    u32
//! entries  count × { name_len u32, name (UTF-8), dtype u8, offset u64, elements u64 }
//! data     each tensor's elements, little-endian, starting at its offset,
//!          a multiple of ALIGN from the start of the file
//! checksum u64: FNV-1a over every byte before it
//! ```
//!
//! The generated code knows each tensor's index at compile time, but reads
//! through the table anyway so a file that does not belong to the code (or
//! was truncated or damaged) is an error naming the tensor, never a wrong
//! answer. Tensors are copied out ([`Weights::f32`]) because they are
//! packed or transformed before use; `include_bytes!` gives no alignment
//! guarantee, and a copy costs far less than the packing that follows.

use crate::DType;
use std::fmt::Write as _;

/// The first eight bytes of every weights file.
pub const MAGIC: &[u8; 8] = b"D2NNWTS\0";
/// The format version this runtime reads and writes.
pub const VERSION: u32 = 1;
/// Alignment of each tensor's data from the start of the file, in bytes
/// (a cache line; also enough for any SIMD load on the supported targets).
pub const ALIGN: usize = 64;

/// Why a weights file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    #[error("not a d2nnc weights file (bad magic bytes)")]
    Magic,
    #[error("weights file version {0}; this runtime reads version {VERSION}")]
    Version(u32),
    #[error("weights file truncated: {0}")]
    Truncated(String),
    #[error("weights file damaged: checksum {found:#018x}, expected {expected:#018x}")]
    Checksum { expected: u64, found: u64 },
    #[error("weights file: tensor {index} (`{name}`) {reason}")]
    Entry { index: usize, name: String, reason: String },
    #[error("weights file has no tensor {index} (it holds {count})")]
    Missing { index: usize, count: usize },
    #[error("weights file: tensor {index} (`{name}`) is {actual}, the model expects {expected}")]
    Mismatch { index: usize, name: String, expected: String, actual: String },
}

/// One tensor of a weights file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub dtype: DType,
    /// Byte offset of the data from the start of the file.
    pub offset: usize,
    pub elements: usize,
}

/// Builds a weights file: add tensors in the order the generated code will
/// index them, then [`WeightsWriter::finish`].
#[derive(Debug, Default)]
pub struct WeightsWriter {
    tensors: Vec<(String, DType, Vec<u8>)>,
}

impl WeightsWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an f32 tensor and returns its index.
    pub fn push_f32(&mut self, name: &str, data: &[f32]) -> usize {
        self.push(name, DType::F32, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Adds an i64 tensor and returns its index.
    pub fn push_i64(&mut self, name: &str, data: &[i64]) -> usize {
        self.push(name, DType::I64, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Adds an i32 tensor and returns its index.
    pub fn push_i32(&mut self, name: &str, data: &[i32]) -> usize {
        self.push(name, DType::I32, data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// Adds a bool tensor (one byte per element, 0 or 1) and returns its index.
    pub fn push_bool(&mut self, name: &str, data: &[bool]) -> usize {
        self.push(name, DType::Bool, data.iter().map(|&b| u8::from(b)).collect())
    }

    fn push(&mut self, name: &str, dtype: DType, bytes: Vec<u8>) -> usize {
        self.tensors.push((name.to_string(), dtype, bytes));
        self.tensors.len() - 1
    }

    /// Number of tensors added so far.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The file's bytes.
    pub fn finish(self) -> Vec<u8> {
        let table_len: usize = self.tensors.iter().map(|(name, ..)| 4 + name.len() + 1 + 8 + 8).sum();
        let mut offset = (MAGIC.len() + 4 + 4 + table_len).next_multiple_of(ALIGN);
        let mut out = Vec::with_capacity(offset + self.tensors.iter().map(|t| t.2.len() + ALIGN).sum::<usize>() + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u32).to_le_bytes());
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for (name, dtype, bytes) in &self.tensors {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(dtype_code(*dtype));
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            out.extend_from_slice(&((bytes.len() / dtype.size_of()) as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + bytes.len()).next_multiple_of(ALIGN);
        }
        for ((_, _, bytes), at) in self.tensors.iter().zip(offsets) {
            out.resize(at, 0);
            out.extend_from_slice(bytes);
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }
}

/// A parsed weights file borrowing its bytes (typically `include_bytes!`).
#[derive(Debug, Clone)]
pub struct Weights<'a> {
    bytes: &'a [u8],
    entries: Vec<Entry>,
}

impl<'a> Weights<'a> {
    /// Checks the magic, version, checksum and table (every tensor inside the
    /// data section, aligned, not overlapping the table).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WeightsError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(WeightsError::Magic);
        }
        if bytes.len() < MAGIC.len() + 8 + 8 {
            return Err(WeightsError::Truncated(format!("{} bytes, shorter than the header", bytes.len())));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 8);
        let mut r = Reader { bytes: body, at: MAGIC.len() };
        let version = r.u32("the version")?;
        if version != VERSION {
            return Err(WeightsError::Version(version));
        }
        let expected = u64::from_le_bytes(tail.try_into().expect("8 bytes"));
        let found = fnv1a(body);
        if found != expected {
            return Err(WeightsError::Checksum { expected, found });
        }
        let count = r.u32("the tensor count")? as usize;
        let mut entries = Vec::with_capacity(count.min(body.len() / 21));
        for index in 0..count {
            let what = format!("the table entry of tensor {index}");
            let name_len = r.u32(&what)? as usize;
            let name = String::from_utf8(r.take(name_len, &what)?.to_vec())
                .map_err(|_| WeightsError::Entry { index, name: String::new(), reason: "has a name that is not UTF-8".into() })?;
            let code = r.take(1, &what)?[0];
            let (offset, elements) = (r.u64(&what)?, r.u64(&what)?);
            let bad = |reason: String| WeightsError::Entry { index, name: name.clone(), reason };
            let dtype = dtype_of(code).ok_or_else(|| bad(format!("has an unknown element type code {code}")))?;
            let size = (elements as u128) * dtype.size_of() as u128;
            if !offset.is_multiple_of(ALIGN as u64) {
                return Err(bad(format!("starts at byte {offset}, not a multiple of {ALIGN}")));
            }
            if (offset as u128) + size > body.len() as u128 {
                return Err(bad(format!("has {elements} elements from byte {offset}, past the end of the data ({} bytes)", body.len())));
            }
            entries.push(Entry { name, dtype, offset: offset as usize, elements: elements as usize });
        }
        let table_end = r.at;
        if let Some((index, e)) = entries.iter().enumerate().find(|(_, e)| e.offset < table_end && e.elements > 0) {
            return Err(WeightsError::Entry { index, name: e.name.clone(), reason: format!("starts at byte {}, inside the table", e.offset) });
        }
        Ok(Weights { bytes: body, entries })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Tensor `index` as f32 values, checked to be named `name` (as the
    /// generated code expects) with `elements` elements.
    pub fn f32(&self, index: usize, name: &str, elements: usize) -> Result<Vec<f32>, WeightsError> {
        let bytes = self.data(index, name, DType::F32, elements)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
    }

    /// Tensor `index` as i64 values, checked like [`Weights::f32`].
    pub fn i64(&self, index: usize, name: &str, elements: usize) -> Result<Vec<i64>, WeightsError> {
        let bytes = self.data(index, name, DType::I64, elements)?;
        Ok(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
    }

    /// Tensor `index` as i32 values, checked like [`Weights::f32`].
    pub fn i32(&self, index: usize, name: &str, elements: usize) -> Result<Vec<i32>, WeightsError> {
        let bytes = self.data(index, name, DType::I32, elements)?;
        Ok(bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
    }

    /// Tensor `index` as bools stored one byte each (nonzero is true, read
    /// back as 1), checked like [`Weights::f32`].
    pub fn bool_bytes(&self, index: usize, name: &str, elements: usize) -> Result<Vec<u8>, WeightsError> {
        let bytes = self.data(index, name, DType::Bool, elements)?;
        Ok(bytes.iter().map(|&b| u8::from(b != 0)).collect())
    }

    pub fn data(&self, index: usize, name: &str, dtype: DType, elements: usize) -> Result<&'a [u8], WeightsError> {
        let e = self.entries.get(index).ok_or(WeightsError::Missing { index, count: self.entries.len() })?;
        if e.name != name || e.dtype != dtype || e.elements != elements {
            let describe = |n: &str, d: DType, k: usize| {
                let mut s = String::new();
                let _ = write!(s, "`{n}`: {k} {} elements", d.name());
                s
            };
            return Err(WeightsError::Mismatch {
                index,
                name: e.name.clone(),
                expected: describe(name, dtype, elements),
                actual: describe(&e.name, e.dtype, e.elements),
            });
        }
        // In bounds: checked by `parse`.
        Ok(&self.bytes[e.offset..e.offset + e.elements * dtype.size_of()])
    }
}

/// A cursor over the header and table.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WeightsError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(WeightsError::Truncated(format!("{what} runs past the end ({} bytes)", self.bytes.len())));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, WeightsError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64, WeightsError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
}

fn dtype_code(d: DType) -> u8 {
    match d {
        DType::F32 => 1,
        DType::I64 => 2,
        DType::I32 => 3,
        DType::Bool => 4,
    }
}

fn dtype_of(code: u8) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        2 => DType::I64,
        3 => DType::I32,
        4 => DType::Bool,
        _ => return None,
    })
}

/// 64-bit FNV-1a: detects truncation and corruption (not tampering).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let mut w = WeightsWriter::new();
        assert_eq!(w.push_f32("conv.weight", &[1.0, -2.5, f32::NAN, 3.0]), 0);
        assert_eq!(w.push_i64("shape", &[1, -1]), 1);
        assert_eq!(w.push_f32("empty", &[]), 2);
        w.finish()
    }

    #[test]
    fn round_trip_with_aligned_data() {
        let bytes = sample();
        let w = Weights::parse(&bytes).unwrap();
        assert_eq!(w.entries().len(), 3);
        assert!(w.entries().iter().all(|e| e.offset % ALIGN == 0));
        let conv = w.f32(0, "conv.weight", 4).unwrap();
        assert_eq!(conv[..2], [1.0, -2.5]);
        assert!(conv[2].is_nan());
        assert_eq!(w.i64(1, "shape", 2).unwrap(), [1, -1]);
        assert!(w.f32(2, "empty", 0).unwrap().is_empty());
    }

    #[test]
    fn the_code_and_the_file_must_agree() {
        let bytes = sample();
        let w = Weights::parse(&bytes).unwrap();
        let e = w.f32(0, "conv.bias", 4).unwrap_err();
        assert!(e.to_string().contains("tensor 0 (`conv.weight`) is `conv.weight`: 4 f32 elements, the model expects `conv.bias`: 4 f32 elements"), "{e}");
        assert!(matches!(w.f32(1, "shape", 2), Err(WeightsError::Mismatch { .. })), "wrong element type");
        assert!(matches!(w.f32(0, "conv.weight", 5), Err(WeightsError::Mismatch { .. })), "wrong length");
        assert_eq!(w.f32(3, "x", 1).unwrap_err(), WeightsError::Missing { index: 3, count: 3 });
    }

    #[test]
    fn bad_files_are_errors() {
        let bytes = sample();
        assert_eq!(Weights::parse(b"").unwrap_err(), WeightsError::Magic);
        assert_eq!(Weights::parse(b"GGUF\0\0\0\0rest-of-file").unwrap_err(), WeightsError::Magic);
        assert!(matches!(Weights::parse(&bytes[..12]), Err(WeightsError::Truncated(_))));
        // Any truncation or flipped byte is caught (by the checksum when the
        // table still parses).
        for cut in [bytes.len() - 1, bytes.len() - 9, 100] {
            assert!(Weights::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut damaged = bytes.clone();
        damaged[130] ^= 0x40;
        assert!(matches!(Weights::parse(&damaged), Err(WeightsError::Checksum { .. })));
        let mut newer = bytes.clone();
        newer[8] = 2;
        assert_eq!(Weights::parse(&newer).unwrap_err(), WeightsError::Version(2));
    }

    /// Re-seals `bytes` (body without its checksum) with a valid checksum,
    /// so the table checks themselves are reached.
    fn sealed(mut body: Vec<u8>) -> Vec<u8> {
        let sum = fnv1a(&body);
        body.extend_from_slice(&sum.to_le_bytes());
        body
    }

    #[test]
    fn a_table_pointing_outside_the_data_is_an_error() {
        let bytes = sample();
        let body = bytes[..bytes.len() - 8].to_vec();
        // Tensor 0's entry: magic 8 + version 4 + count 4, then name_len 4 +
        // 11 name bytes + dtype 1, then its offset.
        let offset_at = 8 + 4 + 4 + 4 + 11 + 1;
        let mut past = body.clone();
        past[offset_at..offset_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = Weights::parse(&sealed(past)).unwrap_err().to_string();
        assert!(e.contains("tensor 0 (`conv.weight`)") && e.contains("past the end"), "{e}");
        let mut unaligned = body.clone();
        unaligned[offset_at..offset_at + 8].copy_from_slice(&65u64.to_le_bytes());
        assert!(Weights::parse(&sealed(unaligned)).unwrap_err().to_string().contains("not a multiple of 64"));
        let mut huge = body.clone();
        huge[offset_at + 8..offset_at + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Weights::parse(&sealed(huge)).unwrap_err().to_string().contains("past the end"));
        let mut inside = body.clone();
        inside[offset_at..offset_at + 8].copy_from_slice(&0u64.to_le_bytes());
        assert!(Weights::parse(&sealed(inside)).unwrap_err().to_string().contains("inside the table"));
        let mut code = body;
        code[offset_at - 1] = 99;
        assert!(Weights::parse(&sealed(code)).unwrap_err().to_string().contains("unknown element type code 99"));
    }

    proptest! {
        #[test]
        fn any_tensors_round_trip(tensors in proptest::collection::vec(("[a-z./_0-9]{0,12}", proptest::collection::vec(any::<f32>(), 0..40)), 0..6)) {
            let mut w = WeightsWriter::new();
            for (name, data) in &tensors {
                w.push_f32(name, data);
            }
            let bytes = w.finish();
            let parsed = Weights::parse(&bytes).unwrap();
            for (i, (name, data)) in tensors.iter().enumerate() {
                let got = parsed.f32(i, name, data.len()).unwrap();
                prop_assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), data.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            // Any prefix is refused.
            let cut = bytes.len() / 2;
            prop_assert!(Weights::parse(&bytes[..cut]).is_err());
        }
    }
}
