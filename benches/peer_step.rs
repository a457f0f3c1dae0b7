//! One full meta-step (exact second-order meta-gradient of B = 25 tasks, global-norm clip 10,
//! Adam lr 1e-3) of the CPU engine, timed the same way as the JAX peer in `benches/peer/`:
//! a fixed pre-sampled task batch, a few warm-up steps, then the median of `--steps` timed
//! steps. A plain binary (no criterion) so that `benches/peer/compare.sh` can interleave it
//! with the peer; it prints one line `peer_step config=NAME threads=N median_ms=X ...`.
//!
//! `long` is the long-horizon `train-mlp` meta-step of `deploy/examples/digits-long.toml`
//! (8 fresh runs of H = 1000 SGD steps, `full` estimator with `remat`, Adam lr 0.01), made
//! of the calls `meta-coord train --config deploy/examples/digits-long.toml` makes; `long100`
//! is the same with H = 100.
//!
//! `cargo bench --bench peer_step -- [default|wide|digits|long|long100] [--steps N] [--warmup N] [--threads N]`
//! `cargo bench --bench peer_step -- long-grad --checkpoint CKPT --grad-out FILE` (the check)

use std::path::Path;
use std::time::Instant;

use metasched::engine::horizon::{Member, RunData, RunState, WindowItem, window_meta_gradient};
use metasched::engine::init::init_params;
use metasched::engine::rng::CounterRng;
use metasched::engine::{
    Activation, Adam, AdamConfig, Config, Engine, LossKind, TaskBatch, UpdateMask, clip_grad_norm,
};
use metasched::formats::{Checkpoint, read_checkpoint, write_checkpoint};
use metasched::tasks::{Digits, OpenedDataset, RunStream, Split, TrainRun, sample_sinusoid};
use metasched_coord::train::config::load_toml;
use metasched_coord::train::state::TrainState;
use metasched_proto::TaskFamily;

/// `long-grad`: the meta-gradient of metasched's `full` estimator (remat) for Test run 0 of
/// digits-long.toml under the scheduler of the checkpoint `ckpt`, written to `out` as a
/// checkpoint (spec §5 names), so that `bench.py --check-long` can hold the peer's `jax.grad`
/// of the same run (recorded by `meta-coord apply --record-trajectory`) against it.
fn long_grad(ckpt: &Path, out: &Path) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/digits-long.toml");
    let cfg = load_toml(&path).expect("deploy/examples/digits-long.toml");
    let TaskFamily::TrainMlp(runs) = cfg.family().expect("task family") else {
        panic!("digits-long.toml is not a train-mlp configuration")
    };
    let ck = read_checkpoint(ckpt).expect("checkpoint");
    let config = &ck.config;
    let data = OpenedDataset::open(&runs.data, config).expect("digits dataset");
    let run = TrainRun::<f32>::open(&data, config, cfg.trajectory.outer.seed, RunStream::Test, 0, runs.batch)
        .expect("run");
    let h = config.inner.steps;
    let mut grad = ck.params.zeros_like();
    let mut state = RunState::fresh(config, run.learner_init());
    let w = window_meta_gradient(
        &mut grad,
        config,
        &ck.params,
        &mut state,
        &run,
        h,
        &runs.objective(h),
        runs.remat,
        1.0,
    )
    .expect("meta-gradient");
    write_checkpoint(out, &Checkpoint::new(config.clone(), grad)).expect("write the gradient");
    println!("peer_step long-grad H={h} J={} out={}", w.objective, out.display());
}

/// A short-horizon config and its fixed task batch (B = 25).
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
        other => panic!("unknown config {other:?} (default, wide, digits, long, long100)"),
    }
}

/// The `long` workload's meta-step as a closure returning the meta-objective: the
/// configuration `meta-coord train --config deploy/examples/digits-long.toml` resolves (its
/// model, initial scheduler, Adam and population come from the coordinator's own
/// `TrainState::new`, so they cannot drift from what `train` does), with the horizon set to
/// `horizon` (1000 for `long`, the file's value). Each call computes what one train meta-step
/// computes with a fresh population: the `full` (remat) window of the 8 runs through
/// `Engine::window_sum` (the call behind a worker's `Job::Window`), the fixed-point sum scaled
/// by 1/meta_batch, the global-norm clip and the Adam step. The runs are the population's
/// first 8 (runs 0..8 of the train stream), opened once: every call restarts them from step 0,
/// so every timed step does the same work (train would draw new runs each step).
fn long_step(engine: &Engine, horizon: usize) -> impl FnMut() -> f32 + '_ {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/digits-long.toml");
    let mut cfg = load_toml(&path).expect("deploy/examples/digits-long.toml");
    cfg.trajectory.inner.inner_steps = horizon;
    cfg.trajectory.long.window = horizon;
    cfg.validate().expect("valid configuration");
    let TaskFamily::TrainMlp(runs) = cfg.family().expect("task family") else {
        panic!("digits-long.toml is not a train-mlp configuration")
    };
    let state = TrainState::new(cfg.clone()).expect("train state");
    let (model, mut params, mut adam) = (state.model, state.params, state.adam);
    let jobs = state.population.expect("a train-mlp population").jobs();
    let spec = runs.window_spec(model.inner.steps);
    let data = OpenedDataset::open(&runs.data, &model).expect("digits dataset");
    let seed = cfg.trajectory.outer.seed;
    let opened: Vec<(TrainRun<f32>, usize)> = jobs
        .iter()
        .map(|m| {
            let run = TrainRun::open(&data, &model, seed, RunStream::Train, m.run, runs.batch).expect("run");
            (run, m.burn_in)
        })
        .collect();
    let (n_train, n_val) = (opened[0].0.train_set().n, opened[0].0.validation().n);
    eprintln!(
        "long: layers {:?}, H = {}, b = {}, {} runs, n_train {n_train}, n_val {n_val}, {:?}, remat {}, \
         meta_lr {}, clip {}",
        model.model.layers,
        model.inner.steps,
        runs.batch,
        opened.len(),
        spec.estimator,
        spec.remat,
        cfg.trajectory.outer.meta_lr,
        cfg.trajectory.outer.clip_norm
    );
    let mask = UpdateMask { theta: model.inner.learn_init };
    let (scale, clip) = (1.0 / cfg.trajectory.outer.meta_batch as f64, cfg.trajectory.outer.clip_norm);
    move || {
        let items = opened
            .iter()
            .map(|(run, burn_in)| WindowItem {
                data: Box::new(run.clone()) as Box<dyn RunData<f32> + Send>,
                member: Member::fresh(&model, &params, spec.estimator, run.learner_init()),
                burn_in: *burn_in,
                // PES noise: unused by the `full` estimator.
                noise: CounterRng::new(seed, &[0]),
            })
            .collect();
        let (sum, outcomes) = engine.window_sum(&model, &params, items, &spec).expect("window_sum");
        let mut grad = sum.to_params(&params, scale).expect("finite meta-gradient");
        clip_grad_norm(&mut grad, clip, mask);
        adam.step(&mut params, &grad, mask);
        outcomes.iter().map(|o| o.objective).sum::<f32>() * scale as f32
    }
}

/// A short-horizon workload's meta-step as a closure returning `J`: the engine's meta-gradient
/// of the fixed batch, global-norm clip 10, Adam lr 1e-3 (what `meta-coord train` does).
fn short_step<'a>(engine: &'a Engine, name: &str) -> impl FnMut() -> f32 + 'a {
    let (config, batch) = workload(name);
    let mut params = init_params(&config, 0, 0.01).expect("init");
    let mut adam = Adam::new(AdamConfig::default(), &params);
    let mask = UpdateMask { theta: config.inner.learn_init };
    move || {
        let out = engine.meta_gradient(&config, &params, &batch).expect("metagrad");
        let mut grad = out.grad;
        clip_grad_norm(&mut grad, 10.0, mask);
        adam.step(&mut params, &grad, mask);
        out.j
    }
}

/// Parses the arguments, times `--warmup` then `--steps` meta-steps, prints the median.
fn main() {
    let mut name = "default".to_string();
    let (mut steps, mut warmup, mut threads) = (20usize, 3usize, 0usize);
    let (mut checkpoint, mut grad_out) = (None::<String>, None::<String>);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> usize {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--steps" => steps = num("--steps"),
            "--warmup" => warmup = num("--warmup"),
            "--threads" => threads = num("--threads"),
            "--checkpoint" => checkpoint = args.next(),
            "--grad-out" => grad_out = args.next(),
            "--bench" => {} // what `cargo bench` passes
            s if !s.starts_with('-') => name = s.to_string(),
            s => panic!("unknown argument {s}"),
        }
    }
    if name == "long-grad" {
        let need = |v: Option<String>, what: &str| v.unwrap_or_else(|| panic!("long-grad needs {what}"));
        long_grad(Path::new(&need(checkpoint, "--checkpoint")), Path::new(&need(grad_out, "--grad-out")));
        return;
    }
    let engine = Engine::new(threads).expect("thread pool");
    let mut step: Box<dyn FnMut() -> f32> = match name.as_str() {
        "long" => Box::new(long_step(&engine, 1000)),
        "long100" => Box::new(long_step(&engine, 100)),
        _ => Box::new(short_step(&engine, &name)),
    };
    let mut times = Vec::with_capacity(steps);
    let mut j = 0.0f32;
    for i in 0..warmup + steps.max(1) {
        let start = Instant::now();
        j = step();
        let dt = start.elapsed().as_secs_f64() * 1e3;
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
