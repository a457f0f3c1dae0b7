//! Thread-local reuse of the one-task path's buffers (issue 13), for any float type: a task's
//! trace (parameters and gradients of every inner step, 1.6 + 1.3 MB for the wide learner),
//! its adjoints and its caches are taken from and given back to a per-thread free list, so
//! that each task neither maps fresh pages (the allocator hands blocks this large to `mmap`:
//! page faults were a fifth of a wide meta-step once nothing else kept its threshold up) nor
//! zeroes memory that is written before it is read.
//!
//! Like [`crate::lane_pool`] for task groups; buffers of any [`Real`] type share one list and
//! are told apart by their type. Reuse never changes a result: a buffer from
//! [`take_dirty`] is only handed to code that writes every value before reading it.

use std::any::Any;
use std::cell::RefCell;

use crate::real::Real;

/// Buffers kept per thread at most (a wide task uses about 60).
const MAX_FREE: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// A zeroed buffer of `len` values: the smallest free one that holds `len`, else a new one.
pub fn take<T: Real>(len: usize) -> Vec<T> {
    let mut b = take_dirty(len);
    b.fill(T::zero());
    b
}

/// A buffer of `len` values holding whatever its last user left, for callers that write
/// every value before reading it.
pub fn take_dirty<T: Real>(len: usize) -> Vec<T> {
    let reused = FREE.with_borrow_mut(|free| {
        let best = free
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.downcast_ref::<Vec<T>>().map(|v| (i, v.capacity())))
            .filter(|&(_, cap)| cap >= len)
            .min_by_key(|&(_, cap)| cap)
            .map(|(i, _)| i);
        best.map(|i| free.swap_remove(i))
    });
    match reused.and_then(|b| b.downcast::<Vec<T>>().ok()) {
        Some(b) => {
            let mut b = *b;
            if b.len() >= len {
                b.truncate(len);
            } else {
                b.resize(len, T::zero());
            }
            b
        }
        None => vec![T::zero(); len],
    }
}

/// Returns a buffer to this thread's free list.
pub fn give<T: Real>(buf: Vec<T>) {
    if buf.capacity() == 0 {
        return;
    }
    FREE.with_borrow_mut(|free| {
        if free.len() < MAX_FREE {
            free.push(Box::new(buf));
        }
    });
}

/// Values of `T` in 64 bytes: what an [`Aligned`] buffer allocates beyond its length.
fn align_slack<T>() -> usize {
    (64 / std::mem::size_of::<T>().max(1)).max(1)
}

/// A buffer whose first value lies on a 64-byte boundary (a cache line): the AVX-512
/// kernels' whole-vector loads of its rows then never straddle two lines (measured on the
/// wide learner's forward product, 10×256×256: 98 against 75 GFLOP/s). Alignment only
/// changes speed, never a result: the kernels assign values to lanes by index.
pub struct Aligned<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Real> Aligned<T> {
    fn within(mut buf: Vec<T>, len: usize) -> Self {
        let slack = align_slack::<T>();
        if buf.len() < len + slack {
            buf.resize(len + slack, T::zero());
        }
        let off = buf.as_ptr().align_offset(64);
        let off = if off <= slack { off } else { 0 };
        Self { buf, off, len }
    }

    /// A new zeroed buffer of `len` values.
    pub fn zeroed(len: usize) -> Self {
        Self::within(vec![T::zero(); len + align_slack::<T>()], len)
    }

    /// [`take_dirty`], aligned.
    pub fn take_dirty(len: usize) -> Self {
        Self::within(take_dirty(len + align_slack::<T>()), len)
    }

    /// [`take`], aligned.
    pub fn take(len: usize) -> Self {
        let mut b = Self::take_dirty(len);
        b.fill(T::zero());
        b
    }

    /// Returns the buffer to this thread's free list ([`give`]).
    pub fn give(self) {
        give(self.buf);
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl<'a, T> IntoIterator for &'a Aligned<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut Aligned<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl<T: Clone> Clone for Aligned<T> {
    fn clone(&self) -> Self {
        let slack = align_slack::<T>();
        let mut buf: Vec<T> = Vec::with_capacity(self.len + slack);
        let off = buf.as_ptr().align_offset(64);
        let off = if off <= slack { off } else { 0 };
        // Any value fills the slack (never read); `buf` is never empty (see `within`).
        let fill = self.buf[0].clone();
        buf.resize(off, fill.clone());
        buf.extend_from_slice(self);
        buf.resize(self.len + slack, fill);
        Self { buf, off, len: self.len }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.buf[self.off..self.off + self.len]).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_by_type_and_size() {
        let a: Vec<f32> = take(1000);
        let pa = a.as_ptr();
        give(a);
        let b: Vec<f64> = take(10);
        assert!(b.iter().all(|&x| x == 0.0));
        let mut c: Vec<f32> = take_dirty(500);
        assert_eq!(c.as_ptr(), pa, "the f32 buffer is reused");
        assert_eq!(c.len(), 500);
        c.fill(3.0);
        give(c);
        let d: Vec<f32> = take(800);
        assert_eq!(d.len(), 800);
        assert!(d.iter().all(|&x| x == 0.0), "take zeroes");
        give(d);
        give(b);
        for len in [1, 100, 10_000] {
            let mut a = Aligned::<f32>::take(len);
            assert_eq!(a.len(), len);
            assert_eq!(a.as_ptr() as usize % 64, 0);
            a[len - 1] = 2.0;
            assert_eq!(a.clone()[len - 1], 2.0);
            a.give();
        }
    }
}
