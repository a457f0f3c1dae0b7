//! Sinusoid runs (spec §7.1): each run regresses its own random sinusoid
//! `y = A·sin(x − φ)`, `A ~ U[0.1, 5]`, `φ ~ U[0, π]`, on `x ~ U[−5, 5]`, the distribution of
//! the few-shot sinusoid family, with a training split and a held-out split of fresh points.

use metasched_engine::Targets;
use metasched_engine::horizon::Batch;
use metasched_engine::rng::CounterRng;

use crate::sinusoid::Sinusoid;
use crate::train_mlp::dataset::Sets;
use crate::train_mlp::stream::CONTENT_STREAM;

/// The function and sets of the run with seed `run_seed`: from the stream
/// `(run_seed, [CONTENT_STREAM])`, `A = uniform_in(0.1, 5)`, `φ = uniform_in(0, π)`, then
/// `train_points` inputs `x = uniform_in(−5, 5)` of the training split, then `val_points` of
/// the held-out split; each `y = A·sin(x − φ)` computed in f64, both stored as f32.
pub(crate) fn sinusoid_run(run_seed: u64, train_points: usize, val_points: usize) -> (f64, f64, Sets<f32>) {
    let s = Sinusoid::default();
    let mut rng = CounterRng::new(run_seed, &[CONTENT_STREAM]);
    let a = rng.uniform_in(s.amplitude.0, s.amplitude.1);
    let phase = rng.uniform_in(s.phase.0, s.phase.1);
    let mut set = |n: usize| {
        let mut x = Vec::with_capacity(n);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let v = rng.uniform_in(s.x.0, s.x.1);
            x.push(v as f32);
            y.push((a * (v - phase).sin()) as f32);
        }
        Batch { n, x, y: Targets::Values(y) }
    };
    let train = set(train_points);
    let val = set(val_points);
    (a, phase, Sets { train, val })
}
