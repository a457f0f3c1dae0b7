//! The checks' inputs: counter-based random streams, so every run (and every device) sees the
//! same data.

use metasched_engine::rng::CounterRng;

/// `n` normal samples times `scale`, from stream `(seed, ids)`.
pub fn randn(seed: u64, ids: &[u64], n: usize, scale: f32) -> Vec<f32> {
    let mut r = CounterRng::new(seed, ids);
    (0..n).map(|_| r.normal() as f32 * scale).collect()
}

/// `n` uniform samples in `[lo, hi)`.
pub fn uniform(seed: u64, ids: &[u64], n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = CounterRng::new(seed, ids);
    (0..n).map(|_| r.uniform_in(f64::from(lo), f64::from(hi)) as f32).collect()
}

/// `n` labels in `0..classes`.
pub fn labels(seed: u64, ids: &[u64], n: usize, classes: usize) -> Vec<u32> {
    let mut r = CounterRng::new(seed, ids);
    (0..n).map(|_| r.below(classes as u64) as u32).collect()
}
