//! MAML's sinusoid regression family: `y = A·sin(x − φ)` with `A ~ U[0.1, 5]`,
//! `φ ~ U[0, π]`, `x ~ U[−5, 5]`.
//!
//! Task `index` of meta-step `step` is drawn from the random stream `(seed, [step, index])` for
//! [`Split::Train`] and `(seed, [TEST_STREAM, step, index])` for [`Split::Test`], so evaluation
//! tasks are never training tasks.

use metasched_engine::rng::CounterRng;
use metasched_engine::{Targets, TaskBatch};

use crate::split::Split;

/// First id of the random-stream path `[TEST_STREAM, step, index]` of every [`Split::Test`]
/// sinusoid task, a path no train task `[step, index]` uses.
pub const TEST_STREAM: u64 = u64::MAX - 1;

/// Parameters of the family (MAML's defaults from [`Sinusoid::default`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sinusoid {
    /// Amplitude range.
    pub amplitude: (f64, f64),
    /// Phase range.
    pub phase: (f64, f64),
    /// Input range.
    pub x: (f64, f64),
}

impl Default for Sinusoid {
    fn default() -> Self {
        Self { amplitude: (0.1, 5.0), phase: (0.0, std::f64::consts::PI), x: (-5.0, 5.0) }
    }
}

impl Sinusoid {
    /// Task `index` of step `step`: `k` support and `q` query points, written into the
    /// slices of a batch (`[k]`, `[q]` for x and y each, since `d_0 = d_L = 1`).
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        split: Split,
        seed: u64,
        step: u64,
        index: u64,
        xs: &mut [f32],
        ys: &mut [f32],
        xq: &mut [f32],
        yq: &mut [f32],
    ) {
        let mut rng = match split {
            Split::Train => CounterRng::new(seed, &[step, index]),
            Split::Test => CounterRng::new(seed, &[TEST_STREAM, step, index]),
        };
        let a = rng.uniform_in(self.amplitude.0, self.amplitude.1);
        let phase = rng.uniform_in(self.phase.0, self.phase.1);
        for (x, y) in xs.iter_mut().zip(ys.iter_mut()).chain(xq.iter_mut().zip(yq.iter_mut())) {
            let v = rng.uniform_in(self.x.0, self.x.1);
            *x = v as f32;
            *y = (a * (v - phase).sin()) as f32;
        }
    }

    /// Training tasks `first .. first + count` of meta-step `step`, as a batch: the same as
    /// [`Sinusoid::sample_split`] with [`Split::Train`].
    pub fn sample(
        &self,
        seed: u64,
        step: u64,
        first: u64,
        count: usize,
        k: usize,
        q: usize,
    ) -> TaskBatch<f32> {
        self.sample_split(Split::Train, seed, step, first, count, k, q)
    }

    /// Tasks `first .. first + count` of meta-step `step` of split `split`, as a batch. Each
    /// task is a pure function of `(seed, split, step, task index)`.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_split(
        &self,
        split: Split,
        seed: u64,
        step: u64,
        first: u64,
        count: usize,
        k: usize,
        q: usize,
    ) -> TaskBatch<f32> {
        let mut sx = vec![0.0; count * k];
        let mut sy = vec![0.0; count * k];
        let mut qx = vec![0.0; count * q];
        let mut qy = vec![0.0; count * q];
        for i in 0..count {
            self.fill(
                split,
                seed,
                step,
                first.wrapping_add(i as u64),
                &mut sx[i * k..(i + 1) * k],
                &mut sy[i * k..(i + 1) * k],
                &mut qx[i * q..(i + 1) * q],
                &mut qy[i * q..(i + 1) * q],
            );
        }
        TaskBatch {
            b: count,
            k,
            q,
            d_in: 1,
            d_out: 1,
            support_x: sx,
            support_y: Targets::Values(sy),
            query_x: qx,
            query_y: Targets::Values(qy),
        }
    }
}

/// `count` default-sinusoid tasks of step `step` starting at index 0.
pub fn sample_sinusoid(seed: u64, step: u64, count: usize, k: usize, q: usize) -> TaskBatch<f32> {
    Sinusoid::default().sample(seed, step, 0, count, k, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_depends_only_on_its_coordinates() {
        let s = Sinusoid::default();
        let whole = s.sample(5, 3, 0, 4, 10, 7);
        let tail = s.sample(5, 3, 2, 2, 10, 7);
        assert_eq!(&whole.support_x[20..], &tail.support_x[..]);
        assert_eq!(&whole.query_x[14..], &tail.query_x[..]);
        let other_step = s.sample(5, 4, 0, 4, 10, 7);
        assert_ne!(whole.support_x, other_step.support_x);
    }

    #[test]
    fn targets_are_sinusoids_within_the_amplitude_range() {
        let b = sample_sinusoid(1, 0, 50, 10, 10);
        let Targets::Values(y) = &b.support_y else { panic!("mse targets") };
        assert!(y.iter().all(|v| v.abs() <= 5.0));
        assert!(b.support_x.iter().all(|x| (-5.0..5.0).contains(x)));
    }

    #[test]
    fn train_split_is_the_plain_sample() {
        let s = Sinusoid::default();
        assert_eq!(s.sample(5, 3, 1, 3, 10, 7), s.sample_split(Split::Train, 5, 3, 1, 3, 10, 7));
        // Pinned values: the train stream is `(seed, [step, index])` exactly.
        let mut rng = CounterRng::new(5, &[3, 1]);
        let a = rng.uniform_in(0.1, 5.0);
        let phase = rng.uniform_in(0.0, std::f64::consts::PI);
        let x = rng.uniform_in(-5.0, 5.0);
        let b = s.sample(5, 3, 1, 1, 10, 7);
        assert_eq!(b.support_x[0], x as f32);
        let Targets::Values(y) = &b.support_y else { panic!("mse targets") };
        assert_eq!(y[0], (a * (x - phase).sin()) as f32);
    }

    #[test]
    fn test_tasks_differ_from_train_tasks_and_are_reproducible() {
        let s = Sinusoid::default();
        let train = s.sample_split(Split::Train, 5, 3, 0, 4, 10, 7);
        let test = s.sample_split(Split::Test, 5, 3, 0, 4, 10, 7);
        assert_ne!(train.support_x, test.support_x);
        assert_eq!(test, s.sample_split(Split::Test, 5, 3, 0, 4, 10, 7));
        let tail = s.sample_split(Split::Test, 5, 3, 2, 2, 10, 7);
        assert_eq!(&test.support_x[20..], &tail.support_x[..]);
        assert_eq!(&test.query_x[14..], &tail.query_x[..]);
    }
}
