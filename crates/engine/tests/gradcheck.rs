//! The engine's exact derivatives against float64 central finite differences on tiny
//! problems: the Hessian-vector product against differences of the gradient, and every
//! meta-gradient tensor against differences of `J` with the scheduler's features held
//! constant (spec §3). Tolerance: relative error `||ours − fd|| / ||fd||` per tensor < 1e-6.

use metasched_engine::mlp::Mlp;
use metasched_engine::rng::CounterRng;
use metasched_engine::{
    Activation, Config, Engine, FEATURES, InnerConfig, LossKind, ModelConfig, Params, SchedulerConfig,
    SchedulerKind, Slot, TaskBatch, run_task,
};

const TOL: f64 = 1e-6;
/// Tolerance of the momentum and adam checks (Richardson-extrapolated differences): their
/// updates are more curved, so plain differences at `h = 1e-5` are only good to about 1e-6; a
/// wrong derivative shows up as an error near 1.
const OPTIMIZER_TOL: f64 = 1e-5;

fn config(
    layers: &[usize],
    act: Activation,
    loss: LossKind,
    kind: SchedulerKind,
    first_order: bool,
) -> Config {
    Config {
        model: ModelConfig { layers: layers.to_vec(), activation: act, loss },
        inner: InnerConfig { steps: 3, first_order, learn_init: true, optimizer: Default::default() },
        scheduler: SchedulerConfig { kind, hidden: 4, lr_min: 0.01, lr_max: 0.6, lr_fixed: 0.3 },
    }
}

fn random_params(config: &Config, seed: u64) -> Params<f64> {
    let mut p = Params::<f64>::zeros(config);
    let mut rng = CounterRng::new(seed, &[99]);
    for v in p.values_mut() {
        *v = rng.uniform_in(-0.7, 0.7);
    }
    p
}

fn random_batch(config: &Config, b: usize, k: usize, q: usize, seed: u64) -> TaskBatch<f64> {
    metasched_tasks::random_batch(config, b, k, q, seed)
}

/// J with the features of every task held at `feats`.
fn j_fixed(
    config: &Config,
    params: &Params<f64>,
    batch: &TaskBatch<f64>,
    feats: &[Vec<[f64; FEATURES]>],
) -> f64 {
    (0..batch.b).map(|i| run_task(config, params, batch.task(i), Some(&feats[i])).outer_loss).sum::<f64>()
        / batch.b as f64
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(1e-12)
}

fn check_metagrad(config: &Config, seed: u64) {
    check_metagrad_with(config, seed, TOL, false);
}

/// [`check_metagrad`] at tolerance `tol`; with `richardson`, the finite differences at `h`
/// and `h/2` are combined to cancel their `h^2` error (for the more curved adam updates).
fn check_metagrad_with(config: &Config, seed: u64, tol: f64, richardson: bool) {
    let params = random_params(config, seed);
    let batch = random_batch(config, 2, 5, 4, seed);
    let engine = Engine::new(2).expect("pool");
    let mg = engine.meta_gradient(config, &params, &batch).expect("metagrad");
    let feats: Vec<Vec<[f64; FEATURES]>> =
        (0..batch.b).map(|i| run_task(config, &params, batch.task(i), None).features).collect();
    assert!((j_fixed(config, &params, &batch, &feats) - mg.j).abs() < 1e-14);
    let h = 1e-5;
    for spec in params.present_slots(config) {
        let ours = mg.grad.slot(config, spec.slot).expect("slot").to_vec();
        let mut fd = vec![0.0; ours.len()];
        let central = |i: usize, h: f64| {
            let mut plus = params.clone();
            let mut minus = params.clone();
            slot_mut(&mut plus, config, spec.slot)[i] += h;
            slot_mut(&mut minus, config, spec.slot)[i] -= h;
            (j_fixed(config, &plus, &batch, &feats) - j_fixed(config, &minus, &batch, &feats)) / (2.0 * h)
        };
        for (i, fd_i) in fd.iter_mut().enumerate() {
            *fd_i =
                if richardson { (4.0 * central(i, h / 2.0) - central(i, h)) / 3.0 } else { central(i, h) };
        }
        let e = rel_err(&ours, &fd);
        let norm: f64 = fd.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            e < tol || norm < 1e-10,
            "{}: relative error {e:.3e} (|fd| = {norm:.3e}) for {config:?}",
            spec.name
        );
    }
}

fn slot_mut<'a>(p: &'a mut Params<f64>, config: &Config, slot: Slot) -> &'a mut [f64] {
    match slot {
        Slot::Theta(k) => {
            let r = metasched_engine::ThetaLayout::new(config).group(k);
            &mut p.theta[r]
        }
        Slot::LslrZ => p.lslr.as_mut().expect("lslr"),
        s => {
            let l = p.lstm.as_mut().expect("lstm");
            match s {
                Slot::LstmWeightIh => &mut l.w_ih,
                Slot::LstmWeightHh => &mut l.w_hh,
                Slot::LstmBiasIh => &mut l.b_ih,
                Slot::LstmBiasHh => &mut l.b_hh,
                Slot::HeadWeight => &mut l.head_w,
                _ => &mut l.head_b,
            }
        }
    }
}

#[test]
fn second_order_metagrad_matches_finite_differences() {
    let mut seed = 1;
    for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
        for act in [Activation::Relu, Activation::Tanh] {
            for (loss, layers) in [(LossKind::Mse, vec![2, 5, 4, 2]), (LossKind::CrossEntropy, vec![3, 6, 3])]
            {
                check_metagrad(&config(&layers, act, loss, kind, false), seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn single_layer_and_deep_learners_match_finite_differences() {
    check_metagrad(&config(&[3, 2], Activation::Tanh, LossKind::Mse, SchedulerKind::Lstm, false), 40);
    check_metagrad(
        &config(&[1, 4, 3, 3, 1], Activation::Relu, LossKind::Mse, SchedulerKind::Lstm, false),
        41,
    );
}

/// Relative errors of the HVP at `theta` (against float64 differences of the gradient along a
/// random direction `u`) and of the gradient along `u` (against differences of the loss), on
/// one random task of `k` support points.
fn hvp_errors(cfg: &Config, theta: &[f64], k: usize, seed: u64) -> (f64, f64) {
    let mlp = Mlp::new(cfg);
    let batch = random_batch(cfg, 1, k, 1, seed);
    let task = batch.task(0).support;
    let p = mlp.layout.len();
    let mut rng = CounterRng::new(3, &[]);
    let u: Vec<f64> = (0..p).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    let mut cache = mlp.cache(task.n);
    let mut g = vec![0.0; p];
    mlp.loss_and_grad(&mut g, &mut cache, theta, task.x, task.y);
    let mut hv = vec![0.0; p];
    let mut scratch = mlp.hvp_scratch(task.n);
    mlp.hvp(&mut hv, &mut scratch, &cache, theta, task.x, &u);
    let h = 1e-5;
    let at = |s: f64| {
        let th: Vec<f64> = theta.iter().zip(&u).map(|(t, u)| t + s * u).collect();
        let mut c = mlp.cache(task.n);
        let mut g = vec![0.0; p];
        let l = mlp.loss_and_grad(&mut g, &mut c, &th, task.x, task.y);
        (l, g)
    };
    let ((lp, gp), (lm, gm)) = (at(h), at(-h));
    let fd: Vec<f64> = gp.iter().zip(&gm).map(|(a, b)| (a - b) / (2.0 * h)).collect();
    let gu: f64 = g.iter().zip(&u).map(|(a, b)| a * b).sum();
    (rel_err(&hv, &fd), ((lp - lm) / (2.0 * h) - gu).abs() / gu.abs().max(1e-12))
}

#[test]
fn hessian_vector_product_matches_differences_of_the_gradient() {
    for act in [Activation::Relu, Activation::Tanh] {
        for (loss, layers) in [(LossKind::Mse, vec![2, 5, 4, 2]), (LossKind::CrossEntropy, vec![3, 6, 5, 4])]
        {
            let cfg = config(&layers, act, loss, SchedulerKind::Fixed, false);
            let e = hvp_errors(&cfg, &random_params(&cfg, 5).theta, 6, 5).0;
            assert!(e < TOL, "{act:?} {loss:?}: HVP relative error {e:.3e}");
        }
    }
}

#[test]
fn gradient_matches_finite_differences_of_the_loss() {
    for act in [Activation::Relu, Activation::Tanh] {
        for (loss, layers) in [(LossKind::Mse, vec![2, 5, 4, 2]), (LossKind::CrossEntropy, vec![3, 6, 4])] {
            let cfg = config(&layers, act, loss, SchedulerKind::Fixed, false);
            let mlp = Mlp::new(&cfg);
            let params = random_params(&cfg, 9);
            let batch = random_batch(&cfg, 1, 6, 1, 9);
            let s = batch.task(0).support;
            let p = mlp.layout.len();
            let mut cache = mlp.cache(s.n);
            let mut g = vec![0.0; p];
            mlp.loss_and_grad(&mut g, &mut cache, &params.theta, s.x, s.y);
            let loss_at = |th: &[f64]| {
                let mut c = mlp.cache(s.n);
                mlp.forward(&mut c, th, s.x);
                mlp.loss_of_output(&c, s.y)
            };
            let h = 1e-6;
            let fd: Vec<f64> = (0..p)
                .map(|i| {
                    let mut a = params.theta.clone();
                    let mut b = params.theta.clone();
                    a[i] += h;
                    b[i] -= h;
                    (loss_at(&a) - loss_at(&b)) / (2.0 * h)
                })
                .collect();
            let e = rel_err(&g, &fd);
            assert!(e < TOL, "{act:?} {loss:?}: gradient relative error {e:.3e}");
        }
    }
}

/// Every output bit of a meta-gradient.
fn bits(m: &metasched_engine::MetaGradient<f32>) -> Vec<u32> {
    let mut v: Vec<u32> = m.grad.values().map(|x| x.to_bits()).collect();
    v.extend(m.outer_loss.iter().chain(&m.lr).map(|x| x.to_bits()));
    v.push(m.j.to_bits());
    v
}

#[test]
fn thread_count_does_not_change_a_single_bit() {
    let cfg = Config::sinusoid_default();
    let params = metasched_engine::init::init_params(&cfg, 3, 0.01).expect("init");
    let batch = random_batch(&cfg, 13, 10, 10, 4).cast::<f32>();
    let one = Engine::new(1).expect("pool").meta_gradient(&cfg, &params, &batch).expect("1 thread");
    for threads in [2, 3, 8] {
        let many =
            Engine::new(threads).expect("pool").meta_gradient(&cfg, &params, &batch).expect("n threads");
        assert_eq!(bits(&one), bits(&many), "{threads} threads differ from 1");
    }
}

#[test]
fn f32_engine_agrees_with_f64_engine() {
    for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
        let cfg = Config {
            scheduler: SchedulerConfig { kind, ..Config::sinusoid_default().scheduler },
            ..Config::sinusoid_default()
        };
        let params = metasched_engine::init::init_params(&cfg, 11, 0.05).expect("init");
        let batch = random_batch(&cfg, 4, 10, 10, 12).cast::<f32>();
        let engine = Engine::new(2).expect("pool");
        let lo = engine.meta_gradient(&cfg, &params, &batch).expect("f32");
        let hi = engine.meta_gradient(&cfg, &params.cast::<f64>(), &batch.cast::<f64>()).expect("f64");
        for spec in params.present_slots(&cfg) {
            let a: Vec<f64> =
                lo.grad.slot(&cfg, spec.slot).expect("slot").iter().map(|&x| x as f64).collect();
            let b = hi.grad.slot(&cfg, spec.slot).expect("slot");
            let e = rel_err(&a, b);
            assert!(e < 1e-4, "{kind:?} {}: f32 vs f64 relative error {e:.3e}", spec.name);
        }
    }
}

/// Every inner optimiser of spec §3.1 (momentum and adam, besides sgd above), second order,
/// against float64 finite differences of `J`, over scheduler kinds and losses.
#[test]
fn inner_optimizers_match_finite_differences() {
    use metasched_engine::InnerOptimizer;
    let optimizers = [
        InnerOptimizer::Momentum { mu: 0.9 },
        InnerOptimizer::Adam { beta1: 0.5, beta2: 0.9, eps: 1e-3 },
        InnerOptimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
    ];
    let mut seed = 40;
    for optimizer in optimizers {
        for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
            for (act, loss, layers) in [
                (Activation::Tanh, LossKind::Mse, vec![2, 5, 4, 2]),
                (Activation::Relu, LossKind::CrossEntropy, vec![3, 6, 3]),
            ] {
                let mut c = config(&layers, act, loss, kind, false);
                c.inner.optimizer = optimizer;
                c.scheduler.lr_max = 0.05;
                c.scheduler.lr_fixed = 0.03;
                check_metagrad_with(&c, seed, OPTIMIZER_TOL, true);
                seed += 1;
            }
        }
    }
}

/// A learner whose hidden layer reaches `linalg::GEMM_CRATE_MIN` (192 × 192 = 36,864 weights),
/// so its products go to the GEMM crate: the gradient (along a random direction) and the
/// Hessian-vector product against float64 differences, f32 against f64 meta-gradients, and
/// the same bits for any thread count.
#[test]
fn wide_learner_products_stay_exact_and_thread_independent() {
    for act in [Activation::Relu, Activation::Tanh] {
        let cfg = config(&[2, 192, 192, 2], act, LossKind::Mse, SchedulerKind::Fixed, false);
        let theta: Vec<f64> = random_params(&cfg, 5).theta.iter().map(|t| t * 0.1).collect();
        let (e, e_dir) = hvp_errors(&cfg, &theta, 10, 5);
        assert!(e < TOL, "{act:?}: wide HVP relative error {e:.3e}");
        assert!(e_dir < TOL, "{act:?}: wide directional gradient relative error {e_dir:.3e}");
    }
    let mut cfg = Config::sinusoid_default();
    cfg.model.layers = vec![1, 192, 192, 1];
    let params = metasched_engine::init::init_params(&cfg, 11, 0.05).expect("init");
    let batch = random_batch(&cfg, 5, 10, 10, 12).cast::<f32>();
    let lo = Engine::new(1).expect("pool").meta_gradient(&cfg, &params, &batch).expect("f32");
    let hi = Engine::new(2)
        .expect("pool")
        .meta_gradient(&cfg, &params.cast::<f64>(), &batch.cast::<f64>())
        .expect("f64");
    for spec in params.present_slots(&cfg) {
        let a: Vec<f64> = lo.grad.slot(&cfg, spec.slot).expect("slot").iter().map(|&x| x as f64).collect();
        let e = rel_err(&a, hi.grad.slot(&cfg, spec.slot).expect("slot"));
        assert!(e < 1e-4, "wide {}: f32 vs f64 relative error {e:.3e}", spec.name);
    }
    for threads in [2, 3] {
        let many = Engine::new(threads).expect("pool").meta_gradient(&cfg, &params, &batch).expect("n");
        assert_eq!(bits(&lo), bits(&many), "wide: {threads} threads differ from 1");
    }
}
