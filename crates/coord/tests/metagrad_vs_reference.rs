//! `meta-coord metagrad` against the independent float64 autodiff reference
//! (`metasched-reference`) on random checkpoints: every scheduler kind, both losses, both
//! activations, first and second order, several layer shapes. Spec §6 tolerance: relative
//! error `||ours − ref|| / ||ref||` below 1e-4 per tensor.

mod common;

use std::collections::BTreeMap;

use common::{config, ref_config, ref_tasks, run, s, write_problem};
use metasched_engine::{Activation, Config, LossKind, SchedulerKind, Targets};
use metasched_reference::reference_metagrad;

const TOL: f64 = 1e-4;

fn rel_err(ours: &[f32], want: &[f64]) -> f64 {
    assert_eq!(ours.len(), want.len());
    let d: f64 = ours.iter().zip(want).map(|(&a, &b)| (a as f64 - b).powi(2)).sum::<f64>().sqrt();
    let n: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    if n < 1e-12 { d } else { d / n }
}

fn check(config: &Config, seed: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ckpt, tasks) = write_problem(dir.path(), config, seed);
    let out = dir.path().join("out.safetensors");
    let o = run(&["metagrad", "--checkpoint", s(&ckpt), "--tasks", s(&tasks), "--out", s(&out)]);
    assert!(o.status.success(), "metagrad failed: {}", String::from_utf8_lossy(&o.stderr));
    let file = metasched_formats::read_tensors(&out).expect("read output");

    let c = metasched_formats::read_checkpoint(&ckpt).expect("read checkpoint");
    let batch = metasched_formats::read_task_batch(&tasks, config).expect("read tasks");
    let tensors: BTreeMap<String, Vec<f64>> =
        c.tensors().into_iter().map(|(n, _, v)| (n, v.iter().map(|&x| x as f64).collect())).collect();
    let want = reference_metagrad(&ref_config(config), &tensors, &ref_tasks(&batch));

    let mut worst: f64 = 0.0;
    let mut cmp = |name: &str, want: &[f64]| {
        let ours = file.f32(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let e = rel_err(&ours, want);
        assert!(e < TOL, "{name}: relative error {e:.3e} >= {TOL:e} ({config:?}, seed {seed})");
        worst = worst.max(e);
    };
    cmp("J", &[want.j]);
    cmp("outer_loss", &want.outer_loss);
    cmp("lr", &want.lr);
    for (name, _, _) in c.tensors() {
        let g = want.grads.get(&name).unwrap_or_else(|| panic!("reference has no gradient for {name}"));
        cmp(&format!("grad.{name}"), g);
    }
    assert_eq!(file.shape("J"), Some(&[][..]), "J is a scalar");
    worst
}

#[test]
fn metagrad_agrees_with_the_float64_reference() {
    let shapes_mse = [vec![1, 6, 5, 1], vec![3, 4, 2], vec![2, 3]];
    let shapes_ce = [vec![4, 6, 3], vec![2, 5, 4, 3]];
    let mut seed = 100;
    let mut worst: f64 = 0.0;
    for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
        for act in [Activation::Relu, Activation::Tanh] {
            for first_order in [false, true] {
                for (loss, shapes) in
                    [(LossKind::Mse, &shapes_mse[..]), (LossKind::CrossEntropy, &shapes_ce[..])]
                {
                    let layers = &shapes[seed as usize % shapes.len()];
                    worst = worst.max(check(&config(layers, act, loss, kind, first_order), seed));
                    seed += 1;
                }
            }
        }
    }
    eprintln!("worst relative error over {} random checkpoints: {worst:.3e}", seed - 100);
}

#[test]
fn metagrad_agrees_with_the_reference_on_the_default_sinusoid_shape() {
    let mut c = Config::sinusoid_default();
    c.scheduler.hidden = 8;
    c.scheduler.lr_max = 0.3;
    let e = check(&c, 7);
    eprintln!("1-40-40-1 relu lstm: worst relative error {e:.3e}");
}

#[test]
fn labels_survive_the_file_round_trip() {
    let c = config(&[2, 3], Activation::Relu, LossKind::CrossEntropy, SchedulerKind::Fixed, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, tasks) = write_problem(dir.path(), &c, 3);
    let b = metasched_formats::read_task_batch(&tasks, &c).expect("read");
    assert_eq!(b.support_y, common::random_batch(&c, 3, 5, 4, 3).support_y);
    assert!(matches!(b.query_y, Targets::Labels(_)));
}

/// The momentum and adam inner optimisers (spec §3.1), first and second order, every scheduler
/// kind, through the checkpoint (`inner.optimizer`) and the binary, against the reference.
#[test]
fn inner_optimizers_agree_with_the_float64_reference() {
    use metasched_engine::InnerOptimizer;
    let optimizers =
        [InnerOptimizer::Momentum { mu: 0.9 }, InnerOptimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }];
    let mut seed = 300;
    let mut worst: f64 = 0.0;
    for optimizer in optimizers {
        for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
            for first_order in [false, true] {
                for (act, loss, layers) in [
                    (Activation::Tanh, LossKind::Mse, vec![1, 6, 5, 1]),
                    (Activation::Relu, LossKind::CrossEntropy, vec![4, 6, 3]),
                ] {
                    let mut c = config(&layers, act, loss, kind, first_order);
                    c.inner.optimizer = optimizer;
                    c.scheduler.lr_max = 0.05;
                    c.scheduler.lr_fixed = 0.02;
                    worst = worst.max(check(&c, seed));
                    seed += 1;
                }
            }
        }
    }
    eprintln!("momentum and adam: worst relative error over {} checkpoints: {worst:.3e}", seed - 300);
}
