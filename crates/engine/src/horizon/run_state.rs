//! The persistent state of one long training run between windows (spec §8): everything the
//! next window needs, so a run can move between workers, into a checkpoint and back with no
//! bit lost.

use crate::config::{Config, SchedulerKind};
use crate::error::{EngineError, Result};
use crate::inner_optimizer::InnerOptimizer;
use crate::layout::ThetaLayout;
use crate::real::Real;

/// Learner weights, optimiser state, scheduler LSTM state and the step of one run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState<T> {
    /// The global step `t` the next window starts at (`0 <= t <= H`; `H` means finished).
    pub step: usize,
    /// `theta_t`, flat in spec order.
    pub theta: Vec<T>,
    /// First moment / momentum buffer `m_{t-1}` (`[P]` for momentum and adam, else empty).
    pub m: Vec<T>,
    /// Second moment `s_{t-1}` (`[P]` for adam, else empty).
    pub s: Vec<T>,
    /// LSTM hidden state `h_t` (`[H]` for the lstm scheduler, else empty).
    pub h: Vec<T>,
    /// LSTM cell state `c_t`, likewise.
    pub c: Vec<T>,
}

/// Lengths `(m, s, h)` of the state vectors `config` implies (`c` has `h`'s).
fn lengths(config: &Config) -> (usize, usize, usize) {
    let p = ThetaLayout::new(config).len();
    let (m, s) = match config.inner.optimizer {
        InnerOptimizer::Sgd => (0, 0),
        InnerOptimizer::Momentum { .. } => (p, 0),
        InnerOptimizer::Adam { .. } => (p, p),
    };
    let h = if config.scheduler.kind == SchedulerKind::Lstm { config.scheduler.hidden } else { 0 };
    (m, s, h)
}

impl<T: Real> RunState<T> {
    /// A run at step 0 from the learner `theta`, optimiser and scheduler state zero.
    pub fn fresh(config: &Config, theta: Vec<T>) -> Self {
        let (m, s, h) = lengths(config);
        Self {
            step: 0,
            theta,
            m: vec![T::zero(); m],
            s: vec![T::zero(); s],
            h: vec![T::zero(); h],
            c: vec![T::zero(); h],
        }
    }

    /// Whether the run has reached its horizon.
    pub fn finished(&self, config: &Config) -> bool {
        self.step >= config.inner.steps
    }

    /// Checks lengths against `config`, the step against the horizon and every value for
    /// finiteness: a state read from a file or a worker's answer is outside data.
    pub fn validate(&self, config: &Config) -> Result<()> {
        let (m, s, h) = lengths(config);
        let p = ThetaLayout::new(config).len();
        let bad = |name: &str, reason: String| EngineError::InvalidTaskData { name: name.into(), reason };
        if self.step > config.inner.steps {
            return Err(bad(
                "state.step",
                format!("{} is past the horizon {}", self.step, config.inner.steps),
            ));
        }
        for (name, v, want) in [
            ("state.theta", &self.theta, p),
            ("state.m", &self.m, m),
            ("state.s", &self.s, s),
            ("state.h", &self.h, h),
            ("state.c", &self.c, h),
        ] {
            if v.len() != want {
                return Err(bad(name, format!("holds {} values, expected {want}", v.len())));
            }
            if let Some(pos) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(name, format!("non-finite value {} at index {pos}", v[pos])));
            }
        }
        Ok(())
    }

    /// Converts every value to another float type.
    pub fn cast<U: Real>(&self) -> RunState<U> {
        let c = |v: &Vec<T>| v.iter().map(|&x| U::of(x.as_f64())).collect();
        RunState {
            step: self.step,
            theta: c(&self.theta),
            m: c(&self.m),
            s: c(&self.s),
            h: c(&self.h),
            c: c(&self.c),
        }
    }
}
