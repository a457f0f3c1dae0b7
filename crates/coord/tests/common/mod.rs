//! Helpers shared by the `meta-coord` command-line tests: random problems written to files,
//! and running the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use metasched_engine::rng::CounterRng;
use metasched_engine::{
    Activation, Config, InnerConfig, LossKind, ModelConfig, Params, SchedulerConfig, SchedulerKind, TaskBatch,
};

/// The binary under test.
pub fn meta_coord() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meta-coord"));
    c.env_remove("RUST_LOG");
    c
}

/// Runs `meta-coord` with `args`.
pub fn run(args: &[&str]) -> Output {
    meta_coord().args(args).output().expect("meta-coord runs")
}

/// A configuration for tests.
pub fn config(
    layers: &[usize],
    act: Activation,
    loss: LossKind,
    kind: SchedulerKind,
    first_order: bool,
) -> Config {
    Config {
        model: ModelConfig { layers: layers.to_vec(), activation: act, loss },
        inner: InnerConfig { steps: 3, first_order, learn_init: true },
        scheduler: SchedulerConfig { kind, hidden: 5, lr_min: 0.0, lr_max: 0.4, lr_fixed: 0.2 },
    }
}

/// Random parameters of `config` (uniform in ±0.6).
pub fn random_params(config: &Config, seed: u64) -> Params<f32> {
    let mut p = Params::<f32>::zeros(config);
    let mut rng = CounterRng::new(seed, &[1]);
    for v in p.values_mut() {
        *v = rng.uniform_in(-0.6, 0.6) as f32;
    }
    p
}

/// A random batch of `b` tasks for `config`.
pub fn random_batch(config: &Config, b: usize, k: usize, q: usize, seed: u64) -> TaskBatch<f32> {
    metasched_tasks::random_batch(config, b, k, q, seed)
}

/// Writes a checkpoint and a task file for a random problem into `dir`.
pub fn write_problem(dir: &Path, config: &Config, seed: u64) -> (PathBuf, PathBuf) {
    let ckpt = dir.join(format!("ckpt-{seed}.safetensors"));
    let tasks = dir.join(format!("tasks-{seed}.safetensors"));
    let c = metasched_formats::Checkpoint::new(config.clone(), random_params(config, seed));
    metasched_formats::write_checkpoint(&ckpt, &c).expect("write checkpoint");
    metasched_formats::write_task_batch(&tasks, &random_batch(config, 3, 5, 4, seed)).expect("write tasks");
    (ckpt, tasks)
}

/// `path` as a `&str` (test paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
