//! Long runs (spec §7-8) checked against independent computations: the window meta-gradient
//! against float64 central finite differences (features held constant, mid-run start with
//! non-zero optimiser and LSTM state, several objective points), `--remat` bitwise equal to
//! the plain backward pass, windows composing bitwise into one run, and PES's mean against the
//! exact gradient within its standard error.

use metasched_engine::horizon::{
    Batch, Objective, ObjectiveMode, PesPair, RunData, RunState, advance, pes_window, window_meta_gradient,
};
use metasched_engine::rng::CounterRng;
use metasched_engine::{
    Activation, Config, FEATURES, InnerConfig, InnerOptimizer, LossKind, ModelConfig, Params, Real,
    SchedulerConfig, SchedulerKind, SetRef, Targets, TargetsRef,
};

/// A regression data set: `n` training points, minibatch of step `t` = rows `(t·b + i) mod n`.
struct Toy<T> {
    b: usize,
    train: Batch<T>,
    val: Batch<T>,
}

impl<T: Real> Toy<T> {
    fn new(d_in: usize, d_out: usize, n: usize, b: usize, seed: u64) -> Self {
        let mut rng = CounterRng::new(seed, &[7]);
        let mut set = |n: usize| {
            let x: Vec<T> = (0..n * d_in).map(|_| T::of(rng.uniform_in(-1.5, 1.5))).collect();
            let y: Vec<T> = (0..n * d_out).map(|_| T::of(rng.uniform_in(-1.0, 1.0))).collect();
            Batch { n, x, y: Targets::Values(y) }
        };
        let train = set(n);
        let val = set(7);
        Self { b, train, val }
    }
}

impl<T: Real> RunData<T> for Toy<T> {
    fn fill_batch(&self, t: usize, out: &mut Batch<T>) {
        let d_in = self.train.x.len() / self.train.n;
        let Targets::Values(ty) = &self.train.y else { unreachable!() };
        let d_out = ty.len() / self.train.n;
        out.n = self.b;
        out.x.clear();
        let mut y = Vec::new();
        for i in 0..self.b {
            let r = (t * self.b + i) % self.train.n;
            out.x.extend_from_slice(&self.train.x[r * d_in..(r + 1) * d_in]);
            y.extend_from_slice(&ty[r * d_out..(r + 1) * d_out]);
        }
        out.y = Targets::Values(y);
    }
    fn validation(&self) -> SetRef<'_, T> {
        self.val.as_set()
    }
    fn train_set(&self) -> SetRef<'_, T> {
        self.train.as_set()
    }
}

fn config(kind: SchedulerKind, optimizer: InnerOptimizer, horizon: usize, first_order: bool) -> Config {
    Config {
        model: ModelConfig { layers: vec![2, 5, 1], activation: Activation::Tanh, loss: LossKind::Mse },
        inner: InnerConfig { steps: horizon, first_order, learn_init: false, optimizer },
        scheduler: SchedulerConfig { kind, hidden: 4, lr_min: 0.01, lr_max: 0.3, lr_fixed: 0.1 },
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

fn optimizers() -> [InnerOptimizer; 3] {
    [
        InnerOptimizer::Sgd,
        InnerOptimizer::Momentum { mu: 0.8 },
        InnerOptimizer::Adam { beta1: 0.8, beta2: 0.9, eps: 1e-3 },
    ]
}

/// A run advanced `t0` steps with the learned scheduler: non-zero optimiser and LSTM state.
fn mid_run(config: &Config, params: &Params<f64>, data: &Toy<f64>, t0: usize) -> RunState<f64> {
    let theta = params.theta.clone();
    let mut state = RunState::fresh(config, theta);
    if t0 > 0 {
        advance(config, params, &mut state, data, t0, None, None, None).expect("advance");
    }
    state
}

fn phi(params: &Params<f64>) -> Vec<f64> {
    params.buffers().iter().skip(1).flat_map(|b| b.iter().copied()).collect()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(1e-12)
}

#[test]
fn window_gradient_matches_finite_differences() {
    for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr] {
        for opt in optimizers() {
            for mode in [ObjectiveMode::End, ObjectiveMode::Mean] {
                let config = config(kind, opt, 12, false);
                let params = random_params(&config, 3);
                let data = Toy::<f64>::new(2, 1, 9, 3, 5);
                // A window of 6 steps from step 3; the objective's windows are 4 long, so the
                // window holds two objective points in `end` mode (steps 4 and 8).
                let objective = Objective { window: 4, mode, horizon: 12 };
                let start = mid_run(&config, &params, &data, 3);
                let mut grad = params.zeros_like();
                let mut after = start.clone();
                let out = window_meta_gradient(
                    &mut grad, &config, &params, &mut after, &data, 6, &objective, false, 1.0,
                )
                .expect("window");
                let mut probe = start.clone();
                let rec = advance(&config, &params, &mut probe, &data, 6, Some(&objective), None, None)
                    .expect("fwd");
                assert_eq!(rec.objective, out.objective, "forward passes agree");
                assert_eq!(probe, after, "the window advanced the state as plain steps do");
                // Features held at the unperturbed run's, as spec §3 treats them.
                let feats: Vec<[f64; FEATURES]> = features_of(&config, &params, &start, &data, 6);
                let j = |p: &Params<f64>| {
                    let mut s = start.clone();
                    advance(&config, p, &mut s, &data, 6, Some(&objective), None, Some(&feats))
                        .expect("fd")
                        .objective
                };
                let base = phi(&params);
                let ours = phi(&grad);
                let h = 1e-5;
                let fd: Vec<f64> = (0..base.len())
                    .map(|i| {
                        let central = |h: f64| {
                            let (mut plus, mut minus) = (params.clone(), params.clone());
                            set_phi(&mut plus, i, base[i] + h);
                            set_phi(&mut minus, i, base[i] - h);
                            (j(&plus) - j(&minus)) / (2.0 * h)
                        };
                        (4.0 * central(h / 2.0) - central(h)) / 3.0
                    })
                    .collect();
                let e = rel_err(&ours, &fd);
                assert!(e < 1e-5, "{kind:?} {opt:?} {mode:?}: relative error {e:.3e}");
            }
        }
    }
}

fn features_of(
    config: &Config,
    params: &Params<f64>,
    start: &RunState<f64>,
    data: &Toy<f64>,
    steps: usize,
) -> Vec<[f64; FEATURES]> {
    // Recompute the features the run feeds its scheduler: ln(l + 1e-8), ln(|g| + 1e-8), t/H.
    let mlp = metasched_engine::mlp::Mlp::new(config);
    let mut s = start.clone();
    let mut out = Vec::new();
    let mut batch = Batch::empty(false);
    let mut g = vec![0.0; s.theta.len()];
    for k in 0..steps {
        let t = s.step;
        data.fill_batch(t, &mut batch);
        let mut cache = mlp.cache(batch.n);
        let set = batch.as_set();
        let l = mlp.loss_and_grad(&mut g, &mut cache, &s.theta, set.x, set.y);
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        out.push([(l + 1e-8).ln(), (norm + 1e-8).ln(), t as f64 / config.inner.steps as f64]);
        advance(config, params, &mut s, data, 1, None, None, Some(&out[k..k + 1])).expect("step");
    }
    out
}

fn set_phi(p: &mut Params<f64>, i: usize, value: f64) {
    let mut i = i;
    for b in p.buffers_mut().into_iter().skip(1) {
        if i < b.len() {
            b[i] = value;
            return;
        }
        i -= b.len();
    }
    panic!("phi index out of range");
}

#[test]
fn first_order_drops_exactly_the_hessian_terms() {
    // First order: v stays the sum of the injected validation gradients, so the gradient of a
    // one-step window is the same for both orders (no Hessian is ever applied after the last
    // objective point); over longer windows they differ.
    for opt in optimizers() {
        let (c2, c1) =
            (config(SchedulerKind::Lstm, opt, 8, false), config(SchedulerKind::Lstm, opt, 8, true));
        let params = random_params(&c2, 11);
        let data = Toy::<f64>::new(2, 1, 9, 3, 2);
        let obj = Objective { window: 8, mode: ObjectiveMode::End, horizon: 8 };
        let grad_of = |c: &Config, steps: usize| {
            let mut g = params.zeros_like();
            let mut s = mid_run(c, &params, &data, 8 - steps);
            window_meta_gradient(&mut g, c, &params, &mut s, &data, steps, &obj, false, 1.0).expect("w");
            phi(&g)
        };
        assert_eq!(grad_of(&c2, 1), grad_of(&c1, 1), "{opt:?}: one step");
        assert!(rel_err(&grad_of(&c1, 6), &grad_of(&c2, 6)) > 1e-6, "{opt:?}: orders differ over 6 steps");
    }
}

#[test]
fn remat_gives_the_same_bits() {
    for opt in optimizers() {
        for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
            for (steps, mode) in [
                (1, ObjectiveMode::End),
                (7, ObjectiveMode::Mean),
                (16, ObjectiveMode::End),
                (50, ObjectiveMode::Mean),
            ] {
                let config = config(kind, opt, 60, false);
                let params = random_params(&config, 4).cast::<f32>();
                let data = Toy::<f32>::new(2, 1, 13, 4, 8);
                let obj = Objective { window: 10, mode, horizon: 60 };
                let mut start = RunState::fresh(&config, params.theta.clone());
                advance(&config, &params, &mut start, &data, 3, None, None, None).expect("adv");
                let run = |remat: bool| {
                    let mut g = params.zeros_like();
                    let mut s = start.clone();
                    let out = window_meta_gradient(
                        &mut g, &config, &params, &mut s, &data, steps, &obj, remat, 0.5,
                    )
                    .expect("w");
                    (g, s, out)
                };
                let (a, b) = (run(false), run(true));
                assert_eq!(a.0, b.0, "{opt:?} {kind:?} {steps}: gradient");
                assert_eq!(a.1, b.1, "{opt:?} {kind:?} {steps}: state");
                assert_eq!(a.2, b.2, "{opt:?} {kind:?} {steps}: outcome");
            }
        }
    }
}

#[test]
fn windows_compose_into_one_run() {
    for opt in optimizers() {
        let config = config(SchedulerKind::Lstm, opt, 30, false);
        let params = random_params(&config, 5).cast::<f32>();
        let data = Toy::<f32>::new(2, 1, 11, 4, 3);
        let obj = Objective { window: 10, mode: ObjectiveMode::End, horizon: 30 };
        let mut whole = RunState::fresh(&config, params.theta.clone());
        let all = advance(&config, &params, &mut whole, &data, 30, Some(&obj), None, None).expect("adv");
        let mut parts = RunState::fresh(&config, params.theta.clone());
        let mut lr = Vec::new();
        let mut val = Vec::new();
        for _ in 0..3 {
            let mut g = params.zeros_like();
            let out = window_meta_gradient(&mut g, &config, &params, &mut parts, &data, 10, &obj, false, 1.0)
                .expect("w");
            lr.extend(out.lr);
            val.extend(out.val_loss);
        }
        assert_eq!(whole, parts, "{opt:?}: state after three windows");
        assert_eq!(all.lr, lr, "{opt:?}: rates");
        assert_eq!(all.val_loss, val, "{opt:?}: validation losses");
        assert!(parts.finished(&config));
    }
}

#[test]
fn bad_windows_are_refused() {
    let config = config(SchedulerKind::Lstm, InnerOptimizer::Sgd, 10, false);
    let params = random_params(&config, 1);
    let data = Toy::<f64>::new(2, 1, 9, 3, 5);
    let obj = Objective { window: 5, mode: ObjectiveMode::End, horizon: 10 };
    let mut g = params.zeros_like();
    let mut s = RunState::fresh(&config, params.theta.clone());
    assert!(window_meta_gradient(&mut g, &config, &params, &mut s, &data, 11, &obj, false, 1.0).is_err());
    assert!(window_meta_gradient(&mut g, &config, &params, &mut s, &data, 0, &obj, false, 1.0).is_err());
    let mut nan = s.clone();
    nan.theta[0] = f64::NAN;
    let err = window_meta_gradient(&mut g, &config, &params, &mut nan, &data, 5, &obj, false, 1.0)
        .expect_err("a NaN state is refused");
    assert!(err.to_string().contains("state.theta"), "{err}");
    let wrong = Objective { horizon: 9, ..obj };
    assert!(window_meta_gradient(&mut g, &config, &params, &mut s, &data, 5, &wrong, false, 1.0).is_err());
}

/// PES on a problem whose scheduler reads no features (lslr): its expectation is the exact
/// gradient of the sum of the windows' objectives (plus an O(σ²) smoothing term, negligible at
/// σ = 1e-4 in float64). The mean of M estimates, projected on the exact gradient's direction
/// and two fixed random directions,
/// must lie within 4 standard errors of the exact projection: a false alarm has probability
/// below 3 × 6.3e-5 ≈ 2e-4 per run of this test (two-sided normal tail at 4σ, Bonferroni).
#[test]
fn pes_mean_agrees_with_the_exact_gradient() {
    let horizon = 12;
    let config = config(SchedulerKind::Lslr, InnerOptimizer::Sgd, horizon, false);
    let params = random_params(&config, 21);
    let data = Toy::<f64>::new(2, 1, 9, 3, 6);
    let obj = Objective { window: 4, mode: ObjectiveMode::End, horizon };
    // Truth: the whole run in one window, every window end an objective point.
    let mut truth = params.zeros_like();
    let mut s = RunState::fresh(&config, params.theta.clone());
    window_meta_gradient(&mut truth, &config, &params, &mut s, &data, horizon, &obj, false, 1.0)
        .expect("truth");
    let truth = phi(&truth);
    let dims = truth.len();
    let mut dir_rng = CounterRng::new(77, &[]);
    let norm = truth.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut dirs: Vec<Vec<f64>> = vec![truth.iter().map(|x| x / norm).collect()];
    dirs.extend((0..2).map(|_| (0..dims).map(|_| dir_rng.normal()).collect::<Vec<f64>>()));
    let m = 10_000;
    let mut proj = vec![Vec::with_capacity(m); dirs.len()];
    for r in 0..m as u64 {
        let mut g = params.zeros_like();
        let mut pair = PesPair::fresh(&config, &params, params.theta.clone());
        for w in 0..obj.windows() as u64 {
            let mut noise = CounterRng::new(1234, &[r, w]);
            pes_window(&mut g, &config, &params, &mut pair, &data, 4, &obj, 1e-4, &mut noise, 1.0)
                .expect("pes");
        }
        let est = phi(&g);
        for (d, p) in dirs.iter().zip(proj.iter_mut()) {
            p.push(est.iter().zip(d).map(|(a, b)| a * b).sum::<f64>());
        }
    }
    for (i, (d, p)) in dirs.iter().zip(&proj).enumerate() {
        let exact: f64 = truth.iter().zip(d).map(|(a, b)| a * b).sum();
        let mean = p.iter().sum::<f64>() / m as f64;
        let var = p.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (m - 1) as f64;
        let se = (var / m as f64).sqrt();
        assert!(
            (mean - exact).abs() < 4.0 * se,
            "PES mean {mean:.6e} vs exact {exact:.6e}, standard error {se:.3e}"
        );
        if i == 0 {
            assert!(
                se < 0.25 * exact.abs(),
                "the test has power: se {se:.3e} vs |exact| {:.3e}",
                exact.abs()
            );
        }
    }
}

#[test]
fn labels_data_runs_too() {
    // A cross-entropy learner: the minibatch kind follows the data's labels.
    struct Cls(Batch<f32>);
    impl RunData<f32> for Cls {
        fn fill_batch(&self, _t: usize, out: &mut Batch<f32>) {
            *out = self.0.clone();
        }
        fn validation(&self) -> SetRef<'_, f32> {
            self.0.as_set()
        }
        fn train_set(&self) -> SetRef<'_, f32> {
            self.0.as_set()
        }
    }
    let mut config = config(SchedulerKind::Lstm, InnerOptimizer::Sgd, 5, false);
    config.model.layers = vec![2, 3, 3];
    config.model.loss = LossKind::CrossEntropy;
    let data = Cls(Batch {
        n: 4,
        x: vec![0.1, 0.2, -0.3, 0.5, 1.0, -1.0, 0.0, 0.3],
        y: Targets::Labels(vec![0, 1, 2, 1]),
    });
    let params = random_params(&config, 2).cast::<f32>();
    let mut s = RunState::fresh(&config, params.theta.clone());
    let obj = Objective { window: 5, mode: ObjectiveMode::End, horizon: 5 };
    let mut g = params.zeros_like();
    let out = window_meta_gradient(&mut g, &config, &params, &mut s, &data, 5, &obj, true, 1.0).expect("w");
    assert!(out.objective.is_finite() && matches!(data.validation().y, TargetsRef::Labels(_)));
    assert!(phi(&g.cast::<f64>()).iter().any(|&x| x != 0.0));
}
