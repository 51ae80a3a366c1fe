//! Per-thread, grow-only scratch buffers for kernels that need temporary
//! space (softmax's row statistics, pooling's window spans…), so that a
//! warmed-up inference allocates nothing.
//!
//! A kernel declares a `thread_local!` `RefCell<Vec<T>>` and borrows it with
//! [`Reused::new`]; the buffer goes back on drop. Taking the vector out of
//! the cell (rather than holding a `RefCell` borrow) keeps re-entrant use
//! correct: a nested user just gets a fresh vector.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A buffer of `len` elements lent by a thread-local pool.
pub(crate) struct Reused<T: 'static> {
    home: &'static LocalKey<RefCell<Vec<T>>>,
    buf: Vec<T>,
}

impl<T: Clone> Reused<T> {
    /// The thread's buffer from `home`, resized to `len` copies of `fill`.
    pub(crate) fn new(home: &'static LocalKey<RefCell<Vec<T>>>, len: usize, fill: T) -> Self {
        let mut buf = home.try_with(|cell| std::mem::take(&mut *cell.borrow_mut())).unwrap_or_default();
        buf.clear();
        buf.resize(len, fill);
        Reused { home, buf }
    }
}

impl<T> std::ops::Deref for Reused<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf
    }
}

impl<T> std::ops::DerefMut for Reused<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf
    }
}

impl<T> Drop for Reused<T> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // During thread teardown the pool may be gone; the buffer is then just freed.
        let _ = self.home.try_with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.capacity() < buf.capacity() {
                *slot = buf;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static POOL: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }

    #[test]
    fn buffers_are_reused_and_nesting_is_safe() {
        let first_ptr = {
            let mut a = Reused::new(&POOL, 100, 7u32);
            assert!(a.iter().all(|&v| v == 7));
            a[3] = 1;
            // A nested user gets its own (fresh) buffer.
            let b = Reused::new(&POOL, 10, 0u32);
            assert_eq!(b.len(), 10);
            a.as_ptr()
        };
        let again = Reused::new(&POOL, 50, 0u32);
        assert_eq!(again.as_ptr(), first_ptr, "the larger buffer came back");
        assert!(again.iter().all(|&v| v == 0), "refilled");
    }
}
