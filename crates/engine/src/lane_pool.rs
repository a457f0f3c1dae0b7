//! Thread-local reuse of the task groups' buffers (issue 13): a group's trace (parameters,
//! gradients and caches of every inner step, about 2 MB for the default learner) is taken
//! from and given back to a per-thread free list, so the hot loop neither maps fresh pages
//! nor touches cold memory at every meta-step.

use std::cell::RefCell;

use crate::lane_linalg::Lanes;

/// Buffers kept per thread at most (a default group uses about 40).
const MAX_FREE: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<Vec<Lanes>>> = const { RefCell::new(Vec::new()) };
}

/// A zeroed buffer of `len` values: the smallest free one that holds `len`, else a new one.
pub fn take(len: usize) -> Vec<Lanes> {
    let mut b = take_dirty(len);
    b.fill(Lanes::default());
    b
}

/// A buffer of `len` values holding whatever its last user left (finite values or zeros),
/// for callers that write every value before reading it: zeroing the trace of a group
/// (about 2 MB per meta-step) cost more than a sixth of the step.
pub fn take_dirty(len: usize) -> Vec<Lanes> {
    let reused = FREE.with_borrow_mut(|free| {
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        best.map(|i| free.swap_remove(i))
    });
    match reused {
        Some(mut b) => {
            if b.len() >= len {
                b.truncate(len);
            } else {
                b.resize(len, Lanes::default());
            }
            b
        }
        None => vec![Lanes::default(); len],
    }
}

/// Returns a buffer to this thread's free list.
pub fn give(buf: Vec<Lanes>) {
    if buf.capacity() == 0 {
        return;
    }
    FREE.with_borrow_mut(|free| {
        if free.len() < MAX_FREE {
            free.push(buf);
        }
    });
}
