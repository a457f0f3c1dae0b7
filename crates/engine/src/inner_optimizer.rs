//! The inner optimisers of spec §3.1 (`sgd`, `momentum`, `adam`): the direction `d_t` the
//! scheduler's rate multiplies, and its exact reverse mode (spec §4), so a schedule can be
//! meta-learned for the optimiser users actually train with.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::real::Real;

/// Which inner optimiser the learner is trained with, and its fixed constants.
///
/// In JSON and TOML it is a map with a `kind` key (`{"kind": "adam", "beta1": 0.9, ...}`,
/// spec §5); in binary formats (bincode on the wire) an ordinary enum, because those cannot
/// read a tagged map (see the `Serialize`/`Deserialize` impls below).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum InnerOptimizer {
    /// `d_t = g_t` (the default; what files without `inner.optimizer` mean).
    #[default]
    Sgd,
    /// Heavy ball, PyTorch's `SGD(momentum = mu, dampening = 0)`.
    Momentum {
        /// Momentum coefficient in `[0, 1)`.
        mu: f64,
    },
    /// PyTorch's `Adam` with bias correction, `eps` outside the square root.
    Adam {
        /// First-moment decay in `[0, 1)`.
        beta1: f64,
        /// Second-moment decay in `[0, 1)`.
        beta2: f64,
        /// Added to the root of the second moment; finite and `> 0`.
        eps: f64,
    },
}

/// The spec's spelling in human-readable formats: a map tagged by `kind`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Tagged {
    Sgd,
    Momentum { mu: f64 },
    Adam { beta1: f64, beta2: f64, eps: f64 },
}

/// The spelling in binary formats: externally tagged, which needs no self-description.
#[derive(Serialize, Deserialize)]
enum Plain {
    Sgd,
    Momentum { mu: f64 },
    Adam { beta1: f64, beta2: f64, eps: f64 },
}

impl Serialize for InnerOptimizer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let human = serializer.is_human_readable();
        match (*self, human) {
            (Self::Sgd, true) => Tagged::Sgd.serialize(serializer),
            (Self::Momentum { mu }, true) => Tagged::Momentum { mu }.serialize(serializer),
            (Self::Adam { beta1, beta2, eps }, true) => {
                Tagged::Adam { beta1, beta2, eps }.serialize(serializer)
            }
            (Self::Sgd, false) => Plain::Sgd.serialize(serializer),
            (Self::Momentum { mu }, false) => Plain::Momentum { mu }.serialize(serializer),
            (Self::Adam { beta1, beta2, eps }, false) => {
                Plain::Adam { beta1, beta2, eps }.serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for InnerOptimizer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(if deserializer.is_human_readable() {
            match Tagged::deserialize(deserializer)? {
                Tagged::Sgd => Self::Sgd,
                Tagged::Momentum { mu } => Self::Momentum { mu },
                Tagged::Adam { beta1, beta2, eps } => Self::Adam { beta1, beta2, eps },
            }
        } else {
            match Plain::deserialize(deserializer)? {
                Plain::Sgd => Self::Sgd,
                Plain::Momentum { mu } => Self::Momentum { mu },
                Plain::Adam { beta1, beta2, eps } => Self::Adam { beta1, beta2, eps },
            }
        })
    }
}

impl InnerOptimizer {
    /// Whether this is plain SGD (written to files only when it is not).
    pub fn is_sgd(&self) -> bool {
        matches!(self, Self::Sgd)
    }

    /// The spec's name of the kind.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sgd => "sgd",
            Self::Momentum { .. } => "momentum",
            Self::Adam { .. } => "adam",
        }
    }

    /// Checks the constants: decays in `[0, 1)`, `eps` finite and positive.
    pub fn validate(&self) -> Result<()> {
        let decay = |field: &str, x: f64| {
            if (0.0..1.0).contains(&x) {
                Ok(())
            } else {
                Err(EngineError::InvalidConfig {
                    field: format!("inner.optimizer.{field}"),
                    reason: format!("{x} is not in [0, 1)"),
                })
            }
        };
        match *self {
            Self::Sgd => Ok(()),
            Self::Momentum { mu } => decay("mu", mu),
            Self::Adam { beta1, beta2, eps } => {
                decay("beta1", beta1)?;
                decay("beta2", beta2)?;
                if eps.is_finite() && eps > 0.0 {
                    Ok(())
                } else {
                    Err(EngineError::InvalidConfig {
                        field: "inner.optimizer.eps".into(),
                        reason: format!("{eps} is not a finite value > 0"),
                    })
                }
            }
        }
    }
}

/// Bias corrections `(1 - beta1^(t+1), 1 - beta2^(t+1))` of step `t`, in f64.
fn corrections(beta1: f64, beta2: f64, t: usize) -> (f64, f64) {
    let n = t as i32 + 1;
    (1.0 - beta1.powi(n), 1.0 - beta2.powi(n))
}

/// The optimiser state of one inner run, step by step, kept for the backward pass when asked.
pub(crate) struct OptimizerTrace<T> {
    opt: InnerOptimizer,
    p: usize,
    keep: bool,
    /// Global index of the first step (bias corrections count from the run's start).
    t0: usize,
    /// `m` (momentum and adam): the state before the first step in slot 0, then `m_t` in slot
    /// `t + 1` when kept; one slot updated in place otherwise.
    m: Vec<T>,
    /// `s` (adam), likewise.
    s: Vec<T>,
    /// The direction of the current step (adam; momentum's is `m_t`, sgd's `g_t`).
    d: Vec<T>,
}

impl<T: Real> OptimizerTrace<T> {
    /// A zero state for `steps` steps of `p` parameters; `keep` stores every step's state.
    pub(crate) fn new(opt: InnerOptimizer, steps: usize, p: usize, keep: bool) -> Self {
        Self::starting(opt, steps, p, keep, 0, None)
    }

    /// The state for `steps` steps starting at global step `t0` from `start = (m, s)` (zero
    /// when `None`; a slice the optimiser has no use for is ignored): a window of a long run.
    pub(crate) fn starting(
        opt: InnerOptimizer,
        steps: usize,
        p: usize,
        keep: bool,
        t0: usize,
        start: Option<(&[T], &[T])>,
    ) -> Self {
        let per = if keep { (steps + 1) * p } else { p };
        let (mut m, mut s, d) = match opt {
            InnerOptimizer::Sgd => (Vec::new(), Vec::new(), Vec::new()),
            InnerOptimizer::Momentum { .. } => (vec![T::zero(); per], Vec::new(), Vec::new()),
            InnerOptimizer::Adam { .. } => (vec![T::zero(); per], vec![T::zero(); per], vec![T::zero(); p]),
        };
        if let Some((m0, s0)) = start {
            if !m.is_empty() {
                m[..p].copy_from_slice(&m0[..p]);
            }
            if !s.is_empty() {
                s[..p].copy_from_slice(&s0[..p]);
            }
        }
        Self { opt, p, keep, t0, m, s, d }
    }

    /// The range of step `t`'s state (`m_t`, `s_t`) in `m`/`s`.
    fn at(&self, t: usize) -> std::ops::Range<usize> {
        let k = if self.keep { t + 1 } else { 0 };
        k * self.p..(k + 1) * self.p
    }

    /// The range of the state step `t` starts from.
    fn before(&self, t: usize) -> std::ops::Range<usize> {
        let k = if self.keep { t } else { 0 };
        k * self.p..(k + 1) * self.p
    }

    /// The state `(m, s)` after the last step taken (empty slices where the optimiser keeps
    /// none): what a long run carries into its next window.
    pub(crate) fn state_after(&self, t: usize) -> (&[T], &[T]) {
        let r = self.at(t);
        let m = if self.m.is_empty() { &self.m[..] } else { &self.m[r.clone()] };
        let s = if self.s.is_empty() { &self.s[..] } else { &self.s[r] };
        (m, s)
    }

    /// Advances the state with `g_t` and returns the direction `d_t` (spec §3.1).
    pub(crate) fn step<'a>(&'a mut self, t: usize, g: &'a [T]) -> &'a [T] {
        match self.opt {
            InnerOptimizer::Sgd => g,
            InnerOptimizer::Momentum { mu } => {
                let mu = T::of(mu);
                let (cur, prev) = (self.at(t), self.before(t));
                for (i, &gi) in g.iter().enumerate() {
                    let before = self.m[prev.start + i];
                    self.m[cur.start + i] = mu * before + gi;
                }
                &self.m[cur]
            }
            InnerOptimizer::Adam { beta1, beta2, eps } => {
                let (c1, c2) = corrections(beta1, beta2, self.t0 + t);
                let (b1, b2, e) = (T::of(beta1), T::of(beta2), T::of(eps));
                let (inv1, inv2) = (T::of(1.0 / c1), T::of(1.0 / c2));
                let (one_b1, one_b2) = (T::of(1.0 - beta1), T::of(1.0 - beta2));
                let (cur, prev) = (self.at(t), self.before(t));
                for (i, &gi) in g.iter().enumerate() {
                    let (m0, s0) = (self.m[prev.start + i], self.s[prev.start + i]);
                    let m = b1 * m0 + one_b1 * gi;
                    let s = b2 * s0 + one_b2 * gi * gi;
                    self.m[cur.start + i] = m;
                    self.s[cur.start + i] = s;
                    self.d[i] = (m * inv1) / ((s * inv2).sqrt() + e);
                }
                &self.d
            }
        }
    }

    /// The direction `d_t` of a kept step (recomputed from the stored state for adam).
    pub(crate) fn direction<'a>(&'a mut self, t: usize, g: &'a [T]) -> &'a [T] {
        match self.opt {
            InnerOptimizer::Sgd => g,
            InnerOptimizer::Momentum { .. } => &self.m[self.at(t)],
            InnerOptimizer::Adam { beta1, beta2, eps } => {
                let (c1, c2) = corrections(beta1, beta2, self.t0 + t);
                let (inv1, inv2, e) = (T::of(1.0 / c1), T::of(1.0 / c2), T::of(eps));
                let r = self.at(t);
                for i in 0..self.p {
                    let (m, s) = (self.m[r.start + i], self.s[r.start + i]);
                    self.d[i] = (m * inv1) / ((s * inv2).sqrt() + e);
                }
                &self.d
            }
        }
    }

    /// One step of the reverse mode (spec §4): given `u = a_t[group] * v_{t+1}` (that is
    /// `-dJ/dd_t`) and the state adjoints `wm`, `ws` of step `t + 1` (updated here to step
    /// `t`'s), leaves `-dJ/dg_t` in `u`: the vector the Hessian of step `t` multiplies. For
    /// sgd that is `u` itself, so the sgd path computes exactly what it always did.
    pub(crate) fn backward(&self, t: usize, g: &[T], u: &mut [T], wm: &mut [T], ws: &mut [T]) {
        match self.opt {
            InnerOptimizer::Sgd => {}
            InnerOptimizer::Momentum { mu } => {
                let mu = T::of(mu);
                for (x, w) in u.iter_mut().zip(wm.iter_mut()) {
                    *w = mu * *w - *x;
                    *x = -*w;
                }
            }
            InnerOptimizer::Adam { beta1, beta2, eps } => {
                let (c1, c2) = corrections(beta1, beta2, self.t0 + t);
                let (b1, b2, e) = (T::of(beta1), T::of(beta2), T::of(eps));
                let (inv1, inv2) = (T::of(1.0 / c1), T::of(1.0 / c2));
                let (one_b1, two_b2) = (T::of(1.0 - beta1), T::of(2.0 * (1.0 - beta2)));
                let two = T::of(2.0);
                let r_t = self.at(t);
                for i in 0..self.p {
                    let (m, s) = (self.m[r_t.start + i], self.s[r_t.start + i]);
                    let q = m * inv1;
                    let r = (s * inv2).sqrt();
                    let den = r + e;
                    let ei = -u[i];
                    wm[i] = b1 * wm[i] + ei / den * inv1;
                    let via_s =
                        if r > T::zero() { -ei * q / (den * den) / (two * r) * inv2 } else { T::zero() };
                    ws[i] = b2 * ws[i] + via_s;
                    u[i] = -(one_b1 * wm[i] + two_b2 * g[i] * ws[i]);
                }
            }
        }
    }
}
