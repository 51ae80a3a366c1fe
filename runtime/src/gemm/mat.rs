//! Strided matrix views over `f32` slices.
//!
//! A view is `rows × cols` elements; element `(i, j)` lives at
//! `data[i * rs + j * cs]`. Construction checks once that the largest offset
//! is inside the slice, which is the bound every kernel below relies on.

/// A read-only strided view of an `f32` matrix.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// A mutable strided view of an `f32` matrix.
///
/// It holds a pointer rather than a slice so that views of disjoint elements
/// whose spans interleave (column blocks of one row-major matrix, written by
/// different threads) never overlap as Rust references.
#[derive(Debug)]
pub struct MatMut<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _data: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a `MatMut` is an exclusive borrow of its elements, like `&mut [f32]`.
unsafe impl Send for MatMut<'_> {}

/// Number of elements a `rows × cols` view with strides `rs`, `cs` spans
/// (the largest offset plus one; 0 for an empty view).
fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(rs)?.checked_add((cols - 1).checked_mul(cs)?)?.checked_add(1)
}

fn check(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    match span(rows, cols, rs, cs) {
        Some(s) if s <= len => {}
        _ => panic!("matrix view {rows}x{cols} with strides ({rs}, {cs}) does not fit in a slice of {len} elements"),
    }
}

impl<'a> MatRef<'a> {
    /// A `rows × cols` view with row stride `rs` and column stride `cs`.
    ///
    /// # Panics
    /// If element `(rows-1, cols-1)` lies outside `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check(data.len(), rows, cols, rs, cs);
        MatRef { data, rows, cols, rs, cs }
    }

    /// A dense row-major view (`rs = cols`, `cs = 1`).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major view (`rs = 1`, `cs = rows`).
    pub fn col_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, 1, rows)
    }

    /// The transposed view (no data moves).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn row_stride(&self) -> usize {
        self.rs
    }
    pub fn col_stride(&self) -> usize {
        self.cs
    }
    /// The underlying slice (element `(0, 0)` is its first element).
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `(i, j)` is out of range.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "index ({i}, {j}) out of {}x{}", self.rows, self.cols);
        self.data[i * self.rs + j * self.cs]
    }

    pub(crate) fn ptr(&self) -> *const f32 {
        self.data.as_ptr()
    }
}

impl<'a> MatMut<'a> {
    /// A mutable `rows × cols` view with row stride `rs` and column stride `cs`.
    ///
    /// Strides that make two elements share a slot are allowed (the result is
    /// then whichever write lands last) but make no sense for an output.
    ///
    /// # Panics
    /// If element `(rows-1, cols-1)` lies outside `data`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        check(data.len(), rows, cols, rs, cs);
        MatMut { ptr: data.as_mut_ptr(), rows, cols, rs, cs, _data: std::marker::PhantomData }
    }

    /// A view of `rows × cols` elements at `ptr[i * rs + j * cs]`.
    ///
    /// # Safety
    /// Every element of the view must be valid for reads and writes for `'a`
    /// and accessed by nothing else while the view lives (other views may
    /// cover other elements of the same allocation, interleaved or not).
    pub unsafe fn from_raw_parts(ptr: *mut f32, rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        MatMut { ptr, rows, cols, rs, cs, _data: std::marker::PhantomData }
    }

    /// A dense row-major view (`rs = cols`, `cs = 1`).
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major view (`rs = 1`, `cs = rows`).
    pub fn col_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, 1, rows)
    }

    /// The transposed view (no data moves).
    pub fn t(self) -> Self {
        MatMut { ptr: self.ptr, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, _data: self._data }
    }

    /// Reborrows as a shorter-lived mutable view.
    pub fn rb_mut(&mut self) -> MatMut<'_> {
        MatMut { ptr: self.ptr, rows: self.rows, cols: self.cols, rs: self.rs, cs: self.cs, _data: std::marker::PhantomData }
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// If `(i, j)` is out of range.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "index ({i}, {j}) out of {}x{}", self.rows, self.cols);
        // SAFETY: (i, j) is inside the view, whose elements are valid (construction).
        unsafe { *self.ptr.add(i * self.rs + j * self.cs) }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn row_stride(&self) -> usize {
        self.rs
    }
    pub fn col_stride(&self) -> usize {
        self.cs
    }

    pub(crate) fn ptr_mut(&mut self) -> *mut f32 {
        self.ptr
    }
}
