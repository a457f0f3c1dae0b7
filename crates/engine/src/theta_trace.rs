//! The parameters of every inner step of one task, `theta_0 .. theta_T`, kept for its
//! reverse pass (spec §4: the Hessian-vector product of step `t` is taken at `theta_t`).

use crate::real::Real;
use crate::task_pool::Aligned;

/// `theta_t` for `t = 0..=T`: rows of `p` values on 64-byte lines, `stride` apart.
/// `theta_0` is either borrowed (a 64-byte aligned copy that the engine makes once for all
/// the tasks of a batch: the wide learner's 267 KB were copied once per task, 2% of a
/// meta-step) or copied into the first row. The rows come from this thread's free list
/// ([`crate::task_pool`]) and are written before they are read.
pub(crate) struct ThetaTrace<'a, T> {
    /// `theta_0` when borrowed (empty otherwise).
    first: &'a [T],
    /// Whether `theta_0` is `first` rather than the first row of `rows`.
    borrowed: bool,
    rows: Aligned<T>,
    stride: usize,
    p: usize,
}

impl<'a, T: Real> ThetaTrace<'a, T> {
    /// A trace for `steps` steps from `theta0`, borrowed when `borrow` (the engine's aligned
    /// copy) or copied.
    pub(crate) fn new(theta0: &'a [T], borrow: bool, steps: usize) -> Self {
        let p = theta0.len();
        let stride = row_stride::<T>(p);
        let own = if borrow { steps } else { steps + 1 };
        let mut rows = Aligned::take_dirty(own * stride);
        if !borrow {
            rows[..p].copy_from_slice(theta0);
        }
        Self { first: if borrow { theta0 } else { &[] }, borrowed: borrow, rows, stride, p }
    }

    /// Where row `t` starts in `rows` (`None`: `theta_0` is borrowed).
    fn at(&self, t: usize) -> Option<usize> {
        match (self.borrowed, t) {
            (true, 0) => None,
            (true, t) => Some((t - 1) * self.stride),
            (false, t) => Some(t * self.stride),
        }
    }

    /// `theta_t`.
    pub(crate) fn row(&self, t: usize) -> &[T] {
        match self.at(t) {
            None => self.first,
            Some(at) => &self.rows[at..at + self.p],
        }
    }

    /// `theta_t` and `theta_{t+1}` (to be written by step `t`).
    pub(crate) fn step(&mut self, t: usize) -> (&[T], &mut [T]) {
        let p = self.p;
        let next = self.at(t + 1).unwrap_or(0);
        match self.at(t) {
            None => (self.first, &mut self.rows[next..next + p]),
            Some(at) => {
                let (lo, hi) = self.rows.split_at_mut(next);
                (&lo[at..at + p], &mut hi[..p])
            }
        }
    }

    /// Gives the rows back to this thread's free list.
    pub(crate) fn give(self) {
        self.rows.give();
    }
}

/// Distance between consecutive rows: `p` rounded up to whole 64-byte lines, so that every
/// step's parameters (and the weight matrices within, at offsets that are multiples of 16
/// for the wide learner) start on a line as the first does.
pub(crate) fn row_stride<T>(p: usize) -> usize {
    p.next_multiple_of((64 / std::mem::size_of::<T>().max(1)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Borrowed or copied, every row reads back what was written, and `theta_0` is the input.
    #[test]
    fn rows_read_back_borrowed_or_copied() {
        let theta0: Vec<f64> = (0..37).map(|i| i as f64).collect();
        for borrow in [false, true] {
            let mut tr = ThetaTrace::new(&theta0, borrow, 3);
            for t in 0..3 {
                let (cur, next) = tr.step(t);
                for (n, &c) in next.iter_mut().zip(cur) {
                    *n = c + 100.0;
                }
            }
            for t in 0..=3 {
                let want: Vec<f64> = theta0.iter().map(|x| x + 100.0 * t as f64).collect();
                assert_eq!(tr.row(t), &want[..], "row {t}, borrowed {borrow}");
            }
            tr.give();
        }
    }
}
