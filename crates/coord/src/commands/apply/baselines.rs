//! The schedules a practitioner would try instead of a learned one, each a [`RateRule`] so
//! that it runs through the very training loop the learned scheduler runs in (same data,
//! initialisation and inner optimiser). Every baseline sets the same rate for all groups.

use metasched_engine::FEATURES;
use metasched_engine::horizon::RateRule;
use serde::{Deserialize, Serialize};

/// A baseline with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Baseline {
    /// The same rate at every step.
    Constant {
        /// The rate.
        rate: f64,
    },
    /// Linear warm-up over the first 5% of `H` steps to `peak`, then cosine annealing to 0
    /// at `H` (Loshchilov & Hutter 2017, without restarts).
    Cosine {
        /// The rate at the end of the warm-up.
        peak: f64,
    },
    /// `peak`, ×0.1 from step `H/2` on and ×0.1 again from `3H/4` on.
    StepDecay {
        /// The initial rate.
        peak: f64,
    },
    /// Hypergradient descent (Baydin et al. 2018): `α_t = α_{t-1} + β g_t·d_{t-1}` with
    /// `d` the inner optimiser's previous direction (SGD-HD: `d = g`; Adam-HD: Adam's
    /// direction), `α_{-1} = α_0`; `α` is kept at or above 0 (a negative rate would ascend).
    Hypergradient {
        /// The initial rate.
        alpha0: f64,
        /// The hypergradient rate `β`.
        beta: f64,
    },
}

impl Baseline {
    /// The baseline's name in tables (`optimizer` names the HD variant).
    pub fn name(&self, optimizer: &str) -> String {
        match self {
            Self::Constant { .. } => "constant".into(),
            Self::Cosine { .. } => "cosine (5% warm-up)".into(),
            Self::StepDecay { .. } => "step decay (x0.1 at 50%, 75%)".into(),
            Self::Hypergradient { .. } => format!("{optimizer}-HD"),
        }
    }

    /// The rule that runs this baseline over a horizon of `horizon` steps.
    pub fn rule(&self, horizon: usize) -> Box<dyn RateRule<f32> + Send> {
        match *self {
            Self::Constant { rate } => Box::new(Scheduled { horizon, f: move |_, _| rate }),
            Self::Cosine { peak } => Box::new(Scheduled { horizon, f: move |t, h| cosine(peak, t, h) }),
            Self::StepDecay { peak } => {
                Box::new(Scheduled { horizon, f: move |t, h| step_decay(peak, t, h) })
            }
            Self::Hypergradient { alpha0, beta } => Box::new(Hypergradient { alpha: alpha0, beta }),
        }
    }
}

/// Warm-up steps of the cosine schedule: 5% of `H`, at least 1.
pub fn warmup_steps(horizon: usize) -> usize {
    (horizon / 20).max(1)
}

/// Cosine annealing with linear warm-up: `peak·(t+1)/w` for `t < w`, then
/// `peak·(1 + cos(π (t−w)/(H−w)))/2`.
pub fn cosine(peak: f64, t: usize, horizon: usize) -> f64 {
    let w = warmup_steps(horizon);
    if t < w {
        return peak * (t + 1) as f64 / w as f64;
    }
    let span = horizon.saturating_sub(w).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * (t - w) as f64 / span).cos())
}

/// Step decay: `peak`, ×0.1 for `t >= H/2`, ×0.1 again for `t >= 3H/4`.
pub fn step_decay(peak: f64, t: usize, horizon: usize) -> f64 {
    let mut r = peak;
    if 2 * t >= horizon {
        r *= 0.1;
    }
    if 4 * t >= 3 * horizon {
        r *= 0.1;
    }
    r
}

/// A rate that is a function of the step and the horizon only.
struct Scheduled<F> {
    horizon: usize,
    f: F,
}

impl<F: Fn(usize, usize) -> f64> RateRule<f32> for Scheduled<F> {
    fn rates(&mut self, t: usize, _x: &[f32; FEATURES], _g: &[f32], _prev: Option<&[f32]>, out: &mut [f32]) {
        out.fill((self.f)(t, self.horizon) as f32);
    }
}

/// Hypergradient descent's state: the current rate.
struct Hypergradient {
    alpha: f64,
    beta: f64,
}

impl RateRule<f32> for Hypergradient {
    fn rates(&mut self, _t: usize, _x: &[f32; FEATURES], g: &[f32], prev_d: Option<&[f32]>, out: &mut [f32]) {
        if let Some(d) = prev_d {
            let dot: f64 = g.iter().zip(d).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            // NaN (a diverged run) also ends at 0 here: `max` returns the other operand.
            self.alpha = (self.alpha + self.beta * dot).max(0.0);
        }
        out.fill(self.alpha as f32);
    }
}
