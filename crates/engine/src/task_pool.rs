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
    }
}
