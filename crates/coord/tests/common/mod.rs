//! Helpers shared by the `meta-coord` command-line tests: random problems written to files,
//! and running the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use metasched_engine::rng::CounterRng;
use metasched_engine::{
    Activation, Config, InnerConfig, InnerOptimizer, LossKind, ModelConfig, Params, SchedulerConfig,
    SchedulerKind, TaskBatch,
};
use metasched_reference::{RefConfig, RefKind, RefOptimizer, RefSet, RefTargets, RefTask};

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
        inner: InnerConfig { steps: 3, first_order, learn_init: true, optimizer: Default::default() },
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

/// The reference's view of a configuration.
pub fn ref_config(c: &Config) -> RefConfig {
    RefConfig {
        layers: c.model.layers.clone(),
        tanh: c.model.activation == Activation::Tanh,
        cross_entropy: c.model.loss == LossKind::CrossEntropy,
        steps: c.inner.steps,
        first_order: c.inner.first_order,
        kind: match c.scheduler.kind {
            SchedulerKind::Lstm => RefKind::Lstm { hidden: c.scheduler.hidden },
            SchedulerKind::Lslr => RefKind::Lslr,
            SchedulerKind::Fixed => RefKind::Fixed,
        },
        lr_min: c.scheduler.lr_min,
        lr_max: c.scheduler.lr_max,
        lr_fixed: c.scheduler.lr_fixed,
        optimizer: match c.inner.optimizer {
            InnerOptimizer::Sgd => RefOptimizer::Sgd,
            InnerOptimizer::Momentum { mu } => RefOptimizer::Momentum { mu },
            InnerOptimizer::Adam { beta1, beta2, eps } => RefOptimizer::Adam { beta1, beta2, eps },
        },
    }
}

/// The reference's view of a batch of tasks (values widened to f64).
pub fn ref_tasks(batch: &metasched_engine::TaskBatch<f32>) -> Vec<RefTask> {
    let set = |x: &[f32], y: metasched_engine::TargetsRef<'_, f32>, n: usize| RefSet {
        n,
        x: x.iter().map(|&v| v as f64).collect(),
        y: match y {
            metasched_engine::TargetsRef::Values(v) => {
                RefTargets::Values(v.iter().map(|&v| v as f64).collect())
            }
            metasched_engine::TargetsRef::Labels(l) => {
                RefTargets::Labels(l.iter().map(|&v| v as usize).collect())
            }
        },
    };
    (0..batch.b)
        .map(|i| {
            let t = batch.task(i);
            RefTask {
                support: set(t.support.x, t.support.y, t.support.n),
                query: set(t.query.x, t.query.y, t.query.n),
            }
        })
        .collect()
}

/// Waits for a process with a time limit (killing it past the limit) and returns its output.
pub fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("process did not finish in {limit:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// The `meta-worker` binary built next to `meta-coord` (`cargo test --workspace` builds it).
pub fn worker_bin() -> PathBuf {
    let coord = PathBuf::from(env!("CARGO_BIN_EXE_meta-coord"));
    let w = coord.with_file_name(format!("meta-worker{}", std::env::consts::EXE_SUFFIX));
    assert!(
        w.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so it is built",
        w.display()
    );
    w
}

/// Trajectory flags of the small, fast problem the distributed tests train for `steps` steps.
pub fn small_trajectory(steps: u64) -> Vec<String> {
    [
        "--steps",
        &steps.to_string(),
        "--meta-batch",
        "9",
        "--layers",
        "1,16,16,1",
        "--hidden",
        "6",
        "--seed",
        "5",
        "--eval-every",
        "0",
        "--final-eval-tasks",
        "9",
        "--log-every",
        "1",
        "--threads",
        "1",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

/// The address a listening coordinator writing into `dir` bound (waits up to 30 s).
pub fn coordinator_addr(dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = std::fs::read_to_string(dir.join("coordinator.addr"))
            && !a.is_empty()
        {
            return a;
        }
        assert!(Instant::now() < deadline, "the coordinator did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fails if a process's standard error shows a panic.
pub fn assert_no_panic(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
}

/// Sends `sig` (`-KILL`, `-STOP`, `-TERM`, ...) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill");
    assert!(ok.success(), "kill {sig} {}", child.id());
}

/// A `meta-worker` connecting to `addr` with the token in `token_file`, one engine thread,
/// giving up after 20 s without a coordinator.
pub fn spawn_worker(addr: &str, token_file: &Path) -> Child {
    Command::new(worker_bin())
        .args(["--coord", addr, "--token-file", s(token_file), "--threads", "1", "--give-up-after", "20"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn meta-worker")
}

/// Waits (at most 60 s) until the run in `dir` logged meta-step `step` in `metrics.jsonl`;
/// panics if `coordinator` ends first.
pub fn wait_for_step(dir: &Path, coordinator: &mut Child, step: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
        let last = text.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        if last.and_then(|v| v["step"].as_u64()).is_some_and(|s| s >= step) {
            return;
        }
        if let Ok(Some(status)) = coordinator.try_wait() {
            panic!("coordinator ended ({status}) before step {step}");
        }
        assert!(Instant::now() < deadline, "step {step} not reached in time");
        std::thread::sleep(Duration::from_millis(2));
    }
}
