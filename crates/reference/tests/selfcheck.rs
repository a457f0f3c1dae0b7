//! Self-checks of the float64 reference (`tests/reference/`): its tape, its hand-written
//! MLP backprop, its second-order meta-gradient against central finite differences
//! (features held at the unperturbed run's values), and its first-order meta-gradient
//! against a direct derivation of spec §4.
//!
//! Run with `--nocapture` to see the worst relative errors measured (and `REF_VERBOSE=1`
//! for every tensor's gradient norm and error).
#![allow(clippy::needless_range_loop)]

use metasched_reference as reference;

use std::collections::BTreeMap;

use reference::mlp::Learner;
use reference::tape::{Tape, Var};
use reference::{
    RefConfig, RefKind, RefOptimizer, RefSet, RefTargets, RefTask, reference_forward, reference_metagrad,
    reference_rates, tensor_shapes,
};

/// splitmix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [-r, r).
    fn sym(&mut self, r: f64) -> f64 {
        (2.0 * self.unit() - 1.0) * r
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

const FD_STEP: f64 = 1e-5;
const TOL: f64 = 1e-6;

fn config(kind: RefKind, tanh: bool, cross_entropy: bool, first_order: bool) -> RefConfig {
    RefConfig {
        layers: vec![2, 5, 4, 3],
        tanh,
        cross_entropy,
        steps: 4,
        first_order,
        kind,
        lr_min: 0.0,
        lr_max: 0.5,
        // Fixed kind: a rate large enough that the inner steps matter.
        lr_fixed: 0.3,
        optimizer: Default::default(),
    }
}

fn random_tensors(cfg: &RefConfig, rng: &mut Rng) -> BTreeMap<String, Vec<f64>> {
    tensor_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let len: usize = shape.iter().product();
            (name, (0..len).map(|_| rng.sym(0.5)).collect())
        })
        .collect()
}

fn random_set(cfg: &RefConfig, n: usize, rng: &mut Rng) -> RefSet {
    let (d0, dl) = (cfg.layers[0], cfg.layers[cfg.layers.len() - 1]);
    let x = (0..n * d0).map(|_| rng.sym(1.0)).collect();
    let y = if cfg.cross_entropy {
        RefTargets::Labels((0..n).map(|_| rng.below(dl)).collect())
    } else {
        RefTargets::Values((0..n * dl).map(|_| rng.sym(1.0)).collect())
    };
    RefSet { n, x, y }
}

fn random_tasks(cfg: &RefConfig, b: usize, k: usize, q: usize, rng: &mut Rng) -> Vec<RefTask> {
    (0..b).map(|_| RefTask { support: random_set(cfg, k, rng), query: random_set(cfg, q, rng) }).collect()
}

fn all_kinds() -> [RefKind; 3] {
    [RefKind::Lstm { hidden: 4 }, RefKind::Lslr, RefKind::Fixed]
}

fn label(cfg: &RefConfig) -> String {
    format!(
        "{:?} {} {} {}",
        cfg.kind,
        if cfg.tanh { "tanh" } else { "relu" },
        if cfg.cross_entropy { "cross_entropy" } else { "mse" },
        if cfg.first_order { "first-order" } else { "second-order" }
    )
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `||ours - reference|| / ||reference||` (absolute when the reference is ~0).
fn rel_err(ours: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let d: Vec<f64> = ours.iter().zip(reference).map(|(a, b)| a - b).collect();
    norm(&d) / norm(reference).max(1e-8)
}

/// Fourth-order central differences of `f` w.r.t. every entry of tensor `name`:
/// `(-f(p+2h) + 8 f(p+h) - 8 f(p-h) + f(p-2h)) / 12h`. Truncation error is O(h^4)
/// (negligible at h = 1e-5); the f64 round-off floor is ~1e-11 absolute per entry.
fn fd_tensor(
    tensors: &BTreeMap<String, Vec<f64>>,
    name: &str,
    mut f: impl FnMut(&BTreeMap<String, Vec<f64>>) -> Vec<f64>,
) -> Vec<Vec<f64>> {
    let len = tensors[name].len();
    let mut out = Vec::with_capacity(len);
    let mut pert = tensors.clone();
    for i in 0..len {
        let orig = tensors[name][i];
        let mut at = |delta: f64| {
            pert.get_mut(name).expect("tensor exists")[i] = orig + delta;
            let v = f(&pert);
            pert.get_mut(name).expect("tensor exists")[i] = orig;
            v
        };
        let (p2, p1, m1, m2) = (at(2.0 * FD_STEP), at(FD_STEP), at(-FD_STEP), at(-2.0 * FD_STEP));
        out.push(
            (0..p1.len()).map(|k| (-p2[k] + 8.0 * p1[k] - 8.0 * m1[k] + m2[k]) / (12.0 * FD_STEP)).collect(),
        );
    }
    out
}

/// Random parameters and tasks, redrawn while some gradient vanishes (e.g. a relu layer
/// dead on every query point), so that no check is vacuous.
fn draw(cfg: &RefConfig, rng: &mut Rng) -> (BTreeMap<String, Vec<f64>>, Vec<RefTask>) {
    for _ in 0..100 {
        let tensors = random_tensors(cfg, rng);
        let tasks = random_tasks(cfg, 3, 5, 6, rng);
        let out = reference_metagrad(cfg, &tensors, &tasks);
        if out.grads.values().all(|g| norm(g) > 1e-6) {
            return (tensors, tasks);
        }
    }
    panic!("{}: no non-degenerate draw in 100 tries", label(cfg));
}

// ---------------------------------------------------------------- the tape itself

#[test]
fn tape_ops_match_finite_differences() {
    // f(x, y) built from every op, at a point away from relu's kink.
    fn f(t: &mut Tape, x: Var, y: Var) -> Var {
        let a = t.add(x, y);
        let b = t.sub(x, y);
        let c = t.mul(a, b);
        let d = t.div(c, y);
        let e = t.neg(d);
        let ex = t.exp(e);
        let sq = t.mul(x, x);
        let l0 = t.add_const(sq, 1.0);
        let l = t.ln(l0);
        let th = t.tanh(a);
        let s = t.sigmoid(b);
        let r1 = t.relu(b);
        let r2 = t.relu(e);
        let k = t.constant(0.7);
        let sc = t.scale(r1, 1.5);
        let dt = t.dot(&[ex, l, th, s, sc, r2], &[k, x, y, l, th, x]);
        t.sum(&[dt, ex, r2])
    }
    let val = |x: f64, y: f64| {
        let mut t = Tape::new();
        let (vx, vy) = (t.var(x), t.var(y));
        let out = f(&mut t, vx, vy);
        t.value(out)
    };
    let mut worst: f64 = 0.0;
    for &(x, y) in &[(0.8, 0.3), (-0.4, 0.9), (0.3, -1.2)] {
        let mut t = Tape::new();
        let (vx, vy) = (t.var(x), t.var(y));
        let out = f(&mut t, vx, vy);
        let adj = t.gradient(out);
        let h = 1e-6;
        let fd = [(val(x + h, y) - val(x - h, y)) / (2.0 * h), (val(x, y + h) - val(x, y - h)) / (2.0 * h)];
        let err = rel_err(&[adj[vx.index()], adj[vy.index()]], &fd);
        worst = worst.max(err);
    }
    println!("tape ops vs FD: worst relative error {worst:.3e}");
    assert!(worst < 1e-8, "tape gradient disagrees with FD: {worst:e}");
}

// ---------------------------------------------------------------- the hand-written MLP backprop

#[test]
fn hand_backprop_matches_tape_gradient() {
    let mut rng = Rng(11);
    let mut worst: f64 = 0.0;
    for tanh in [false, true] {
        for ce in [false, true] {
            for layers in [vec![2, 5, 4, 3], vec![3, 2], vec![1, 6, 2]] {
                let cfg = RefConfig { layers, ..config(RefKind::Fixed, tanh, ce, false) };
                let learner = Learner { layers: &cfg.layers, tanh, cross_entropy: ce };
                let tensors = random_tensors(&cfg, &mut rng);
                let set = random_set(&cfg, 6, &mut rng);
                let mut tape = Tape::new();
                let theta: Vec<Vec<Var>> = learner
                    .group_names()
                    .iter()
                    .map(|n| tensors[n].iter().map(|&v| tape.var(v)).collect())
                    .collect();
                let fwd = learner.forward(&mut tape, &theta, &set);
                let hand = learner.backward(&mut tape, &theta, &fwd, set.n);
                let adj = tape.gradient(fwd.loss);
                for k in 0..theta.len() {
                    let auto: Vec<f64> = theta[k].iter().map(|v| adj[v.index()]).collect();
                    worst = worst.max(rel_err(&tape.values(&hand[k]), &auto));
                }
            }
        }
    }
    println!("hand backprop vs tape gradient: worst relative error {worst:.3e}");
    assert!(worst < 1e-12, "hand-written backprop disagrees with the tape: {worst:e}");
}

// ---------------------------------------------------------------- second order vs finite differences

#[test]
fn second_order_matches_finite_differences() {
    let mut rng = Rng(2024);
    let mut worst_all: f64 = 0.0;
    for kind in all_kinds() {
        for tanh in [false, true] {
            for ce in [false, true] {
                let cfg = config(kind, tanh, ce, false);
                let (tensors, tasks) = draw(&cfg, &mut rng);
                let out = reference_metagrad(&cfg, &tensors, &tasks);
                let (j, feats) = reference_forward(&cfg, &tensors, &tasks, None);
                assert_eq!(j, out.j, "forward and metagrad disagree on J");
                let mean = out.outer_loss.iter().sum::<f64>() / out.outer_loss.len() as f64;
                assert!((mean - out.j).abs() <= 1e-14 * out.j.abs().max(1.0));
                assert!(out.lr.iter().all(|&a| (cfg.lr_min..=cfg.lr_max).contains(&a)));
                let mut worst: f64 = 0.0;
                let mut worst_name = String::new();
                for (name, _) in tensor_shapes(&cfg) {
                    let fd: Vec<f64> = fd_tensor(&tensors, &name, |p| {
                        vec![reference_forward(&cfg, p, &tasks, Some(&feats)).0]
                    })
                    .into_iter()
                    .map(|v| v[0])
                    .collect();
                    let ours = &out.grads[&name];
                    let err = rel_err(ours, &fd);
                    if std::env::var("REF_VERBOSE").is_ok() {
                        println!("  {name}: |fd| {:.3e} err {err:.3e}", norm(&fd));
                    }
                    assert!(
                        norm(&fd) > 1e-6,
                        "{}: {name} has a vanishing gradient; the check is vacuous",
                        label(&cfg)
                    );
                    if err > worst {
                        worst = err;
                        worst_name = name.clone();
                    }
                }
                println!("{}: worst relative error {worst:.3e} ({worst_name})", label(&cfg));
                assert!(worst < TOL, "{}: {worst_name} disagrees with FD: {worst:e}", label(&cfg));
                worst_all = worst_all.max(worst);
            }
        }
    }
    println!("second order vs FD: worst relative error over all cases {worst_all:.3e}");
}

// ---------------------------------------------------------------- first order vs spec §4

/// `grad L(theta)` and `L(theta)` of one set, via the tape's own reverse sweep.
fn loss_grad(learner: &Learner<'_>, theta: &[Vec<f64>], set: &RefSet) -> (f64, Vec<Vec<f64>>) {
    let mut tape = Tape::new();
    let vars: Vec<Vec<Var>> = theta.iter().map(|g| g.iter().map(|&v| tape.var(v)).collect()).collect();
    let fwd = learner.forward(&mut tape, &vars, set);
    let adj = tape.gradient(fwd.loss);
    (tape.value(fwd.loss), vars.iter().map(|g| g.iter().map(|v| adj[v.index()]).collect()).collect())
}

#[test]
fn first_order_matches_spec_derivation() {
    let mut rng = Rng(77);
    let mut worst_all: f64 = 0.0;
    for kind in all_kinds() {
        for tanh in [false, true] {
            for ce in [false, true] {
                let cfg = config(kind, tanh, ce, true);
                let learner = Learner { layers: &cfg.layers, tanh, cross_entropy: ce };
                let names = learner.group_names();
                let g = names.len();
                let t_steps = cfg.steps;
                let (tensors, tasks) = draw(&cfg, &mut rng);
                let bsz = tasks.len();
                let out = reference_metagrad(&cfg, &tensors, &tasks);
                let (_, feats) = reference_forward(&cfg, &tensors, &tasks, None);

                // Replay the inner loop on values with the reference's rates.
                let mut expect_theta: Vec<Vec<f64>> =
                    names.iter().map(|n| vec![0.0; tensors[n].len()]).collect();
                let mut dj_da = vec![0.0; bsz * t_steps * g];
                for (b, task) in tasks.iter().enumerate() {
                    let mut theta: Vec<Vec<f64>> = names.iter().map(|n| tensors[n].clone()).collect();
                    let mut gs = Vec::with_capacity(t_steps);
                    for t in 0..t_steps {
                        let (l, gt) = loss_grad(&learner, &theta, &task.support);
                        let gnorm = norm(&gt.concat());
                        let x = [(l + 1e-8).ln(), (gnorm + 1e-8).ln(), t as f64 / t_steps as f64];
                        for f in 0..3 {
                            assert!(
                                (x[f] - feats[b][t][f]).abs() < 1e-12,
                                "feature {f} of task {b} step {t}"
                            );
                        }
                        for k in 0..g {
                            let a = out.lr[(b * t_steps + t) * g + k];
                            for i in 0..theta[k].len() {
                                theta[k][i] -= a * gt[k][i];
                            }
                        }
                        gs.push(gt);
                    }
                    let (lq, v) = loss_grad(&learner, &theta, &task.query);
                    assert!(
                        (lq - out.outer_loss[b]).abs() < 1e-12 * lq.abs().max(1.0),
                        "outer loss of task {b}"
                    );
                    for k in 0..g {
                        for i in 0..v[k].len() {
                            expect_theta[k][i] += v[k][i] / bsz as f64;
                        }
                    }
                    // dJ/da_t[k] = -(1/B) sum_{i in group k} v[i] g_t[i]   (v_t = v_T for all t)
                    for t in 0..t_steps {
                        for k in 0..g {
                            let s: f64 = v[k].iter().zip(&gs[t][k]).map(|(a, b)| a * b).sum();
                            dj_da[(b * t_steps + t) * g + k] = -s / bsz as f64;
                        }
                    }
                }

                let mut worst: f64 = 0.0;
                let mut worst_name = String::new();
                let mut check = |name: &str, ours: &[f64], expect: &[f64]| {
                    let err = rel_err(ours, expect);
                    if std::env::var("REF_VERBOSE").is_ok() {
                        println!(
                            "  {name}: |expect| {:.3e} |ours| {:.3e} err {err:.3e}",
                            norm(expect),
                            norm(ours)
                        );
                    }
                    assert!(norm(expect) > 1e-6, "{}: {name} has a vanishing gradient", label(&cfg));
                    if err > worst {
                        worst = err;
                        worst_name = name.to_string();
                    }
                };
                for (k, name) in names.iter().enumerate() {
                    check(name, &out.grads[name], &expect_theta[k]);
                }
                // dJ/dphi = sum_{b,t,k} dJ/da_t[k] * d a_t[k] / d phi; with the features held
                // fixed the rates depend on phi alone, so d a / d phi is a finite difference.
                for name in reference::phi_names(cfg.kind) {
                    let jac = fd_tensor(&tensors, name, |p| reference_rates(&cfg, p, &tasks, Some(&feats)));
                    let expect: Vec<f64> =
                        jac.iter().map(|col| col.iter().zip(&dj_da).map(|(a, b)| a * b).sum()).collect();
                    check(name, &out.grads[name], &expect);
                }
                println!("{}: worst relative error {worst:.3e} ({worst_name})", label(&cfg));
                assert!(worst < TOL, "{}: {worst_name} disagrees with spec §4: {worst:e}", label(&cfg));
                worst_all = worst_all.max(worst);
            }
        }
    }
    println!("first order vs spec §4: worst relative error over all cases {worst_all:.3e}");
}

// ---------------------------------------------------------------- sanity: the Hessian terms matter

#[test]
fn second_order_differs_from_first_order() {
    let mut rng = Rng(5);
    for kind in all_kinds() {
        let so = config(kind, true, false, false);
        let fo = config(kind, true, false, true);
        let tensors = random_tensors(&so, &mut rng);
        let tasks = random_tasks(&so, 2, 5, 5, &mut rng);
        let a = reference_metagrad(&so, &tensors, &tasks);
        let b = reference_metagrad(&fo, &tensors, &tasks);
        assert_eq!(a.j, b.j, "J does not depend on the gradient order");
        assert_eq!(a.lr, b.lr, "the rates do not depend on the gradient order");
        let name = "theta.layers.0.weight";
        let err = rel_err(&b.grads[name], &a.grads[name]);
        println!("{kind:?}: first vs second order differ by {err:.3e} relative ({name})");
        assert!(err > 1e-3, "{kind:?}: Hessian terms look absent");
    }
}

#[test]
fn features_are_as_specified() {
    let mut rng = Rng(9);
    let cfg = config(RefKind::Lstm { hidden: 3 }, false, true, false);
    let tensors = random_tensors(&cfg, &mut rng);
    let tasks = random_tasks(&cfg, 2, 4, 4, &mut rng);
    let (j, feats) = reference_forward(&cfg, &tensors, &tasks, None);
    let (j2, feats2) = reference_forward(&cfg, &tensors, &tasks, Some(&feats));
    assert_eq!(j, j2);
    assert_eq!(feats, feats2);
    for f in &feats {
        for (t, x) in f.iter().enumerate() {
            assert_eq!(x[2], t as f64 / cfg.steps as f64);
        }
    }
    // Overriding the features changes the rates (so the override is honoured).
    let mut other = feats.clone();
    other[0][1][0] += 0.5;
    let (j3, _) = reference_forward(&cfg, &tensors, &tasks, Some(&other));
    assert_ne!(j, j3);
}

/// The momentum and adam inner optimisers (spec §3.1): the reference's second-order
/// meta-gradient against fourth-order finite differences of `J` (features held), every
/// scheduler kind.
#[test]
fn inner_optimizers_match_finite_differences() {
    let mut rng = Rng(4242);
    let optimizers =
        [RefOptimizer::Momentum { mu: 0.9 }, RefOptimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }];
    for optimizer in optimizers {
        for kind in all_kinds() {
            let cfg =
                RefConfig { optimizer, lr_max: 0.05, lr_fixed: 0.02, ..config(kind, true, false, false) };
            let (tensors, tasks) = draw(&cfg, &mut rng);
            let out = reference_metagrad(&cfg, &tensors, &tasks);
            let (_, feats) = reference_forward(&cfg, &tensors, &tasks, None);
            for (name, _) in tensor_shapes(&cfg) {
                let fd: Vec<f64> =
                    fd_tensor(&tensors, &name, |p| vec![reference_forward(&cfg, p, &tasks, Some(&feats)).0])
                        .into_iter()
                        .map(|v| v[0])
                        .collect();
                let err = rel_err(&out.grads[&name], &fd);
                assert!(err < TOL, "{optimizer:?} {}: {name} disagrees with FD: {err:e}", label(&cfg));
            }
        }
    }
}
