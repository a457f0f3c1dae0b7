//! `mlp.cu` on the emulator: each layer kernel against the engine's dense products and
//! activations (the shared checks of [`metasched_cuda::checks`], under every thread
//! schedule), and the whole learner ([`DeviceMlp`]: forward, loss and gradient,
//! Hessian-vector product through every kernel of `mlp.cu` and `loss.cu`) against
//! `Mlp::loss_and_grad` and `Mlp::hvp`.
// The engine is called task by task, on slices of several batched arrays at once.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{ATOL, RTOL, assert_close, check_under_every_schedule, labels, randn, runtimes};
use metasched_cuda::learner::{DeviceMlp, DeviceTargets};
use metasched_cuda::{EmuRuntime, KernelId, Runtime};
use metasched_engine::mlp::Mlp;
use metasched_engine::{Activation, Config, LossKind, TargetsRef, ThetaLayout};

/// Per-task parameters scaled like a fan-in initialisation.
fn thetas(layout: &ThetaLayout, tasks: usize, seed: u64) -> Vec<f32> {
    let p = layout.len();
    let mut t = randn(seed, &[0], tasks * p, 1.0);
    for b in 0..tasks {
        for l in 0..layout.n_linear() {
            let s = 1.0 / (layout.widths[l] as f32).sqrt();
            for i in layout.weight(l).chain(layout.bias(l)) {
                t[b * p + i] *= s;
            }
        }
    }
    t
}

#[test]
fn linear_forward_matches_engine() {
    check_under_every_schedule(KernelId::LinearForward);
}

#[test]
fn linear_backward_matches_engine() {
    check_under_every_schedule(KernelId::LinearBackward);
}

#[test]
fn linear_rop_matches_engine() {
    check_under_every_schedule(KernelId::LinearRop);
}

#[test]
fn linear_rop_backward_matches_engine() {
    check_under_every_schedule(KernelId::LinearRopBackward);
}

#[test]
fn activation_kernels_match_engine() {
    check_under_every_schedule(KernelId::ActivationForward);
    check_under_every_schedule(KernelId::ActivationBackward);
}

fn config(layers: &[usize], activation: Activation, loss: LossKind) -> Config {
    let mut c = Config::sinusoid_default();
    c.model.layers = layers.to_vec();
    c.model.activation = activation;
    c.model.loss = loss;
    c
}

/// Loss, gradient and Hessian-vector product of every task, through the engine and through
/// the kernels, compared.
fn check_learner(rt: &EmuRuntime, cfg: &Config, tasks: usize, rows: usize, seed: u64) {
    let mlp = Mlp::new(cfg);
    let dev = DeviceMlp::from_config(cfg);
    let layout = &mlp.layout;
    let (p, d0, dl) = (layout.len(), cfg.d_in(), cfg.d_out());
    let theta = thetas(layout, tasks, seed);
    let u = randn(seed, &[9], tasks * p, 1.0);
    let x = randn(seed, &[10], tasks * rows * d0, 1.5);
    let y = randn(seed, &[11], tasks * rows * dl, 1.0);
    let lab = labels(seed, &[12], tasks * rows, dl);
    let mut want_loss = vec![0.0; tasks];
    let mut want_grad = vec![0.0; tasks * p];
    let mut want_hv = vec![0.0; tasks * p];
    let mut want_out = vec![0.0; tasks * rows * dl];
    for b in 0..tasks {
        let mut cache = mlp.cache::<f32>(rows);
        let mut scratch = mlp.hvp_scratch::<f32>(rows);
        let th = &theta[b * p..(b + 1) * p];
        let xb = &x[b * rows * d0..(b + 1) * rows * d0];
        let targets = match cfg.model.loss {
            LossKind::Mse => TargetsRef::Values(&y[b * rows * dl..(b + 1) * rows * dl]),
            LossKind::CrossEntropy => TargetsRef::Labels(&lab[b * rows..(b + 1) * rows]),
        };
        want_loss[b] = mlp.loss_and_grad(&mut want_grad[b * p..(b + 1) * p], &mut cache, th, xb, targets);
        want_out[b * rows * dl..(b + 1) * rows * dl].copy_from_slice(cache.out());
        mlp.hvp(&mut want_hv[b * p..(b + 1) * p], &mut scratch, &cache, th, xb, &u[b * p..(b + 1) * p]);
    }
    let up = |v: &[f32]| rt.upload(v).expect("upload");
    let (tb, ub, xb, yb) = (up(&theta), up(&u), up(&x), up(&y));
    let lb = rt.upload(&lab).expect("upload");
    let mut ws = dev.workspace(rt, tasks, rows).expect("workspace");
    let (grad, hv) = (rt.alloc::<f32>(tasks * p).expect("alloc"), rt.alloc::<f32>(tasks * p).expect("alloc"));
    let targets = match cfg.model.loss {
        LossKind::Mse => DeviceTargets::Values(&yb),
        LossKind::CrossEntropy => DeviceTargets::Labels(&lb),
    };
    dev.loss_and_grad(rt, &mut ws, &grad, &tb, &xb, targets).expect("loss_and_grad");
    dev.hvp(rt, &mut ws, &hv, &tb, &xb, &ub).expect("hvp");
    let label = format!(
        "learner {:?} {:?} {:?} B={tasks} n={rows} {:?}",
        cfg.model.layers,
        cfg.model.activation,
        cfg.model.loss,
        rt.schedule()
    );
    assert_close(&format!("{label} out"), &rt.download(ws.out()).expect("dl"), &want_out, ATOL, RTOL);
    assert_close(&format!("{label} loss"), &rt.download(ws.loss()).expect("dl"), &want_loss, ATOL, RTOL);
    assert_close(&format!("{label} grad"), &rt.download(&grad).expect("dl"), &want_grad, ATOL, RTOL);
    assert_close(&format!("{label} hvp"), &rt.download(&hv).expect("dl"), &want_hv, ATOL, RTOL);
}

#[test]
fn learner_sinusoid_default_matches_engine() {
    let cfg = Config::sinusoid_default();
    for rt in runtimes() {
        check_learner(&rt, &cfg, 4, 10, 1);
    }
}

#[test]
fn learner_tanh_cross_entropy_matches_engine() {
    let cfg = config(&[4, 17, 33, 3], Activation::Tanh, LossKind::CrossEntropy);
    for rt in runtimes() {
        check_learner(&rt, &cfg, 3, 21, 2);
    }
}

#[test]
fn learner_other_shapes_match_engine() {
    for (layers, act, loss, tasks, rows) in [
        (vec![6, 20, 5], Activation::Tanh, LossKind::Mse, 2, 37),
        (vec![3, 16, 4], Activation::Relu, LossKind::CrossEntropy, 3, 16),
        (vec![2, 5], Activation::Relu, LossKind::Mse, 2, 9),
        (vec![8, 24, 24, 24, 10], Activation::Tanh, LossKind::CrossEntropy, 2, 25),
    ] {
        let cfg = config(&layers, act, loss);
        for rt in runtimes() {
            check_learner(&rt, &cfg, tasks, rows, layers.len() as u64);
        }
    }
}
