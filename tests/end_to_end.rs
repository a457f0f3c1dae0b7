//! End to end through the library crates: `init`-style parameters and sampled tasks go
//! through safetensors files, then the engine; checks what no single crate can.

use std::collections::BTreeMap;

use metasched::engine::init::init_params;
use metasched::engine::{Config, Engine, SchedulerKind};
use metasched::formats::{Checkpoint, read_checkpoint, read_task_batch, write_checkpoint, write_task_batch};
use metasched::tasks::sample_sinusoid;
use metasched_reference::{RefConfig, RefKind, RefSet, RefTargets, RefTask, reference_metagrad};

fn roundtrip(config: &Config, params: metasched::engine::Params<f32>, dir: &std::path::Path) -> Checkpoint {
    let path = dir.join("c.safetensors");
    write_checkpoint(&path, &Checkpoint::new(config.clone(), params)).expect("write checkpoint");
    read_checkpoint(&path).expect("read checkpoint")
}

/// A checkpoint may carry phi tensors of another scheduler kind (spec §5 names them all):
/// they are accepted, do not change the result, and get exactly zero gradient.
#[test]
fn unused_phi_tensors_are_carried_with_zero_gradient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::sinusoid_default();
    config.model.layers = vec![1, 8, 1];
    config.scheduler.hidden = 4;
    let lstm = init_params(&config, 1, 0.02).expect("lstm init");
    config.scheduler.kind = SchedulerKind::Lslr;
    let mut both = init_params(&config, 1, 0.02).expect("lslr init");
    let plain = roundtrip(&config, both.clone(), dir.path());
    both.lstm = lstm.lstm;
    let carried = roundtrip(&config, both, dir.path());
    assert!(carried.params.lstm.is_some(), "the lstm tensors survive the round trip");

    let tasks = dir.path().join("t.safetensors");
    write_task_batch(&tasks, &sample_sinusoid(3, 0, 4, 5, 5)).expect("write tasks");
    let batch = read_task_batch(&tasks, &config).expect("read tasks");
    let engine = Engine::new(1).expect("engine");
    let a = engine.meta_gradient(&config, &plain.params, &batch).expect("plain");
    let b = engine.meta_gradient(&config, &carried.params, &batch).expect("carried");
    assert_eq!(a.j.to_bits(), b.j.to_bits());
    assert_eq!(a.grad.lslr, b.grad.lslr);
    assert_eq!(a.grad.theta, b.grad.theta);
    assert!(b.grad.lstm.expect("lstm grads").head_w.iter().all(|&x| x == 0.0));

    // And the reference agrees with the lslr result.
    let cfg = RefConfig {
        layers: config.model.layers.clone(),
        tanh: false,
        cross_entropy: false,
        steps: config.inner.steps,
        first_order: false,
        kind: RefKind::Lslr,
        lr_min: config.scheduler.lr_min,
        lr_max: config.scheduler.lr_max,
        lr_fixed: config.scheduler.lr_fixed,
        optimizer: Default::default(),
    };
    let tensors: BTreeMap<String, Vec<f64>> =
        plain.tensors().into_iter().map(|(n, _, v)| (n, v.iter().map(|&x| x as f64).collect())).collect();
    let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let ref_tasks: Vec<RefTask> = (0..batch.b)
        .map(|i| {
            let t = batch.task(i);
            let set = |s: metasched::engine::SetRef<'_, f32>| RefSet {
                n: s.n,
                x: to64(s.x),
                y: match s.y {
                    metasched::engine::TargetsRef::Values(v) => RefTargets::Values(to64(v)),
                    metasched::engine::TargetsRef::Labels(_) => unreachable!("sinusoid is regression"),
                },
            };
            RefTask { support: set(t.support), query: set(t.query) }
        })
        .collect();
    let want = reference_metagrad(&cfg, &tensors, &ref_tasks);
    let ours = to64(a.grad.lslr.as_deref().expect("lslr grad"));
    let want_z = &want.grads["phi.lslr.z"];
    let err = ours.iter().zip(want_z).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt()
        / want_z.iter().map(|b| b * b).sum::<f64>().sqrt();
    assert!(err < 1e-4, "phi.lslr.z relative error {err:.3e}");
}

/// The default sinusoid problem read back from files gives bitwise the same meta-gradient on
/// 1 and 2 threads.
#[test]
fn default_problem_from_files_is_thread_count_invariant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::sinusoid_default();
    let ckpt = roundtrip(&config, init_params(&config, 5, 0.01).expect("init"), dir.path());
    let tasks = dir.path().join("t.safetensors");
    write_task_batch(&tasks, &sample_sinusoid(9, 2, 25, 10, 10)).expect("write tasks");
    let batch = read_task_batch(&tasks, &config).expect("read tasks");
    let one = Engine::new(1).expect("1").meta_gradient(&config, &ckpt.params, &batch).expect("1");
    let two = Engine::new(2).expect("2").meta_gradient(&config, &ckpt.params, &batch).expect("2");
    let bits = |g: &metasched::engine::Params<f32>| g.values().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert_eq!(bits(&one.grad), bits(&two.grad));
    assert!(one.j.is_finite() && one.j > 0.0);
}
