//! An independent float64 reference of spec sections 2-4 (`docs/SPEC.md`):
//! the MLP learner, the inner loop with an LSTM / LSLR / fixed scheduler, and the
//! meta-gradient of `J = (1/B) sum_b L_query^b(theta_T^b)` w.r.t. `theta_0` and `phi`.
//!
//! It shares no code with the engine crate. Everything is recorded on a scalar
//! reverse-mode tape (`tape.rs`); the inner gradient `g_t` is built from tape
//! operations by a hand-written MLP backprop (`mlp.rs`), so one reverse sweep
//! from `J` gives the exact second-order meta-gradient. With `first_order`,
//! `g_t` enters the update as a constant (its value), which is spec §4's
//! first-order rule. The features `x_t` are always constants.
//!
//! Simple and slow on purpose: meant for tiny problems.
#![allow(dead_code)]
#![allow(clippy::needless_range_loop)]

pub mod mlp;
pub mod tape;

use std::collections::BTreeMap;

use mlp::Learner;
use tape::{Tape, Var};

/// Number of scheduler features (spec §3).
pub const FEATURES: usize = 3;

/// The scheduler kind (spec §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    /// LSTMCell with `hidden` units and a linear head.
    Lstm {
        /// Hidden size `H`.
        hidden: usize,
    },
    /// A learned table `Z` of shape `[T, G]`.
    Lslr,
    /// `a_t = lr_fixed`, no phi.
    Fixed,
}

/// The configuration (the parts of the checkpoint config that matter here).
#[derive(Clone, Debug)]
pub struct RefConfig {
    /// `[d_0, ..., d_L]`
    pub layers: Vec<usize>,
    /// `tanh` if true, `relu` otherwise.
    pub tanh: bool,
    /// `cross_entropy` if true, `mse` otherwise.
    pub cross_entropy: bool,
    /// Inner steps `T`.
    pub steps: usize,
    /// First-order meta-gradient (no Hessian terms).
    pub first_order: bool,
    /// Scheduler kind.
    pub kind: RefKind,
    /// Lower bound of the rates.
    pub lr_min: f64,
    /// Upper bound of the rates.
    pub lr_max: f64,
    /// The rate of kind `Fixed`.
    pub lr_fixed: f64,
    /// The inner optimiser (spec §3.1).
    pub optimizer: RefOptimizer,
}

/// The inner optimiser (spec §3.1), with its constants.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum RefOptimizer {
    /// `d_t = g_t`.
    #[default]
    Sgd,
    /// `m_t = mu m_{t-1} + g_t`, `d_t = m_t`.
    Momentum {
        /// Momentum coefficient.
        mu: f64,
    },
    /// Bias-corrected Adam, `eps` outside the root.
    Adam {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Added to the root.
        eps: f64,
    },
}

/// Targets of one set.
#[derive(Clone, Debug)]
pub enum RefTargets {
    /// `mse` targets, row-major `[n, d_L]`.
    Values(Vec<f64>),
    /// `cross_entropy` labels, `[n]`.
    Labels(Vec<usize>),
}

/// One support or query set.
#[derive(Clone, Debug)]
pub struct RefSet {
    /// Number of points.
    pub n: usize,
    /// Inputs, row-major `[n, d_0]`.
    pub x: Vec<f64>,
    /// Targets.
    pub y: RefTargets,
}

/// One task.
#[derive(Clone, Debug)]
pub struct RefTask {
    /// The inner loop trains on this.
    pub support: RefSet,
    /// The outer loss is measured on this.
    pub query: RefSet,
}

/// The result of [`reference_metagrad`].
#[derive(Clone, Debug)]
pub struct RefOutput {
    /// `J`
    pub j: f64,
    /// Each task's query loss, `[B]`.
    pub outer_loss: Vec<f64>,
    /// The rates used, row-major `[B, T, G]`.
    pub lr: Vec<f64>,
    /// `dJ/dNAME` for every tensor the configuration uses, row-major.
    pub grads: BTreeMap<String, Vec<f64>>,
}

/// Names of the phi tensors of a kind, in a fixed order.
pub fn phi_names(kind: RefKind) -> Vec<&'static str> {
    match kind {
        RefKind::Lstm { .. } => vec![
            "phi.lstm.weight_ih",
            "phi.lstm.weight_hh",
            "phi.lstm.bias_ih",
            "phi.lstm.bias_hh",
            "phi.head.weight",
            "phi.head.bias",
        ],
        RefKind::Lslr => vec!["phi.lslr.z"],
        RefKind::Fixed => vec![],
    }
}

/// Every tensor name the configuration uses with its shape: theta groups in group order, then phi.
pub fn tensor_shapes(cfg: &RefConfig) -> Vec<(String, Vec<usize>)> {
    let learner = learner(cfg);
    let mut out = Vec::new();
    for l in 0..learner.depth() {
        let (din, dout) = (cfg.layers[l], cfg.layers[l + 1]);
        out.push((format!("theta.layers.{l}.weight"), vec![dout, din]));
        out.push((format!("theta.layers.{l}.bias"), vec![dout]));
    }
    let g = 2 * learner.depth();
    match cfg.kind {
        RefKind::Lstm { hidden: h } => {
            out.push(("phi.lstm.weight_ih".into(), vec![4 * h, FEATURES]));
            out.push(("phi.lstm.weight_hh".into(), vec![4 * h, h]));
            out.push(("phi.lstm.bias_ih".into(), vec![4 * h]));
            out.push(("phi.lstm.bias_hh".into(), vec![4 * h]));
            out.push(("phi.head.weight".into(), vec![g, h]));
            out.push(("phi.head.bias".into(), vec![g]));
        }
        RefKind::Lslr => out.push(("phi.lslr.z".into(), vec![cfg.steps, g])),
        RefKind::Fixed => {}
    }
    out
}

fn learner(cfg: &RefConfig) -> Learner<'_> {
    assert!(cfg.layers.len() >= 2, "an MLP needs at least [d_0, d_L]");
    Learner { layers: &cfg.layers, tanh: cfg.tanh, cross_entropy: cfg.cross_entropy }
}

/// Everything one recording of the meta-objective produces.
struct Recording {
    tape: Tape,
    j: Var,
    outer: Vec<Var>,
    lr: Vec<f64>,
    features: Vec<Vec<[f64; FEATURES]>>,
    /// Leaves of every tensor (theta groups and phi), by name.
    leaves: Vec<(String, Vec<Var>)>,
}

fn leaves_of(tape: &mut Tape, tensors: &BTreeMap<String, Vec<f64>>, name: &str, shape: &[usize]) -> Vec<Var> {
    let data = tensors.get(name).unwrap_or_else(|| panic!("tensor {name} is missing"));
    let len: usize = shape.iter().product();
    assert_eq!(data.len(), len, "tensor {name} must have shape {shape:?}");
    data.iter().map(|&v| tape.var(v)).collect()
}

/// Records `J` on a fresh tape.
fn record(
    cfg: &RefConfig,
    tensors: &BTreeMap<String, Vec<f64>>,
    tasks: &[RefTask],
    features: Option<&[Vec<[f64; FEATURES]>]>,
) -> Recording {
    let learner = learner(cfg);
    let mut tape = Tape::new();
    let shapes = tensor_shapes(cfg);
    let leaves: Vec<(String, Vec<Var>)> = shapes
        .iter()
        .map(|(name, shape)| (name.clone(), leaves_of(&mut tape, tensors, name, shape)))
        .collect();
    let get = |name: &str| -> &Vec<Var> {
        &leaves.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no leaves for {name}")).1
    };
    let depth = learner.depth();
    let g = 2 * depth;
    let t_steps = cfg.steps;
    assert!(t_steps >= 1, "at least one inner step");
    assert!(!tasks.is_empty(), "at least one task");
    if let Some(f) = features {
        assert_eq!(f.len(), tasks.len(), "features override must be [B][T]");
        assert!(f.iter().all(|v| v.len() == t_steps), "features override must be [B][T]");
    }
    let theta0: Vec<Vec<Var>> = (0..g).map(|k| get(&shapes[k].0).clone()).collect();

    let mut outer = Vec::with_capacity(tasks.len());
    let mut lr = Vec::with_capacity(tasks.len() * t_steps * g);
    let mut feats_used = Vec::with_capacity(tasks.len());
    for (b, task) in tasks.iter().enumerate() {
        let mut theta = theta0.clone();
        let hidden = match cfg.kind {
            RefKind::Lstm { hidden } => hidden,
            _ => 0,
        };
        let mut h: Vec<Var> = (0..hidden).map(|_| tape.constant(0.0)).collect();
        let mut c: Vec<Var> = (0..hidden).map(|_| tape.constant(0.0)).collect();
        let mut task_feats = Vec::with_capacity(t_steps);
        // The optimiser's state `m`, `s` (spec §3.1), zero at the start of every task's run.
        let mut m_state: Vec<Vec<Var>> =
            theta.iter().map(|grp| grp.iter().map(|_| tape.constant(0.0)).collect()).collect();
        let mut s_state = m_state.clone();
        for t in 0..t_steps {
            let fwd = learner.forward(&mut tape, &theta, &task.support);
            let grad = learner.backward(&mut tape, &theta, &fwd, task.support.n);
            // Features: from values only.
            let loss_v = tape.value(fwd.loss);
            let gnorm = grad.iter().flatten().map(|&v| tape.value(v).powi(2)).sum::<f64>().sqrt();
            let computed = [(loss_v + 1e-8).ln(), (gnorm + 1e-8).ln(), t as f64 / t_steps as f64];
            let x = match features {
                Some(f) => f[b][t],
                None => computed,
            };
            task_feats.push(x);

            // Rates a_t, one per group.
            let rates: Vec<Var> = match cfg.kind {
                RefKind::Fixed => (0..g).map(|_| tape.constant(cfg.lr_fixed)).collect(),
                RefKind::Lslr => {
                    let z = get("phi.lslr.z");
                    (0..g).map(|k| bound(&mut tape, cfg, z[t * g + k])).collect()
                }
                RefKind::Lstm { hidden: hs } => {
                    let (w_ih, w_hh) = (get("phi.lstm.weight_ih"), get("phi.lstm.weight_hh"));
                    let (b_ih, b_hh) = (get("phi.lstm.bias_ih"), get("phi.lstm.bias_hh"));
                    let xs: Vec<Var> = x.iter().map(|&v| tape.constant(v)).collect();
                    let mut gates = Vec::with_capacity(4 * hs);
                    for r in 0..4 * hs {
                        let a = tape.dot(&w_ih[r * FEATURES..(r + 1) * FEATURES], &xs);
                        let bb = tape.dot(&w_hh[r * hs..(r + 1) * hs], &h);
                        let s = tape.add(a, bb);
                        let s = tape.add(s, b_ih[r]);
                        gates.push(tape.add(s, b_hh[r]));
                    }
                    let mut h_new = Vec::with_capacity(hs);
                    let mut c_new = Vec::with_capacity(hs);
                    for j in 0..hs {
                        let ig = tape.sigmoid(gates[j]);
                        let fg = tape.sigmoid(gates[hs + j]);
                        let gg = tape.tanh(gates[2 * hs + j]);
                        let og = tape.sigmoid(gates[3 * hs + j]);
                        let fc = tape.mul(fg, c[j]);
                        let ig_gg = tape.mul(ig, gg);
                        let cj = tape.add(fc, ig_gg);
                        let tc = tape.tanh(cj);
                        h_new.push(tape.mul(og, tc));
                        c_new.push(cj);
                    }
                    h = h_new;
                    c = c_new;
                    let (w_head, b_head) = (get("phi.head.weight"), get("phi.head.bias"));
                    (0..g)
                        .map(|k| {
                            let s = tape.dot(&w_head[k * hs..(k + 1) * hs], &h);
                            let z = tape.add(s, b_head[k]);
                            bound(&mut tape, cfg, z)
                        })
                        .collect()
                }
            };
            lr.extend(rates.iter().map(|&a| tape.value(a)));

            // theta_{t+1}[i] = theta_t[i] - a_t[group(i)] * d_t[i]  (spec §3.1)
            let mut next = Vec::with_capacity(g);
            for k in 0..g {
                let mut grp = Vec::with_capacity(theta[k].len());
                for (i, &th) in theta[k].iter().enumerate() {
                    let gi = if cfg.first_order { tape.constant(tape.value(grad[k][i])) } else { grad[k][i] };
                    let d = match cfg.optimizer {
                        RefOptimizer::Sgd => gi,
                        RefOptimizer::Momentum { mu } => {
                            let prev = tape.scale(m_state[k][i], mu);
                            m_state[k][i] = tape.add(prev, gi);
                            m_state[k][i]
                        }
                        RefOptimizer::Adam { beta1, beta2, eps } => {
                            let n = t as i32 + 1;
                            let m_prev = tape.scale(m_state[k][i], beta1);
                            let m_new = tape.scale(gi, 1.0 - beta1);
                            m_state[k][i] = tape.add(m_prev, m_new);
                            let s_prev = tape.scale(s_state[k][i], beta2);
                            let g2 = tape.mul(gi, gi);
                            let s_new = tape.scale(g2, 1.0 - beta2);
                            s_state[k][i] = tape.add(s_prev, s_new);
                            let q = tape.scale(m_state[k][i], 1.0 / (1.0 - beta1.powi(n)));
                            let s_hat = tape.scale(s_state[k][i], 1.0 / (1.0 - beta2.powi(n)));
                            let r = tape.sqrt(s_hat);
                            let den = tape.add_const(r, eps);
                            tape.div(q, den)
                        }
                    };
                    let step = tape.mul(rates[k], d);
                    grp.push(tape.sub(th, step));
                }
                next.push(grp);
            }
            theta = next;
        }
        feats_used.push(task_feats);
        let fq = learner.forward(&mut tape, &theta, &task.query);
        outer.push(fq.loss);
    }
    let total = tape.sum(&outer);
    let j = tape.scale(total, 1.0 / tasks.len() as f64);
    Recording { tape, j, outer, lr, features: feats_used, leaves }
}

/// `lr_min + (lr_max - lr_min) * sigmoid(z)`
fn bound(tape: &mut Tape, cfg: &RefConfig, z: Var) -> Var {
    let s = tape.sigmoid(z);
    let s = tape.scale(s, cfg.lr_max - cfg.lr_min);
    tape.add_const(s, cfg.lr_min)
}

/// `J`, the per-task query losses, the rates, and `dJ/dNAME` for every tensor the
/// configuration uses (theta groups always; phi tensors of the kind).
pub fn reference_metagrad(
    cfg: &RefConfig,
    tensors: &BTreeMap<String, Vec<f64>>,
    tasks: &[RefTask],
) -> RefOutput {
    let rec = record(cfg, tensors, tasks, None);
    let adj = rec.tape.gradient(rec.j);
    let grads = rec
        .leaves
        .iter()
        .map(|(name, vars)| (name.clone(), vars.iter().map(|v| adj[v.index()]).collect()))
        .collect();
    RefOutput { j: rec.tape.value(rec.j), outer_loss: rec.tape.values(&rec.outer), lr: rec.lr, grads }
}

/// The same forward computation, values only, optionally with the features
/// (per task, per step) overridden; returns `J` and the features used `[B][T]`.
pub fn reference_forward(
    cfg: &RefConfig,
    tensors: &BTreeMap<String, Vec<f64>>,
    tasks: &[RefTask],
    features: Option<&[Vec<[f64; FEATURES]>]>,
) -> (f64, Vec<Vec<[f64; FEATURES]>>) {
    let rec = record(cfg, tensors, tasks, features);
    (rec.tape.value(rec.j), rec.features)
}

/// The rates `[B, T, G]` of the same forward computation, optionally with the features overridden.
pub fn reference_rates(
    cfg: &RefConfig,
    tensors: &BTreeMap<String, Vec<f64>>,
    tasks: &[RefTask],
    features: Option<&[Vec<[f64; FEATURES]>]>,
) -> Vec<f64> {
    record(cfg, tensors, tasks, features).lr
}
