//! What the long-horizon benches (`horizon_memory`, `horizon_precision`, `estimators`) share:
//! a digits `train-mlp` configuration, its runs, and the estimates they measure.

#![allow(dead_code)] // each bench uses part of it

use std::time::Instant;

use metasched::engine::horizon::{
    Objective, ObjectiveMode, PesPair, RunData, RunState, pes_window, window_meta_gradient,
};
use metasched::engine::init::init_params;
use metasched::engine::rng::CounterRng;
use metasched::engine::{
    Activation, Config, InnerConfig, InnerOptimizer, LossKind, ModelConfig, Params, Real, SchedulerConfig,
    SchedulerKind,
};
use metasched::tasks::{OpenedDataset, RunStream, TrainMlpData, TrainRun};

/// The user seed every bench run derives from.
pub const SEED: u64 = 0;

/// The inner optimiser by name: `sgd` or `adam` (spec defaults: β = 0.9, 0.999, ε = 1e-8).
pub fn optimizer(name: &str) -> InnerOptimizer {
    match name {
        "sgd" => InnerOptimizer::Sgd,
        "adam" => InnerOptimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        other => panic!("unknown optimiser {other:?} (sgd, adam)"),
    }
}

/// The scheduler by name: `lstm` or `lslr`.
pub fn scheduler(name: &str) -> SchedulerKind {
    match name {
        "lstm" => SchedulerKind::Lstm,
        "lslr" => SchedulerKind::Lslr,
        other => panic!("unknown scheduler {other:?} (lstm, lslr)"),
    }
}

/// `(lr_max, lr_init)` of the learned rates: 1.0 / 0.1 for sgd (the README's example run),
/// 0.01 / 0.001 for adam.
pub fn rates(opt: &str) -> (f64, f64) {
    if opt == "adam" { (0.01, 0.001) } else { (1.0, 0.1) }
}

/// A digits learner `64-hidden-10` (relu, cross-entropy) trained for `horizon` steps by `opt`,
/// its rates set by a `kind` scheduler (LSTM hidden size 20, rates in `(0, lr_max)`).
pub fn digits_config(hidden: usize, horizon: usize, opt: &str, kind: &str) -> Config {
    Config {
        model: ModelConfig {
            layers: vec![64, hidden, 10],
            activation: Activation::Relu,
            loss: LossKind::CrossEntropy,
        },
        inner: InnerConfig {
            steps: horizon,
            first_order: false,
            learn_init: false,
            optimizer: optimizer(opt),
        },
        scheduler: SchedulerConfig {
            kind: scheduler(kind),
            hidden: 20,
            lr_min: 0.0,
            lr_max: rates(opt).0,
            lr_fixed: 0.01,
        },
    }
}

/// The scheduler the coordinator starts from (`init_params` with the seed and `lr_init`).
pub fn initial_params(config: &Config, opt: &str) -> Params<f32> {
    initial_params_at(config, rates(opt).1)
}

/// The initial scheduler with its rates at `lr_init`.
pub fn initial_params_at(config: &Config, lr_init: f64) -> Params<f32> {
    init_params(config, SEED, lr_init).expect("init params")
}

/// The digits dataset opened for `config`.
pub fn dataset(config: &Config) -> OpenedDataset {
    OpenedDataset::open(&TrainMlpData::digits_default(), config).expect("digits")
}

/// Run `run` of the training stream, minibatches of `batch`.
pub fn run_data<T: Real>(data: &OpenedDataset, config: &Config, run: u64, batch: usize) -> TrainRun<T> {
    TrainRun::<T>::open(data, config, SEED, RunStream::Train, run, batch).expect("run")
}

/// The objective of windows of `w` steps (end mode) over the horizon.
pub fn objective(config: &Config, w: usize) -> Objective {
    Objective { window: w, mode: ObjectiveMode::End, horizon: config.inner.steps }
}

/// The phi values of `params` (everything but theta) as f64, canonical order.
pub fn phi<T: Real>(params: &Params<T>) -> Vec<f64> {
    params.buffers().iter().skip(1).flat_map(|b| b.iter().map(|x| x.as_f64())).collect()
}

/// The exact gradient of `Σ_k J_k` (the sum of the objective's windows) through the whole run
/// from step 0: one window of `H` steps, optionally rematerialised.
pub fn full<T: Real>(
    config: &Config,
    params: &Params<T>,
    data: &dyn RunData<T>,
    theta: Vec<T>,
    w: usize,
    remat: bool,
) -> Vec<f64> {
    let mut g = params.zeros_like();
    let mut s = RunState::fresh(config, theta);
    let h = config.inner.steps;
    window_meta_gradient(&mut g, config, params, &mut s, data, h, &objective(config, w), remat, T::one())
        .expect("full");
    phi(&g)
}

/// The sum over the run's `K = H / W` windows of the truncated (tbptt) window gradients.
pub fn tbptt<T: Real>(
    config: &Config,
    params: &Params<T>,
    data: &dyn RunData<T>,
    theta: Vec<T>,
    w: usize,
) -> Vec<f64> {
    let mut g = params.zeros_like();
    let mut s = RunState::fresh(config, theta);
    let obj = objective(config, w);
    while !s.finished(config) {
        let n = obj.window_len(s.step);
        window_meta_gradient(&mut g, config, params, &mut s, data, n, &obj, false, T::one()).expect("tbptt");
    }
    phi(&g)
}

/// The sum over the run's windows of the PES window estimates of one antithetic pair, noise
/// of window `k` from `CounterRng::new(noise_seed, &[k])` (so both precisions draw the same ε).
pub fn pes<T: Real>(
    config: &Config,
    params: &Params<T>,
    data: &dyn RunData<T>,
    theta: Vec<T>,
    w: usize,
    sigma: f64,
    noise_seed: u64,
) -> Vec<f64> {
    let mut g = params.zeros_like();
    let mut pair = PesPair::fresh(config, params, theta);
    let obj = objective(config, w);
    let mut k = 0u64;
    while !pair.plus.finished(config) {
        let n = obj.window_len(pair.plus.step);
        let mut noise = CounterRng::new(noise_seed, &[k]);
        pes_window(&mut g, config, params, &mut pair, data, n, &obj, sigma, &mut noise, T::one())
            .expect("pes");
        k += 1;
    }
    phi(&g)
}

/// `f`'s value and the seconds it took.
pub fn timed<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed().as_secs_f64())
}

/// Euclidean norm.
pub fn norm(a: &[f64]) -> f64 {
    a.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `||a − b||`.
pub fn dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

/// Cosine similarity.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}

/// The element-wise mean of equally long vectors.
pub fn mean(vs: &[Vec<f64>]) -> Vec<f64> {
    let n = vs.len() as f64;
    let mut m = vec![0.0; vs[0].len()];
    for v in vs {
        for (mi, x) in m.iter_mut().zip(v) {
            *mi += x / n;
        }
    }
    m
}

/// The mean squared distance of `vs` from their mean (unbiased: divided by `n − 1`).
pub fn spread(vs: &[Vec<f64>]) -> f64 {
    let m = mean(vs);
    vs.iter().map(|v| dist(v, &m).powi(2)).sum::<f64>() / (vs.len() - 1).max(1) as f64
}

/// Parses `--name value` pairs after the bench's own name; `--bench` (what `cargo bench`
/// passes) is skipped.
pub fn args() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = it.next() {
        let name = a.strip_prefix("--").unwrap_or_else(|| panic!("unexpected argument {a}")).to_string();
        let value = it.next().unwrap_or_else(|| panic!("--{name} needs a value"));
        out.push((name, value));
    }
    out
}

/// A comma-separated list of numbers.
pub fn list(s: &str) -> Vec<usize> {
    s.split(',').map(|x| x.trim().parse().unwrap_or_else(|_| panic!("not a number: {x}"))).collect()
}
