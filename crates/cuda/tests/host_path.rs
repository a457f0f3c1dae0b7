//! The host path of a device meta-step, counted on the emulator (the counters every
//! `Runtime` keeps): after a warm-up meta-step, the next one of the same shapes allocates no
//! device memory, uploads 6 buffers, downloads 1 and waits for the device once, and launches
//! exactly the kernels the formula below says. Its results are bitwise those of a fresh
//! runtime, even with a pool that fills every reused buffer with NaN (so no kernel reads what
//! an earlier meta-step left behind).

use metasched_cuda::{
    Counters, EmuRuntime, Runtime, device_evaluate, device_meta_gradient, device_meta_gradient_sum,
};
use metasched_engine::init::init_params;
use metasched_engine::{
    Activation, Config, InnerConfig, LossKind, ModelConfig, Params, SchedulerConfig, SchedulerKind,
};
use metasched_tasks::random_batch;

fn config(layers: &[usize], loss: LossKind, kind: SchedulerKind, first_order: bool) -> Config {
    Config {
        model: ModelConfig { layers: layers.to_vec(), activation: Activation::Tanh, loss },
        inner: InnerConfig { steps: 3, first_order, learn_init: true, optimizer: Default::default() },
        scheduler: SchedulerConfig { kind, hidden: 5, lr_min: 0.01, lr_max: 0.5, lr_fixed: 0.2 },
    }
}

fn params(c: &Config, seed: u64) -> Params<f32> {
    init_params(c, seed, 0.2).expect("valid config")
}

/// Which entry point a meta-step runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    Mean,
    Sum,
    Evaluate,
}

/// Launches of one meta-step: per inner step the support loss and gradient (`2L + 1`), the
/// features, the scheduler (LSTM cell and head: 2, LSLR head: 1, fixed: 0) and the update;
/// the query loss and gradient (`2L + 1`); per step backward the update's backward, with
/// second order the Hessian-vector product (`2L + 1`) and an axpy, and the scheduler's
/// backward (2, 1, 0). The mean adds a scale and the task sums (theta, then 6 LSTM tensors or
/// T LSLR rows).
fn expected_launches(c: &Config, path: Path) -> u64 {
    let (t, l) = (c.inner.steps as u64, (c.model.layers.len() - 1) as u64);
    let (sched_fwd, sched_bwd, phi_tensors) = match c.scheduler.kind {
        SchedulerKind::Lstm => (2, 2, 6),
        SchedulerKind::Lslr => (1, 1, t),
        SchedulerKind::Fixed => (0, 0, 0),
    };
    let forward = t * ((2 * l + 1) + 1 + sched_fwd + 1) + (2 * l + 1);
    if path == Path::Evaluate {
        return forward;
    }
    let second = u64::from(!c.inner.first_order);
    let backward = t * (1 + second * (2 * l + 2) + sched_bwd);
    let mean = if path == Path::Mean { 1 + 1 + phi_tensors } else { 0 };
    forward + backward + mean
}

/// Runs `path` once, returning a comparable rendering of its result (bit patterns).
fn run(rt: &EmuRuntime, c: &Config, p: &Params<f32>, seed: u64, path: Path) -> Vec<u32> {
    let batch = random_batch(c, 4, 5, 6, seed);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    match path {
        Path::Mean => {
            let m = device_meta_gradient(rt, c, p, &batch).expect("meta-gradient");
            let mut out = vec![m.j.to_bits()];
            out.extend(bits(&m.outer_loss));
            out.extend(bits(&m.lr));
            for b in m.grad.buffers() {
                out.extend(bits(b));
            }
            out
        }
        Path::Sum => {
            let s = device_meta_gradient_sum(rt, c, p, &batch).expect("part sum");
            let mut out = bits(&s.outer_loss);
            out.extend(bits(&s.lr));
            let g = s.sum.to_params(p, 1.0).expect("finite");
            for b in g.buffers() {
                out.extend(bits(b));
            }
            out
        }
        Path::Evaluate => {
            let e = device_evaluate(rt, c, p, &batch).expect("evaluation");
            let mut out = bits(&e.outer_loss);
            out.extend(bits(&e.lr));
            out.extend(bits(&e.accuracy.unwrap_or_default()));
            out
        }
    }
}

fn cases() -> Vec<Config> {
    let mut v = Vec::new();
    for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
        for first in [false, true] {
            v.push(config(&[2, 6, 5, 2], LossKind::Mse, kind, first));
        }
    }
    v.push(config(&[3, 6, 4], LossKind::CrossEntropy, SchedulerKind::Lslr, false));
    v
}

#[test]
fn a_warm_meta_step_allocates_nothing_and_waits_once() {
    for c in cases() {
        for path in [Path::Sum, Path::Mean, Path::Evaluate] {
            let rt = EmuRuntime::new().with_poisoned_pool(true);
            // Warm-up with other parameters and tasks: the pool then holds every buffer.
            run(&rt, &c, &params(&c, 1), 11, path);
            let before = rt.counters();
            let got = run(&rt, &c, &params(&c, 2), 12, path);
            let d = rt.counters().since(&before);
            let label = format!("{:?} first_order={} {path:?}", c.scheduler.kind, c.inner.first_order);
            assert_eq!(d.allocs, 0, "{label}: {d}");
            assert_eq!(d.syncs, 1, "{label}: {d}");
            assert_eq!(d.downloads, 1, "{label}: {d}");
            assert_eq!(d.uploads, 6, "{label}: {d}");
            assert_eq!(d.launches, expected_launches(&c, path), "{label}: {d}");
            assert!(d.memsets <= 3 && d.device_copies <= 3, "{label}: {d}");

            // Bitwise what a fresh runtime (nothing reused) computes.
            let fresh = run(&EmuRuntime::new(), &c, &params(&c, 2), 12, path);
            assert!(got == fresh, "{label}: a reused (NaN-poisoned) pool changed the results");
        }
    }
}

#[test]
fn counters_count_what_they_say() {
    let rt = EmuRuntime::new();
    let zero = Counters::default();
    assert_eq!(rt.counters(), zero);
    let mut a = rt.upload_pooled(&[1.0f32, 2.0, 3.0]).expect("upload");
    let b = rt.alloc_pooled::<f32>(3).expect("alloc");
    rt.copy_device(&mut a, 1, &b, 0..2).expect("copy");
    rt.zero(&mut a, 0..1).expect("zero");
    assert_eq!(rt.download(&a).expect("download"), vec![0.0, 0.0, 0.0]);
    rt.recycle(a);
    let c = rt.alloc_pooled::<f32>(3).expect("pooled");
    assert_eq!(rt.download(&c).expect("download"), vec![0.0, 0.0, 0.0]);
    let n = rt.counters();
    assert_eq!(
        n,
        Counters {
            launches: 0,
            allocs: 2,
            pool_hits: 1,
            uploads: 1,
            downloads: 2,
            device_copies: 1,
            memsets: 1,
            syncs: 2,
            ..Counters::default()
        }
    );
    assert!(rt.copy_device(&mut rt.alloc::<f32>(2).expect("alloc"), 1, &c, 0..2).is_err(), "overlong copy");
    assert!(rt.zero(&mut rt.alloc::<f32>(2).expect("alloc"), 1..3).is_err(), "overlong fill");
    rt.release_pool();
    assert_eq!(rt.pooled_buffers(), 0);
}
