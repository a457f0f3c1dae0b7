//! `device_meta_gradient` on the emulator against `metasched_engine::Engine::meta_gradient`
//! (f32): every scheduler kind × activation × loss × order, under two thread schedules,
//! compared per tensor by `||dev − cpu|| / ||cpu||`.

mod common;

use metasched_tasks::random_batch;
use std::collections::BTreeMap;

use common::randn;
use metasched_cuda::checks::meta_gradient_tensors;
use metasched_cuda::{EmuRuntime, Schedule, device_meta_gradient};
use metasched_engine::init::init_params;
use metasched_engine::{
    Activation, Config, Engine, InnerConfig, LossKind, ModelConfig, Params, SchedulerConfig, SchedulerKind,
    Targets, TaskBatch,
};

/// Largest relative error allowed per tensor.
const TOL: f64 = 1e-5;

fn schedules() -> [EmuRuntime; 2] {
    [
        EmuRuntime::new().with_schedule(Schedule::Reverse),
        EmuRuntime::new().with_schedule(Schedule::Shuffled { seed: 0xd1ce }).with_workers(1),
    ]
}

fn config(layers: &[usize], act: Activation, loss: LossKind, kind: SchedulerKind, first: bool) -> Config {
    Config {
        model: ModelConfig { layers: layers.to_vec(), activation: act, loss },
        inner: InnerConfig { steps: 3, first_order: first, learn_init: true, optimizer: Default::default() },
        scheduler: SchedulerConfig { kind, hidden: 5, lr_min: 0.01, lr_max: 0.5, lr_fixed: 0.2 },
    }
}

/// Parameters with every tensor random enough to exercise every path.
fn params(config: &Config, seed: u64) -> Params<f32> {
    let mut p = init_params(config, seed, 0.2).expect("valid config");
    if let Some(z) = p.lslr.as_mut() {
        *z = randn(seed, &[10], z.len(), 1.0);
    }
    if let Some(l) = p.lstm.as_mut() {
        l.head_w = randn(seed, &[11], l.head_w.len(), 0.8);
        l.head_b = randn(seed, &[12], l.head_b.len(), 0.5);
    }
    p
}

fn rel(dev: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(dev.len(), cpu.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&d, &c) in dev.iter().zip(cpu) {
        num += (f64::from(d) - f64::from(c)).powi(2);
        den += f64::from(c).powi(2);
    }
    if den == 0.0 { if num == 0.0 { 0.0 } else { f64::INFINITY } } else { (num / den).sqrt() }
}

/// Compares device and engine on one case under every schedule, recording the worst
/// relative error per tensor in `worst`.
fn check(
    label: &str,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
    worst: &mut BTreeMap<String, f64>,
) {
    let cpu =
        Engine::new(1).expect("engine").meta_gradient(config, params, batch).expect("cpu meta-gradient");
    let want = meta_gradient_tensors(&cpu);
    for rt in schedules() {
        let dev = device_meta_gradient(&rt, config, params, batch).expect("device meta-gradient");
        let got = meta_gradient_tensors(&dev);
        assert_eq!(got.len(), want.len(), "{label}: tensor sets differ");
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            let r = rel(g, w);
            assert!(r < TOL, "{label} {:?}: {name} relative error {r:e} (tolerance {TOL:e})", rt.schedule());
            let e = worst.entry(name.clone()).or_insert(0.0);
            *e = e.max(r);
        }
    }
}

fn sweep(layers: &[usize], loss: LossKind, seed: u64) {
    let mut worst = BTreeMap::new();
    for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
        for act in [Activation::Relu, Activation::Tanh] {
            for first in [false, true] {
                let c = config(layers, act, loss, kind, first);
                let label = format!("{layers:?} {loss:?} {kind:?} {act:?} first_order={first}");
                let p = params(&c, seed);
                let b = random_batch(&c, 3, 4, 5, seed + 1);
                check(&label, &c, &p, &b, &mut worst);
            }
        }
    }
    for (name, r) in &worst {
        eprintln!("worst-rel-error {layers:?} {loss:?} {name}: {r:.3e}");
    }
}

#[test]
fn mse_every_scheduler_activation_and_order() {
    sweep(&[2, 6, 5, 2], LossKind::Mse, 7);
}

#[test]
fn cross_entropy_every_scheduler_activation_and_order() {
    sweep(&[3, 6, 4], LossKind::CrossEntropy, 11);
}

#[test]
fn sinusoid_default_lstm() {
    let c = Config::sinusoid_default();
    let p = init_params(&c, 3, 0.02).expect("valid config");
    let b = random_batch(&c, 3, 10, 10, 5);
    let mut worst = BTreeMap::new();
    check("sinusoid default", &c, &p, &b, &mut worst);
    for (name, r) in &worst {
        eprintln!("worst-rel-error sinusoid {name}: {r:.3e}");
    }
}

#[test]
fn invalid_inputs_are_refused() {
    let c = config(&[2, 3, 2], Activation::Relu, LossKind::Mse, SchedulerKind::Lstm, false);
    let mut p = params(&c, 1);
    let b = random_batch(&c, 2, 3, 3, 2);
    p.lstm = None;
    assert!(device_meta_gradient(&EmuRuntime::new(), &c, &p, &b).is_err());
}

/// Tasks `range` of `batch` as a batch of their own.
fn slice(batch: &TaskBatch<f32>, range: std::ops::Range<usize>) -> TaskBatch<f32> {
    let rows = |v: &[f32], per_task: usize| v[range.start * per_task..range.end * per_task].to_vec();
    let targets = |t: &Targets<f32>, n: usize| match t {
        Targets::Values(v) => Targets::Values(rows(v, n * batch.d_out)),
        Targets::Labels(l) => Targets::Labels(l[range.start * n..range.end * n].to_vec()),
    };
    TaskBatch {
        b: range.len(),
        support_x: rows(&batch.support_x, batch.k * batch.d_in),
        support_y: targets(&batch.support_y, batch.k),
        query_x: rows(&batch.query_x, batch.q * batch.d_in),
        query_y: targets(&batch.query_y, batch.q),
        ..*batch
    }
}

/// A worker's part on the device: the fixed-point sum of per-task gradients equals the CPU
/// engine's part sum (relative 1e-5 per tensor), and — because each task is rounded once on
/// its own — the parts of any split merge to bitwise the sum of the whole batch.
#[test]
fn part_sums_match_the_engine_and_do_not_depend_on_the_split() {
    for (layers, loss, kind) in [
        (&[2usize, 6, 5, 2][..], LossKind::Mse, SchedulerKind::Lstm),
        (&[3, 6, 4][..], LossKind::CrossEntropy, SchedulerKind::Lslr),
    ] {
        let c = config(layers, Activation::Tanh, loss, kind, false);
        let p = params(&c, 21);
        let whole = random_batch(&c, 5, 4, 5, 22);
        let rt = EmuRuntime::new();
        let dev = metasched_cuda::device_meta_gradient_sum(&rt, &c, &p, &whole).expect("device sum");
        let (cpu, outcomes) = Engine::new(1).expect("engine").meta_gradient_sum(&c, &p, &whole).expect("cpu");
        let scale = 1.0 / whole.b as f64;
        let (d, w) =
            (dev.sum.to_params(&p, scale).expect("finite"), cpu.to_params(&p, scale).expect("finite"));
        for ((i, g), want) in d.buffers().iter().enumerate().zip(w.buffers()) {
            let r = rel(g, want);
            assert!(r < TOL, "{kind:?} {loss:?}: buffer {i} relative error {r:e}");
        }
        let cpu_loss: Vec<f32> = outcomes.iter().map(|o| o.outer_loss).collect();
        assert!(rel(&dev.outer_loss, &cpu_loss) < TOL, "outer losses differ");
        let cpu_lr: Vec<f32> = outcomes.iter().flat_map(|o| o.lr.iter().copied()).collect();
        assert!(rel(&dev.lr, &cpu_lr) < TOL, "rates differ");

        let mut merged = metasched_engine::FixedSum::zeros(dev.sum.len());
        for range in [0..2, 2..3, 3..5] {
            let part = metasched_cuda::device_meta_gradient_sum(&rt, &c, &p, &slice(&whole, range))
                .expect("device part");
            merged.merge(&part.sum);
        }
        assert_eq!(merged, dev.sum, "{kind:?} {loss:?}: parts 0..2, 2..3, 3..5 do not merge to the whole");
    }
}

/// Evaluation on the device against `Engine::evaluate`: query losses and rates within 1e-5
/// relative, accuracies equal.
#[test]
fn evaluation_matches_the_engine() {
    for (layers, loss, kind, first) in [
        (&[3usize, 6, 4][..], LossKind::CrossEntropy, SchedulerKind::Lstm, false),
        (&[2, 6, 5, 2][..], LossKind::Mse, SchedulerKind::Lslr, true),
        (&[2, 5, 1][..], LossKind::Mse, SchedulerKind::Fixed, false),
    ] {
        let c = config(layers, Activation::Relu, loss, kind, first);
        let p = params(&c, 31);
        let b = random_batch(&c, 4, 6, 7, 32);
        let cpu = Engine::new(1).expect("engine").evaluate(&c, &p, &b).expect("cpu evaluation");
        for rt in schedules() {
            let dev = metasched_cuda::device_evaluate(&rt, &c, &p, &b).expect("device evaluation");
            assert!(rel(&dev.outer_loss, &cpu.outer_loss) < TOL, "{kind:?}: losses differ");
            assert!(rel(&dev.lr, &cpu.lr) < TOL, "{kind:?}: rates differ");
            assert!(((dev.mean - cpu.mean) / cpu.mean).abs() < 1e-5, "{kind:?}: means differ");
            assert_eq!(dev.accuracy, cpu.accuracy, "{kind:?}: accuracies differ");
        }
    }
}
