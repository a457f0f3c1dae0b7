//! One full meta-step (exact second-order meta-gradient of B = 25 tasks, global-norm clip 10,
//! Adam lr 1e-3) of the CPU engine, timed the same way as the JAX peer in `benches/peer/`:
//! a fixed pre-sampled task batch, a few warm-up steps, then the median of `--steps` timed
//! steps. A plain binary (no criterion) so that `benches/peer/compare.sh` can interleave it
//! with the peer; it prints one line `peer_step config=NAME threads=N median_ms=X ...`.
//!
//! `cargo bench --bench peer_step -- [default|wide|digits] [--steps N] [--warmup N] [--threads N]`

use std::time::Instant;

use metasched::engine::init::init_params;
use metasched::engine::{
    Activation, Adam, AdamConfig, Config, Engine, LossKind, TaskBatch, UpdateMask, clip_grad_norm,
};
use metasched::tasks::{Digits, Split, sample_sinusoid};

fn workload(name: &str) -> (Config, TaskBatch<f32>) {
    let mut config = Config::sinusoid_default();
    match name {
        "default" => (config, sample_sinusoid(0, 0, 25, 10, 10)),
        "wide" => {
            config.model.layers = vec![1, 256, 256, 1];
            (config, sample_sinusoid(0, 0, 25, 10, 10))
        }
        "digits" => {
            config.model.layers = vec![64, 128, 128, 5];
            config.model.activation = Activation::Relu;
            config.model.loss = LossKind::CrossEntropy;
            let digits = Digits::load().expect("embedded digits");
            let batch = digits.sample(Split::Train, 0, 0, 0, 25, 5, 5, 10).expect("digits tasks");
            (config, batch)
        }
        other => panic!("unknown config {other:?} (default, wide, digits)"),
    }
}

fn main() {
    let mut name = "default".to_string();
    let (mut steps, mut warmup, mut threads) = (20usize, 3usize, 0usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> usize {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--steps" => steps = num("--steps"),
            "--warmup" => warmup = num("--warmup"),
            "--threads" => threads = num("--threads"),
            "--bench" => {} // what `cargo bench` passes
            s if !s.starts_with('-') => name = s.to_string(),
            s => panic!("unknown argument {s}"),
        }
    }
    let (config, batch) = workload(&name);
    let engine = Engine::new(threads).expect("thread pool");
    let mut params = init_params(&config, 0, 0.01).expect("init");
    let mut adam = Adam::new(AdamConfig::default(), &params);
    let mask = UpdateMask { theta: config.inner.learn_init };
    let mut times = Vec::with_capacity(steps);
    let mut j = 0.0f32;
    for i in 0..warmup + steps.max(1) {
        let start = Instant::now();
        let out = engine.meta_gradient(&config, &params, &batch).expect("metagrad");
        let mut grad = out.grad;
        clip_grad_norm(&mut grad, 10.0, mask);
        adam.step(&mut params, &grad, mask);
        let dt = start.elapsed().as_secs_f64() * 1e3;
        j = out.j;
        if i >= warmup {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "peer_step config={name} threads={} steps={} median_ms={median:.4} min_ms={:.4} max_ms={:.4} last_J={j}",
        engine.threads(),
        times.len(),
        times[0],
        times[times.len() - 1]
    );
}
