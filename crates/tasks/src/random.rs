//! Random problems of any shape (uniform inputs and targets, uniform labels): the family the
//! gradient checks and benchmarks use, since it exercises every width and both losses.

use metasched_engine::rng::CounterRng;
use metasched_engine::{Config, LossKind, Real, Targets, TaskBatch};

/// `b` tasks with `k` support and `q` query points shaped for `config`: inputs and mse
/// targets uniform in ±1.5, cross-entropy labels uniform over the classes.
pub fn random_batch<T: Real>(config: &Config, b: usize, k: usize, q: usize, seed: u64) -> TaskBatch<T> {
    let (d_in, d_out) = (config.d_in(), config.d_out());
    let mut rng = CounterRng::new(seed, &[7]);
    let mut vals = |n: usize| (0..n).map(|_| T::of(rng.uniform_in(-1.5, 1.5))).collect::<Vec<T>>();
    let support_x = vals(b * k * d_in);
    let query_x = vals(b * q * d_in);
    let (support_y, query_y) = match config.model.loss {
        LossKind::Mse => (Targets::Values(vals(b * k * d_out)), Targets::Values(vals(b * q * d_out))),
        LossKind::CrossEntropy => {
            let mut r = CounterRng::new(seed, &[8]);
            let mut labels = |n: usize| (0..n).map(|_| r.below(d_out as u64) as u32).collect::<Vec<u32>>();
            (Targets::Labels(labels(b * k)), Targets::Labels(labels(b * q)))
        }
    };
    TaskBatch { b, k, q, d_in, d_out, support_x, support_y, query_x, query_y }
}
