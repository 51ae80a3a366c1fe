//! The data-movement kernels against their index-mapping definitions, for
//! several element types (each has its own tile edge), plus bad calls.

use super::*;
use proptest::prelude::*;

/// The multi-index of flat position `flat` in a row-major `dims`.
fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (i, &d) in idx.iter_mut().zip(dims).rev() {
        *i = flat % d;
        flat /= d;
    }
    idx
}

fn ravel(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Distinct values of each element type, so a misplaced element shows.
trait Elem: Copy + PartialEq + std::fmt::Debug {
    fn of(i: usize) -> Self;
}
impl Elem for u8 {
    fn of(i: usize) -> u8 {
        (i.wrapping_mul(7) + 3) as u8
    }
}
impl Elem for i64 {
    fn of(i: usize) -> i64 {
        i as i64 * 1_000_003 - 17
    }
}
impl Elem for f32 {
    fn of(i: usize) -> f32 {
        i as f32 * 0.5 - 3.0
    }
}

fn values<T: Elem>(n: usize) -> Vec<T> {
    (0..n).map(T::of).collect()
}

/// Every output element of `outer` blocks of `out_dims` from `source`
/// (an index into one input block, or `None` for `fill`).
fn naive<T: Elem>(x: &[T], outer: usize, in_dims: &[usize], out_dims: &[usize], fill: T, source: impl Fn(&[usize]) -> Option<Vec<usize>>) -> Vec<T> {
    let (ib, ob): (usize, usize) = (in_dims.iter().product(), out_dims.iter().product());
    (0..outer * ob).map(|f| source(&unravel(f % ob, out_dims)).map_or(fill, |i| x[f / ob * ib + ravel(&i, in_dims)])).collect()
}

fn check_transpose<T: Elem>(outer: usize, dims: &[usize], perm: &[usize]) -> Result<(), TestCaseError> {
    let n = outer * dims.iter().product::<usize>();
    let x = values::<T>(n);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let want = naive(&x, outer, dims, &out_dims, T::of(0), |o| {
        let mut i = vec![0; dims.len()];
        for (k, &p) in perm.iter().enumerate() {
            i[p] = o[k];
        }
        Some(i)
    });
    let mut got = vec![T::of(12_345); n];
    transpose(&Transpose::new(dims, perm).unwrap(), &x, &mut got).unwrap();
    prop_assert_eq!(got, want, "{} x {:?} perm {:?}", outer, dims, perm);
    Ok(())
}

fn dims_and_perm(max_rank: usize, max_dim: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(0..=max_dim, 0..=max_rank).prop_flat_map(|dims| {
        let r = dims.len();
        (Just(dims), Just((0..r).collect::<Vec<_>>()).prop_shuffle())
    })
}

/// Two or three axes, some past every tile edge, at most 40 000 elements.
fn big_dims_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(prop_oneof![1usize..=4, 17usize..=70], 2..=3).prop_flat_map(|mut dims| {
        let others: usize = dims[..dims.len() - 1].iter().product();
        let last = dims.len() - 1;
        dims[last] = dims[last].min(40_000 / others).max(1);
        let r = dims.len();
        (Just(dims), Just((0..r).collect::<Vec<_>>()).prop_shuffle())
    })
}

/// A valid (start, step, len) for an axis of `d`: any start inside it, a
/// step of either sign, any length that stays inside.
fn axis_window(d: usize) -> impl Strategy<Value = (usize, isize, usize)> {
    (0..d.max(1), prop::sample::select(vec![-3isize, -2, -1, 1, 2, 3]), any::<prop::sample::Index>()).prop_map(move |(start, step, len)| {
        if d == 0 {
            return (0, step, 0);
        }
        let room = if step > 0 { (d - 1 - start) / step as usize } else { start / (-step) as usize };
        (start, step, len.index(room + 2))
    })
}

fn slice_case() -> impl Strategy<Value = (usize, Vec<usize>, Vec<(usize, isize, usize)>)> {
    (0usize..4, prop::collection::vec(0usize..6, 0..=4)).prop_flat_map(|(outer, dims)| {
        let windows: Vec<_> = dims.iter().map(|&d| axis_window(d)).collect();
        (Just(outer), Just(dims), windows)
    })
}

proptest! {
    #[test]
    fn transpose_matches_the_definition((dims, perm) in dims_and_perm(5, 4), outer in 0usize..4) {
        check_transpose::<u8>(outer, &dims, &perm)?;
        check_transpose::<i64>(outer, &dims, &perm)?;
        check_transpose::<f32>(outer, &dims, &perm)?;
    }

    /// Dims past every type's tile edge, with ragged tile edges.
    #[test]
    fn large_transposes_use_whole_and_partial_tiles((dims, perm) in big_dims_and_perm(), outer in 1usize..3) {
        check_transpose::<u8>(outer, &dims, &perm)?;
        check_transpose::<f32>(outer, &dims, &perm)?;
        check_transpose::<i64>(outer, &dims, &perm)?;
    }

    #[test]
    fn slice_matches_the_definition((outer, dims, windows) in slice_case()) {
        let (start, step, len): (Vec<usize>, Vec<isize>, Vec<usize>) =
            (windows.iter().map(|w| w.0).collect(), windows.iter().map(|w| w.1).collect(), windows.iter().map(|w| w.2).collect());
        let x = values::<i64>(outer * dims.iter().product::<usize>());
        let want = naive(&x, outer, &dims, &len, 0, |o| Some(o.iter().enumerate().map(|(a, &i)| (start[a] as isize + i as isize * step[a]) as usize).collect()));
        let mut got = vec![-1; want.len()];
        slice(&Slice::new(&dims, &start, &step, &len).unwrap(), &x, &mut got).unwrap();
        prop_assert_eq!(&got, &want);
        let bytes = values::<u8>(x.len());
        let mut got = vec![0u8; want.len()];
        slice(&Slice::new(&dims, &start, &step, &len).unwrap(), &bytes, &mut got).unwrap();
        prop_assert_eq!(got, naive(&bytes, outer, &dims, &len, 0, |o| Some(o.iter().enumerate().map(|(a, &i)| (start[a] as isize + i as isize * step[a]) as usize).collect())));
    }

    #[test]
    fn pad_matches_the_definition(outer in 0usize..4, axes in prop::collection::vec((0usize..5, -3i64..=3, -3i64..=3), 0..=4)) {
        let axes: Vec<_> = axes.into_iter().filter(|&(d, b, e)| d as i64 + b + e >= 0).collect();
        let dims: Vec<usize> = axes.iter().map(|a| a.0).collect();
        let (begins, ends): (Vec<i64>, Vec<i64>) = (axes.iter().map(|a| a.1).collect(), axes.iter().map(|a| a.2).collect());
        let out_dims: Vec<usize> = axes.iter().map(|&(d, b, e)| (d as i64 + b + e) as usize).collect();
        let x = values::<f32>(outer * dims.iter().product::<usize>());
        let want = naive(&x, outer, &dims, &out_dims, 7.25, |o| {
            o.iter().zip(&axes).map(|(&i, &(d, b, _))| usize::try_from(i as i64 - b).ok().filter(|&s| s < d)).collect()
        });
        let mut got = vec![f32::NAN; want.len()];
        pad(&Pad::new(&dims, &begins, &ends).unwrap(), 7.25, &x, &mut got).unwrap();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn concat_and_split_match_the_definition(outer in 0usize..5, rows in prop::collection::vec(0usize..7, 1..5)) {
        let total: usize = rows.iter().sum();
        let inputs: Vec<Vec<i64>> = rows.iter().enumerate().map(|(i, &r)| (0..outer * r).map(|k| (i * 1000 + k) as i64).collect()).collect();
        let mut want = Vec::new();
        for o in 0..outer {
            for (x, &r) in inputs.iter().zip(&rows) {
                want.extend_from_slice(&x[o * r..(o + 1) * r]);
            }
        }
        let mut joined = vec![-1; outer * total];
        let refs: Vec<&[i64]> = inputs.iter().map(Vec::as_slice).collect();
        concat(&rows, &refs, &mut joined).unwrap();
        prop_assert_eq!(&joined, &want);
        for (piece, x) in inputs.iter().enumerate() {
            let mut back = vec![-1; x.len()];
            split(&rows, piece, &joined, &mut back).unwrap();
            prop_assert_eq!(&back, x);
        }
    }

    #[test]
    fn gather_matches_the_definition(outer in 0usize..4, axis in 1usize..6, inner in 0usize..4, raw in prop::collection::vec(any::<prop::sample::Index>(), 0..6), negate in any::<bool>()) {
        let indices: Vec<i64> = raw.iter().map(|i| { let j = i.index(axis) as i64; if negate && j % 2 == 1 { j - axis as i64 } else { j } }).collect();
        let x = values::<f32>(outer * axis * inner);
        let k = indices.len();
        let want = naive(&x, outer, &[axis, inner], &[k, inner], 0.0, |o| Some(vec![indices[o[0]].rem_euclid(axis as i64) as usize, o[1]]));
        let mut got = vec![f32::NAN; want.len()];
        gather(&Gather::new(axis, inner, &indices).unwrap(), &x, &mut got).unwrap();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn merged_axes_copy_whole_runs() {
    // Channel shuffle [2, 3, 4] → [3, 2, 4]: runs of 4 stay whole.
    let t = Transpose::new(&[2, 3, 4], &[1, 0, 2]).unwrap();
    assert_eq!((t.walk.dims.clone(), t.walk.src.clone(), t.walk.dst.clone()), (vec![3, 2, 4], vec![4, 12, 1], vec![8, 4, 1]));
    // Size-1 axes vanish and the identity is one run.
    let id = Transpose::new(&[5, 1, 6], &[1, 0, 2]).unwrap();
    assert_eq!((id.walk.dims.clone(), id.walk.src.clone()), (vec![30], vec![1]));
    // A slice of whole rows is one run per block.
    let rows = Slice::new(&[6, 5], &[2, 0], &[1, 1], &[3, 5]).unwrap();
    assert_eq!((rows.walk.dims.clone(), rows.walk.src_start), (vec![15], 10));
}

#[test]
fn bad_calls_are_errors() {
    let t = Transpose::new(&[2, 3], &[1, 0]).unwrap();
    assert!(transpose(&t, &[0f32; 6], &mut [0f32; 5]).is_err());
    assert!(transpose(&t, &[0f32; 7], &mut [0f32; 7]).is_err());
    assert!(Transpose::new(&[2, 3], &[0, 0]).is_err());
    assert!(Transpose::new(&[2, 3], &[0, 2]).is_err());
    assert!(Transpose::new(&[2, 3], &[0]).is_err());
    // Windows that leave their axis.
    assert!(Slice::new(&[4], &[2], &[1], &[3]).is_err());
    assert!(Slice::new(&[4], &[1], &[-1], &[3]).is_err());
    assert!(Slice::new(&[4], &[4], &[1], &[1]).is_err());
    assert!(Slice::new(&[4], &[9], &[1], &[0]).is_ok());
    let s = Slice::new(&[4], &[1], &[2], &[2]).unwrap();
    assert!(slice(&s, &[0u8; 8], &mut [0u8; 3]).is_err());
    assert!(Pad::new(&[2], &[-2], &[-1]).is_err());
    assert!(Pad::new(&[2, 2], &[1], &[1]).is_err());
    let p = Pad::new(&[2], &[1], &[1]).unwrap();
    assert!(pad(&p, 0i64, &[1, 2], &mut [0; 3]).is_err());
    assert!(concat(&[2, 1], &[&[0i64; 2][..], &[0i64; 2][..]], &mut [0; 6]).is_err());
    assert!(concat(&[2, 1], &[&[0i64; 2][..]], &mut [0; 3]).is_err());
    assert!(split(&[2, 1], 2, &[0i64; 3], &mut [0; 1]).is_err());
    assert!(split(&[2, 1], 1, &[0i64; 4], &mut [0; 1]).is_err());
    assert!(Gather::new(3, 1, &[3]).is_err());
    assert!(Gather::new(3, 1, &[-4]).is_err());
    let g = Gather::new(3, 2, &[0, -1]).unwrap();
    assert!(gather(&g, &[0f32; 6], &mut [0f32; 3]).is_err());
    assert!(Transpose::new(&[usize::MAX, 2], &[1, 0]).is_err());
}

#[test]
fn empty_operands() {
    let p = Pad::new(&[0, 2], &[1, 0], &[0, 0]).unwrap();
    let mut out = [0i64; 6];
    pad(&p, 9, &[], &mut out[..2]).unwrap();
    assert_eq!(out[..2], [9, 9]);
    pad(&p, 9, &[], &mut out[..6]).unwrap();
    assert_eq!(out, [9; 6]);
    concat::<f32>(&[0, 0], &[&[], &[]], &mut []).unwrap();
    assert!(concat::<f32>(&[0, 0], &[&[], &[]], &mut [1.0]).is_err());
    let t = Transpose::new(&[0, 3], &[1, 0]).unwrap();
    transpose::<u8>(&t, &[], &mut []).unwrap();
    assert!(transpose::<u8>(&t, &[], &mut [1]).is_err());
    let scalar = Transpose::new(&[], &[]).unwrap();
    let mut one = [0u8; 3];
    transpose(&scalar, &[1, 2, 3], &mut one).unwrap();
    assert_eq!(one, [1, 2, 3]);
}
