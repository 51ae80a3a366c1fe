//! Small helpers shared by the interpreter's kernels: axis normalisation and
//! numpy broadcasting of shapes and indices.

/// Normalises a possibly negative axis against `rank`.
pub fn axis(axis: i64, rank: usize) -> Result<usize, String> {
    crate::passes::infer::normalize_axis(axis, rank).ok_or_else(|| format!("axis {axis} is out of range for rank {rank}"))
}

/// Broadcast result shape of several concrete shapes.
pub fn broadcast(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} cannot broadcast"));
            }
        }
    }
    Ok(out)
}

/// A view of `a` broadcast to `shape` under numpy rules.
pub fn broadcast_to<'a, T>(a: &'a ndarray::ArrayD<T>, shape: &[usize]) -> Result<ndarray::ArrayViewD<'a, T>, String> {
    a.broadcast(ndarray::IxDyn(shape)).ok_or_else(|| format!("shape {:?} cannot broadcast to {shape:?}", a.shape()))
}

/// `f` applied elementwise to two arrays broadcast together (numpy rules).
pub fn zip_broadcast<A: Copy, B: Copy, R>(
    a: &ndarray::ArrayD<A>,
    b: &ndarray::ArrayD<B>,
    f: impl Fn(A, B) -> R,
) -> Result<ndarray::ArrayD<R>, String> {
    try_zip_broadcast(a, b, |x, y| Ok(f(x, y)))
}

/// Like [`zip_broadcast`] for an `f` that can fail; the first failure wins.
pub fn try_zip_broadcast<A: Copy, B: Copy, R>(
    a: &ndarray::ArrayD<A>,
    b: &ndarray::ArrayD<B>,
    f: impl Fn(A, B) -> Result<R, String>,
) -> Result<ndarray::ArrayD<R>, String> {
    let shape = broadcast(&[a.shape(), b.shape()])?;
    let (av, bv) = (broadcast_to(a, &shape)?, broadcast_to(b, &shape)?);
    // Both views iterate in logical (row-major) order over the same shape.
    let data = av.iter().zip(bv.iter()).map(|(&x, &y)| f(x, y)).collect::<Result<Vec<R>, String>>()?;
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), data).map_err(|e| e.to_string())
}
