//! Per-sample routing for dynamic execution: a region that only some samples
//! of a batch need runs on a compacted sub-batch. Its inputs' rows are
//! gathered ([`gather_rows`]), its outputs scattered back in place
//! ([`scatter_rows`], zeros on the rows that did not run), and a gated-off
//! `Mul` term's rows are made exactly zero ([`zero_rows`]).
//!
//! A *row* is one sample: `row_len` consecutive elements of a row-major
//! buffer whose first axis is the batch. The functions work on any element
//! type (the plan executor passes bytes) and check every index, returning
//! [`KernelError`] rather than panicking.

use crate::kernels::KernelError;

/// Checks that `rows` is strictly increasing and below `total`.
fn check_rows(rows: &[usize], total: usize) -> Result<(), KernelError> {
    if let Some(w) = rows.windows(2).find(|w| w[0] >= w[1]) {
        return Err(KernelError::Geometry(format!("routed rows must be strictly increasing: {} then {}", w[0], w[1])));
    }
    match rows.last() {
        Some(&last) if last >= total => Err(KernelError::Geometry(format!("routed row {last} is outside a batch of {total}"))),
        _ => Ok(()),
    }
}

/// Rows of `len` elements, `row_len` each; `None` when rows are empty
/// (`row_len` = 0 with no data: a `[N, 0]` tensor, where nothing moves).
fn row_count(what: &'static str, len: usize, row_len: usize) -> Result<Option<usize>, KernelError> {
    if row_len == 0 && len == 0 {
        return Ok(None);
    }
    if row_len == 0 || !len.is_multiple_of(row_len) {
        return Err(KernelError::Ragged { what, unit: row_len, actual: len });
    }
    Ok(Some(len / row_len))
}

/// Copies rows `rows` of `src` to the first `rows.len()` rows of `dst`
/// (strictly increasing rows; `dst` may hold more rows than that).
pub fn gather_rows<T: Copy>(src: &[T], row_len: usize, rows: &[usize], dst: &mut [T]) -> Result<(), KernelError> {
    let Some(total) = row_count("source", src.len(), row_len)? else { return Ok(()) };
    check_rows(rows, total)?;
    if dst.len() < rows.len() * row_len {
        return Err(KernelError::Length { what: "gathered rows", expected: rows.len() * row_len, actual: dst.len() });
    }
    for (to, &r) in dst.chunks_exact_mut(row_len).zip(rows) {
        to.copy_from_slice(&src[r * row_len..(r + 1) * row_len]);
    }
    Ok(())
}

/// Expands, in place, a buffer whose first `rows.len()` rows hold the
/// results for rows `rows` (strictly increasing) of the whole buffer: row `i`
/// moves to `rows[i]` and every other row becomes `T::default()` (0). With no
/// rows the whole buffer becomes 0: a region that did not run.
pub fn scatter_rows<T: Copy + Default>(data: &mut [T], row_len: usize, rows: &[usize]) -> Result<(), KernelError> {
    let Some(total) = row_count("routed buffer", data.len(), row_len)? else { return Ok(()) };
    check_rows(rows, total)?;
    // Backwards: row i only moves down (rows[i] ≥ i), so no source is
    // overwritten before it is read.
    for (i, &r) in rows.iter().enumerate().rev() {
        if r != i {
            data.copy_within(i * row_len..(i + 1) * row_len, r * row_len);
        }
    }
    let mut next = rows.iter().peekable();
    for (r, row) in data.chunks_exact_mut(row_len).enumerate() {
        if next.peek() == Some(&&r) {
            next.next();
        } else {
            row.fill(T::default());
        }
    }
    Ok(())
}

/// Sets every row `r` with `closed(r)` to `T::default()` (0).
pub fn zero_rows<T: Copy + Default>(data: &mut [T], row_len: usize, closed: impl Fn(usize) -> bool) -> Result<(), KernelError> {
    row_count("masked buffer", data.len(), row_len)?;
    for (r, row) in data.chunks_exact_mut(row_len).enumerate() {
        if closed(r) {
            row.fill(T::default());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Gathering a subset, then scattering it back, gives the original
        /// rows on the subset and zeros elsewhere — for any subset.
        #[test]
        fn gather_then_scatter_restores_the_chosen_rows(total in 1usize..20, row_len in 1usize..7, mask in any::<u32>()) {
            let src: Vec<i32> = (0..(total * row_len) as i32).map(|v| v + 1).collect();
            let rows: Vec<usize> = (0..total).filter(|r| mask >> (r % 32) & 1 == 1).collect();
            let mut buf = vec![-7; total * row_len];
            gather_rows(&src, row_len, &rows, &mut buf).unwrap();
            for (i, &r) in rows.iter().enumerate() {
                prop_assert_eq!(&buf[i * row_len..(i + 1) * row_len], &src[r * row_len..(r + 1) * row_len]);
            }
            scatter_rows(&mut buf, row_len, &rows).unwrap();
            for r in 0..total {
                let want: Vec<i32> = if rows.contains(&r) { src[r * row_len..(r + 1) * row_len].to_vec() } else { vec![0; row_len] };
                prop_assert_eq!(&buf[r * row_len..(r + 1) * row_len], &want[..]);
            }
        }
    }

    #[test]
    fn zero_rows_clears_the_closed_rows() {
        let mut data = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        zero_rows(&mut data, 2, |r| r == 1).unwrap();
        assert_eq!(data, [1.0, 2.0, 0.0, 0.0, 5.0, 6.0]);
    }

    #[test]
    fn scatter_with_no_rows_zeroes_everything() {
        let mut data = vec![9u8; 6];
        scatter_rows(&mut data, 3, &[]).unwrap();
        assert_eq!(data, [0; 6]);
    }

    #[test]
    fn bad_calls_are_errors() {
        let src = [1, 2, 3, 4, 5, 6];
        let mut dst = [0; 6];
        assert!(gather_rows(&src, 4, &[0], &mut dst).is_err(), "ragged source");
        assert!(gather_rows(&src, 0, &[], &mut dst).is_err(), "empty rows over data");
        assert!(gather_rows::<i32>(&[], 0, &[0, 1], &mut []).is_ok(), "a [N, 0] tensor moves nothing");
        assert!(gather_rows(&src, 2, &[1, 1], &mut dst).is_err(), "repeated row");
        assert!(gather_rows(&src, 2, &[2, 1], &mut dst).is_err(), "decreasing rows");
        assert!(gather_rows(&src, 2, &[3], &mut dst).is_err(), "row past the batch");
        assert!(gather_rows(&src, 2, &[0, 1, 2], &mut dst[..4]).is_err(), "short destination");
        assert!(scatter_rows(&mut dst, 2, &[0, 5]).is_err());
        assert!(scatter_rows(&mut dst[..5], 2, &[0]).is_err());
        assert!(zero_rows(&mut dst[..5], 2, |_| true).is_err());
        assert!(gather_rows(&src, 2, &[0, 2], &mut dst).is_ok());
        assert_eq!(dst[..4], [1, 2, 5, 6]);
    }
}
