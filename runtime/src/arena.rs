//! The scratch arena: one 64-byte-aligned block of memory holding every
//! intermediate buffer of a plan, with typed views at planned offsets.
//!
//! The arena is sized once for the largest batch seen and then reused, so a
//! steady-state inference allocates nothing. Views are checked: an offset that
//! is misaligned for the element type, or a range past the end, is an error.

use smallvec::SmallVec;

/// The read views of [`Arena::split`], inline for up to four operands.
pub type ReadViews<'a> = SmallVec<[&'a [u8]; 4]>;
use bytemuck::{Pod, Zeroable};

/// One cache line; the arena is a vector of these so that its start, and with
/// the planner's 64-byte offsets every buffer, is aligned for any SIMD load.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Why a view cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArenaError {
    #[error("range {offset}..{end} lies outside the {size}-byte arena")]
    OutOfBounds { offset: usize, end: usize, size: usize },
    #[error("offset {offset} is not aligned for {type_name}")]
    Misaligned { offset: usize, type_name: &'static str },
    #[error("ranges {a:?} and {b:?} overlap")]
    Overlap { a: (usize, usize), b: (usize, usize) },
}

/// A growable, aligned byte arena.
#[derive(Default)]
pub struct Arena {
    lines: Vec<Line>,
}

impl Arena {
    pub fn new() -> Self {
        Self::default()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.lines.len() * 64
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Grows the arena to at least `bytes` (never shrinks, so one large
    /// batch does not cause reallocation for every smaller one after it).
    pub fn reserve(&mut self, bytes: usize) {
        let lines = bytes.div_ceil(64);
        if lines > self.lines.len() {
            self.lines.resize(lines, Line([0; 64]));
        }
    }

    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.lines)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.lines)
    }

    fn check(&self, offset: usize, bytes: usize) -> Result<(usize, usize), ArenaError> {
        let end = offset.checked_add(bytes).ok_or(ArenaError::OutOfBounds { offset, end: usize::MAX, size: self.len() })?;
        if end > self.len() {
            return Err(ArenaError::OutOfBounds { offset, end, size: self.len() });
        }
        Ok((offset, end))
    }

    /// `len` elements of `T` starting at byte `offset`.
    pub fn view<T: Pod>(&self, offset: usize, len: usize) -> Result<&[T], ArenaError> {
        let (start, end) = self.check(offset, len * std::mem::size_of::<T>())?;
        bytemuck::try_cast_slice(&self.bytes()[start..end])
            .map_err(|_| ArenaError::Misaligned { offset, type_name: std::any::type_name::<T>() })
    }

    /// Mutable view of `len` elements of `T` starting at byte `offset`.
    pub fn view_mut<T: Pod>(&mut self, offset: usize, len: usize) -> Result<&mut [T], ArenaError> {
        let (start, end) = self.check(offset, len * std::mem::size_of::<T>())?;
        bytemuck::try_cast_slice_mut(&mut self.bytes_mut()[start..end])
            .map_err(|_| ArenaError::Misaligned { offset, type_name: std::any::type_name::<T>() })
    }

    /// Several read-only byte ranges and one writable range at once (no
    /// allocation for up to four reads), which
    /// must not overlap the read ranges (a kernel reads its operands while it
    /// writes its result). Ranges are `(offset, bytes)`.
    pub fn split(&mut self, reads: &[(usize, usize)], write: (usize, usize)) -> Result<(ReadViews<'_>, &mut [u8]), ArenaError> {
        let w = self.check(write.0, write.1)?;
        let mut spans: SmallVec<[(usize, usize); 4]> = SmallVec::with_capacity(reads.len());
        for &(offset, bytes) in reads {
            let r = self.check(offset, bytes)?;
            if r.0 < w.1 && w.0 < r.1 && bytes > 0 && write.1 > 0 {
                return Err(ArenaError::Overlap { a: r, b: w });
            }
            spans.push(r);
        }
        let all = self.bytes_mut();
        let (head, rest) = all.split_at_mut(w.0);
        let (out, tail) = rest.split_at_mut(w.1 - w.0);
        let (head, tail): (&[u8], &[u8]) = (head, tail);
        let views = spans
            .into_iter()
            .map(|(s, e)| if e <= w.0 { &head[s..e] } else { &tail[s - w.1..e - w.1] })
            .collect();
        Ok((views, out))
    }

    /// [`Arena::split`] with the reads as an array, for code that knows its
    /// operand count at compile time (generated models).
    pub fn split_array<const R: usize>(&mut self, reads: [(usize, usize); R], write: (usize, usize)) -> Result<([&[u8]; R], &mut [u8]), ArenaError> {
        let (views, out) = self.split(&reads, write)?;
        let mut views = views.into_iter();
        // `split` returns exactly one view per read.
        Ok((std::array::from_fn(|_| views.next().unwrap_or(&[])), out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_views_are_aligned_and_checked() {
        let mut a = Arena::new();
        a.reserve(100);
        assert_eq!(a.len(), 128);
        a.view_mut::<f32>(64, 4).unwrap().copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(a.view::<f32>(64, 4).unwrap(), &[1.0, 2.0, 3.0, 4.0]);
        assert!(matches!(a.view::<f32>(126, 1), Err(ArenaError::OutOfBounds { .. })));
        assert!(matches!(a.view::<i64>(4, 1), Err(ArenaError::Misaligned { .. })));
        a.reserve(10);
        assert_eq!(a.len(), 128, "never shrinks");
    }

    #[test]
    fn split_gives_disjoint_reads_and_a_write() {
        let mut a = Arena::new();
        a.reserve(256);
        a.view_mut::<u8>(0, 8).unwrap().copy_from_slice(&[7; 8]);
        a.view_mut::<u8>(192, 8).unwrap().copy_from_slice(&[9; 8]);
        let (reads, out) = a.split(&[(0, 8), (192, 8)], (64, 64)).unwrap();
        out.copy_from_slice(&[1; 64]);
        assert_eq!(reads[0], &[7; 8]);
        assert_eq!(reads[1], &[9; 8]);
        drop(reads);
        assert!(matches!(a.split(&[(60, 8)], (64, 64)), Err(ArenaError::Overlap { .. })));
    }
}
