//! Meta-steps per second of `meta-coord train`'s default configuration (sinusoid, 1-40-40-1
//! relu, K = Q = 10, T = 5, LSTM H = 20, B = 25, second order) against the number of
//! in-process workers: a full step is the workers' meta-gradients, the order-independent
//! reduction, clipping and the Adam update, exactly as the training loop does it.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use metasched_coord::train::TrainConfig;
use metasched_coord::train::local_pool::LocalPool;
use metasched_coord::train::pool::WorkerPool;
use metasched_coord::train::state::TrainState;
use metasched_engine::{UpdateMask, clip_grad_norm};

fn train_step(c: &mut Criterion) {
    let cfg = TrainConfig::default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut group = c.benchmark_group("train_step_default");
    let mut layouts = vec![(1, 1), (1, cores), (cores, 1)];
    layouts.dedup();
    for (workers, threads) in layouts {
        let mut state = TrainState::new(cfg.clone()).expect("state");
        let mut pool =
            LocalPool::start(&state.model, &cfg.task_spec().expect("spec"), workers, threads).expect("pool");
        let mut step = 0u64;
        group.bench_function(format!("workers={workers}/threads={threads}"), |b| {
            b.iter(|| {
                let params = Arc::new(state.params.clone());
                let out = pool.meta_step(&params, step, step, cfg.trajectory.outer.meta_batch).expect("step");
                let mut grad = out
                    .sum
                    .to_params(&state.params, 1.0 / cfg.trajectory.outer.meta_batch as f64)
                    .expect("finite");
                let mask = UpdateMask { theta: true };
                clip_grad_norm(&mut grad, cfg.trajectory.outer.clip_norm, mask);
                state.adam.step(&mut state.params, &grad, mask);
                step += 1;
            })
        });
    }
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
